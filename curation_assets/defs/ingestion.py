"""raw_frames: one landing source (video, image folder, archive) -> JPEG frames + a frame table."""

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from typing import NamedTuple

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.frames import MAX_PIXELS, UnreadableSourceError, encode_jpeg, sample_frames
from curation_assets.core.ids import camera_id_for, frame_id_for, source_id_for
from curation_assets.core.image_stats import METRICS, image_stats
from curation_assets.core.label_formats import LABELED_KINDS, LabeledEntry, read_labeled
from curation_assets.core.progress import Progress, Stopwatch
from curation_assets.core.sources import LoadedImage, Source, archive_images, group_sources, is_image, load_image
from curation_assets.defs import checks
from curation_assets.defs.partitions import videos
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "raw_frames"
WORKERS = max(2, os.cpu_count() or 2)  # numpy, PIL and hashlib release the GIL for the heavy parts


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
    return group_sources(obj for obj in landing.list("", page_size=page_size) if not is_ignored(obj.key))


def find_source(landing: ObjectStore, source_id: str) -> Source:
    for source in landing_sources(landing):
        if source_id_for(source.key) == source_id:
            return source
    raise dg.Failure(f"no landing source for partition {source_id!r} under {landing.root}", allow_retries=False)


class Item(NamedTuple):
    """One frame or image of a source. ``load`` gives its pixels (or the reason there are
    none); for images it reads and decodes, so that runs on a worker, in parallel."""

    index: int
    timestamp_s: float
    member: str  # the image's key or archive member ("" for video frames)
    split: str  # a labeled dataset's split ("" otherwise)
    load: Callable[[], LoadedImage]


@contextmanager
def read_source(
    landing: ObjectStore, source: Source, config: RawFramesConfig, entries: list[LabeledEntry], on_damage
) -> Iterator[Iterator[Item]]:
    name = f"landing/{source.key}"

    def image(key: str) -> Callable[[], LoadedImage]:
        return lambda: load_image(landing.get_bytes(key), key, config.max_pixels)

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


def timed(items: Iterator, watch: Stopwatch, stage: str) -> Iterator:
    """``items``, with the time spent producing each one added to ``watch``'s ``stage``."""
    while True:
        started = time.perf_counter()
        item = next(items, None)
        watch.add(stage, time.perf_counter() - started)
        if item is None:
            return
        yield item


@dg.asset(
    retry_policy=TRANSIENT,
    partitions_def=videos,
    group_name="ingestion",
    kinds={"pyav", "parquet"},
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
    """Read one landing source, sample frames, store them as JPEG and measure each one.

    Unreadable images become rows flagged ``corrupt`` with the reason: never a crash of the
    partition, never silently dropped. A landing object that is not a readable video fails
    its own partition with the file and the cause (e.g. ``landing/cam-b/broken.mp4: not a
    readable video``), so this asset and frame_embeddings show that partition as failed (red)
    in the graph while every other partition and everything downstream goes on: red here
    means "a bad input was refused", not "the pipeline is broken". The Partitions tab lists
    which, the run's error says why; replacing the object re-ingests it.
    """
    expectations.warm_up()  # GX imports while frames are read
    source_id = context.partition_key
    store, landing = object_store.store(), object_store.landing_store()
    source = find_source(landing, source_id)
    camera_id = camera_id_for(source.key)
    started = time.perf_counter()
    watch = Stopwatch()
    rows: list = []
    in_flight: deque = deque()  # frames being measured and stored; bounded, so memory is too
    damage: list[str] = []  # a video damaged part-way keeps the frames before the damage
    progress = Progress(f"{source.key or 'landing root'} frames", len(source.members) or None, context.log.info)
    try:
        entries = (
            read_labeled(source.kind, source.key, source.members, landing.get_bytes, is_image, damage)
            if source.kind in LABELED_KINDS
            else []
        )
        with (
            read_source(landing, source, config, entries, damage.append) as items,
            ThreadPoolExecutor(WORKERS) as pool,
        ):
            for item in timed(items, watch, "read source"):
                row = {
                    "frame_id": frame_id_for(source_id, item.index),
                    "video_id": source_id,
                    "camera_id": camera_id,
                    "frame_index": item.index,
                    "timestamp_s": item.timestamp_s,
                    "source_name": item.member,
                    "split": item.split,
                }
                # reading goes on while workers decode, measure, encode and store earlier frames
                key = layout.frame_key(source_id, item.index)
                in_flight.append(pool.submit(_frame_row, store, key, item, config.jpeg_quality, row, watch))
                if len(in_flight) >= 4 * WORKERS:
                    rows.append(in_flight.popleft().result())
                progress.advance()
            rows.extend(job.result() for job in in_flight)
        progress.finish()
    except UnreadableSourceError as exc:
        raise dg.Failure(description=str(exc), metadata={"landing_key": source.key}, allow_retries=False) from exc
    watch.add("frames (wall)", time.perf_counter() - started)
    table = pd.DataFrame(rows)
    if len(table):
        table = table.sort_values("frame_index", ignore_index=True)
    elapsed = time.perf_counter() - started

    readable = table[~table["corrupt"]] if len(table) else table
    with watch.stage("checks"):
        validation = expectations.validate(readable, "raw_frames", suites.frame_table(config.min_frames))
        missing = [u for u in readable["uri"] if not store.exists(store.key_for_uri(u))] if len(readable) else []
    results = [
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
    with watch.stage("write table"):
        verdict = checks.publish(store, results, ASSET, source_id, table)
        if entries and verdict.published:  # a labeled dataset brings its labels along
            store.write_table(layout.table_key("source_labels", source_id), source_labels(source_id, entries, table))
        if verdict.published:
            keep = {store.key_for_uri(uri) for uri in readable["uri"]} if len(readable) else set()
            pruned = store.prune(layout.frame_prefix(source_id), keep)
            if pruned:
                context.log.info(f"{source.key}: removed {pruned} stale frame files left by an earlier run")
    if not verdict.published:
        failed, key = ", ".join(verdict.failed), verdict.key
        context.log.error(f"{source.key}: blocking checks failed ({failed}); table kept at {key}")
    for message in damage:
        context.log.warning(f"{message}; the {len(table)} frames before it were kept")
    corrupt = table[table["corrupt"]] if len(table) else table
    return dg.MaterializeResult(
        metadata={
            "landing_key": source.key or "(landing root)",
            "source_kind": source.kind,
            "damage": damage[0] if damage else "none",
            "camera_id": camera_id,
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
        },
        check_results=results,
    )


def source_labels(source_id: str, entries: list[LabeledEntry], frames: pd.DataFrame) -> pd.DataFrame:
    """One row per label: boxes in pixels (normalised ones scaled by the image read), image-level
    labels with no box (NaN)."""
    size = frames.set_index("frame_index")[["width", "height"]] if len(frames) else None
    rows = []
    for i, e in enumerate(entries):
        sx, sy = (size.at[i, "width"], size.at[i, "height"]) if e.normalized and size is not None else (1, 1)
        for c, x, y, w, h in e.annotations:
            rows.append({"frame_id": frame_id_for(source_id, i), "split": e.split, "category": c,
                         "x": x * sx, "y": y * sy, "w": w * sx, "h": h * sy})  # fmt: skip
    return pd.DataFrame(rows, columns=["frame_id", "split", "category", "x", "y", "w", "h"])


def _frame_row(store: ObjectStore, key: str, item: Item, quality: int, row: dict, watch: Stopwatch) -> dict:
    """Runs on a worker: its stages' busy seconds add up over the workers. An image that
    cannot be read becomes a row flagged ``corrupt`` with the reason."""
    with watch.stage("decode images"):
        image = item.load()
    if image.rgb is None:
        empty = {"uri": "", "width": 0, "height": 0, "sha256": "", "phash": 0, "phash_mirror": 0}
        return {**row, "corrupt": True, "error": image.error or "", **empty, **dict.fromkeys(METRICS, np.nan)}
    rgb = image.rgb
    with watch.stage("metrics and hashes"):
        stats = asdict(image_stats(rgb))
    with watch.stage("encode jpeg"):
        data = image.jpeg or encode_jpeg(rgb, quality)
    with watch.stage("store frames"):
        uri = store.put_bytes(key, data)
    return {**row, "corrupt": False, "error": "", "uri": uri, "width": rgb.shape[1], "height": rgb.shape[0], **stats}
