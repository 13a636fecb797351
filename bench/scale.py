"""Duplicate grouping and outlier isolation at 100k and 1M frames: wall time, peak memory, recall.

    python bench/scale.py [--sizes 100000,1000000] [--dim 512] [--planted 0.01]

Synthetic corpus, one process per size (so peak RSS is that size's alone): unit vectors
drawn around 2 000 random centres (cosine ~0.45 inside a centre, like CLIP embeddings of
one scene type), 1 000 frames per video with no temporal copies (every frame reaches the
neighbour graph: the worst case), and a planted fraction of near copies of random other
frames (cosine 0.955-0.995 to the original, perceptual hash 0-4 bits away, new pixels).
Recall is the fraction of planted pairs that end up in the same duplicate group.
Peak RSS includes the corpus itself (vectors alone are 2 GB at 1M x 512 float32).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from curation_assets.core.duplicates import find_duplicate_groups  # noqa: E402
from curation_assets.core.outliers import isolation_scores  # noqa: E402


def corpus(n: int, dim: int, planted: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: the noise for 1M rows at once would double the peak
        stop = min(n, start + 100_000)
        x[start:stop] = centres[rng.integers(0, len(centres), stop - start)]
        x[start:stop] += rng.standard_normal((stop - start, dim), dtype=np.float32) * 0.05
    pairs = int(n * planted)
    chosen = rng.choice(n, 2 * pairs, replace=False)
    originals, copies = chosen[:pairs], chosen[pairs:]
    noise = rng.uniform(0.004, 0.017, (pairs, 1)).astype(np.float32)
    x[copies] = x[originals] + rng.standard_normal((pairs, dim), dtype=np.float32) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)

    phash = rng.integers(0, 2**63 - 1, n, dtype=np.int64)
    flips = np.zeros(pairs, dtype=np.int64)
    for _ in range(4):  # up to 4 random bits flipped
        flips |= np.where(rng.random(pairs) < 0.5, np.int64(1) << rng.integers(0, 62, pairs), 0)
    phash[copies] = phash[originals] ^ flips
    frames = pd.DataFrame(
        {
            "frame_id": [f"v{i // 1000:05d}/{i % 1000:06d}" for i in range(n)],
            "video_id": [f"v{i // 1000:05d}" for i in range(n)],
            "frame_index": np.arange(n) % 1000,
            "sha256": [f"{i:064x}" for i in range(n)],
            "phash": phash,
            "sharpness": rng.uniform(0.002, 0.03, n),
            "brightness": rng.uniform(0.2, 0.8, n),
        }
    )
    cosine = np.einsum("ij,ij->i", x[originals], x[copies])
    return frames, x, originals, copies, cosine


def measure(n: int, dim: int, planted: float) -> dict:
    started = time.perf_counter()
    frames, vectors, originals, copies, cosine = corpus(n, dim, planted)
    generated = time.perf_counter() - started

    started = time.perf_counter()
    groups = find_duplicate_groups(frames, vectors)
    grouping = time.perf_counter() - started
    group = groups["group_id"].to_numpy()
    reps = np.flatnonzero(groups["is_representative"].to_numpy())

    started = time.perf_counter()
    isolation_scores(vectors[reps], k=5)
    isolation = time.perf_counter() - started
    return {
        "vectors": n,
        "planted_pairs": len(originals),
        "planted_cosine_min": round(float(cosine.min()), 3),
        "recall": round(float(np.mean(group[originals] == group[copies])), 4),
        "groups": int(len(reps)),
        "largest_group": int(groups["group_size"].max()),
        "generate_s": round(generated, 1),
        "duplicate_groups_s": round(grouping, 1),
        "isolation_s": round(isolation, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--planted", type=float, default=0.01, help="fraction of frames that are planted copies")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process for one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.dim, args.planted)))
        return

    print(f"machine: {describe()}")
    header = ("vectors", "recall", "duplicate_groups_s", "isolation_s", "peak_rss_gb", "groups", "largest_group")
    print(" | ".join(header) + " | planted (min cosine)")
    for size in (int(s) for s in args.sizes.split(",")):
        child = subprocess.run(
            [sys.executable, __file__, "--one", str(size), "--dim", str(args.dim), "--planted", str(args.planted)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(child.stdout.strip().splitlines()[-1])
        print(" | ".join(str(row[h]) for h in header) + f" | {row['planted_pairs']} ({row['planted_cosine_min']})")


if __name__ == "__main__":
    main()
