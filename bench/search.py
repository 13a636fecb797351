"""Similarity search: does it find what it should, and how fast at scale.

    .venv/bin/python bench/search.py [--sizes 100000,1000000] [--queries 200] [--skip-recall]

(1) Recall on the real-data benchmark (bench/quality_data.py: real photographs, designs,
    logos and text pages with planted near copies and real near duplicates), ingested by
    the headless command with the default model. Every copy is used as a query (by its
    stored frame id, itself left out): is its original the first hit (planted copies:
    exact, shift, brightness, jpeg, crop; flips apart) or in the first ten (real near
    duplicates: a stereo pair, two framings of a wallpaper, two shots of one scene)?
(2) Latency in the embedded Qdrant store (qdrant-edge) at each size: clustered unit vectors
    of the default model's width (1280), written in batches, indexed (HNSW; the build time
    is printed), then ``--queries`` single queries near stored points, with and without a
    camera filter: p50 / p95 milliseconds, and recall@10 of the index against exact search.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe, peak_rss_mb  # noqa: E402
from bench.quality_data import NEAR_COPIES, generate_images  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from resources.vector_store import EdgeVectorStore, Where  # noqa: E402

DIM = 1280  # efficientnet-lite0's embedding width


def recall(work: Path) -> None:
    truth = generate_images(work / "landing")
    root = work / "root"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    subprocess.run([sys.executable, "-m", "curation_assets", "run", "--landing", str(work / "landing"),
                    "--root", str(root)], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    from curation_assets.core import layout
    from curation_assets.defs.resources import resources_from_env
    from curation_assets.defs.search import SearchConfig, search

    resources = resources_from_env({**env, "CURATION_STORAGE_URI": str(root)})
    store = resources["object_store"].store()
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    frame_of = dict(zip(frames["source_name"].str.rsplit("/", n=1).str[-1], frames["frame_id"]))
    rows: dict[str, list[int | None]] = {}
    for name, what in truth.items():
        category = what["category"]
        if category not in (*NEAR_COPIES, "flip", "view") or name not in frame_of:
            continue
        original = frame_of.get(f"{what['base']}.jpg")
        config = SearchConfig(frame=frame_of[name], top=10)
        hits = list(search(config, resources["object_store"], resources["embedder"], resources["vector_store"]).hits
                    ["frame_id"])  # fmt: skip
        rows.setdefault(category, []).append(hits.index(original) + 1 if original in hits else None)
    print("\n(1) recall on the real-data benchmark (query: each copy by its frame id; target: its original)")
    print("| copies | queries | original at rank 1 | in the top 10 |")
    print("|---|---|---|---|")
    planted = [r for c in NEAR_COPIES for r in rows.get(c, [])]
    for label, ranks in [(c, rows.get(c, [])) for c in (*NEAR_COPIES, "flip", "view")] + [("planted (all five)",
                                                                                           planted)]:  # fmt: skip
        if ranks:
            first = sum(r == 1 for r in ranks) / len(ranks)
            top10 = sum(r is not None for r in ranks) / len(ranks)
            print(f"| {label} | {len(ranks)} | {first:.3f} | {top10:.3f} |")


def clustered(n: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    """Unit vectors around ``clusters`` centres (frames of many scenes), like real embeddings."""
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency(size: int, queries: int, work: Path) -> None:
    rng = np.random.default_rng(size)
    store = EdgeVectorStore(work / f"qdrant-{size}")
    collection = "bench"
    store.ensure_collection(collection, "v", DIM)
    started = time.perf_counter()
    sample_rows = rng.choice(size, queries, replace=False)
    sample = np.zeros((queries, DIM), dtype=np.float32)
    chunk = 5000
    for start in range(0, size, chunk):
        vectors = clustered(min(chunk, size - start), np.random.default_rng(start))
        ids = [f"v{(start + i) // 1000}/{(start + i) % 1000:06d}" for i in range(len(vectors))]
        payloads = [{"frame_id": f, "video_id": f.split("/")[0], "camera_id": f"cam-{(start + i) % 8}",
                     "timestamp_s": float(i % 1000)} for i, f in enumerate(ids)]  # fmt: skip
        store.upsert(collection, "v", [point_id_for(f) for f in ids], vectors, payloads)
        here = (sample_rows >= start) & (sample_rows < start + len(vectors))
        sample[here] = vectors[sample_rows[here] - start]
    written = time.perf_counter() - started
    started = time.perf_counter()
    store.build_index(collection)
    indexed = time.perf_counter() - started
    probes = sample + 0.05 * rng.normal(size=sample.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    print(f"\n(2) {size:,} vectors x {DIM}: written in {written:.1f} s, index built in {indexed:.1f} s, "
          f"peak RSS {peak_rss_mb(os.getpid()):.0f} MB")  # fmt: skip
    for label, where in (("no filter", None), ("camera filter", Where(cameras=["cam-3"]))):
        store.nearest(collection, "v", probes[0], 10, where)  # warm
        ms, found = [], []
        for probe in probes:
            t = time.perf_counter()
            found.append(store.nearest(collection, "v", probe, 10, where))
            ms.append((time.perf_counter() - t) * 1000)
        q = statistics.quantiles(ms, n=20)
        print(f"  {label:14s} p50 {statistics.median(ms):7.2f} ms  p95 {q[18]:7.2f} ms  ({queries} queries, top 10)")
    exact = exact_top10(store, collection, probes[:20], size)
    approx = [{h[0] for h in store.nearest(collection, "v", p, 10)} for p in probes[:20]]
    overlap = np.mean([len(a & e) / 10 for a, e in zip(approx, exact)])
    print(f"  recall@10 of the index against exact search (20 queries): {overlap:.3f}")
    store.close()


def exact_top10(store: EdgeVectorStore, collection: str, probes: np.ndarray, size: int) -> list[set[str]]:
    """Brute force over every stored vector, regenerated chunk by chunk (same seeds)."""
    best = [[] for _ in probes]
    for start in range(0, size, 5000):
        vectors = clustered(min(5000, size - start), np.random.default_rng(start))
        sims = probes @ vectors.T
        for q, row in enumerate(sims):
            top = np.argpartition(-row, 10)[:10]
            best[q] += [(float(row[i]), start + int(i)) for i in top]
    return [{point_id_for(f"v{i // 1000}/{i % 1000:06d}") for _, i in sorted(b, reverse=True)[:10]} for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma list of store sizes for the latency part")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-recall", action="store_true")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_recall:
            recall(Path(tmp) / "recall")
        for size in (int(s) for s in args.sizes.split(",") if s):
            latency(size, args.queries, Path(tmp))


if __name__ == "__main__":
    main()
