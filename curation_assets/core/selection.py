"""Choosing frames to label within a budget.

Candidates are decided before any strategy runs: representatives of duplicate groups that
are not outliers and whose group holds nothing already selected or labeled, so a team
never pays twice for the same picture.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STRATEGIES = ("random", "diversity")


def candidate_mask(groups: pd.DataFrame, outliers: pd.DataFrame, taken_frame_ids: set[str]) -> pd.Series:
    """True for frames that may be selected; ``groups``/``outliers`` share row order."""
    taken_groups = set(groups.loc[groups["frame_id"].isin(taken_frame_ids), "group_id"])
    return (
        groups["is_representative"].to_numpy()
        & ~outliers["is_outlier"].to_numpy()
        & ~groups["group_id"].isin(taken_groups).to_numpy()
    )


def select_random(n_candidates: int, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the candidates and their scores (here: none, NaN)."""
    order = np.random.default_rng(seed).permutation(n_candidates)[: min(budget, n_candidates)]
    return order, np.full(len(order), np.nan)


def k_center_greedy(
    candidates: np.ndarray, budget: int, seed: int, already: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Coreset selection: repeatedly take the candidate farthest from everything chosen.

    ``already`` (vectors of frames labeled or selected before) seeds the covered set, so a
    new round fills the gaps earlier rounds left. Returns candidate indices in pick order
    and each pick's cosine distance to the nearest chosen point when it was picked (the
    coverage radius it closed).
    """
    x = np.asarray(candidates, dtype=np.float32)
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    min_dist = np.full(n, np.inf, dtype=np.float32)
    if already is not None and len(already):
        for start in range(0, len(already), 4096):
            d = 1.0 - x @ np.asarray(already[start : start + 4096], dtype=np.float32).T
            min_dist = np.minimum(min_dist, d.min(axis=1))
    picks, scores = [], []
    if not np.isfinite(min_dist).any():
        first = int(np.random.default_rng(seed).integers(n))
        picks.append(first)
        scores.append(np.inf)
        min_dist = np.minimum(min_dist, 1.0 - x @ x[first])
        min_dist[first] = -np.inf
    while len(picks) < budget:
        best = int(np.argmax(min_dist))
        picks.append(best)
        scores.append(float(min_dist[best]))
        min_dist = np.minimum(min_dist, 1.0 - x @ x[best])
        min_dist[best] = -np.inf
    return np.array(picks, dtype=np.int64), np.array(scores)


def coverage_radius(vectors: np.ndarray, chosen: np.ndarray) -> float:
    """Largest cosine distance from any vector to its nearest chosen one (lower = better covered)."""
    if len(chosen) == 0 or len(vectors) == 0:
        return float("nan")
    x = np.asarray(vectors, dtype=np.float32)
    c = np.asarray(chosen, dtype=np.float32)
    worst = 0.0
    for start in range(0, len(x), 4096):
        worst = max(worst, float((1.0 - x[start : start + 4096] @ c.T).min(axis=1).max()))
    return worst
