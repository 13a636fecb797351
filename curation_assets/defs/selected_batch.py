"""selected_batch: one labeling round (a partition) chosen within a budget, and its exports."""

from functools import partial

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import labels, layout
from curation_assets.core.selection import (
    STRATEGIES,
    Pool,
    Round,
    RoundSettings,
    batch_table,
    choose_round,
    coverage_before_after,
    resolve_budget,
    round_pool,
    shares,
)
from curation_assets.defs import checks
from curation_assets.defs.curation import load_corpus, read_groups, read_outliers
from curation_assets.defs.objects import selectable_objects
from curation_assets.defs.partitions import labeling_rounds
from curation_assets.defs.reports import embedding_map_metadata, picture_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "selected_batch"


class SelectionConfig(dg.Config):
    budget: int = Field(default=20, description="Frames to send to labeling this round.")
    budget_fraction: float = Field(default=0.0, description="If > 0: this fraction of the candidates instead.")
    strategy: str = Field(default="diversity", description=f"One of {', '.join(STRATEGIES)}.")
    seed: int = 0
    balance_on: str = Field(
        default="", description="Column to balance, e.g. camera_id, or predicted_class (needs predictions); '' = none."
    )
    balance_targets: dict[str, float] = Field(
        default={}, description="Target proportions per value of balance_on; empty = equal shares."
    )
    predictions: str = Field(
        default="",
        description="Key under the root of a predictions table (Parquet/CSV) for uncertainty and hybrid: "
        "frame_id + probs (classification) or frame_id + confidence per box (detection).",
    )
    uncertainty_measure: str = Field(default="entropy", description="least_confidence, margin or entropy.")
    class_caps: dict[str, float] = Field(
        default={},
        description="Largest share of the batch per predicted class, e.g. {bottle: 0.3} (needs predictions).",
    )
    categories: list[str] = Field(default=list(labels.DEFAULT_CATEGORIES), description="Classes the labelers may use.")
    object_class_strength: float = Field(
        default=1.0,
        description="object_diversity: a box counts by its class's rarity ** this (0: classes ignored).",
    )


def labeled_frame_ids(store: ObjectStore, except_round: str | None = None) -> set[str]:
    """Frames with imported labels, but those of ``except_round`` (a round re-run after its
    labels came back selects its own frames again, not an empty batch)."""
    if not store.exists(layout.table_key("labeled_set", "frames")):
        return set()
    labeled = store.read_table(layout.table_key("labeled_set", "frames"))
    if "round" not in labeled:
        return set(labeled["frame_id"])
    return set(labeled.loc[labeled["round"] != except_round, "frame_id"])


def earlier_selections(store: ObjectStore, round_id: str | None = None) -> pd.DataFrame:
    """Every published batch but ``round_id``'s (None: every batch), with its ``round`` column."""
    tables = [
        store.read_table(obj.key)
        for obj in store.list(layout.table_prefix(ASSET))
        if obj.key.endswith(".parquet") and obj.key != layout.table_key(ASSET, round_id)
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["frame_id"])


def _round_settings(config: SelectionConfig) -> RoundSettings:
    if config.strategy not in STRATEGIES:
        raise dg.Failure(
            f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}", allow_retries=False
        )
    return RoundSettings(config.strategy, config.seed, config.balance_on, config.balance_targets or None,
                         config.class_caps or None, config.uncertainty_measure, tuple(config.categories),
                         config.object_class_strength)  # fmt: skip


def _choose(store: ObjectStore, config: SelectionConfig, settings: RoundSettings, pool: Pool, budget: int) -> Round:
    """``choose_round`` with the tables the settings need; settings the inputs cannot serve are
    bad input (not retried)."""
    needs = settings.needs_predictions()
    if needs and not config.predictions:
        raise dg.Failure(f"{needs} needs config 'predictions' (a table under the root)", allow_retries=False)
    predictions = store.read_table(config.predictions) if needs else None
    objects = selectable_objects(store) if config.strategy == "object_diversity" else None
    try:
        return choose_round(pool.table, pool.vectors, pool.candidates, pool.taken_rows, budget, settings,
                            predictions, objects)  # fmt: skip
    except (ValueError, KeyError) as exc:
        raise dg.Failure(f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError) else str(exc),
                         allow_retries=False) from exc  # fmt: skip


def _write_exports(store: ObjectStore, round_id: str, exports: dict[str, str]) -> None:
    for name, text in exports.items():
        store.put_bytes(layout.export_key(round_id, name), text.encode())


def _describe_round(store: ObjectStore, config: SelectionConfig, round_id: str, pool: Pool, budget: int,
                    picked: Round, batch: pd.DataFrame, verdict: checks.Verdict) -> dict:  # fmt: skip
    """What a person judges a round by: sizes, camera and class shares, coverage, scores, pictures."""
    table, scores, plan = pool.table, picked.scores, picked.plan
    labeled_cameras = table.loc[pool.taken_rows, "camera_id"]
    radius_before, radius_after = coverage_before_after(pool, picked)
    finite = scores[np.isfinite(scores)] if len(scores) else scores
    return {
        "selected": len(batch),
        "budget": budget,
        "strategy": config.strategy,
        "candidates": len(pool.candidates),
        "excluded_already_taken": len(pool.taken),
        "camera_share_labeled_before": dg.MetadataValue.json(shares(labeled_cameras)),
        "camera_share_labeled_after": dg.MetadataValue.json(shares(pd.concat([labeled_cameras, batch["camera_id"]]))),
        "camera_share_candidates": dg.MetadataValue.json(shares(table["camera_id"].iloc[pool.candidates])),
        "balance": dg.MetadataValue.json(
            [{"value": q.value, "target": q.target, "available": q.available, "chosen": q.chosen} for q in plan]
        ),
        "balance_shortfall": int(sum(max(q.target - q.chosen, 0) for q in plan)),
        "predicted_class_shares": dg.MetadataValue.json(
            shares(picked.predicted_class.iloc[picked.picks])
            if picked.predicted_class is not None
            else "no predictions"
        ),
        "class_caps": dg.MetadataValue.json(config.class_caps or "none"),
        "box_class_shares": dg.MetadataValue.json(
            shares(picked.box_classes) if picked.box_classes is not None else "object_diversity only"
        ),
        "coverage_radius_before": None if np.isnan(radius_before) else round(radius_before, 4),
        "coverage_radius_after": None if np.isnan(radius_after) else round(radius_after, 4),
        "score_min": round(float(finite.min()), 4) if len(finite) else None,
        "score_max": round(float(finite.max()), 4) if len(finite) else None,
        "exports": dg.MetadataValue.path(store.uri(layout.export_key(round_id, ""))),
        "table": dg.MetadataValue.path(store.uri(verdict.key)),
        "published": verdict.published,
        **picture_metadata(
            store,
            "batch",
            [(f"rank {i + 1}-{i + 8}", list(batch["uri"][i : i + 8])) for i in range(0, len(batch), 8)],
            file_name=f"{ASSET}/{round_id}.png",
        ),
        **embedding_map_metadata(
            store, pool.vectors, table["camera_id"], picked.picks, pool.taken_rows, f"{ASSET}/{round_id}-map.png"
        ),
    }


@dg.asset(
    retry_policy=TRANSIENT,
    partitions_def=labeling_rounds,
    # what it reads (labeled_set's table too, which cannot be a dep: labeled_set follows it)
    deps=["raw_frames", "frame_embeddings", "duplicate_groups", "outliers", "object_embeddings", "object_outliers"],
    group_name="labeling",
    kinds={"numpy", "json"},
    check_specs=[
        checks.blocking(
            "selected_batch_valid",
            ASSET,
            "size = budget (or all candidates); no outliers; ≤1 frame per group; "
            "nothing selected or labeled before (GX)",
        ),
        checks.blocking(
            "selected_batch_exports_valid",
            ASSET,
            "SageMaker manifest, COCO images and Label Studio tasks each valid in their format",
        ),
    ],
)
@transient_only
def selected_batch(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Choose this round's frames and export them for SageMaker Ground Truth, COCO tools and Label Studio."""
    settings = _round_settings(config)
    round_id, store = context.partition_key, object_store.store()
    corpus = load_corpus(store, embedder.embedder().vector_name)
    taken_before = set(earlier_selections(store, round_id)["frame_id"]) | labeled_frame_ids(store, round_id)
    pool = round_pool(corpus.frames, corpus.vectors, read_groups(store), read_outliers(store), taken_before)
    budget = resolve_budget(config.budget, config.budget_fraction, len(pool.candidates))
    picked = _choose(store, config, settings, pool, budget)
    batch = batch_table(pool, picked, config.strategy, round_id)

    exports, export_problems = labels.export_bundle(batch, list(config.categories))
    validation = expectations.validate(batch, ASSET, suites.selected_batch(picked.expected, sorted(pool.taken)))
    results = [
        checks.from_validation(
            "selected_batch_valid", validation, candidates=len(pool.candidates), budget=budget, expected=picked.expected
        ),
        checks.from_assertion(
            "selected_batch_exports_valid", not export_problems, problems=export_problems[:10] or "none"
        ),
    ]
    # the exports before the batch: a published batch has its exports
    verdict = checks.publish(
        store, results, ASSET, round_id, batch, first=partial(_write_exports, store, round_id, exports)
    )
    return dg.MaterializeResult(
        metadata=_describe_round(store, config, round_id, pool, budget, picked, batch, verdict),
        check_results=results,
    )
