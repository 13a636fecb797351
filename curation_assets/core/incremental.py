"""Curating one new source against a stored corpus without reading the corpus.

The vector store answers "which stored frames are near" (k-NN with payload filters); what
the rules need of the whole population is kept as small running summaries: the distance
distribution of every duplicate group's isolation (for the robust z), and counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from curation_assets.core.outliers import isolated, robust_z, with_verdicts

# isolation is a cosine distance in [0, 2]; 4 000 bins put the median and MAD within 5e-4
# of the exact ones, far below the z threshold's resolution, in 32 kB of state
BINS = 4000
RANGE = 2.0


@dataclass
class RunningSummary:
    """A histogram of values in [0, RANGE] with their count, sum and sum of squares: the
    median and MAD of everything ever added, to bin width, in constant memory."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    total: float = 0.0
    squares: float = 0.0

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        bins = np.clip((values / RANGE * BINS).astype(np.int64), 0, BINS - 1)
        self.counts += np.bincount(bins, minlength=BINS)
        self.total += float(values.sum())
        self.squares += float((values**2).sum())

    def _centres(self) -> np.ndarray:
        return (np.arange(BINS) + 0.5) * RANGE / BINS

    def median(self) -> float:
        return _weighted_median(self._centres(), self.counts)

    def z(self, values: np.ndarray) -> np.ndarray:
        """``core.outliers.robust_z`` of ``values`` against everything added (median, 1.4826 MAD;
        the standard deviation when the MAD vanishes)."""
        values = np.asarray(values, dtype=np.float64)
        if self.n == 0:
            return np.zeros(len(values))
        median = self.median()
        mad = _weighted_median(np.abs(self._centres() - median), self.counts) * 1.4826
        if mad <= RANGE / BINS:  # below the bin width: no spread the histogram can see
            std = np.sqrt(max(self.squares / self.n - (self.total / self.n) ** 2, 0.0))
            mad = std or 1.0
        return (values - median) / mad

    def to_json(self) -> dict:
        nonzero = np.flatnonzero(self.counts)
        return {"bins": nonzero.tolist(), "counts": self.counts[nonzero].tolist(),
                "total": self.total, "squares": self.squares}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict | None) -> RunningSummary:
        summary = cls()
        if data:
            summary.counts[np.asarray(data["bins"], dtype=np.int64)] = data["counts"]
            summary.total, summary.squares = float(data["total"]), float(data["squares"])
        return summary


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    if cumulative[-1] == 0:
        return 0.0
    return float(values[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def kth_frame_distance(sims: np.ndarray, frames: np.ndarray, k: int) -> np.ndarray:
    """Per row, the cosine distance to the nearest neighbour by which ``k`` frames are reached
    (``frames``: how many frames each neighbour's group holds, 0 for no neighbour), the rule
    of ``core.outliers.isolation_scores`` over neighbours merged from several places (the
    new source's own groups, the store's). Rows sorted by similarity, best first; a row that
    never reaches k frames takes its last neighbour; 0 where there is none."""
    n = len(sims)
    if n == 0 or sims.shape[1] == 0:
        return np.zeros(n, dtype=np.float32)
    valid = frames > 0
    seen = np.cumsum(np.where(valid, frames, 0), axis=1)
    last = np.maximum(valid.sum(axis=1) - 1, 0)
    reached = np.where((seen >= k).any(axis=1), np.argmax(seen >= k, axis=1), last)
    distance = 1.0 - sims[np.arange(n), reached]
    return np.where(valid.any(axis=1), distance, 0.0).astype(np.float32)


def merge_neighbours(*lists: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, frames) lists of the same rows side by side, each row sorted best first
    (missing neighbours: similarity -inf, frames 0)."""
    sims = np.concatenate([s for s, _ in lists], axis=1)
    frames = np.concatenate([f for _, f in lists], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(frames, order, axis=1)


def plan_grouping(state: dict | None, inputs: dict[str, str], settings: dict, incremental: bool) -> tuple[str, list]:
    """What grouping has to do, given its last state, each source's vector table -> fingerprint
    and the current settings: ("unchanged", []), ("incremental", new sources) or ("rebuild: why",
    every source)."""
    if not incremental:
        return "rebuild: requested", sorted(inputs)
    if state is None:
        return "rebuild: first build in this layout", sorted(inputs)
    if state["settings"] != settings:
        return "rebuild: model or thresholds changed", sorted(inputs)
    changed = sorted(v for v, f in state["inputs"].items() if inputs.get(v) != f)
    if changed:
        return f"rebuild: {len(changed)} sources changed or removed, e.g. {changed[0]}", sorted(inputs)
    new = sorted(set(inputs) - set(state["inputs"]))
    return ("incremental", new) if new else ("unchanged", [])


def plan_scoring(state: dict | None, grouped: dict, settings: dict, incremental: bool) -> tuple[str, list]:
    """What outlier scoring has to do after grouping's state ``grouped``: the sources grouped
    since it last ran, nothing, or every source when the groups were rebuilt, its settings
    changed or a rebuild is asked for."""
    current = state is not None and state["generation"] == grouped["generation"] and state["settings"] == settings
    if incremental and current:
        todo = sorted(set(grouped["inputs"]) - set(state["sources"]))
        return ("incremental", todo) if todo else ("unchanged", [])
    why = "rebuild: requested" if incremental is False else "rebuild: groups rebuilt or settings changed"
    return why, sorted(grouped["inputs"])


def in_chunks(sources: list[str], size: int) -> list[list[str]]:
    """A rebuild's sources, ``size`` at a time (one empty chunk when there are none)."""
    return [sources[i : i + size] for i in range(0, len(sources), size)] or [[]]


def judge_isolation(parts: list, known: dict[str, float], summary: RunningSummary, exact: bool, n_groups: int,
                    params) -> list:  # fmt: skip
    """Each scored part's isolation verdicts: the robust z of its groups' distances against every
    group's, from the running histogram ``summary`` (which gains the groups scored now, ``known``:
    representative -> distance), or with ``exact`` (a rebuild, which scored every group) the
    exact statistics of ``known``. ``parts``: (scored rows, their group rows or None for frames
    that could not be read); returned in the same order, the scored rows with score, isolated
    and the verdict columns."""
    new_reps = np.array(list(known.values()), dtype=np.float64)
    summary.add(new_reps[np.isfinite(new_reps)])
    exact_z = dict(zip(known, robust_z(new_reps))) if exact and len(known) > 2 else {}
    judged = []
    for scored, aligned in parts:
        if aligned is None:
            judged.append((scored, aligned))
            continue
        distance = scored["isolation"].to_numpy(dtype=np.float64)
        z = aligned["group_id"].map(exact_z).to_numpy(dtype=np.float64) if exact_z else summary.z(distance)
        z = np.where(np.isfinite(z), z, 0.0)  # a group with no distance (none stored) is not judged
        flagged = isolated(distance, z, aligned["group_size"].to_numpy(), n_groups, params)
        judged.append((with_verdicts(scored.assign(score=z, isolated=flagged)), aligned))
    return judged
