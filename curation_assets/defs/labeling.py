"""selected_batch (one partition per labeling round) and labeled_set (all rounds)."""

import hashlib
import json
from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import labels, layout
from curation_assets.core.selection import STRATEGIES, candidate_mask, coverage_radius, k_center_greedy, select_random
from curation_assets.defs import checks
from curation_assets.defs.curation import load_corpus, outliers
from curation_assets.defs.partitions import labeling_rounds
from curation_assets.defs.reports import picture_metadata
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

DEFAULT_CATEGORIES = ["person", "product", "cart"]
BATCH_COLUMNS = ["frame_id", "group_id", "video_id", "camera_id", "uri", "width", "height"]


class SelectionConfig(dg.Config):
    budget: int = Field(default=20, description="Frames to send to labeling this round.")
    strategy: str = Field(default="diversity", description=f"One of {', '.join(STRATEGIES)}.")
    seed: int = 0
    categories: list[str] = Field(default=DEFAULT_CATEGORIES, description="Classes the labelers may use.")


def labeled_frame_ids(store: ObjectStore) -> set[str]:
    if not store.exists(layout.table_key("labeled_set", "frames")):
        return set()
    return set(store.read_table(layout.table_key("labeled_set", "frames"))["frame_id"])


def earlier_selections(store: ObjectStore, round_id: str) -> pd.DataFrame:
    tables = [
        store.read_table(obj.key)
        for obj in store.list(layout.table_prefix("selected_batch"))
        if obj.key.endswith(".parquet") and obj.key != layout.table_key("selected_batch", round_id)
    ]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["frame_id"])


@dg.asset(
    partitions_def=labeling_rounds,
    deps=[outliers],
    group_name="labeling",
    kinds={"numpy", "json"},
    check_specs=[
        checks.blocking(
            "selected_batch_valid",
            "selected_batch",
            "size = budget (or all candidates); no outliers; ≤1 frame per group; "
            "nothing selected or labeled before (GX)",
        )
    ],
)
def selected_batch(
    context: dg.AssetExecutionContext,
    config: SelectionConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Choose this round's frames and export them for SageMaker Ground Truth and COCO tools."""
    if config.strategy not in STRATEGIES:
        raise dg.Failure(f"unknown strategy {config.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    round_id = context.partition_key
    store = object_store.store()
    corpus = load_corpus(store, embedder.embedder().vector_name)
    groups = store.read_table(layout.table_key("duplicate_groups"))
    flags = store.read_table(layout.table_key("outliers"))
    table = corpus.frames.merge(groups, on="frame_id").merge(flags[["frame_id", "is_outlier"]], on="frame_id")
    vectors = corpus.vectors[corpus.frames["frame_id"].isin(table["frame_id"]).to_numpy()]

    already_labeled = set(corpus.frames.loc[corpus.frames["split"] != "", "frame_id"])  # from labeled datasets
    taken = set(earlier_selections(store, round_id)["frame_id"]) | labeled_frame_ids(store) | already_labeled
    mask = candidate_mask(table, table, taken)
    candidates = np.flatnonzero(mask)
    already = vectors[table["frame_id"].isin(taken).to_numpy()]
    if config.strategy == "random":
        picks, scores = select_random(len(candidates), config.budget, config.seed)
    else:
        picks, scores = k_center_greedy(vectors[candidates], config.budget, config.seed, already)
    chosen = candidates[picks]
    batch = table.iloc[chosen][[*BATCH_COLUMNS, "is_outlier"]].reset_index(drop=True)
    batch = batch.assign(strategy=config.strategy, score=scores, rank=np.arange(1, len(batch) + 1), round=round_id)

    representatives = vectors[table["is_representative"].to_numpy()]
    radius_before = coverage_radius(representatives, already)
    radius_after = coverage_radius(representatives, np.concatenate([already, vectors[chosen]]))
    validation = expectations.validate(
        batch, "selected_batch", suites.selected_batch(min(config.budget, len(candidates)), sorted(taken))
    )
    results = [checks.from_validation("selected_batch_valid", validation, candidates=len(candidates))]
    failed = checks.blocking_failures(results)
    if failed:
        store.write_table(layout.rejected_table_key("selected_batch", round_id), batch)
    else:
        store.put_bytes(layout.export_key(round_id, "manifest.jsonl"), labels.sagemaker_manifest(batch).encode())
        coco = labels.coco_images(batch, config.categories)
        store.put_bytes(layout.export_key(round_id, "coco_images.json"), json.dumps(coco, indent=1).encode())
        store.write_table(layout.table_key("selected_batch", round_id), batch)
    per_camera = batch["camera_id"].value_counts().to_dict()
    pool_camera = table.loc[mask, "camera_id"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "selected": len(batch),
            "budget": config.budget,
            "strategy": config.strategy,
            "candidates": len(candidates),
            "excluded_already_taken": len(taken),
            "coverage_radius_before": None if np.isnan(radius_before) else round(radius_before, 4),
            "coverage_radius_after": None if np.isnan(radius_after) else round(radius_after, 4),
            "cameras_in_candidates": dg.MetadataValue.json(pool_camera),
            "cameras_in_batch": dg.MetadataValue.json(per_camera),
            "exports": dg.MetadataValue.path(store.uri(layout.export_key(round_id, ""))),
            **picture_metadata(
                store,
                "batch",
                [(f"rank {i + 1}-{i + len(chunk)}", list(chunk)) for i, chunk in _chunks(list(batch["uri"]), 8)],
                file_name=f"selected_batch/{round_id}.png",
            ),
        },
        check_results=results,
    )


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield start, items[start : start + size]


class LabeledSetConfig(dg.Config):
    annotations_prefix: str = Field(
        default=layout.ANNOTATIONS_PREFIX, description="Where the labeling tool's COCO files are dropped."
    )


def _round_categories(store: ObjectStore, rounds: list[str]) -> list[str]:
    names: list[str] = []
    for round_id in rounds:
        for cat in json.loads(store.get_bytes(layout.export_key(round_id, "coco_images.json")))["categories"]:
            if cat["name"] not in names:
                names.append(cat["name"])
    return names


def _next_version(store: ObjectStore, content_hash: str) -> tuple[str, bool]:
    """The version holding this content if one exists, else the next free number."""
    versions = sorted({obj.key.split("/")[1] for obj in store.list("datasets") if obj.key.endswith("manifest.json")})
    for version in versions:
        if json.loads(store.get_bytes(layout.dataset_key(version, "manifest.json")))["content_sha256"] == content_hash:
            return version, True
    return f"v{len(versions) + 1:04d}", False


@dg.asset(
    deps=[selected_batch],
    group_name="labeling",
    kinds={"coco", "parquet"},
    check_specs=[
        checks.blocking(
            "labeled_set_annotations_valid",
            "labeled_set",
            "annotations reference selected frames; boxes inside images; categories known (GX)",
        ),
        checks.blocking(
            "labeled_set_groups_in_one_split", "labeled_set", "no duplicate group crosses train/val/test (GX)"
        ),
        checks.warning(
            "labeled_set_no_label_conflicts", "labeled_set", "no object boxed twice with different categories"
        ),
    ],
)
def labeled_set(
    context: dg.AssetExecutionContext,
    config: LabeledSetConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Import the labelers' COCO files, validate them, split by duplicate group, version the dataset."""
    store = object_store.store()
    selected = store.read_tables(layout.table_prefix("selected_batch"))
    if selected is None:
        raise dg.Failure("no selected batch yet: materialize a selected_batch round first")
    rounds = sorted(selected["round"].unique())
    categories = _round_categories(store, rounds)
    imports = [
        labels.import_coco(store.get_bytes(obj.key).decode("utf-8", "replace"), obj.key, selected, categories)
        for obj in store.list(config.annotations_prefix)
        if obj.key.endswith(".json")
    ]
    if not imports:
        raise dg.Failure(f"no annotation files under {store.uri(config.annotations_prefix)}")
    accepted = pd.concat([i.accepted for i in imports], ignore_index=True)
    rejected = pd.concat([i.rejected for i in imports], ignore_index=True)
    labeled = sorted({f for i in imports for f in i.labeled_frames})

    groups = store.read_table(layout.table_key("duplicate_groups")).set_index("frame_id")["group_id"]
    frames = selected[selected["frame_id"].isin(labeled)].drop_duplicates("frame_id").reset_index(drop=True)
    frames["group_id"] = frames["frame_id"].map(groups).fillna(frames["group_id"])
    frames["split"] = labels.split_by_group(frames["group_id"])
    size = frames.set_index("frame_id")[["width", "height"]]
    accepted = accepted.join(size, on="frame_id")
    accepted["inside_image"] = (
        (accepted["x"] >= 0) & (accepted["y"] >= 0)
        & (accepted["x"] + accepted["w"] <= accepted["width"] + 0.5)
        & (accepted["y"] + accepted["h"] <= accepted["height"] + 0.5)
    )  # fmt: skip
    conflicts = labels.label_conflicts(accepted)
    split_counts = frames.groupby("group_id")["split"].nunique().rename("splits").reset_index()
    results = [
        checks.from_validation(
            "labeled_set_annotations_valid",
            expectations.validate(accepted, "annotations", suites.annotations(list(frames["frame_id"]), categories)),
            accepted=len(accepted),
            rejected=len(rejected),
            rejected_examples=list(rejected["reason"][:10]) or "none",
        ),
        checks.from_validation(
            "labeled_set_groups_in_one_split",
            expectations.validate(split_counts, "splits", suites.splits_by_group(), "group_id"),
        ),
        checks.from_assertion(
            "labeled_set_no_label_conflicts",
            conflicts.empty,
            severity=dg.AssetCheckSeverity.WARN,
            conflicts=len(conflicts),
            conflict_examples=dg.MetadataValue.json(conflicts.head(10).to_dict("records"))
            if len(conflicts)
            else "none",
        ),
    ]
    failed = checks.blocking_failures(results)
    metadata = {
        "rounds": dg.MetadataValue.json(rounds),
        "labeled_frames": len(frames),
        "annotations_accepted": len(accepted),
        "annotations_rejected": len(rejected),
        "label_conflicts": len(conflicts),
        "per_class": dg.MetadataValue.json(accepted["category"].value_counts().to_dict()),
        "per_split": dg.MetadataValue.json(frames["split"].value_counts().to_dict()),
    }
    if failed:  # the previous labeled set and dataset versions stay as they were
        store.write_table(layout.rejected_table_key("labeled_set", "annotations"), accepted)
        return dg.MaterializeResult(metadata={**metadata, "published": False}, check_results=results)

    version, existed = _publish_dataset(store, frames, accepted, categories, rounds)
    store.write_table(layout.table_key("labeled_set", "annotations"), accepted)
    store.write_table(layout.table_key("labeled_set", "rejected"), rejected)
    store.write_table(layout.table_key("labeled_set", "frames"), frames)
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "dataset_version": version,
            "dataset_unchanged": existed,
            "dataset": dg.MetadataValue.path(store.uri(layout.dataset_key(version, ""))),
            "published": True,
        },
        check_results=results,
    )


def _publish_dataset(store, frames, annotations, categories, rounds) -> tuple[str, bool]:
    files = {
        f"{split}.json": json.dumps(
            labels.coco_dataset(frames[frames["split"] == split], annotations, categories), indent=1, sort_keys=True
        ).encode()
        for split, _ in labels.SPLITS
    }
    content_hash = hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()
    version, existed = _next_version(store, content_hash)
    if existed:
        return version, True
    for name, data in files.items():
        store.put_bytes(layout.dataset_key(version, name), data)
    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "rounds": rounds,
        "content_sha256": content_hash,
        "counts": {
            split: {
                "images": int((frames["split"] == split).sum()),
                "annotations": int(
                    annotations["frame_id"].isin(frames.loc[frames["split"] == split, "frame_id"]).sum()
                ),
            }
            for split, _ in labels.SPLITS
        },
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    # the manifest goes last: a version without one is incomplete and is never listed
    store.put_bytes(layout.dataset_key(version, "manifest.json"), json.dumps(manifest, indent=1).encode())
    return version, False
