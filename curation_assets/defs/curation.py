"""duplicate_groups and outliers: global assets over every published video."""

import json
import time
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import geometry, layout
from curation_assets.core.duplicates import DuplicateParams, extend_groups, find_duplicate_groups, match_to_corpus
from curation_assets.core.ids import point_id_for, video_id_of
from curation_assets.core.outliers import REASONS, OutlierParams, corrupt_outliers, score_outliers
from curation_assets.core.progress import Stopwatch
from curation_assets.defs import checks
from curation_assets.defs.reports import largest_groups, outliers_by_reason, picture_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import ObjectStore
from resources.vector_store import Where

# Re-run when any video's embeddings land, not on a timer; wait while some are in flight.
# (eager() would wait forever for a video that failed and never materialised.) The assets it
# drives declare the step before them only, so a new video refreshes them in one run in
# order; the tables they read further up (raw_frames, frame_embeddings) are their ancestors.
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


def _tables(store: ObjectStore, asset: str, videos: set[str] | None) -> pd.DataFrame | None:
    """Every published table of a per-video asset, or only ``videos``' tables."""
    keep = None if videos is None else (lambda key: layout.partition_of(key, asset) in videos)
    return store.read_tables(layout.table_prefix(asset), keep)


def load_corpus(store: ObjectStore, vector_name: str, videos: set[str] | None = None) -> Corpus | None:
    """Published frames with vectors: every video's, or only ``videos``' (None when they have none)."""
    frames = _tables(store, "raw_frames", videos)
    vecs = _tables(store, "frame_embeddings", videos)
    if videos is not None and (frames is None or vecs is None):
        return None
    if frames is None or vecs is None:
        raise dg.Failure(
            "no published frames with embeddings yet: materialize raw_frames and frame_embeddings first",
            allow_retries=False,
        )
    vecs = vecs[vecs["vector_name"] == vector_name][["frame_id", "vector"]]
    joined = frames.merge(vecs, on="frame_id", how="inner").sort_values("frame_id").reset_index(drop=True)
    if joined.empty and videos is not None:
        return None
    if joined.empty:
        raise dg.Failure(f"no frames embedded with {vector_name} yet", allow_retries=False)
    vectors = np.stack(joined.pop("vector").to_numpy()).astype(np.float32)
    return Corpus(joined, vectors, frames[frames["corrupt"]].reset_index(drop=True))


class DuplicateConfig(dg.Config):
    """Unset thresholds come from the embedding model's calibration (core/models.py)."""

    near_cosine: float | None = Field(default=None, description="Embedding cosine for near copies (model's).")
    near_phash_distance: int | None = Field(default=None, description="... and pHash bits apart at most (model's).")
    scene_cosine: float | None = Field(
        default=None, description="Embedding cosine alone for the same scene re-shot (model's)."
    )
    identical_phash_distance: int = Field(
        default=DuplicateParams.identical_phash_distance, description="pHash bits apart that mean a copy outright."
    )
    incremental: bool = Field(
        default=True,
        description="Match only newly embedded videos against the existing groups, through the vector store; "
        "false rebuilds every group (and re-elects representatives).",
    )

    def params(self, calibration) -> DuplicateParams:
        return DuplicateParams.for_model(
            calibration,
            near_cosine=self.near_cosine,
            near_phash_distance=self.near_phash_distance,
            scene_cosine=self.scene_cosine,
            identical_phash_distance=self.identical_phash_distance,
        )


def verifier(store: ObjectStore, frames: pd.DataFrame):
    """Geometric verification between two rows of ``frames``, from their stored JPEGs
    (keypoints computed once per frame)."""
    uris = frames["uri"].to_numpy()
    found: dict[int, geometry.Keypoints] = {}

    def points(row: int) -> geometry.Keypoints:
        if row not in found:
            found[row] = geometry.keypoints(store.get_bytes(store.key_for_uri(uris[row])))
        return found[row]

    return lambda a, b: geometry.inliers(points(a), points(b))


def _embedding_inputs(store: ObjectStore) -> dict[str, str]:
    """Each video's published vector table -> its fingerprint."""
    prefix = layout.table_prefix("frame_embeddings")
    return {
        layout.partition_of(o.key, "frame_embeddings"): o.fingerprint
        for o in store.list(prefix)
        if o.key.endswith(".parquet")
    }


def _new_videos(store: ObjectStore, inputs: dict[str, str], settings: dict) -> set[str] | None:
    """Videos added since the last build, when only additions happened; None means rebuild."""
    if not (store.exists(layout.state_key("duplicate_groups")) and store.exists(layout.table_key("duplicate_groups"))):
        return None
    state = json.loads(store.get_bytes(layout.state_key("duplicate_groups")))
    before = state["inputs"]
    unchanged = state["settings"] == settings and all(inputs.get(v) == f for v, f in before.items())
    new = set(inputs) - set(before)
    return new if unchanged and new else None


def _extend(store: ObjectStore, vs, collection: str, vector_name: str, new: set[str], params: DuplicateParams):
    """Group the new videos' frames, then match each new group's leader with the existing
    groups' representatives through the vector store: work grows with the new videos."""
    previous = store.read_table(layout.table_key("duplicate_groups"))
    corpus = load_corpus(store, vector_name, new)
    if corpus is None:  # nothing readable in the new videos: nothing to add
        return previous, list(previous["frame_id"]), 0
    new_groups = find_duplicate_groups(corpus.frames, corpus.vectors, params, verifier(store, corpus.frames))
    leader_rows = np.flatnonzero(new_groups["is_representative"].to_numpy())
    vs.build_index(collection)
    group_of = dict(zip(previous["frame_id"], previous["group_id"]))
    hits = vs.nearest_many(
        collection, vector_name, corpus.vectors[leader_rows], params.neighbors, Where(exclude_videos=sorted(new))
    )
    # per leader, the existing groups its neighbours belong to, nearest first
    hit_groups = [
        list(dict.fromkeys(group_of[p["frame_id"]] for _, _, p in row if p["frame_id"] in group_of)) for row in hits
    ]
    rep_ids = sorted(set().union(*hit_groups))
    rep_vectors, rep_payloads = (
        vs.retrieve(collection, vector_name, [point_id_for(r) for r in rep_ids]) if rep_ids else (np.zeros((0, 1)), [])
    )
    # points stored before a payload field existed lack it: NaN, and the rule that needs it stays off
    described = ("phash", "brightness", "contrast", "edge_density")
    reps = pd.DataFrame({"frame_id": rep_ids, **{c: [p.get(c, np.nan) for p in rep_payloads] for c in described}})
    row_of_rep = {r: i for i, r in enumerate(rep_ids)}
    candidates = np.full((len(leader_rows), params.neighbors), -1)
    for n, groups_near in enumerate(hit_groups):
        candidates[n, : len(groups_near)] = [row_of_rep[g] for g in groups_near]
    leaders = corpus.frames.iloc[leader_rows]
    match, _ = match_to_corpus(leaders, corpus.vectors[leader_rows], reps, rep_vectors, candidates, params)
    joins = {new_groups.at[i, "group_id"]: rep_ids[m] for i, m in zip(leader_rows, match) if m >= 0}
    vectors_of = {rep_ids[m]: rep_vectors[m] for m in match if m >= 0}
    groups = extend_groups(previous, new_groups, corpus.vectors, joins, vectors_of)
    return groups, [*previous["frame_id"], *corpus.frames["frame_id"]], len(joins)


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["frame_embeddings"],  # and its ancestor raw_frames
    pool="qdrant",  # new videos are matched through the vector store
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
@transient_only
def duplicate_groups(
    context: dg.AssetExecutionContext,
    config: DuplicateConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
    vector_store: VectorStoreResource,
):
    """Group exact, temporal and near copies across all videos; pick the best frame of each.

    New videos are matched against the existing groups through the vector store (a frame
    that copies an old one joins the old group); anything else rebuilds every group."""
    store = object_store.store()
    model = embedder.embedder()
    vector_name = model.vector_name
    params = config.params(model.calibration)
    settings = {"vector_name": vector_name, **params.__dict__}
    inputs = _embedding_inputs(store)
    new = _new_videos(store, inputs, settings) if config.incremental else None
    watch = Stopwatch()
    started = time.perf_counter()
    if new:
        collection = vector_store.collection_for(vector_name)
        with watch.stage("grouping"), vector_store.open() as vs:
            groups, expected, joined = _extend(store, vs, collection, vector_name, new, params)
        mode = f"incremental: {len(new)} new videos, {joined} new groups joined existing ones"
    else:
        with watch.stage("read tables"):
            corpus = load_corpus(store, vector_name)
        with watch.stage("grouping"):  # geometric checks included
            groups = find_duplicate_groups(corpus.frames, corpus.vectors, params, verifier(store, corpus.frames))
        expected = list(corpus.frames["frame_id"])
        mode = f"full: {len(corpus.frames)} frames"
        picture_frames = corpus.frames
    elapsed = time.perf_counter() - started
    context.log.info(f"duplicate_groups {mode} in {elapsed:.1f} s")

    with watch.stage("checks"):
        reps = groups.groupby("group_id")["is_representative"].sum().rename("representatives").reset_index()
        results = [
            checks.from_validation(
                "duplicate_groups_cover_frames",
                expectations.validate(groups, "duplicate_groups", suites.duplicate_groups(expected)),
            ),
            checks.from_validation(
                "duplicate_groups_one_representative",
                expectations.validate(reps, "duplicate_groups_reps", suites.one_representative_per_group(), "group_id"),
            ),
        ]
    with watch.stage("write table"):
        verdict = checks.publish(store, results, "duplicate_groups", table=groups)
        if verdict.published:  # what the next run extends
            state = {"settings": settings, "inputs": inputs}
            store.put_bytes(layout.state_key("duplicate_groups"), json.dumps(state, sort_keys=True).encode())
    n_groups = int(groups["group_id"].nunique())
    with watch.stage("pictures"):
        if new:  # only the pictured groups' videos: the old ones are not in memory
            top = groups.drop_duplicates("group_id").nlargest(6, "group_size")["group_id"]
            pictured = {video_id_of(f) for f in groups.loc[groups["group_id"].isin(top), "frame_id"]}
            picture_frames = _tables(store, "raw_frames", pictured)
        pictures = picture_metadata(store, "largest_groups", largest_groups(picture_frames, groups))
    reason_counts = groups["reason"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "frames": len(groups),
            "videos": len(inputs),
            "mode": mode,
            "groups": n_groups,
            "duplicate_frames": len(groups) - n_groups,
            "ratio_removed": round(1 - n_groups / len(groups), 3),
            "largest_group": int(groups["group_size"].max()),
            **{f"frames_{r}": int(reason_counts.get(r, 0)) for r in ("exact", "temporal", "near")},
            "thresholds": dg.MetadataValue.json(
                {**params.__dict__, "calibration": model.calibration.source, "model": model.model}
            ),
            "seconds": round(elapsed, 3),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
            "timings": dg.MetadataValue.json(watch.rounded()),
            **pictures,
        },
        check_results=results,
    )


class OutlierConfig(dg.Config):
    """Unset thresholds keep their defaults (core/outliers.py) or the model's calibration."""

    max_flagged_fraction: float = Field(default=0.3, description="WARN when more frames than this are flagged.")
    isolation_z: float | None = Field(default=None, description="Robust z of the k-th neighbour distance.")
    isolation_cosine: float | None = Field(default=None, description="k-th neighbour cosine below this (model's).")
    dark_p99: float | None = Field(default=None, description="Dark: 99 % of pixels below this luma.")
    bright_p01: float | None = Field(default=None, description="Bright: 99 % of pixels above this luma.")

    def params(self, calibration) -> OutlierParams:
        overrides = self.model_dump(exclude={"max_flagged_fraction"})
        return OutlierParams.for_model(calibration, **overrides)


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["duplicate_groups"],  # and its ancestors raw_frames, frame_embeddings
    group_name="curation",
    kinds={"numpy", "parquet"},
    automation_condition=ON_NEW_EMBEDDINGS,
    check_specs=[
        checks.blocking("outliers_every_frame_scored", "outliers", "every grouped frame has a score and a flag (GX)"),
        checks.warning("outliers_flagged_fraction", "outliers", "flagged fraction under the configured ceiling (GX)"),
    ],
)
@transient_only
def outliers(
    context: dg.AssetExecutionContext,
    config: OutlierConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Flag dark, bright, blurry, low-information, noisy, odd-sized and isolated frames."""
    store = object_store.store()
    model = embedder.embedder()
    watch = Stopwatch()
    with watch.stage("read tables"):
        corpus = load_corpus(store, model.vector_name)
        groups = store.read_table(layout.table_key("duplicate_groups"))
    in_groups = corpus.frames["frame_id"].isin(groups["frame_id"]).to_numpy()
    frames, vectors = corpus.frames[in_groups].reset_index(drop=True), corpus.vectors[in_groups]
    params = config.params(model.calibration)
    started = time.perf_counter()
    with watch.stage("scoring"):
        scored = score_outliers(frames, groups, vectors, params)
        unreadable = corpus.unreadable
        if len(unreadable):
            scored = pd.concat([scored, corrupt_outliers(unreadable)], ignore_index=True)
    elapsed = time.perf_counter() - started

    fraction = float(scored["is_outlier"].mean())
    with watch.stage("checks"):
        results = [
            checks.from_validation(
                "outliers_every_frame_scored",
                expectations.validate(
                    scored, "outliers", suites.outlier_scores([*frames["frame_id"], *unreadable["frame_id"]])
                ),
            ),
            checks.from_validation(
                "outliers_flagged_fraction",
                expectations.validate(
                    scored, "outliers_fraction", suites.flagged_fraction(config.max_flagged_fraction)
                ),
                severity=dg.AssetCheckSeverity.WARN,
                flagged_fraction=round(fraction, 3),
                ceiling=config.max_flagged_fraction,
            ),
        ]
    with watch.stage("write table"):
        verdict = checks.publish(store, results, "outliers", table=scored)
    with watch.stage("pictures"):
        pictures = picture_metadata(store, "outliers_by_reason", outliers_by_reason(frames, scored, REASONS))
    return dg.MaterializeResult(
        metadata={
            "frames": len(scored),
            "outliers": int(scored["is_outlier"].sum()),
            "flagged_fraction": round(fraction, 3),
            **{f"flag_{r}": int(scored[r].sum()) for r in REASONS},
            "thresholds": dg.MetadataValue.json({**params.__dict__, "calibration": model.calibration.source}),
            "seconds": round(elapsed, 3),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
            "timings": dg.MetadataValue.json(watch.rounded()),
            **pictures,
        },
        check_results=results,
    )
