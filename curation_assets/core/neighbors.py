"""k-nearest-neighbour search over unit vectors in blocks: memory O(block x N), never N x N."""

from __future__ import annotations

import numpy as np


def knn(
    vectors: np.ndarray, k: int, block_size: int = 2048, queries: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-NN of ``queries`` (default: ``vectors`` themselves, self excluded).

    Returns ``(indices, similarities)``, each (n_queries, k), nearest first; rows are padded
    with index -1 and similarity -inf when there are fewer than ``k`` candidates.
    """
    base = np.ascontiguousarray(vectors, dtype=np.float32)
    self_search = queries is None
    q = base if self_search else np.ascontiguousarray(queries, dtype=np.float32)
    n_q, n = len(q), len(base)
    idx = np.full((n_q, k), -1, dtype=np.int64)
    sim = np.full((n_q, k), -np.inf, dtype=np.float32)
    available = n - 1 if self_search else n
    kk = min(k, available)
    if kk <= 0:
        return idx, sim
    for start in range(0, n_q, block_size):
        stop = min(start + block_size, n_q)
        scores = q[start:stop] @ base.T
        if self_search:
            scores[np.arange(stop - start), np.arange(start, stop)] = -np.inf
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        idx[start:stop, :kk] = np.take_along_axis(part, order, axis=1)
        sim[start:stop, :kk] = np.take_along_axis(part_scores, order, axis=1)
    return idx, sim
