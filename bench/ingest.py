"""Throughput of raw_frames against bare decode and bare JPEG encode, measured in one run.

    python bench/ingest.py [--seconds 60] [--width 768 --height 576]

Encodes a store-camera video (MPEG-4, 25 fps), then measures: bare PyAV decode to RGB
arrays; bare JPEG encode of those frames (PIL, one thread per core); and the raw_frames
step materialized by Dagster keeping every frame (decode + sample + metrics + hashes +
encode + write to a local store), taking the step's own timing (its `seconds` metadata)
and the whole run's wall time. Prints frames/s and the ratio to the slower bare rate, and
for a low sampling rate (one frame per 10 s) streaming through the video against seeking.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import dagster as dg  # noqa: E402

from bench.machine import describe  # noqa: E402
from curation_assets.core.frames import encode_jpeg, sample_frames  # noqa: E402
from curation_assets.core.ids import video_id_for  # noqa: E402
from curation_assets.core.ingest import WORKERS  # noqa: E402
from curation_assets.defs.ingestion import raw_frames  # noqa: E402
from curation_assets.defs.partitions import videos  # noqa: E402
from curation_assets.demo.scenes import Scene, default_events, write_video  # noqa: E402
from resources import ExpectationsResource, ObjectStoreResource  # noqa: E402


def bare_decode(path: Path) -> tuple[list, float]:
    start = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return frames, len(frames) / (time.perf_counter() - start)


def sampled_seconds(path: Path, seek: bool, sample_fps: float = 0.1) -> float:
    """Wall time to sample one frame per 10 s, streaming through every frame or seeking."""
    start = time.perf_counter()
    list(sample_frames(path, name=path.name, sample_fps=sample_fps, seek_gap_s=5.0 if seek else float("inf")))
    return time.perf_counter() - start


def bare_encode(frames: list) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(encode_jpeg, frames))
    return len(frames) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=576)
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        name = "cam-bench/aisle.mp4"
        scene = Scene(name, 5, args.seconds, default_events(args.seconds), args.width, args.height, fps=25)
        write_video(scene, root / "landing" / name)
        low_rate = {seek: sampled_seconds(root / "landing" / name, seek) for seek in (False, True)}
        frames, decode_fps = bare_decode(root / "landing" / name)
        encode_fps = bare_encode(frames)
        del frames
        video_id = video_id_for(name)
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(videos.name, [video_id])
            start = time.perf_counter()
            result = dg.materialize(
                [raw_frames],
                partition_key=video_id,
                instance=instance,
                resources={"object_store": ObjectStoreResource(root=str(root)), "expectations": ExpectationsResource()},
                run_config={"ops": {"raw_frames": {"config": {"every_n": 1}}}},
            )
            wall = time.perf_counter() - start
        meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
        n, step_s = meta["frames"].value, meta["seconds"].value
    slower = min(decode_fps, encode_fps)
    print(f"{n} frames of {args.width}x{args.height} MPEG-4, {WORKERS} workers\n")
    print(f"{'bare decode':>28} {decode_fps:8.0f} frames/s")
    print(f"{'bare JPEG encode':>28} {encode_fps:8.0f} frames/s")
    print(f"{'raw_frames step':>28} {n / step_s:8.0f} frames/s   ratio to slower bare {n / step_s / slower:.2f}")
    print(f"{'raw_frames run (with Dagster, GX)':>28} {n / wall:8.0f} frames/s   ratio {n / wall / slower:.2f}")
    print(f"{'one frame per 10 s':>28} {low_rate[False]:8.2f} s streaming, {low_rate[True]:.2f} s seeking "
          f"({low_rate[False] / low_rate[True]:.1f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
