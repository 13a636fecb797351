"""End to end, video to duplicate groups and outliers: this project against fastdup.

    bench/peers/setup.sh   # once, for fastdup
    .venv/bin/python bench/end_to_end.py [--frames 1070] [--model efficientnet-lite0]

One surveillance-like video (768x576 MPEG-4 at 2 fps, the demo's store scene: static 85 %
of the time, then a walk, lights off, a blurred walk, a cart). Ours: the headless command, from the
video in a landing folder to published duplicate_groups and outliers (process start,
Dagster runs, every check, frames written as JPEG, the model on what the cheap pass leaves;
the packaged pretrained EfficientNet-Lite0 unless --model says otherwise, e.g.
open_clip:ViT-B-32 with random-init weights, same arithmetic as pretrained). fastdup: the same frames as JPEGs in a
folder (extracting them is timed apart), then fastdup's own run, in its environment. Ratio
> 1 means we are faster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from curation_assets.core.frames import encode_jpeg, sample_frames  # noqa: E402
from curation_assets.demo.scenes import Event, Scene, write_video  # noqa: E402

PEERS = ROOT / "bench" / "peers" / ".venv" / "bin" / "python"


def surveillance_events(d: float) -> tuple[Event, ...]:
    """A fixed camera's day: something happens 15 % of the time (a walk, lights off for a
    moment, a fast blurred walk, a cart), the rest is the empty aisle."""
    return (
        Event("walk", 0.20 * d, 0.25 * d),
        Event("dark", 0.40 * d, 0.42 * d),
        Event("blur_walk", 0.60 * d, 0.63 * d),
        Event("cart", 0.80 * d, 0.85 * d),
    )


def ours(video: Path, work: Path, model: str) -> tuple[float, dict]:
    landing, root = work / "landing", work / "root"
    (landing / "cam").mkdir(parents=True)
    shutil.copy(video, landing / "cam" / video.name)
    env = {**os.environ, "CURATION_QDRANT_PATH": str(root / "qdrant"), "CURATION_EMBEDDER_MODEL": model}
    if model.startswith("open_clip:"):  # no hub weights offline: the same arithmetic, random weights
        env["CURATION_EMBEDDER_PRETRAINED"] = "none"
    env.pop("DAGSTER_HOME", None)
    summary = work / "summary.json"
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root),
               "--summary-json", str(summary)]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"our pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, json.loads(summary.read_text())["figures"]


def extract(video: Path, folder: Path) -> tuple[float, int]:
    folder.mkdir(parents=True)
    started = time.perf_counter()
    n = 0
    for n, frame in enumerate(sample_frames(video, name=video.name, every_n=1), start=1):
        (folder / f"{n:06d}.jpg").write_bytes(encode_jpeg(frame.rgb, quality=90))
    return time.perf_counter() - started, n


def fastdup(folder: Path) -> tuple[float, dict]:
    script = ROOT / "bench" / "peers" / "run_peers.py"
    started = time.perf_counter()
    proc = subprocess.run(
        [str(PEERS), str(script), str(folder), "/dev/null", "fastdup"], capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"fastdup failed:\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1070)
    parser.add_argument("--model", default="efficientnet-lite0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        duration = args.frames / 2
        scene = Scene("cam/aisle.mp4", seed=5, duration_s=duration, events=surveillance_events(duration), width=768,
                      height=576, fps=2)  # fmt: skip
        video = work / "aisle.mp4"
        write_video(scene, video)
        our_s, figures = ours(video, work / "ours", args.model)
        extract_s, n = extract(video, work / "frames")
        fastdup_s, found = fastdup(work / "frames")
    print(f"machine: {describe()}")
    print(f"video: {n} frames 768x576 MPEG-4; ours with {args.model} (CPU), fastdup 2.54 defaults")
    print("tool | wall_s | frames/s | groups | flagged")
    print(f"ours (headless command, video -> groups + outliers) | {our_s:.1f} | {n / our_s:.0f} | "
          f"{figures.get('duplicate groups')} | {figures.get('outliers')}")  # fmt: skip
    print(f"fastdup (frames folder -> run) | {fastdup_s:.1f} | {n / fastdup_s:.0f} | {len(found['groups'])} components "
          f"| {len(found['flagged'])}")  # fmt: skip
    print(f"fastdup + frame extraction | {fastdup_s + extract_s:.1f} | {n / (fastdup_s + extract_s):.0f} | |")
    print(f"ratio fastdup / ours: {fastdup_s / our_s:.2f} (frames folder), {(fastdup_s + extract_s) / our_s:.2f} "
          "(from the video)")  # fmt: skip
    print(f"ours, figures: {json.dumps(figures)}")


if __name__ == "__main__":
    main()
