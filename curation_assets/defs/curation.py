"""duplicate_groups and outliers: global assets over every published source, built one new
source at a time against the vector store; a rebuild is the explicit ``rebuild_curation`` job."""

import json
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import geometry, layout
from curation_assets.core.duplicates import (
    GROUP_COLUMNS,
    DuplicateParams,
    extend_groups,
    find_duplicate_groups,
    match_to_corpus,
    timed,
)
from curation_assets.core.duplicates import _finish as finish_groups
from curation_assets.core.ids import point_id_for, video_id_of
from curation_assets.core.incremental import (
    RunningSummary,
    in_chunks,
    judge_isolation,
    kth_frame_distance,
    merge_neighbours,
    plan_grouping,
    plan_scoring,
)
from curation_assets.core.neighbors import knn_graph
from curation_assets.core.outliers import (
    REASONS,
    OutlierParams,
    corrupt_outliers,
    score_outliers,
)
from curation_assets.core.progress import Stopwatch
from curation_assets.defs import checks
from curation_assets.defs.reports import largest_groups, outliers_by_reason, picture_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import ObjectStore
from resources.vector_store import VectorStore, Where

# On a source's run that an ingest_batch run started: the batch curates its sources itself once
# they are in (warm processes, no second run), so their updates are not the automation's to follow.
BATCH_TAG = "curation/batch"
DEPS_UPDATED = dg.AutomationCondition.any_deps_match(
    (
        dg.AutomationCondition.newly_updated()
        & ~dg.AutomationCondition.executed_with_root_target()
        & ~dg.AutomationCondition.all_new_updates_have_run_tags(tag_keys={BATCH_TAG})
    ).with_label("newly_updated_outside_a_batch")
    | dg.AutomationCondition.will_be_requested()
).with_label("any_deps_updated")
# Re-run when any video's embeddings land, not on a timer; wait while some are in flight.
# (eager() would wait forever for a video that failed and never materialised.)
ON_NEW_EMBEDDINGS = (
    DEPS_UPDATED.since_last_handled()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
)


def following(*also_reads: str) -> dg.AutomationCondition:
    """``ON_NEW_EMBEDDINGS`` for an asset that also reads tables further up: they are declared
    deps (lineage is the data flow), but only the step before it triggers it, so a new video
    refreshes the chain once, in order."""
    return ON_NEW_EMBEDDINGS.replace(DEPS_UPDATED, DEPS_UPDATED.ignore(dg.AssetSelection.assets(*also_reads)))


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
        description="Match only newly embedded sources against the stored groups, through the vector store; "
        "false rebuilds every group (and re-elects representatives): the rebuild_curation job.",
    )
    rebuild_sources_at_once: int = Field(
        default=32,
        description="A rebuild groups this many sources at once (memory: theirs), each chunk matched against "
        "the ones before through the vector store.",
    )

    def params(self, calibration) -> DuplicateParams:
        return DuplicateParams.for_model(
            calibration,
            near_cosine=self.near_cosine,
            near_phash_distance=self.near_phash_distance,
            scene_cosine=self.scene_cosine,
            identical_phash_distance=self.identical_phash_distance,
        )


# keypoints of this many frames stay in memory while verifying: ~0.2 MB each (ORB descriptors, the 8-bit
# picture at 512 x 384), ~0.85 GB when full (a 32-source rebuild chunk fills it; 3.3 GB with float32 pictures)
KEYPOINTS_KEPT = 4096


def verifier(store: ObjectStore, frames: pd.DataFrame):
    """Geometric verification between two rows of ``frames``, from their stored JPEGs
    (keypoints computed once per frame while it is among the ``KEYPOINTS_KEPT`` last used:
    a rebuild's chunk of 32 sources would otherwise keep every frame's)."""
    uris = frames["uri"].to_numpy()
    found: OrderedDict[int, geometry.Keypoints] = OrderedDict()

    def points(row: int) -> geometry.Keypoints:
        if row in found:
            found.move_to_end(row)
        else:
            found[row] = geometry.keypoints(store.get_bytes(store.key_for_uri(uris[row])))
            if len(found) > KEYPOINTS_KEPT:
                found.popitem(last=False)
        return found[row]

    return lambda a, b: geometry.inliers(points(a), points(b))


def _match_verifier(store: ObjectStore, leaders: pd.DataFrame, reps: pd.DataFrame):
    """Geometric verification of a new group's leader (row of ``leaders``) against a stored
    representative (row of ``reps``, its address from the vector-store payload); -1 (no
    judgement) for a representative stored without an address under this root (points stored
    before the payload held one, or a root since moved: matching still works by the rules)."""
    check = verifier(store, pd.DataFrame({"uri": [*leaders["uri"], *reps["uri"]]}))
    known = np.array([isinstance(uri, str) and _under(store, uri) for uri in reps["uri"]], dtype=bool)
    return lambda leader, rep: check(leader, len(leaders) + rep) if known[rep] else -1


def _under(store: ObjectStore, uri: str) -> bool:
    try:
        store.key_for_uri(uri)
    except ValueError:
        return False
    return True


# Curation results are partitioned like their inputs: one table per source under
# tables/<asset>/<source>.parquet, written once when the source is curated, plus a small
# state (tables/<asset>/_state.json: sources done, settings, counts, running summaries).
# Group id, role and the representative's group size live as payload in the vector store,
# which answers the new source's questions about everything stored (k-NN with filters).
STATE_VERSION = 2
LEGACY_PARTITION = "all"  # the single corpus-sized table of the first layout
REPRESENTATIVE, MEMBER = "representative", "member"


def _embedding_inputs(store: ObjectStore) -> dict[str, str]:
    """Each source's published vector table -> its fingerprint (a listing: no table is read)."""
    prefix = layout.table_prefix("frame_embeddings")
    return {
        layout.partition_of(o.key, "frame_embeddings"): o.fingerprint
        for o in store.list(prefix)
        if o.key.endswith(".parquet")
    }


def read_state(store: ObjectStore, asset: str) -> dict | None:
    """What ``asset`` was last built from, or None (never built, or by the first layout)."""
    key = layout.state_key(asset)
    if not store.exists(key):
        return None
    state = json.loads(store.get_bytes(key))
    return state if state.get("version") == STATE_VERSION else None


def _write_state(store: ObjectStore, asset: str, state: dict) -> None:
    store.put_bytes(layout.state_key(asset), json.dumps({**state, "version": STATE_VERSION}, sort_keys=True).encode())


def _published(store: ObjectStore, asset: str, sources: set[str] | None = None) -> pd.DataFrame | None:
    """The per-source tables of a curation asset (only ``sources``' when given); an unmigrated
    root's single table when there are none."""

    def keep(key: str) -> bool:
        source = layout.partition_of(key, asset)
        return source != LEGACY_PARTITION and (sources is None or source in sources)

    tables = store.read_tables(layout.table_prefix(asset) + "/", keep)
    if tables is None and sources is None and store.exists(layout.table_key(asset, LEGACY_PARTITION)):
        return store.read_table(layout.table_key(asset, LEGACY_PARTITION))
    return tables


def read_groups(store: ObjectStore) -> pd.DataFrame | None:
    """Every frame's duplicate group (``core.duplicates.GROUP_COLUMNS``), sizes and reasons as of
    now: a table written when its source joined holds the sizes of then, so they are recounted."""
    groups = _published(store, "duplicate_groups")
    return None if groups is None else finish_groups(groups)


def read_outliers(store: ObjectStore) -> pd.DataFrame | None:
    """Every scored frame's outlier row (``core.outliers.score_outliers``' columns)."""
    return _published(store, "outliers")


def _group_payloads(groups: pd.DataFrame, sizes: bool = True) -> dict[str, dict]:
    """Vector-store payload of each grouped frame: its group, its role, and on the
    representative the group's size (what isolation weighs a stored neighbour by; left out
    with ``sizes`` false, for a rebuild to write once its last chunk is in)."""
    reps = groups["is_representative"].to_numpy()
    return {
        frame_id: {"group_id": group_id, "group_role": REPRESENTATIVE if rep else MEMBER,
                   **({"group_size": int(size) if rep else None} if sizes or not rep else {})}
        for frame_id, group_id, rep, size in zip(groups["frame_id"], groups["group_id"], reps, groups["group_size"])
    }  # fmt: skip


def _publish_per_source(store: ObjectStore, results, asset: str, table: pd.DataFrame) -> list[checks.Verdict]:
    """The one publish path, once per source the table's rows belong to."""
    sources = table["frame_id"].map(video_id_of)
    return [checks.publish(store, results, asset, source, rows) for source, rows in table.groupby(sources, sort=True)]


def _prune_other_sources(store: ObjectStore, asset: str, verdicts: list[checks.Verdict]) -> int:
    """After a rebuild: drop the tables of sources no longer stored and the first layout's table."""
    keep = {v.key for v in verdicts} | {layout.state_key(asset)}
    return store.prune(layout.table_prefix(asset) + "/", keep)


def _group_new_sources(store: ObjectStore, vs, collection: str, vector_name: str, new: list[str],
                       params: DuplicateParams, corpus: Corpus | None = None, among: list[str] | None = None,
                       ) -> tuple[Corpus, pd.DataFrame, dict[str, str]] | None:  # fmt: skip
    """Group the new sources' frames, then match each new group's leader with the stored groups'
    representatives through the vector store: work grows with the new sources, not the corpus.
    ``among``: the only sources whose stored groups count (a rebuild's, regrouped before; the
    others' payload is the last build's). Returns the new sources' corpus, their rows (group
    sizes of joined groups still to be counted) and the joins (new group id -> stored group id)."""
    corpus = corpus or load_corpus(store, vector_name, set(new))
    if corpus is None:  # nothing readable in the new sources: nothing to add
        return None
    new_groups = find_duplicate_groups(corpus.frames, corpus.vectors, params, verifier(store, corpus.frames))
    leader_rows = np.flatnonzero(new_groups["is_representative"].to_numpy())
    roles = (REPRESENTATIVE, MEMBER)
    stored = Where(exclude_videos=new, group_roles=roles) if among is None else Where(videos=among, group_roles=roles)
    hits = [[] for _ in leader_rows]  # a rebuild's first chunk: nothing stored to match
    if among is None or among:
        hits = vs.nearest_many(collection, vector_name, corpus.vectors[leader_rows], params.neighbors, stored)
    # per leader, the stored groups its neighbours belong to, nearest first
    hit_groups = [list(dict.fromkeys(p["group_id"] for _, _, p in row if p.get("group_id"))) for row in hits]
    rep_ids = sorted(set().union(*hit_groups))
    rep_vectors, rep_payloads = (
        vs.retrieve(collection, vector_name, [point_id_for(r) for r in rep_ids]) if rep_ids else (np.zeros((0, 1)), [])
    )
    # points stored before a payload field existed lack it: NaN, and the rule that needs it stays off
    described = ("phash", "brightness", "contrast", "edge_density", "uri")
    reps = pd.DataFrame({"frame_id": rep_ids, **{c: [p.get(c, np.nan) for p in rep_payloads] for c in described}})
    row_of_rep = {r: i for i, r in enumerate(rep_ids)}
    candidates = np.full((len(leader_rows), params.neighbors), -1)
    for n, groups_near in enumerate(hit_groups):
        candidates[n, : len(groups_near)] = [row_of_rep[g] for g in groups_near]
    leaders = corpus.frames.iloc[leader_rows]
    verify = _match_verifier(store, leaders, reps) if params.verify_cosine is not None else None
    stills = ~timed(corpus.frames)[leader_rows]  # a folder's matches are all checked, as its own joins are
    leader_vectors = corpus.vectors[leader_rows]
    match, _ = match_to_corpus(leaders, leader_vectors, reps, rep_vectors, candidates, params, verify, stills)
    joins = {new_groups.at[i, "group_id"]: rep_ids[m] for i, m in zip(leader_rows, match) if m >= 0}
    vectors_of = {rep_ids[m]: rep_vectors[m] for m in match if m >= 0}
    # the joined stored groups stand in as their representative's row alone; dropped after
    joined_reps = sorted(set(joins.values()))
    stand_ins = pd.DataFrame({"frame_id": joined_reps, "group_id": joined_reps, "is_representative": True,
                              "reason": "representative", "similarity": np.float32(1.0), "group_size": 1})  # fmt: skip
    groups = extend_groups(stand_ins, new_groups, corpus.vectors, joins, vectors_of).iloc[len(stand_ins) :]
    return corpus, groups.reset_index(drop=True), joins


def _count_joined(vs, collection: str, groups: pd.DataFrame, joined: set[str]) -> pd.DataFrame:
    """Sizes of the stored groups new frames joined, counted in the store (whose payload already
    holds the new frames, so a re-run counts the same)."""
    if not joined:
        return groups
    size = {g: vs.count_where(collection, Where(groups=[g])) for g in sorted(joined)}
    rows = groups["group_id"].isin(joined).to_numpy()
    groups = groups.copy()
    groups.loc[rows, "group_size"] = groups.loc[rows, "group_id"].map(size).astype(int)
    return groups


def _keep_groups(vs, collection: str, groups: pd.DataFrame, joined: set[str], sizes: Counter | None) -> pd.DataFrame:
    """The chunk's groups as payload, only where it changes. Incremental: a joined stored group's
    size is counted in the store and rewritten on its representative. A rebuild counts its
    groups' frames in ``sizes`` as its chunks come in (the store's other points still hold the
    last build's payload) and writes the representatives' sizes once, after its last chunk.
    Returns the rows with their groups' sizes."""
    if sizes is None:
        vs.set_changed_payloads(collection, _group_payloads(groups))
        groups = _count_joined(vs, collection, groups, joined)
        size = groups.drop_duplicates("group_id").set_index("group_id")["group_size"]
        vs.set_changed_payloads(collection, {g: {"group_size": int(size[g])} for g in sorted(joined)})
        return groups
    sizes.update(groups["group_id"])
    groups = groups.assign(group_size=groups["group_id"].map(sizes).astype(int))
    vs.set_changed_payloads(collection, _group_payloads(groups, sizes=False))
    return groups


CURATION_PAYLOAD = ("group_id", "group_role", "group_size", "isolation", "is_outlier", "outlier_reasons")


class _Written:
    """What a run wrote, chunk after chunk: counts, verdicts, the checks' worst outcome."""

    def __init__(self):
        self.frames = self.new_groups = self.joins = self.largest = 0
        self.reasons: dict[str, int] = {}
        self.verdicts: list[checks.Verdict] = []
        self.results: dict[str, dg.AssetCheckResult] = {}
        self.last_groups, self.last_frames = pd.DataFrame(columns=GROUP_COLUMNS), pd.DataFrame(columns=["frame_id"])

    def add(self, groups, frames, joins, results, verdicts) -> None:
        self.frames += len(groups)
        self.new_groups += int(groups.loc[~groups["group_id"].isin(set(joins.values())), "group_id"].nunique())
        self.joins += len(joins)
        self.largest = max(self.largest, int(groups["group_size"].max()) if len(groups) else 0)
        for reason, n in groups["reason"].value_counts().items():
            self.reasons[reason] = self.reasons.get(reason, 0) + int(n)
        self.verdicts += verdicts
        for r in results:  # the first failure stands for the run
            if r.check_name not in self.results or (self.results[r.check_name].passed and not r.passed):
                self.results[r.check_name] = r
        self.last_groups, self.last_frames = groups, frames

    @property
    def failed(self) -> list[str]:
        return checks.blocking_failures(list(self.results.values()))

    def check_results(self, names: list[str]) -> list[dg.AssetCheckResult]:
        note = "no readable frame in the new sources"
        return [self.results.get(n) or checks.from_assertion(n, True, note=note) for n in names]


def _group_checks(expectations, groups: pd.DataFrame, expected: list[str], stored_groups: set[str]):
    """Every expected frame once; every group not stored before has one representative here."""
    own = groups[~groups["group_id"].isin(stored_groups)]
    reps = own.groupby("group_id")["is_representative"].sum().rename("representatives").reset_index()
    return [
        checks.from_validation(
            "duplicate_groups_cover_frames",
            expectations.validate(groups, "duplicate_groups", suites.duplicate_groups(expected)),
        ),
        checks.from_validation(
            "duplicate_groups_one_representative",
            expectations.validate(reps, "duplicate_groups_reps", suites.one_representative_per_group(), "group_id"),
        ),
    ]


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["frame_embeddings", "raw_frames"],
    pool="qdrant",  # new sources are matched through the vector store
    group_name="curation",
    kinds={"numpy", "parquet", "qdrant"},
    automation_condition=following("raw_frames"),
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
def duplicate_groups(context: dg.AssetExecutionContext, config: DuplicateConfig,
                     object_store: ObjectStoreResource, embedder: EmbedderResource,
                     expectations: ExpectationsResource, vector_store: VectorStoreResource):  # fmt: skip
    """Group exact, temporal and near copies across all sources; pick the best frame of each.

    A new source is grouped alone, then matched against the stored groups through the vector
    store (a frame that copies a stored one joins its group; only that group changes); its
    rows go to its own table. Nothing new: nothing is done. A changed source, model or
    threshold, or ``incremental: false`` (the ``rebuild_curation`` job), rebuilds every group."""
    store, model = object_store.store(), embedder.embedder()
    params = config.params(model.calibration)
    settings = {"vector_name": model.vector_name, **params.__dict__}
    inputs = _embedding_inputs(store)
    state = read_state(store, "duplicate_groups")
    mode, sources = plan_grouping(state, inputs, settings, config.incremental)
    if mode == "unchanged":
        return _unchanged("duplicate_groups", state, GROUP_CHECKS)
    watch, started, incremental = Stopwatch(), time.perf_counter(), mode == "incremental"
    # a rebuild replays every source through the same path, a chunk at a time: memory stays
    # that of one chunk, and each chunk is matched against the chunks before it in the store
    chunks = [sources] if incremental else in_chunks(sources, config.rebuild_sources_at_once)
    payload_writes = VectorStore.payload_writes
    with vector_store.open() as vs:
        written = _group_chunks(store, vs, vector_store.collection_for(model.vector_name), model.vector_name,
                                chunks, params, expectations, incremental, watch)  # fmt: skip
    with watch.stage("write tables"):
        counts = _write_grouping_state(store, state, settings, inputs, written, incremental)
    elapsed = time.perf_counter() - started
    done = f"{len(sources)} new sources, {written.joins} new groups joined stored ones" if incremental else (
        f"{len(sources)} sources in {len(chunks)} chunks")  # fmt: skip
    context.log.info(f"duplicate_groups {mode}: {done}; {written.frames} frames written in {elapsed:.1f} s")
    with watch.stage("pictures"):  # the groups this run touched
        groups, frames = written.last_groups, written.last_frames
        pictures = picture_metadata(store, "largest_groups", largest_groups(frames, groups)) if len(groups) else {}
    metadata = _grouping_metadata(store, model, params, counts, len(inputs), f"{mode}: {done}", written, elapsed)
    metadata["payload_points_written"] = VectorStore.payload_writes - payload_writes  # what the index re-takes
    return dg.MaterializeResult(metadata={**metadata, "timings": dg.MetadataValue.json(watch.rounded()), **pictures},
                                check_results=written.check_results(GROUP_CHECKS))  # fmt: skip


GROUP_CHECKS = ["duplicate_groups_cover_frames", "duplicate_groups_one_representative"]


def _group_chunks(store: ObjectStore, vs, collection: str, vector_name: str, chunks: list[list[str]],
                  params: DuplicateParams, expectations, incremental: bool, watch: Stopwatch) -> _Written:  # fmt: skip
    """Group each chunk of sources against the store, check the rows it wrote, keep them as
    payload and publish one table per source; stops at the first chunk whose checks fail.

    A rebuild writes only the payload that changes: the engine moves a point whose payload is
    written out of its indexed segment, so rewriting every point (as clearing them all first
    did) made the next optimisation re-index the whole store (bench/RESULTS.md, issue 28). Its
    queries and counts admit only the sources it regrouped before (``regrouped``)."""
    written = _Written()
    vs.ensure_payload_indexes(collection)
    regrouped: list[str] | None = None if incremental else []
    sizes: Counter | None = None if incremental else Counter()  # a rebuild's groups: frames so far
    if not incremental:  # until the new state is written, nothing looks complete
        store.delete(layout.state_key("duplicate_groups"))
    for chunk in chunks:
        with watch.stage("read tables"):  # the chunk's own
            corpus = load_corpus(store, vector_name, set(chunk))
        if corpus is None:  # nothing readable in these sources: nothing to add
            continue
        with watch.stage("grouping"):  # geometric checks included
            # what ingest wrote. Not in a rebuild: its queries admit only the points it regrouped
            # itself, and those whose payload changed the engine's next optimisation re-indexes (at
            # the cost of a first build when most did: bench/RESULTS.md, issue 28); outliers builds
            # the index once, after
            if incremental:
                vs.build_index(collection)
            corpus, groups, joins = _group_new_sources(store, vs, collection, vector_name, chunk, params, corpus,
                                                       regrouped)  # fmt: skip
        joined = set(joins.values())
        with watch.stage("checks"):  # the rows this run wrote
            results = _group_checks(expectations, groups, list(corpus.frames["frame_id"]), joined)
        if not checks.blocking_failures(results):
            with watch.stage("vector store payload"):
                groups = _keep_groups(vs, collection, groups, joined, sizes)
        with watch.stage("write tables"):
            written.add(groups, corpus.frames, joins, results,
                        _publish_per_source(store, results, "duplicate_groups", groups))  # fmt: skip
        if written.failed:
            break
        if regrouped is not None:
            regrouped += sorted(set(groups["frame_id"].map(video_id_of)))
    if regrouped is not None and not written.failed:
        # the representatives' final sizes; and away with what the last build left on the points of
        # sources no longer stored (if any)
        with watch.stage("vector store payload"):
            vs.set_changed_payloads(collection, {g: {"group_size": n} for g, n in sizes.items()})
            stale = Where(exclude_videos=regrouped, group_roles=(REPRESENTATIVE, MEMBER))
            vs.delete_payload_keys(collection, CURATION_PAYLOAD, stale)
    return written


def _write_grouping_state(store: ObjectStore, state: dict | None, settings: dict, inputs: dict[str, str],
                          written: _Written, incremental: bool) -> dict[str, int]:  # fmt: skip
    """After a run whose checks passed: the state the next run plans from (a rebuild also drops
    the tables of sources no longer stored). Returns the corpus's counts."""
    counts = {"frames": written.frames, "groups": written.new_groups}
    if written.failed:
        return counts
    if incremental:
        counts = {k: state["counts"][k] + v for k, v in counts.items()}
    else:
        _prune_other_sources(store, "duplicate_groups", written.verdicts)
    counts["duplicate_frames"] = counts["frames"] - counts["groups"]
    # a new generation tells outliers to rebuild too
    generation = state["generation"] if incremental else f"{time.time_ns():x}"
    _write_state(store, "duplicate_groups", {"settings": settings, "inputs": inputs, "generation": generation,
                                             "counts": counts})  # fmt: skip
    return counts


def _grouping_metadata(store: ObjectStore, model, params: DuplicateParams, counts: dict, videos: int, mode: str,
                       written: _Written, elapsed: float) -> dict:  # fmt: skip
    return {
        "frames": counts["frames"],
        "groups": counts["groups"],
        "duplicate_frames": counts["frames"] - counts["groups"],
        "ratio_removed": round(1 - counts["groups"] / max(counts["frames"], 1), 3),
        "videos": videos,
        "mode": mode,
        "frames_written": written.frames,
        "sources_written": len(written.verdicts),
        "largest_group_written": written.largest,
        **{f"frames_{r}": int(written.reasons.get(r, 0)) for r in ("exact", "temporal", "near")},
        "thresholds": dg.MetadataValue.json(
            {**params.__dict__, "calibration": model.calibration.source, "model": model.model}
        ),
        "seconds": round(elapsed, 3),
        "tables": dg.MetadataValue.path(store.uri(layout.table_prefix("duplicate_groups") + "/")),
        "published": not written.failed,
    }


def _unchanged(asset: str, state: dict, check_names: list[str]) -> dg.MaterializeResult:
    """Nothing new since the last build: no table is read or written, the checks stand."""
    note = "nothing new since the last build: previous results stand"
    return dg.MaterializeResult(
        metadata={"mode": "unchanged", **state["counts"], "seconds": 0.0},
        check_results=[checks.from_assertion(name, True, note=note) for name in check_names],
    )


class OutlierConfig(dg.Config):
    """Unset thresholds keep their defaults (core/outliers.py) or the model's calibration."""

    max_flagged_fraction: float = Field(
        default=0.3, description="WARN when more of the frames a run scored than this are flagged."
    )
    isolation_z: float | None = Field(default=None, description="Robust z of the k-th neighbour distance.")
    isolation_cosine: float | None = Field(default=None, description="k-th neighbour cosine below this (model's).")
    dark_p99: float | None = Field(default=None, description="Dark: 99 % of pixels below this luma.")
    bright_p01: float | None = Field(default=None, description="Bright: 99 % of pixels above this luma.")
    incremental: bool = Field(
        default=True,
        description="Score only the sources grouped since the last build, against the store; false rescores "
        "every frame (and refreshes stored frames' isolation).",
    )

    rebuild_sources_at_once: int = Field(
        default=32, description="A rebuild scores this many sources at once, against every other in the store."
    )

    def params(self, calibration) -> OutlierParams:
        overrides = self.model_dump(exclude={"max_flagged_fraction", "incremental", "rebuild_sources_at_once"})
        return OutlierParams.for_model(calibration, **overrides)


def _isolation_distances(vs, collection: str, vector_name: str, vectors: np.ndarray, groups: pd.DataFrame,
                         sources: list[str], k: int, known: dict[str, float],
                         stored_isolation: bool = True) -> np.ndarray:  # fmt: skip
    """Per row of ``groups`` (the sources' frames, aligned with ``vectors``): its group's isolation,
    the distance by which k frames are reached among the sources' own groups and the k nearest
    stored representatives of other sources (weighted by group size, as
    ``core.outliers.isolation_scores`` does over a whole corpus). ``known`` (representative ->
    distance) gains these groups; a frame that joined a stored group takes that group's
    distance, from ``known`` or as stored in its representative's payload (not in a rebuild,
    where the payload holds the last build's: NaN)."""
    rep_rows = np.flatnonzero(groups["is_representative"].to_numpy())
    sizes = groups["group_size"].to_numpy()
    rep_vectors = np.asarray(vectors, dtype=np.float32)[rep_rows]
    n = len(rep_rows)
    local_sims, local_frames = np.full((n, 0), -np.inf), np.zeros((n, 0))
    if n > 1:
        nbr, sims = knn_graph(rep_vectors, min(k, n - 1))
        local_sims = np.where(nbr >= 0, sims, -np.inf)
        local_frames = np.where(nbr >= 0, sizes[rep_rows][np.where(nbr >= 0, nbr, 0)], 0)
    hits = vs.nearest_many(collection, vector_name, rep_vectors, k,
                           Where(exclude_videos=sources, group_roles=(REPRESENTATIVE,)))  # fmt: skip
    stored_sims, stored_frames = np.full((n, k), -np.inf), np.zeros((n, k))
    for i, row in enumerate(hits):
        stored_sims[i, : len(row)] = [s for _, s, _ in row]
        stored_frames[i, : len(row)] = [p.get("group_size") or 1 for _, _, p in row]
    merged = merge_neighbours((local_sims, local_frames), (stored_sims, stored_frames))
    known.update(zip(groups["frame_id"].to_numpy()[rep_rows], kth_frame_distance(*merged, k).tolist()))
    stored_reps = sorted(set(groups["group_id"]) - set(known))
    if stored_reps and not stored_isolation:
        known.update(dict.fromkeys(stored_reps, np.nan))
    elif stored_reps:
        _, payloads = vs.retrieve(collection, vector_name, [point_id_for(r) for r in stored_reps])
        known.update({r: p.get("isolation", np.nan) for r, p in zip(stored_reps, payloads)})
    return groups["group_id"].map(known).to_numpy(dtype=np.float32)


def _outlier_payloads(scored: pd.DataFrame, frames: pd.DataFrame, groups: pd.DataFrame) -> dict[str, dict]:
    """Each scored readable frame's flags as payload (an unreadable frame has no point); a
    representative also keeps its group's isolation (what a frame joining the group later takes)."""
    scored = scored[scored["frame_id"].isin(frames["frame_id"])]
    reps = set(groups.loc[groups["is_representative"], "frame_id"]) if len(frames) and len(groups) else set()
    return {
        f: {"is_outlier": bool(o), "outlier_reasons": r, **({"isolation": float(d)} if f in reps else {})}
        for f, o, r, d in zip(scored["frame_id"], scored["is_outlier"], scored["reasons"], scored["isolation"])
    }


def _grouped_state(store: ObjectStore) -> dict:
    """Grouping's state, which scoring follows (its generation, sources and group count)."""
    grouped = read_state(store, "duplicate_groups")
    if grouped is None:
        raise dg.Failure("no duplicate groups in this layout yet: materialize duplicate_groups first",
                         allow_retries=False)  # fmt: skip
    return grouped


def _unreadable(store: ObjectStore, sources: set[str] | None) -> pd.DataFrame:
    frames = _tables(store, "raw_frames", sources)
    return pd.DataFrame(columns=["frame_id"]) if frames is None else frames[frames["corrupt"]]


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["duplicate_groups", "raw_frames", "frame_embeddings"],
    pool="qdrant",  # stored neighbours come from the vector store
    group_name="curation",
    kinds={"numpy", "parquet", "qdrant"},
    automation_condition=following("raw_frames", "frame_embeddings"),
    check_specs=[
        checks.blocking("outliers_every_frame_scored", "outliers", "every grouped frame has a score and a flag (GX)"),
        checks.warning("outliers_flagged_fraction", "outliers", "flagged fraction under the configured ceiling (GX)"),
    ],
)
@transient_only
def outliers(context: dg.AssetExecutionContext, config: OutlierConfig, object_store: ObjectStoreResource,
             embedder: EmbedderResource, expectations: ExpectationsResource,
             vector_store: VectorStoreResource):  # fmt: skip
    """Flag dark, bright, blurry, low-information, noisy, odd-sized and isolated frames.

    A newly grouped source is scored alone (its rules judge a frame against its own source)
    and its isolation against the store's nearest representatives of other sources. A stored
    frame keeps the isolation it was scored with when later footage comes near it (or joins its
    group): the ``rebuild_curation`` job (``incremental: false``) refreshes every frame."""
    store, model = object_store.store(), embedder.embedder()
    params = config.params(model.calibration)
    settings = {"vector_name": model.vector_name, **params.__dict__}
    grouped, state = _grouped_state(store), read_state(store, "outliers")
    mode, todo = plan_scoring(state, grouped, settings, config.incremental)
    if mode == "unchanged":
        return _unchanged("outliers", state, OUTLIER_CHECKS)
    watch, started, incremental = Stopwatch(), time.perf_counter(), mode == "incremental"
    summary = RunningSummary.from_json(state["isolation"]) if incremental else RunningSummary()
    chunks = [todo] if incremental else in_chunks(todo, config.rebuild_sources_at_once)
    collection = vector_store.collection_for(model.vector_name)
    payload_writes = VectorStore.payload_writes
    with vector_store.open() as vs:
        scored, frames, aligned = _score_chunks(store, vs, collection, model.vector_name, chunks, params, summary,
                                                not incremental, grouped["counts"]["groups"], watch)  # fmt: skip
        elapsed = time.perf_counter() - started
        with watch.stage("checks"):  # the rows this run wrote
            results = _outlier_checks(expectations, scored, frames, config.max_flagged_fraction)
        failed = bool(checks.blocking_failures(results))
        if not failed and len(scored):
            with watch.stage("vector store payload"):
                # only what changes (a rebuild's too); a frame that is no longer its group's representative
                # loses the isolation it kept as one
                vs.set_changed_payloads(collection, _outlier_payloads(scored, frames, aligned), drop=("isolation",))
    with watch.stage("write tables"):
        verdicts = _publish_per_source(store, results, "outliers", scored) if len(scored) else []
        counts = _write_scoring_state(store, state, grouped, settings, todo, summary, scored, verdicts, failed,
                                      incremental)  # fmt: skip
    with watch.stage("pictures"):
        pictures = picture_metadata(store, "outliers_by_reason", outliers_by_reason(frames, scored, REASONS))
    mode = f"{mode}: {len(todo)} sources" if incremental else mode
    metadata = _scoring_metadata(store, params, model, counts, mode, scored, not failed, elapsed)
    metadata["payload_points_written"] = VectorStore.payload_writes - payload_writes  # what the index re-takes
    return dg.MaterializeResult(metadata={**metadata, "timings": dg.MetadataValue.json(watch.rounded()), **pictures},
                                check_results=results)  # fmt: skip


OUTLIER_CHECKS = ["outliers_every_frame_scored", "outliers_flagged_fraction"]
OUTLIER_COLUMNS = ["frame_id", "score", "is_outlier", "reasons", "isolation", *REASONS]


def _score_chunks(store: ObjectStore, vs, collection: str, vector_name: str, chunks: list[list[str]],
                  params: OutlierParams, summary: RunningSummary, exact: bool, n_groups: int,
                  watch: Stopwatch) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Score each chunk of sources by its own rules and its isolation against the whole store,
    then judge isolation (``core.incremental.judge_isolation``). Returns the scored rows
    (unreadable frames included), the readable frames (id, uri) and their group rows."""
    known: dict[str, float] = {}  # representative -> isolation distance, of the groups scored now
    parts, readable = [], []
    vs.build_index(collection)
    for chunk in chunks:  # a rebuild scores a chunk of sources at a time, against the whole store
        with watch.stage("read tables"):  # the chunk's own tables
            corpus = load_corpus(store, vector_name, set(chunk))
            groups = _published(store, "duplicate_groups", set(chunk))
            unreadable = _unreadable(store, set(chunk))
        if corpus is not None and groups is not None:
            in_groups = corpus.frames["frame_id"].isin(groups["frame_id"]).to_numpy()
            frames, vectors = corpus.frames[in_groups].reset_index(drop=True), corpus.vectors[in_groups]
            aligned = groups.set_index("frame_id").loc[frames["frame_id"]].reset_index()
            with watch.stage("scoring"):
                scored = score_outliers(frames, aligned, vectors, params)
            with watch.stage("isolation (vector store)"):
                scored["isolation"] = _isolation_distances(vs, collection, vector_name, vectors, aligned, chunk,
                                                           params.isolation_k, known, not exact)  # fmt: skip
            parts.append((scored, aligned))
            readable.append(frames[["frame_id", "uri"]])
        if len(unreadable):
            parts.append((corrupt_outliers(unreadable), None))
    parts = judge_isolation(parts, known, summary, exact, n_groups, params)
    scored = pd.concat([p for p, _ in parts], ignore_index=True) if parts else pd.DataFrame(columns=OUTLIER_COLUMNS)
    frames = pd.concat(readable, ignore_index=True) if readable else pd.DataFrame(columns=["frame_id", "uri"])
    aligned = pd.concat([a for _, a in parts if a is not None], ignore_index=True) if parts else pd.DataFrame()
    return scored, frames, aligned


def _outlier_checks(expectations, scored: pd.DataFrame, frames: pd.DataFrame, ceiling: float):
    """Every frame of the run scored (unreadable ones too); the flagged fraction under ``ceiling`` (WARN)."""
    unreadable_ids = scored.loc[scored["corrupt"], "frame_id"] if len(scored) else pd.Series([], dtype=object)
    fraction = float(scored["is_outlier"].mean()) if len(scored) else 0.0
    return [
        checks.from_validation(
            "outliers_every_frame_scored",
            expectations.validate(scored, "outliers", suites.outlier_scores([*frames["frame_id"], *unreadable_ids])),
        ),
        checks.from_validation(
            "outliers_flagged_fraction",
            expectations.validate(scored, "outliers_fraction", suites.flagged_fraction(ceiling)),
            severity=dg.AssetCheckSeverity.WARN,
            flagged_fraction=round(fraction, 3),
            ceiling=ceiling,
        ),
    ]


def _write_scoring_state(store: ObjectStore, state: dict | None, grouped: dict, settings: dict, todo: list[str],
                         summary: RunningSummary, scored: pd.DataFrame, verdicts: list[checks.Verdict], failed: bool,
                         incremental: bool) -> dict[str, int]:  # fmt: skip
    """After a run whose checks passed: the state the next run plans from (a rebuild also drops
    the tables of sources no longer stored). Returns the corpus's counts."""
    counts = {"frames": len(scored), "outliers": int(scored["is_outlier"].sum())}
    if failed:
        return counts
    if incremental:
        counts = {k: state["counts"][k] + v for k, v in counts.items()}
    else:
        _prune_other_sources(store, "outliers", verdicts)
    done = sorted(set(state["sources"]) | set(todo)) if incremental else todo
    _write_state(store, "outliers", {"settings": settings, "generation": grouped["generation"], "sources": done,
                                     "isolation": summary.to_json(), "counts": counts})  # fmt: skip
    return counts


def _scoring_metadata(store: ObjectStore, params: OutlierParams, model, counts: dict, mode: str, scored: pd.DataFrame,
                      published: bool, elapsed: float) -> dict:  # fmt: skip
    return {
        "frames": counts["frames"],
        "outliers": counts["outliers"],
        "mode": mode,
        "frames_written": len(scored),
        "flagged_fraction": round(float(scored["is_outlier"].mean()) if len(scored) else 0.0, 3),
        **{f"flag_{r}": int(scored[r].sum()) for r in REASONS},
        "stored_frames_isolation": "as scored when their source arrived; refreshed by the rebuild_curation job",
        "thresholds": dg.MetadataValue.json({**params.__dict__, "calibration": model.calibration.source}),
        "seconds": round(elapsed, 3),
        "tables": dg.MetadataValue.path(store.uri(layout.table_prefix("outliers") + "/")),
        "published": published,
    }
