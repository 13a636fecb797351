"""k-nearest-neighbour search over unit vectors, never N x N.

``knn`` is exact and blocked: memory O(block x N), time O(N^2) — right up to a few tens of
thousands of vectors. ``knn_graph`` switches to a clustered search above that: spherical
k-means cuts the space into ~sqrt(N) cells, every vector is filed under its ``spill``
nearest cells, and each vector is compared only with the vectors filed under its own cell,
as one matrix product per cell. Near copies sit much closer to each other than to any
cell boundary, so they almost always share a cell; ``bench/scale.py`` measures the recall
(0.9997 of planted near-copy pairs at 1M vectors with the default spill of 4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

EXACT_BELOW = 5_000  # vectors; from here on clustering is the cheaper search


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
    idx, sim = _empty(n_q, k)
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


def knn_graph(
    vectors: np.ndarray, k: int, exact_below: int = EXACT_BELOW, spill: int = 4, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Each vector's ``k`` nearest others, in ``knn``'s format: exact for small inputs,
    clustered (``clustered_knn``) from ``exact_below`` vectors on."""
    if len(vectors) < exact_below:
        return knn(vectors, k)
    return clustered_knn(vectors, k, spill=spill, seed=seed)


def clustered_knn(
    vectors: np.ndarray, k: int, spill: int = 4, cells: int | None = None, seed: int = 0, block_size: int = 65_536
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate self k-NN: compare each vector with those filed under its nearest cell.

    Memory: the vectors, the (N, k) result and one cell's scores; time about
    N x spill x N / cells dot products plus the clustering.
    """
    import torch  # only above EXACT_BELOW vectors: most runs never pay for the import

    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    n = len(x)
    idx, sim = _empty(n, k)
    if n < 2 or k <= 0:
        return idx, sim
    cells = cells or max(1, round(np.sqrt(n)))
    spill = max(1, min(spill, cells))
    centroids = spherical_kmeans(x, cells, seed=seed)
    cells = len(centroids)
    nearest_cells = torch.cat(
        [(x[s : s + block_size] @ centroids.T).topk(spill, dim=1).indices for s in range(0, n, block_size)]
    )
    home = nearest_cells[:, 0]
    home_order = torch.argsort(home, stable=True)
    home_start = _starts(home, cells)
    # Every vector is also filed under its 2nd..spill-th nearest cells, so that a query
    # whose copy lies just across a boundary still meets it.
    filed_cell = nearest_cells[:, 1:].reshape(-1)
    filed_vector = torch.arange(n).repeat_interleave(spill - 1)[torch.argsort(filed_cell, stable=True)]
    filed_start = _starts(filed_cell, cells)
    out_idx, out_sim = torch.from_numpy(idx), torch.from_numpy(sim)
    for cell in range(cells):
        a, b = home_start[cell], home_start[cell + 1]
        if a == b:
            continue
        queries = x[home_order[a:b]]  # gathered per cell: no second copy of every vector
        spilled = filed_vector[filed_start[cell] : filed_start[cell + 1]]
        ids = torch.cat([home_order[a:b], spilled])
        scores = queries @ torch.cat([queries, x[spilled]]).T
        scores.diagonal().fill_(-torch.inf)  # the query itself: its home cell comes first
        kk = min(k, len(ids) - 1)
        if kk <= 0:
            continue
        top, at = scores.topk(kk, dim=1)
        out_idx[home_order[a:b], :kk] = ids[at]
        out_sim[home_order[a:b], :kk] = top
    _complete_exactly(vectors, idx, sim)
    return idx, sim


def _complete_exactly(vectors: np.ndarray, idx: np.ndarray, sim: np.ndarray) -> None:
    """Rows whose cell held fewer than k others (a remote vector alone in its cell) are
    searched exactly, so every row is as full as the input allows."""
    kk = min(idx.shape[1], len(vectors) - 1)
    short = np.flatnonzero(idx[:, kk - 1] < 0) if kk > 0 else []
    if not len(short):
        return
    found, sims = knn(vectors, kk + 1, queries=np.asarray(vectors)[short])
    not_self = np.argsort(found == short[:, None], axis=1, kind="stable")[:, :kk]
    idx[short, :kk] = np.take_along_axis(found, not_self, axis=1)
    sim[short, :kk] = np.take_along_axis(sims, not_self, axis=1)


def spherical_kmeans(
    x: torch.Tensor, n_clusters: int, iterations: int = 8, sample_per_cluster: int = 32, seed: int = 0
) -> torch.Tensor:
    """Unit centroids from k-means on a sample, by cosine (deterministic given ``seed``)."""
    import torch

    rng = np.random.default_rng(seed)
    sample = x[torch.from_numpy(rng.choice(len(x), min(len(x), sample_per_cluster * n_clusters), replace=False))]
    n_clusters = min(n_clusters, len(sample))
    centroids = sample[torch.from_numpy(rng.choice(len(sample), n_clusters, replace=False))].clone()
    for _ in range(iterations):
        assign = (sample @ centroids.T).argmax(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, sample)
        empty = torch.bincount(assign, minlength=n_clusters) == 0
        sums[empty] = centroids[empty]  # an empty cluster keeps its centroid
        centroids = torch.nn.functional.normalize(sums, dim=1)
    return centroids


def _starts(labels: torch.Tensor, n_labels: int) -> list[int]:
    """Offsets of each label's run in ``labels`` sorted (length n_labels + 1)."""
    import torch

    counts = torch.bincount(labels, minlength=n_labels)
    return [0, *torch.cumsum(counts, 0).tolist()]


def _empty(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
