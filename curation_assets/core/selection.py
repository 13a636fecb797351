"""Choosing frames to label within a budget.

Candidates are decided before any strategy runs: representatives of duplicate groups that
are not outliers and whose group holds nothing already selected or labeled, so a team
never pays twice for the same picture.

Strategies: ``random`` (the baseline), ``diversity`` (k-center greedy coreset seeded with
what is already labeled), ``typicality`` (TypiClust: 1 / mean distance to the k nearest
neighbours), ``uncertainty`` (from a predictions table) and ``hybrid`` (diversity weighted
by uncertainty: each pick maximises distance x uncertainty, Lightly's product of
objectives); ``object_diversity`` (frames chosen for the boxes they add) lives in
core.objects. Balance targets on a metadata column split the budget into quotas, filled as
far as the candidates allow, with the shortfall reported; caps bound a value's share of the
batch (e.g. the class a model predicts most, so one dominant class cannot fill the round).
Everything is deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_assets.core.neighbors import knn_graph
from curation_assets.core.objects import select_frames

STRATEGIES = ("random", "diversity", "typicality", "uncertainty", "hybrid", "object_diversity")
FRAME_STRATEGIES = STRATEGIES[:-1]  # object_diversity chooses frames by their boxes: core.objects.select_frames
UNCERTAINTY_MEASURES = ("least_confidence", "margin", "entropy")


def candidate_mask(groups: pd.DataFrame, outliers: pd.DataFrame, taken_frame_ids: set[str]) -> np.ndarray:
    """True for frames that may be selected; ``groups``/``outliers`` share row order."""
    taken_groups = set(groups.loc[groups["frame_id"].isin(taken_frame_ids), "group_id"])
    return (
        groups["is_representative"].to_numpy()
        & ~outliers["is_outlier"].to_numpy()
        & ~groups["group_id"].isin(taken_groups).to_numpy()
    )


def resolve_budget(budget: int, fraction: float, n_candidates: int) -> int:
    """A count, or (when ``fraction`` > 0) that fraction of the candidates."""
    wanted = int(round(fraction * n_candidates)) if fraction > 0 else budget
    return max(0, min(wanted, n_candidates))


def select_random(n_candidates: int, budget: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the candidates and their scores (here: none, NaN)."""
    order = np.random.default_rng(seed).permutation(n_candidates)[: min(budget, n_candidates)]
    return order, np.full(len(order), np.nan)


def _min_distance_to(x: np.ndarray, others: np.ndarray | None) -> np.ndarray:
    min_dist = np.full(len(x), np.inf, dtype=np.float32)
    if others is not None and len(others):
        for start in range(0, len(others), 4096):
            d = 1.0 - x @ np.asarray(others[start : start + 4096], dtype=np.float32).T
            min_dist = np.minimum(min_dist, d.min(axis=1))
    return min_dist


def k_center_greedy(
    candidates: np.ndarray,
    budget: int,
    seed: int,
    already: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Coreset selection: repeatedly take the candidate farthest from everything chosen.

    ``already`` (vectors labeled or selected before) seeds the covered set, so a round fills
    the gaps earlier rounds left. With ``weights`` (e.g. uncertainty in [0, 1]) each pick
    maximises distance x weight**strength. Returns candidate indices in pick order and each
    pick's score (its cosine distance to the nearest chosen point, times its weight).
    """
    x = np.asarray(candidates, dtype=np.float32)
    n = len(x)
    budget = min(budget, n)
    if budget <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    w = np.ones(n) if weights is None else np.clip(np.asarray(weights, dtype=np.float64), 1e-6, None) ** strength
    min_dist = _min_distance_to(x, already)
    picks, scores = [], []
    if not np.isfinite(min_dist).any():  # nothing labeled yet: start from a seeded random pick
        first = int(np.random.default_rng(seed).integers(n)) if weights is None else int(np.argmax(w))
        picks.append(first)
        scores.append(np.inf)
        min_dist = np.minimum(min_dist, 1.0 - x @ x[first])
        min_dist[first] = -np.inf
    while len(picks) < budget:
        gain = np.where(np.isfinite(min_dist) & (min_dist > -np.inf), min_dist * w, -np.inf)
        best = int(np.argmax(gain))
        picks.append(best)
        scores.append(float(gain[best]))
        min_dist = np.minimum(min_dist, 1.0 - x @ x[best])
        min_dist[best] = -np.inf
    return np.array(picks, dtype=np.int64), np.array(scores)


def typicality(vectors: np.ndarray, k: int = 20) -> np.ndarray:
    """TypiClust's typicality: 1 / mean cosine distance to the k nearest neighbours."""
    n = len(vectors)
    if n < 2:
        return np.ones(n)
    _, sims = knn_graph(vectors, min(k, n - 1))
    return 1.0 / np.maximum((1.0 - sims).mean(axis=1), 1e-6)


def select_typical(vectors: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    scores = typicality(vectors)
    order = np.argsort(-scores, kind="stable")[: min(budget, len(vectors))]
    return order, scores[order]


def uncertainty(predictions: pd.DataFrame, measure: str = "entropy", aggregate: str = "max") -> pd.Series:
    """Per-frame uncertainty in [0, 1] from a predictions table.

    Classification: one row per frame with ``probs`` (class probabilities) ->
    least_confidence (1 - p_max), margin (1 - (p1 - p2)) or normalised entropy.
    Detection: one row per box with ``confidence`` -> per-box 1 - |2c - 1| (a box at 0.5 is
    the least certain), aggregated per image by ``max``, ``mean`` or ``sum`` (capped at 1).
    """
    if "probs" in predictions:
        p = np.stack(predictions["probs"].map(lambda v: np.asarray(v, dtype=np.float64)).to_numpy())
        p = p / np.clip(p.sum(axis=1, keepdims=True), 1e-12, None)
        top = -np.sort(-p, axis=1)
        if measure == "least_confidence":
            u = 1.0 - top[:, 0]
        elif measure == "margin":
            u = 1.0 - (top[:, 0] - (top[:, 1] if p.shape[1] > 1 else 0.0))
        elif measure == "entropy":
            u = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1) / np.log(max(p.shape[1], 2))
        else:
            raise ValueError(f"unknown uncertainty measure {measure!r}; use one of {UNCERTAINTY_MEASURES}")
        return pd.Series(u, index=predictions["frame_id"].to_numpy()).groupby(level=0).max()
    if "confidence" in predictions:
        per_box = 1.0 - (2.0 * predictions["confidence"].astype(float) - 1.0).abs()
        grouped = per_box.groupby(predictions["frame_id"].to_numpy())
        if aggregate not in ("max", "mean", "sum"):
            raise ValueError(f"unknown aggregate {aggregate!r}; use max, mean or sum")
        return getattr(grouped, aggregate)().clip(0, 1)
    raise ValueError("predictions need a 'probs' column (classification) or 'confidence' (detection)")


def predicted_classes(predictions: pd.DataFrame, categories: list[str], min_confidence: float = 0.5) -> pd.Series:
    """frame_id -> the class a model predicts for it: the most probable class (classification,
    ``probs`` in the order of ``categories``) or the commonest class among its boxes of at least
    ``min_confidence`` (detection, ``category`` per box; "none" when no box is that sure)."""
    if "probs" in predictions:
        best = predictions["probs"].map(lambda p: int(np.argmax(np.asarray(p, dtype=np.float64))))
        names = best.map(lambda i: categories[i] if i < len(categories) else f"class {i}")
        return pd.Series(names.to_numpy(), index=predictions["frame_id"].to_numpy()).groupby(level=0).first()
    if "category" in predictions and "confidence" in predictions:
        sure = predictions[predictions["confidence"].astype(float) >= min_confidence]
        common = sure.groupby("frame_id")["category"].agg(lambda c: c.value_counts().index[0])
        return common.reindex(predictions["frame_id"].unique(), fill_value="none")
    raise ValueError("class-aware selection needs predictions with 'probs' (classification) or 'category' and "
                     "'confidence' per box (detection)")  # fmt: skip


@dataclass(frozen=True)
class Quota:
    value: str
    target: int
    available: int
    chosen: int


def quotas(values: pd.Series, budget: int, targets: dict[str, float] | None = None) -> list[Quota]:
    """Split ``budget`` over the values of a metadata column (equal shares by default).

    A value with fewer candidates than its share gives the rest to the others, as far as
    the input allows.
    """
    available = values.value_counts().to_dict()
    keys = sorted(available)
    weights = {k: float((targets or {}).get(k, 0.0 if targets else 1.0)) for k in keys}
    total = sum(weights.values()) or 1.0
    share = {k: budget * weights[k] / total for k in keys}
    alloc = {k: min(int(np.floor(share[k])), available[k]) for k in keys}
    remaining = min(budget, sum(available.values())) - sum(alloc.values())
    while remaining > 0:  # largest unmet share first, then anything with room left
        room = [k for k in keys if alloc[k] < available[k]]
        if not room:
            break
        k = max(room, key=lambda key: (share[key] - alloc[key], -keys.index(key)))
        alloc[k] += 1
        remaining -= 1
    return [Quota(k, int(round(share[k])), available[k], alloc[k]) for k in keys]


def select(
    strategy: str,
    vectors: np.ndarray,
    budget: int,
    seed: int,
    already: np.ndarray | None = None,
    uncertainty_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run one strategy over candidate ``vectors``; returns (indices, scores) in pick order."""
    if strategy == "random":
        return select_random(len(vectors), budget, seed)
    if strategy == "diversity":
        return k_center_greedy(vectors, budget, seed, already)
    if strategy == "typicality":
        return select_typical(vectors, budget)
    if strategy in ("uncertainty", "hybrid") and uncertainty_scores is None:
        raise ValueError(f"strategy {strategy!r} needs a predictions table")
    if strategy == "uncertainty":
        order = np.lexsort((np.arange(len(vectors)), -uncertainty_scores))[: min(budget, len(vectors))]
        return order, uncertainty_scores[order]
    if strategy == "hybrid":
        return k_center_greedy(vectors, budget, seed, already, weights=uncertainty_scores)
    raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(FRAME_STRATEGIES)}")


def select_balanced(
    strategy: str,
    vectors: np.ndarray,
    values: pd.Series,
    budget: int,
    seed: int,
    targets: dict[str, float] | None = None,
    already: np.ndarray | None = None,
    uncertainty_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Quota]]:
    """``select`` within each value's quota; picks of one value count as covered for the next."""
    values = pd.Series(np.asarray(values), dtype=object)
    picks, scores = [], []
    covered = already
    plan = quotas(values, budget, targets)
    for q in plan:
        idx = np.flatnonzero((values == q.value).to_numpy())
        u = None if uncertainty_scores is None else uncertainty_scores[idx]
        local, local_scores = select(strategy, vectors[idx], q.chosen, seed, covered, u)
        picks.extend(idx[local])
        scores.extend(local_scores)
        chosen = vectors[idx[local]]
        covered = chosen if covered is None or not len(covered) else np.concatenate([covered, chosen])
    return np.array(picks, dtype=np.int64), np.array(scores), plan


def capped_size(values: pd.Series, caps: dict[str, float], budget: int) -> int:
    """How many frames a round of ``budget`` can hold when no value may pass its cap."""
    available = pd.Series(np.asarray(values, dtype=object)).value_counts()
    room = sum(min(n, int(np.floor(caps[v] * budget + 1e-9))) if v in caps else n for v, n in available.items())
    return min(budget, int(room))


def cap_shares(
    strategy: str,
    vectors: np.ndarray,
    values: pd.Series,
    picks: np.ndarray,
    scores: np.ndarray,
    caps: dict[str, float],
    seed: int,
    already: np.ndarray | None = None,
    uncertainty_scores: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``picks`` with no value above its cap (a share of the batch): a capped value keeps its
    first picks, and the places it gives back go to the same strategy over the other values
    (a smaller batch when they run out: see ``capped_size``)."""
    values = np.asarray(values, dtype=object)
    budget = len(picks)
    limit = {v: int(np.floor(share * budget + 1e-9)) for v, share in caps.items()}
    picks, scores = list(picks), list(scores)
    closed: set[str] = set()
    for _ in range(len(limit) + 1):
        seen: dict[str, int] = {}
        kept = []
        for p, s in zip(picks, scores):
            v = values[p]
            if v in limit and seen.get(v, 0) >= limit[v]:
                closed.add(v)
                continue
            seen[v] = seen.get(v, 0) + 1
            kept.append((p, s))
        if len(kept) == len(picks):
            break
        picks, scores = [p for p, _ in kept], [s for _, s in kept]
        open_rows = ~np.isin(values, list(closed)) & ~np.isin(np.arange(len(values)), picks)
        rest = np.flatnonzero(open_rows)
        chosen = vectors[picks]
        covered = chosen if already is None or not len(already) else np.concatenate([already, chosen])
        u = None if uncertainty_scores is None else uncertainty_scores[rest]
        extra, extra_scores = select(strategy, vectors[rest], budget - len(picks), seed, covered, u)
        picks += list(rest[extra])
        scores += list(extra_scores)
    return np.array(picks, dtype=np.int64), np.array(scores, dtype=float)


def coverage_radius(vectors: np.ndarray, chosen: np.ndarray) -> float:
    """Largest cosine distance from any vector to its nearest chosen one (lower = better covered)."""
    if len(chosen) == 0 or len(vectors) == 0:
        return float("nan")
    return float(_min_distance_to(np.asarray(vectors, dtype=np.float32), chosen).max())


@dataclass(frozen=True)
class RoundSettings:
    """How one labeling round chooses (the selected_batch config, without the budget)."""

    strategy: str = "diversity"
    seed: int = 0
    balance_on: str = ""  # a table column, or "predicted_class"
    balance_targets: dict[str, float] | None = None
    class_caps: dict[str, float] | None = None
    uncertainty_measure: str = "entropy"
    categories: tuple[str, ...] = ()
    object_class_strength: float = 1.0

    @property
    def class_aware(self) -> bool:
        return bool(self.class_caps) or self.balance_on == "predicted_class"

    def needs_predictions(self) -> str:
        """What needs a predictions table ("" when nothing does)."""
        if self.strategy in ("uncertainty", "hybrid"):
            return f"strategy {self.strategy!r}"
        return "class-aware selection" if self.class_aware else ""


@dataclass(frozen=True)
class Round:
    picks: np.ndarray  # rows of the table, in pick order
    scores: np.ndarray
    plan: list[Quota]  # the balance quotas (empty for object_diversity)
    expected: int  # the batch size the round can reach (caps may hold it under the budget)
    predicted_class: pd.Series | None  # per table row, when class-aware
    box_classes: pd.Series | None  # the chosen frames' boxes' classes, for object_diversity


def choose_round(
    table: pd.DataFrame,
    vectors: np.ndarray,
    candidates: np.ndarray,
    taken_rows: np.ndarray,
    budget: int,
    settings: RoundSettings,
    predictions: pd.DataFrame | None = None,
    objects: pd.DataFrame | None = None,
) -> Round:
    """One round over ``table`` (a row per frame, ``vectors`` in its order): ``candidates`` are
    the rows that may be chosen, ``taken_rows`` those selected or labeled before. Raises
    ValueError (or KeyError for a missing column) for settings the inputs cannot serve."""
    frame_ids = table["frame_id"].to_numpy()
    u = None
    if settings.strategy in ("uncertainty", "hybrid"):
        per_frame = uncertainty(predictions, settings.uncertainty_measure)
        u = table["frame_id"].map(per_frame).to_numpy(dtype=float)
        u = np.where(np.isnan(u), np.nanmedian(u) if np.isfinite(u).any() else 0.5, u)[candidates]
    classes = None
    if settings.class_aware:
        classes = table["frame_id"].map(predicted_classes(predictions, list(settings.categories))).fillna("unpredicted")
    if settings.strategy == "object_diversity":
        if settings.balance_on or settings.class_caps:
            raise ValueError("object_diversity balances box classes itself (object_class_strength); "
                             "balance_on and class_caps apply to the frame strategies")  # fmt: skip
        taken = set(frame_ids[taken_rows])
        local, scores = select_frames(objects, frame_ids[candidates], taken, budget, settings.seed,
                                      settings.object_class_strength)  # fmt: skip
        chosen = set(frame_ids[candidates[local]])
        boxes = objects.loc[objects["frame_id"].isin(chosen), "category"]
        return Round(candidates[local], scores, [], budget, None, boxes)
    if settings.balance_on == "predicted_class":
        balance = classes
    else:
        balance = table[settings.balance_on].astype(str) if settings.balance_on else pd.Series("all", index=table.index)
    args = (settings.strategy, vectors[candidates])
    local, scores, plan = select_balanced(*args, balance.iloc[candidates], budget, settings.seed,
                                          settings.balance_targets or None, vectors[taken_rows], u)  # fmt: skip
    expected = budget
    if settings.class_caps:
        expected = capped_size(classes.iloc[candidates], settings.class_caps, budget)
        local, scores = cap_shares(*args, classes.iloc[candidates], local, scores, settings.class_caps, settings.seed,
                                   vectors[taken_rows], u)  # fmt: skip
    return Round(candidates[local], scores, plan, expected, classes, None)


BATCH_COLUMNS = ["frame_id", "group_id", "video_id", "camera_id", "uri", "width", "height"]


@dataclass(frozen=True)
class Pool:
    """What one round chooses among: every grouped and scored frame, what was taken before, and
    which rows may still be chosen."""

    table: pd.DataFrame  # a row per frame: the frame table with its duplicate group and outlier flag
    vectors: np.ndarray  # in the table's order
    taken: set[str]  # frame ids selected or labeled before this round
    taken_rows: np.ndarray  # per table row: taken before
    candidates: np.ndarray  # the rows that may be chosen (see candidate_mask)


def round_pool(
    frames: pd.DataFrame, vectors: np.ndarray, groups: pd.DataFrame, flags: pd.DataFrame, taken_before: set[str]
) -> Pool:
    """The pool of a round over ``frames`` (``vectors`` in their order), their duplicate
    ``groups`` and outlier ``flags``; ``taken_before``: frames earlier rounds selected or labeled."""
    table = frames.merge(groups, on="frame_id").merge(flags[["frame_id", "is_outlier"]], on="frame_id")
    vectors = vectors[frames["frame_id"].isin(table["frame_id"]).to_numpy()]
    # a labeled dataset's frames (those with a split) are labeled already: never paid for twice
    taken = taken_before | set(table.loc[table["split"] != "", "frame_id"])
    candidates = np.flatnonzero(candidate_mask(table, table, taken))
    return Pool(table, vectors, taken, table["frame_id"].isin(taken).to_numpy(), candidates)


def batch_table(pool: Pool, picked: Round, strategy: str, round_id: str) -> pd.DataFrame:
    """The chosen frames in pick order, with how and when each was chosen."""
    batch = pool.table.iloc[picked.picks][[*BATCH_COLUMNS, "is_outlier"]].reset_index(drop=True)
    return batch.assign(strategy=strategy, score=picked.scores, rank=np.arange(1, len(batch) + 1), round=round_id)


def coverage_before_after(pool: Pool, picked: Round) -> tuple[float, float]:
    """How far the groups' representatives lie from what is labeled, before and after the round
    (``coverage_radius``: nan when nothing is labeled)."""
    representatives = pool.vectors[pool.table["is_representative"].to_numpy()]
    before = pool.vectors[pool.taken_rows]
    after = np.concatenate([before, pool.vectors[picked.picks]])
    return coverage_radius(representatives, before), coverage_radius(representatives, after)


def shares(values: pd.Series) -> dict[str, float]:
    """Each value's share of ``values``, rounded, in value order."""
    return {k: round(v, 3) for k, v in values.value_counts(normalize=True).sort_index().items()}
