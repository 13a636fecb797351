"""One source's frames -> stored JPEGs and the frame table (one row per frame or image).

Reading goes on in the caller's thread while workers decode, measure, encode and store
earlier frames; at most ``4 * workers`` frames are in flight, so memory stays flat however
long the video. An image that cannot be read becomes a row flagged ``corrupt`` with the
reason: never a crash, never silently dropped.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import NamedTuple

import numpy as np
import pandas as pd

from curation_assets.core import layout
from curation_assets.core.frames import encode_jpeg
from curation_assets.core.ids import frame_id_for
from curation_assets.core.image_stats import METRICS, image_stats
from curation_assets.core.label_formats import LabeledEntry
from curation_assets.core.progress import Progress, Stopwatch
from curation_assets.core.sources import LoadedImage

WORKERS = max(2, os.cpu_count() or 2)  # numpy, PIL, OpenCV and hashlib release the GIL for the heavy parts


class Item(NamedTuple):
    """One frame or image of a source. ``load`` gives its pixels (or the reason there are
    none); for images it reads and decodes, so that runs on a worker, in parallel."""

    index: int
    timestamp_s: float
    member: str  # the image's key or archive member ("" for video frames)
    split: str  # a labeled dataset's split ("" otherwise)
    load: Callable[[], LoadedImage]


def frame_table(
    items: Iterable[Item],
    source_id: str,
    camera_id: str,
    put: Callable[[str, bytes], str],
    jpeg_quality: int,
    watch: Stopwatch,
    progress: Progress,
) -> pd.DataFrame:
    """The frame table of ``items``, in frame order; each readable frame stored as a JPEG by
    ``put(key, data) -> uri`` (a JPEG file that decodes as is is stored as it came)."""
    rows: list[dict] = []
    in_flight: deque = deque()
    with ThreadPoolExecutor(WORKERS) as pool:
        for item in _timed(iter(items), watch, "read source"):
            row = {
                "frame_id": frame_id_for(source_id, item.index),
                "video_id": source_id,
                "camera_id": camera_id,
                "frame_index": item.index,
                "timestamp_s": item.timestamp_s,
                "source_name": item.member,
                "split": item.split,
            }
            key = layout.frame_key(source_id, item.index)
            in_flight.append(pool.submit(_measured_row, row, item, key, put, jpeg_quality, watch))
            if len(in_flight) >= 4 * WORKERS:
                rows.append(in_flight.popleft().result())
            progress.advance()
        rows.extend(job.result() for job in in_flight)
    progress.finish()
    table = pd.DataFrame(rows)
    return table.sort_values("frame_index", ignore_index=True) if len(table) else table


def _measured_row(row: dict, item: Item, key: str, put, quality: int, watch: Stopwatch) -> dict:
    """Runs on a worker: its stages' busy seconds add up over the workers."""
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
        uri = put(key, data)
    return {**row, "corrupt": False, "error": "", "uri": uri, "width": rgb.shape[1], "height": rgb.shape[0], **stats}


def _timed(items: Iterator, watch: Stopwatch, stage: str) -> Iterator:
    """``items``, with the time spent producing each one added to ``watch``'s ``stage``."""
    while True:
        started = time.perf_counter()
        item = next(items, None)
        watch.add(stage, time.perf_counter() - started)
        if item is None:
            return
        yield item


LABEL_COLUMNS = ["frame_id", "split", "category", "x", "y", "w", "h"]


def source_labels(source_id: str, entries: list[LabeledEntry], frames: pd.DataFrame) -> pd.DataFrame:
    """A labeled dataset's own labels, one row per label: boxes in pixels (normalised ones
    scaled by the image as read), image-level labels with no box (NaN). An image left out
    (its ``problem`` says why) contributes no label."""
    size = frames.set_index("frame_index")[["width", "height"]] if len(frames) else None
    rows = []
    for i, e in enumerate(entries):
        if e.problem:
            continue
        sx, sy = (size.at[i, "width"], size.at[i, "height"]) if e.normalized and size is not None else (1, 1)
        for c, x, y, w, h in e.annotations:
            rows.append({"frame_id": frame_id_for(source_id, i), "split": e.split, "category": c,
                         "x": x * sx, "y": y * sy, "w": w * sx, "h": h * sy})  # fmt: skip
    return pd.DataFrame(rows, columns=LABEL_COLUMNS)
