"""raw_frames (and source_labels): one landing source (video, image folder, archive, labeled dataset) -> JPEG
frames + a frame table, and a labeled dataset's own labels."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.frames import MAX_PIXELS, UnreadableSourceError, sample_frames
from curation_assets.core.ids import camera_id_for, source_id_for
from curation_assets.core.ingest import Item, frame_table, source_labels
from curation_assets.core.label_formats import LABELED_KINDS, LabeledEntry, read_labeled
from curation_assets.core.progress import Progress, Stopwatch
from curation_assets.core.sources import LoadedImage, Source, archive_images, group_sources, is_image, load_image
from curation_assets.defs import checks
from curation_assets.defs.fleet import key_of
from curation_assets.defs.partitions import videos
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import NotARegularFile, ObjectStore

ASSET = "raw_frames"
# On a run that refused its source as bad input (corrupt, not a video, too large): the sensor and the
# headless command do not request that content again until it changes. Other failures are retried.
FAILURE_TAG = "curation/failure"
BAD_INPUT = "bad-input"
DESCRIPTION = """Read one landing source, sample frames, store them as JPEG and measure each one.

Unreadable images become rows flagged ``corrupt`` with the reason: never a crash of the
partition, never silently dropped. A landing object that is not a readable video fails
its own partition with the file and the cause (e.g. ``landing/cam-b/broken.mp4: not a
readable video``), so this asset and frame_embeddings show that partition as failed (red)
in the graph while every other partition and everything downstream goes on: red here
means "a bad input was refused", not "the pipeline is broken". The Partitions tab lists
which, the run's error says why. Such a run is tagged ``curation/failure: bad-input`` and
its failure carries ``failure: permanent``: it is not retried, and the sensor does not
request the object again until its content changes (replacing it re-ingests it).
"""


class RawFramesConfig(dg.Config):
    sample_fps: float = Field(default=2.0, description="Frames kept per second of video.")
    every_n: int = Field(default=0, description="Keep every n-th frame instead (0: use sample_fps).")
    max_frames: int = Field(default=0, description="Stop after this many frames (0: no limit).")
    jpeg_quality: int = 90
    max_pixels: int = Field(default=MAX_PIXELS, description="Reject videos and images larger than this.")
    min_frames: int = Field(default=1, description="Fewer readable frames fail the table check.")


def is_ignored(key: str) -> bool:
    """Uploads in progress and hidden files (``.x``, ``x.part``, ``x.tmp``) are not sources yet."""
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") or name.endswith((".part", ".tmp", ".crdownload"))


def landing_sources(landing: ObjectStore, page_size: int = 1000) -> list[Source]:
    """The landing zone's sources. Links, pipes, devices and sockets are sources (or an image
    folder's members) too: never followed or read, each fails its own partition, or becomes a
    row flagged corrupt in its folder, with what it is."""
    return group_sources(obj for obj in landing.list_entries("", page_size=page_size) if not is_ignored(obj.key))


def find_source(landing: ObjectStore, source_id: str) -> Source:
    for source in landing_sources(landing):
        if source_id_for(source.key) == source_id:
            return source
    raise dg.Failure(f"no landing source for partition {source_id!r} under {landing.root}", allow_retries=False)


@contextmanager
def read_source(
    landing: ObjectStore, source: Source, config: RawFramesConfig, entries: list[LabeledEntry], on_damage
) -> Iterator[Iterator[Item]]:
    name = f"landing/{source.key}"

    def image(key: str) -> Callable[[], LoadedImage]:
        def load() -> LoadedImage:
            try:
                return load_image(landing.get_bytes(key), key, config.max_pixels)
            except NotARegularFile as exc:  # a link, pipe or device among the images: that row only
                return LoadedImage(key, None, str(exc))

        return load

    def unreadable(member: str, reason: str) -> Callable[[], LoadedImage]:
        return lambda: LoadedImage(member, None, reason)

    if source.kind == "images":
        yield (Item(i, 0.0, key, "", image(key)) for i, key in enumerate(source.members))
        return
    if source.kind in LABELED_KINDS:
        missing = "missing: no such file in the dataset folder"
        yield (
            Item(
                i,
                0.0,
                e.member or e.file_name,
                e.split,
                unreadable(e.file_name, e.problem)
                if e.problem
                else image(e.member)
                if e.member
                else unreadable(e.file_name, missing),
            )
            for i, e in enumerate(entries)
        )
        return
    with landing.local_path(source.key) as path:
        if source.kind == "archive":
            yield (
                Item(
                    i,
                    0.0,
                    member,
                    "",
                    unreadable(member, error)
                    if error
                    else lambda data=data, member=member: load_image(data, member, config.max_pixels),
                )
                for i, (member, data, error) in enumerate(archive_images(path, name))
            )
            return
        frames = sample_frames(
            path,
            name=name,
            sample_fps=None if config.every_n else config.sample_fps,
            every_n=config.every_n or None,
            max_frames=config.max_frames or None,
            max_pixels=config.max_pixels,
            on_damage=on_damage,
        )
        yield (Item(f.index, f.timestamp_s, "", "", lambda rgb=f.rgb: LoadedImage("", rgb)) for f in frames)


@dg.multi_asset(
    name=ASSET,
    specs=[
        dg.AssetSpec(
            ASSET,
            group_name="ingestion",
            kinds={"pyav", "parquet"},
            description=DESCRIPTION,
        ),
        dg.AssetSpec(
            "source_labels",
            deps=[ASSET],
            group_name="ingestion",
            kinds={"parquet"},
            skippable=True,  # labeled datasets only, with their published frames
            description="A labeled dataset's own labels (YOLO, COCO, VOC, CVAT, classification folders, "
            "attribute CSVs), one row per box or image-level label, in pixels of the frames as read. "
            "Only labeled datasets have it: a video's partition stays empty.",
        ),
    ],
    retry_policy=TRANSIENT,
    partitions_def=videos,
    check_specs=[
        checks.blocking("raw_frames_table_valid", ASSET, "≥1 frame, unique ids, metrics present and in range (GX)"),
        checks.blocking("raw_frames_images_exist", ASSET, "every readable frame's image URI exists in object storage"),
        checks.warning(
            "raw_frames_source_complete", ASSET, "the source was read whole: no damage, no unreadable image"
        ),
    ],
)
@transient_only
def raw_frames(
    context: dg.AssetExecutionContext,
    config: RawFramesConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """The frame table of one landing source (and a labeled dataset's own labels); see DESCRIPTION."""
    source_id = context.partition_key
    store, landing = object_store.store(), object_store.landing_store()
    source = find_source(landing, source_id)
    started, watch = time.perf_counter(), Stopwatch()
    damage: list[str] = []  # a video damaged part-way keeps the frames before the damage
    table, entries = _read_frames(context, store, landing, source, config, watch, damage)
    watch.add("frames (wall)", time.perf_counter() - started)
    elapsed = time.perf_counter() - started

    readable = table[~table["corrupt"]] if len(table) else table
    with watch.stage("checks"):
        stored = {obj.key for obj in store.list(layout.frame_prefix(source_id))}  # a listing, not a request a frame
        results = frame_checks(store, expectations, table, readable, stored, damage, config.min_frames)
    with watch.stage("write table"):
        verdict = checks.publish(store, results, ASSET, source_id, table)
        labeled = verdict.published and source.kind in LABELED_KINDS
        if labeled:
            labels = source_labels(source_id, entries, table)
            store.write_table(layout.table_key("source_labels", source_id), labels)
        if verdict.published:
            keep = {store.key_for_uri(uri) for uri in readable["uri"]} if len(readable) else set()
            if pruned := store.prune(layout.frame_prefix(source_id), keep):
                context.log.info(f"{source.key}: removed {pruned} stale frame files left by an earlier run")
    if not verdict.published:
        failed = ", ".join(verdict.failed)
        context.log.error(f"{source.key}: blocking checks failed ({failed}); table kept at {verdict.key}")
        if len(table) and not len(readable):  # bad input, named: not a bare check name
            raise refuse_bad_input(context, source, nothing_readable(source, table), table=store.uri(verdict.key))
    for message in damage:
        context.log.warning(f"{message}; the {len(table)} frames before it were kept")
    yield dg.MaterializeResult(
        asset_key=key_of(context, ASSET),
        metadata=_describe_frames(store, source, table, readable, damage, elapsed, watch, verdict),
        check_results=results,
    )
    if labeled:
        yield dg.MaterializeResult(
            asset_key=key_of(context, "source_labels"), metadata=_describe_labels(store, source_id, labels)
        )


def _read_frames(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    landing: ObjectStore,
    source: Source,
    config: RawFramesConfig,
    watch: Stopwatch,
    damage: list[str],
) -> tuple[pd.DataFrame, list[LabeledEntry]]:
    """The source's frames stored as JPEG and measured (the frame table), and a labeled
    dataset's entries; a source that cannot be read at all is refused as bad input."""
    progress = Progress(f"{source.key or 'landing root'} frames", len(source.members) or None, context.log.info)
    try:
        entries: list[LabeledEntry] = []
        if source.kind in LABELED_KINDS:
            entries = read_labeled(source.kind, source.key, source.members, landing.get_bytes, is_image, damage)
        camera_id = camera_id_for(source.key)
        with read_source(landing, source, config, entries, damage.append) as items:
            table = frame_table(
                items, context.partition_key, camera_id, store.put_bytes, config.jpeg_quality, watch, progress
            )
    except (UnreadableSourceError, NotARegularFile) as exc:
        raise refuse_bad_input(context, source, str(exc)) from exc
    return table, entries


def _describe_frames(store: ObjectStore, source: Source, table: pd.DataFrame, readable: pd.DataFrame,
                     damage: list[str], elapsed: float, watch: Stopwatch, verdict: checks.Verdict) -> dict:  # fmt: skip
    corrupt = table[table["corrupt"]] if len(table) else table
    return {
        "landing_key": source.key or "(landing root)",
        "source_kind": source.kind,
        "damage": damage[0] if damage else "none",
        "camera_id": camera_id_for(source.key),
        "frames": len(readable),
        "corrupt": len(corrupt),
        "corrupt_examples": dg.MetadataValue.json(
            [f"{r.source_name}: {r.error}" for r in corrupt.head(10).itertuples()]
        ),
        "seconds": round(elapsed, 2),
        "timings": dg.MetadataValue.json(watch.rounded()),
        "frames_per_second": round(len(table) / elapsed, 1) if elapsed else None,
        "table": dg.MetadataValue.path(store.uri(verdict.key)),
        "published": verdict.published,
    }


def _describe_labels(store: ObjectStore, source_id: str, labels: pd.DataFrame) -> dict:
    return {
        "labels": len(labels),
        "boxes": int(labels["w"].notna().sum()),
        "per_class": dg.MetadataValue.json(labels["category"].value_counts().to_dict()),
        "table": dg.MetadataValue.path(store.uri(layout.table_key("source_labels", source_id))),
    }


def refuse_bad_input(context: dg.AssetExecutionContext, source: Source, cause: str, **metadata) -> dg.Failure:
    """Bad input fails its partition once: the run is tagged, so no one requests this content again."""
    context.instance.add_run_tags(context.run_id, {FAILURE_TAG: BAD_INPUT})
    return dg.Failure(
        description=cause,
        metadata={
            "landing_key": source.key,
            "failure": "permanent: bad input, not requested again until the object changes",
            "fingerprint": source.fingerprint,
            **metadata,
        },
        allow_retries=False,
    )


def nothing_readable(source: Source, table: pd.DataFrame, shown: int = 3) -> str:
    """Why a source none of whose images could be read is refused: its files and their causes."""
    causes = "; ".join(f"{r.source_name}: {r.error}" for r in table.head(shown).itertuples())
    more = f"; and {len(table) - shown} more" if len(table) > shown else ""
    return f"landing/{source.key}: none of its {len(table)} image(s) is readable ({causes}{more})"


def frame_checks(
    store: ObjectStore,
    expectations: ExpectationsResource,
    table: pd.DataFrame,
    readable: pd.DataFrame,
    stored: set[str],
    damage: list[str],
    min_frames: int,
) -> list[dg.AssetCheckResult]:
    """The frame table's checks; ``stored``: the keys found under the source's frame folder."""
    validation = expectations.validate(readable, "raw_frames", suites.frame_table(min_frames))
    missing = [uri for uri in readable["uri"] if store.key_for_uri(uri) not in stored] if len(readable) else []
    return [
        checks.from_validation("raw_frames_table_valid", validation, rows=len(table), readable=len(readable)),
        checks.from_assertion(
            "raw_frames_images_exist",
            not missing,
            missing=len(missing),
            missing_examples=missing[:10] or "none",
        ),
        checks.from_assertion(
            "raw_frames_source_complete",
            not damage and not (len(table) and table["corrupt"].any()),
            severity=dg.AssetCheckSeverity.WARN,
            damage=damage or "none",
            unreadable_images=int(table["corrupt"].sum()) if len(table) else 0,
        ),
    ]
