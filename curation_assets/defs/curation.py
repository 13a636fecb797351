"""duplicate_groups and outliers: global assets over every published video."""

import time
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
from curation_assets.core.outliers import REASONS, OutlierParams, corrupt_outliers, score_outliers
from curation_assets.defs import checks
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.reports import largest_groups, outliers_by_reason, picture_metadata
from curation_assets.defs.retries import TRANSIENT
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

# Re-run when any video's embeddings land, not on a timer; wait while some are in flight.
# (eager() would wait forever for a video that failed and never materialised.)
ON_NEW_EMBEDDINGS = (
    dg.AutomationCondition.any_deps_updated().since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)


@dataclass
class Corpus:
    """Every published frame that has a vector from the current model, sorted by frame_id,
    and the frames that could not be read at all (no pixels, so no vector)."""

    frames: pd.DataFrame
    vectors: np.ndarray
    unreadable: pd.DataFrame


def load_corpus(store: ObjectStore, vector_name: str) -> Corpus:
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    vecs = store.read_tables(layout.table_prefix("frame_embeddings"))
    if frames is None or vecs is None:
        raise dg.Failure(
            "no published frames with embeddings yet: materialize raw_frames and frame_embeddings first",
            allow_retries=False,
        )
    vecs = vecs[vecs["vector_name"] == vector_name][["frame_id", "vector"]]
    joined = frames.merge(vecs, on="frame_id", how="inner").sort_values("frame_id").reset_index(drop=True)
    if joined.empty:
        raise dg.Failure(f"no frames embedded with {vector_name} yet", allow_retries=False)
    vectors = np.stack(joined.pop("vector").to_numpy()).astype(np.float32)
    return Corpus(joined, vectors, frames[frames["corrupt"]].reset_index(drop=True))


class DuplicateConfig(dg.Config):
    near_cosine: float = Field(default=DuplicateParams.near_cosine, description="Embedding cosine for near copies.")
    near_phash_distance: int = Field(
        default=DuplicateParams.near_phash_distance, description="... and pHash bits apart at most."
    )
    identical_phash_distance: int = Field(
        default=DuplicateParams.identical_phash_distance, description="pHash bits apart that mean a copy outright."
    )


@dg.asset(
    retry_policy=TRANSIENT,
    deps=[frame_embeddings],
    group_name="curation",
    kinds={"numpy", "parquet"},
    automation_condition=ON_NEW_EMBEDDINGS,
    check_specs=[
        checks.blocking(
            "duplicate_groups_cover_frames", "duplicate_groups", "every embedded frame in exactly one group (GX)"
        ),
        checks.blocking(
            "duplicate_groups_one_representative", "duplicate_groups", "exactly one representative per group (GX)"
        ),
    ],
)
def duplicate_groups(
    context: dg.AssetExecutionContext,
    config: DuplicateConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Group exact, temporal and near copies across all videos; pick the best frame of each."""
    store = object_store.store()
    corpus = load_corpus(store, embedder.embedder().vector_name)
    params = DuplicateParams(config.near_cosine, config.near_phash_distance, config.identical_phash_distance)
    started = time.perf_counter()
    groups = find_duplicate_groups(corpus.frames, corpus.vectors, params)
    elapsed = time.perf_counter() - started

    reps = groups.groupby("group_id")["is_representative"].sum().rename("representatives").reset_index()
    results = [
        checks.from_validation(
            "duplicate_groups_cover_frames",
            expectations.validate(groups, "duplicate_groups", suites.duplicate_groups(list(corpus.frames["frame_id"]))),
        ),
        checks.from_validation(
            "duplicate_groups_one_representative",
            expectations.validate(reps, "duplicate_groups_reps", suites.one_representative_per_group(), "group_id"),
        ),
    ]
    failed = checks.blocking_failures(results)
    key = layout.rejected_table_key("duplicate_groups") if failed else layout.table_key("duplicate_groups")
    store.write_table(key, groups)
    n_groups = int(groups["group_id"].nunique())
    reason_counts = groups["reason"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "frames": len(groups),
            "videos": int(corpus.frames["video_id"].nunique()),
            "groups": n_groups,
            "duplicate_frames": len(groups) - n_groups,
            "ratio_removed": round(1 - n_groups / len(groups), 3),
            "largest_group": int(groups["group_size"].max()),
            **{f"frames_{r}": int(reason_counts.get(r, 0)) for r in ("exact", "temporal", "near")},
            "near_cosine": params.near_cosine,
            "near_phash_distance": params.near_phash_distance,
            "seconds": round(elapsed, 3),
            "table": dg.MetadataValue.path(store.uri(key)),
            **picture_metadata(store, "largest_groups", largest_groups(corpus.frames, groups)),
        },
        check_results=results,
    )


class OutlierConfig(dg.Config):
    max_flagged_fraction: float = Field(default=0.3, description="WARN when more frames than this are flagged.")
    isolation_z: float = OutlierParams.isolation_z
    dark_brightness: float = OutlierParams.dark_brightness
    bright_brightness: float = OutlierParams.bright_brightness
    blurry_ratio: float = OutlierParams.blurry_ratio


@dg.asset(
    retry_policy=TRANSIENT,
    deps=[duplicate_groups],
    group_name="curation",
    kinds={"numpy", "parquet"},
    automation_condition=ON_NEW_EMBEDDINGS,
    check_specs=[
        checks.blocking("outliers_every_frame_scored", "outliers", "every grouped frame has a score and a flag (GX)"),
        checks.warning("outliers_flagged_fraction", "outliers", "flagged fraction under the configured ceiling (GX)"),
    ],
)
def outliers(
    context: dg.AssetExecutionContext,
    config: OutlierConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Flag dark, bright, blurry, low-information, noisy, odd-sized and isolated frames."""
    store = object_store.store()
    corpus = load_corpus(store, embedder.embedder().vector_name)
    groups = store.read_table(layout.table_key("duplicate_groups"))
    in_groups = corpus.frames["frame_id"].isin(groups["frame_id"]).to_numpy()
    frames, vectors = corpus.frames[in_groups].reset_index(drop=True), corpus.vectors[in_groups]
    params = OutlierParams(
        dark_brightness=config.dark_brightness,
        bright_brightness=config.bright_brightness,
        blurry_ratio=config.blurry_ratio,
        isolation_z=config.isolation_z,
    )
    started = time.perf_counter()
    scored = score_outliers(frames, groups, vectors, params)
    unreadable = corpus.unreadable
    if len(unreadable):
        scored = pd.concat([scored, corrupt_outliers(unreadable)], ignore_index=True)
    elapsed = time.perf_counter() - started

    fraction = float(scored["is_outlier"].mean())
    results = [
        checks.from_validation(
            "outliers_every_frame_scored",
            expectations.validate(
                scored, "outliers", suites.outlier_scores([*frames["frame_id"], *unreadable["frame_id"]])
            ),
        ),
        checks.from_validation(
            "outliers_flagged_fraction",
            expectations.validate(scored, "outliers_fraction", suites.flagged_fraction(config.max_flagged_fraction)),
            severity=dg.AssetCheckSeverity.WARN,
            flagged_fraction=round(fraction, 3),
            ceiling=config.max_flagged_fraction,
        ),
    ]
    failed = checks.blocking_failures(results)
    key = layout.rejected_table_key("outliers") if failed else layout.table_key("outliers")
    store.write_table(key, scored)
    return dg.MaterializeResult(
        metadata={
            "frames": len(scored),
            "outliers": int(scored["is_outlier"].sum()),
            "flagged_fraction": round(fraction, 3),
            **{f"flag_{r}": int(scored[r].sum()) for r in REASONS},
            "thresholds": dg.MetadataValue.json(params.__dict__),
            "seconds": round(elapsed, 3),
            "table": dg.MetadataValue.path(store.uri(key)),
            **picture_metadata(store, "outliers_by_reason", outliers_by_reason(frames, scored, REASONS)),
        },
        check_results=results,
    )
