"""Stereo calibration sessions in one folder: are a pose's two pictures joined, and poses kept apart?

    .venv/bin/python bench/sessions.py [--seeds 1,2,3,4,5] [--held-out] [--details]

A session (``bench/rig_data.py``'s ``session``) is what a stereo calibration leaves in a folder:
one person holding a chessboard in a plain room in 13 poses, each shot by both cameras of a rig
(``left01..13``, ``right01..13``). A pose's two pictures are near duplicates (nearly the same
picture, shifted, with parallax); two poses are not, though the room and the person are the same.
Each session is grouped as one image folder by the pipeline's grouping (``find_duplicate_groups``
with the geometric verification). Printed per session: stereo pairs joined of 13, and false pairs
(two pictures of different poses in one group). ``--details`` prints, for every pair of
pictures the grouping joined or that is a stereo pair, the scores the rules read.

Calibration seeds (thresholds may be chosen on them): 1-5 with the calibration rooms; the
held-out sessions (``--held-out``) draw other rooms and textures, seeds 101-105 by default.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.rig import folder_frames  # noqa: E402
from bench.rig_data import _jpeg, session  # noqa: E402


def rendered(seed: int, held_out: bool) -> dict[str, bytes]:
    """A session's files by name, as a rig writes them (JPEG)."""
    files = {}
    for pose, left, right in session(seed, held_out):
        files[f"left{pose:02d}.jpg"] = _jpeg(left)
        files[f"right{pose:02d}.jpg"] = _jpeg(right)
    return dict(sorted(files.items()))


def evaluate(seed: int, held_out: bool, model, details: bool) -> tuple[int, int, float]:
    from curation_assets.core import geometry
    from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
    from curation_assets.core.image_stats import hamming_distance

    files = rendered(seed, held_out)
    names = list(files)
    decoded = [Image.open(io.BytesIO(files[n])).convert("RGB") for n in names]
    frames = folder_frames(decoded, f"session{seed}")
    vectors = model.embed([lambda p=p: p for p in decoded])
    points = [geometry.keypoints(files[n]) for n in names]
    started = time.perf_counter()
    groups = find_duplicate_groups(
        frames,
        vectors,
        DuplicateParams.for_model(model.calibration),
        verify=lambda i, j: geometry.inliers(points[i], points[j]),
    )
    seconds = time.perf_counter() - started
    group = groups["group_id"].to_numpy()
    pose = [n[-6:-4] for n in names]
    stereo = sum(group[names.index(f"left{p}.jpg")] == group[names.index(f"right{p}.jpg")] for p in sorted(set(pose)))
    pairs = itertools.combinations(range(len(names)), 2)
    false = [(a, b) for a, b in pairs if group[a] == group[b] and pose[a] != pose[b]]
    if details:
        shown = false + [(names.index(f"left{p}.jpg"), names.index(f"right{p}.jpg")) for p in sorted(set(pose))]
        for a, b in shown:
            first, second = points[a], points[b]
            print(
                f"  {names[a]:>11} {names[b]:>11} {'stereo' if pose[a] == pose[b] else 'POSES '}"
                f" joined={group[a] == group[b]!s:5} cos={float(vectors[a] @ vectors[b]):.3f}"
                f" bits={int(hamming_distance(frames['phash'][a], frames['phash'][b])):2d}"
                f" orb={geometry.matched(first, second):4d} dense={geometry.alignment(first.grey, second.grey):.3f}"
                f" covered={geometry.found_share(first, second, *geometry._matches(first, second)):.3f}"
                f" verdict={geometry.inliers(first, second)}"
            )
    return int(stereo), len(false), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=None, help="comma-separated session seeds (default 1-5, held out 101-105)")
    parser.add_argument("--held-out", action="store_true", help="other rooms and textures; never used to choose")
    parser.add_argument("--details", action="store_true", help="the rules' scores for joined and stereo pairs")
    args = parser.parse_args()
    default = range(101, 106) if args.held_out else range(1, 6)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(default)
    from curation_assets.core.embedder import Embedder

    model = Embedder()
    print(describe())
    totals = np.zeros(2, dtype=int)
    for seed in seeds:
        stereo, false, seconds = evaluate(seed, args.held_out, model, args.details)
        totals += (stereo, false)
        print(f"session {seed}: stereo pairs joined {stereo}/13, false pairs {false} (grouped in {seconds:.1f} s)")
    print(f"all {len(seeds)} sessions: stereo pairs joined {totals[0]}/{13 * len(seeds)}, false pairs {totals[1]}")


if __name__ == "__main__":
    main()
