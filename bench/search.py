"""Similarity search: does it find what it should, and how fast at scale.

    .venv/bin/python bench/search.py [--sizes 100000,1000000] [--quantization none|int8] [--queries 200]
                                     [--skip-recall] [--map 100000]

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
    ``--quantization int8`` (the store's setting for millions of vectors): int8 vectors in RAM,
    the originals on disk, the top hits rescored on them.
(3) The embedding map (core/maps.py): UMAP layout and drawing of ``--map`` such vectors.
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

from bench.machine import anon_rss_mb, describe, peak_rss_mb  # noqa: E402
from bench.quality_data import NEAR_COPIES, generate_images  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from resources.vector_store import EdgeVectorStore, Where  # noqa: E402

DIM = 1280  # efficientnet-lite0's embedding width
RECALL_QUERIES = 50
SEARCH_EFFORTS = [(256, 8.0), (128, 4.0), (None, 2.0)]  # (hnsw_ef, int8 oversampling): the store's default first


def recall(work: Path) -> None:
    truth = generate_images(work / "landing")
    root = work / "root"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    subprocess.run([sys.executable, "-m", "curation_assets", "run", "--landing", str(work / "landing"),
                    "--root", str(root)], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
    from curation_assets.core import layout
    from curation_assets.defs.search import SearchConfig, search
    from curation_assets.defs.settings import resources_from_env

    resources = resources_from_env({**env, "CURATION_STORAGE_URI": str(root)})
    store = resources["object_store"].store()
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    frame_of = dict(zip(frames["source_name"].str.rsplit("/", n=1).str[-1], frames["frame_id"]))
    family = {name: what["base"] for name, what in truth.items()}  # an original and its copies share a base

    def hits_for(frame: str) -> list[str]:
        config = SearchConfig(frame=frame, top=10)
        found = search(config, resources["object_store"], resources["embedder"], resources["vector_store"]).hits
        return list(found["frame_id"])

    name_of = {f: n for n, f in frame_of.items()}
    first: dict[str, list[bool]] = {}
    found_from_original: dict[str, list[bool]] = {}
    for name, what in truth.items():
        category = what["category"]
        if category not in (*NEAR_COPIES, "flip", "view") or name not in frame_of:
            continue
        hits = [name_of.get(f) for f in hits_for(frame_of[name])]
        first.setdefault(category, []).append(bool(hits) and family.get(hits[0]) == what["base"])
        original = f"{what['base']}.jpg"
        if original in frame_of:
            from_original = [name_of.get(f) for f in hits_for(frame_of[original])]
            found_from_original.setdefault(category, []).append(name in from_original)
    print("\n(1) recall on the real-data benchmark (each copy's family: its original and the other copies of it)")
    print("| copies | queries | query a copy: rank 1 is of its family | query the original: the copy in the top 10 |")
    print("|---|---|---|---|")
    for label, keys in [(c, (c,)) for c in (*NEAR_COPIES, "flip", "view")] + [("planted (all five)", NEAR_COPIES)]:
        ones = [x for k in keys for x in first.get(k, [])]
        tens = [x for k in keys for x in found_from_original.get(k, [])]
        if ones:
            print(f"| {label} | {len(ones)} | {np.mean(ones):.3f} | {np.mean(tens):.3f} |")


def clustered(n: int, rng: np.random.Generator, clusters: int = 2000) -> np.ndarray:
    """Unit vectors like a fleet's frame embeddings: scenes (cluster centres) and, inside
    each, variation along a few shared directions (camera motion, lighting, people), plus a
    little noise: a low intrinsic dimension, as real embeddings have (isotropic noise in
    1280 dimensions would be a worst case no index meets)."""
    world = np.random.default_rng(0)
    centres = world.normal(size=(clusters, DIM)).astype(np.float32) / np.sqrt(DIM)
    basis = np.linalg.qr(world.normal(size=(DIM, 32)))[0].astype(np.float32).T  # 32 directions of change
    z = rng.normal(size=(n, 32)).astype(np.float32) * 0.06
    x = centres[rng.integers(0, clusters, n)] + z @ basis + 0.004 * rng.normal(size=(n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latency(size: int, queries: int, work: Path, quantization: str) -> None:
    rng = np.random.default_rng(size)
    store = EdgeVectorStore(work / f"qdrant-{size}", quantization=quantization)
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
    anon_written = anon_rss_mb(os.getpid())
    started = time.perf_counter()
    store.build_index(collection)
    indexed = time.perf_counter() - started
    anon_indexed = anon_rss_mb(os.getpid())
    probes = sample + 0.05 * rng.normal(size=sample.shape).astype(np.float32)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    disk = _megabytes(work / f"qdrant-{size}")
    print(f"\n(2) {size:,} vectors x {DIM} ({quantization=}): written in {written:.1f} s, index built in "
          f"{indexed:.1f} s, {disk} MB on disk;\n    resident: peak {peak_rss_mb(os.getpid())} MB with "
          f"memory-mapped files, the process's own {anon_written} MB after writing, {anon_indexed} MB after "
          "indexing")  # fmt: skip
    exact = exact_top10(store, collection, probes[:RECALL_QUERIES], size)
    for hnsw_ef, oversampling in SEARCH_EFFORTS if quantization == "int8" else SEARCH_EFFORTS[:1]:
        store.hnsw_ef, store.oversampling = hnsw_ef, oversampling
        effort = f"hnsw_ef {hnsw_ef or 'default'}"
        effort += f", oversampling {oversampling}" if quantization == "int8" else ""
        approx = [{h[0] for h in store.nearest(collection, "v", p, 10)} for p in probes[:RECALL_QUERIES]]
        overlap = np.mean([len(a & e) / 10 for a, e in zip(approx, exact)])
        print(f"  {effort}: recall@10 against exact search ({RECALL_QUERIES} queries) {overlap:.3f}")
        for label, where in (("no filter", None), ("camera filter", Where(cameras=["cam-3"]))):
            store.nearest(collection, "v", probes[0], 10, where)  # warm
            ms = []
            for probe in probes:
                t = time.perf_counter()
                store.nearest(collection, "v", probe, 10, where)
                ms.append((time.perf_counter() - t) * 1000)
            q = statistics.quantiles(ms, n=20)
            print(f"    {label:14s} p50 {statistics.median(ms):7.2f} ms  p95 {q[18]:7.2f} ms  ({queries} queries)")
    store.close()


def _megabytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) // 2**20


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


def draw_map(size: int) -> None:
    from curation_assets.core.maps import draw_panels, group_size_bins, layout_2d

    vectors = clustered(size, np.random.default_rng(7))
    started = time.perf_counter()
    placed = layout_2d(vectors)
    layout_s = time.perf_counter() - started
    labels = [f"cam-{i % 8}" for i in range(size)]
    started = time.perf_counter()
    sizes = group_size_bins([1 + i % 30 for i in range(size)])
    png = draw_panels(placed.coords, [("camera", labels), ("group size", sizes)], "bench")
    draw_s = time.perf_counter() - started
    print(
        f"\n(3) map of {size:,} vectors: {placed.method} layout {layout_s:.1f} s (numba's compile included), "
        f"two panels drawn in {draw_s:.1f} s ({len(png) // 1024} KB PNG), peak RSS {peak_rss_mb(os.getpid())} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma list of store sizes for the latency part")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quantization", default="none", choices=["none", "int8"])
    parser.add_argument("--skip-recall", action="store_true")
    parser.add_argument("--map", type=int, default=0, help="also time the embedding map of this many vectors")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_recall:
            recall(Path(tmp) / "recall")
        for size in (int(s) for s in args.sizes.split(",") if s):
            latency(size, args.queries, Path(tmp), args.quantization)
    if args.map:
        draw_map(args.map)


if __name__ == "__main__":
    main()
