"""Recall of the store's quantizations on real frame vectors, against exact search.

    python bench/quantization.py ROOT_OR_TABLE... [--top 10] [--queries 500]

Reads every ``frame_embeddings`` table under the given roots (or the given parquet files),
keeps the distinct vectors, writes them into the embedded store once per setting (``none``,
``int8``, ``binary``; the HNSW graph forced at any size) and asks each of ``--queries`` of
them (itself left out) for its ``--top`` nearest at the store's search effort (hnsw_ef
``HNSW_EF``, oversampling 2 and ``OVERSAMPLING``, rescored on the originals). Recall: the
share of the exact top that comes back. EfficientNet's pooled features are non-negative
(most are 0), which a sign bit cannot tell apart from small values: what binary loses here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from resources.vector_store import HNSW_EF, OVERSAMPLING, EdgeVectorStore  # noqa: E402


def real_vectors(paths: list[Path]) -> np.ndarray:
    files = [f for p in paths for f in ([p] if p.is_file() else p.rglob("frame_embeddings/*.parquet"))]
    stacked = [np.stack(pd.read_parquet(f, columns=["vector"])["vector"].to_numpy()) for f in files]
    vectors = np.unique(np.round(np.concatenate(stacked).astype(np.float32), 5), axis=0)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def recall(vectors: np.ndarray, variant: str, queries: np.ndarray, top: int, work: Path) -> dict:
    import qdrant_edge as qe

    quantization, _, encoding = variant.partition(":")
    store = EdgeVectorStore(work / variant.replace(":", "-"), quantization=quantization)
    store._config_base = store._config
    store._config = lambda name, dim: _forced_index(qe, store._config_base(name, dim), encoding)
    store.ensure_collection("c", "v", vectors.shape[1])
    ids = [point_id_for(str(i)) for i in range(len(vectors))]
    number = {p: i for i, p in enumerate(ids)}
    payloads = [{"video_id": "v"} for _ in ids]
    for start in range(0, len(ids), 1024):
        store.upsert("c", "v", ids[start : start + 1024], vectors[start : start + 1024], payloads[start : start + 1024])
    started = time.perf_counter()
    store.build_index("c")
    built = time.perf_counter() - started
    exact = np.argsort(-(vectors[queries] @ vectors.T), axis=1)[:, 1 : top + 1]  # itself first, left out
    found = {}
    for oversampling in (2.0, OVERSAMPLING):
        store.oversampling = oversampling
        hits = [store.nearest("c", "v", vectors[q], top + 1) for q in queries]  # one by one: a real query's path
        got = [{number[h[0]] for h in hit} - {q} for hit, q in zip(hits, queries)]
        found[oversampling] = float(np.mean([len(g & set(e)) / top for g, e in zip(got, exact)]))
    store.close()
    return {"index_s": round(built, 2), **{f"recall@{top} oversampling {o:g}": round(r, 3) for o, r in found.items()}}


def _forced_index(qe, config, encoding: str = ""):
    """The same collection with its graph built at any size (the engine skips it below ~10 k points);
    ``encoding``: binary's variants, "TwoBits" (stored codes) or "Scalar8Bits" (the query's)."""
    codes = config.quantization_config
    if encoding in ("TwoBits", "OneAndHalfBits"):
        codes = qe.BinaryQuantizationConfig(always_ram=True, encoding=getattr(qe.BinaryQuantizationEncoding, encoding))
    elif encoding:
        codes = qe.BinaryQuantizationConfig(
            always_ram=True, query_encoding=getattr(qe.BinaryQuantizationQueryEncoding, encoding)
        )
    return qe.EdgeConfig(vectors=config.vectors, quantization_config=codes,
                         hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=1),
                         optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--queries", type=int, default=500)
    args = parser.parse_args()
    vectors = real_vectors(args.paths)
    print(f"machine: {describe()}")
    print(f"{len(vectors)} distinct real vectors x {vectors.shape[1]}; negative values {np.mean(vectors < 0):.3f}, "
          f"zeros {np.mean(vectors == 0):.3f}; hnsw_ef {HNSW_EF}")  # fmt: skip
    queries = np.random.default_rng(0).choice(len(vectors), min(args.queries, len(vectors)), replace=False)
    with tempfile.TemporaryDirectory() as work:
        for variant in ("none", "int8", "binary", "binary:TwoBits", "binary:Scalar8Bits"):
            print(f"  {variant}: {recall(vectors, variant, queries, args.top, Path(work))}", flush=True)


if __name__ == "__main__":
    main()
