"""Cleaning labels by component: near-identical images should carry the same labels.

A component is a duplicate group (the same person, product or scene shot again). Where its
members' labels disagree, some annotation is wrong; each rule below decides what to change,
with its threshold, and says what it changed. Components smaller than ``min_members`` are
left alone (two images cannot outvote each other).

- ``majority_vote`` (default): each member gets the labels most of its component holds: a
  label fewer than half hold is dropped from the members holding it (an annotator's slip),
  one more than half hold is given to the members missing it (an annotator's miss; only
  image-level labels: a box cannot be invented); an even split is left alone;
- ``component_pruning``: drop every image of a component whose labels disagree too much
  (mean over its labels of the Bernoulli variance p(1-p) above ``max_variance``);
- ``label_pruning``: drop a label from the members holding it when fewer than
  ``min_share`` of the component holds it (a minority label is an annotator's slip);
- ``label_intersection``: keep only the labels every member holds;
- ``image_pruning``: drop an image whose labels are rare in its component (the mean share
  of its labels among the members, and of the majority's labels it lacks, below ``min_agreement``).

Labels are (frame_id, category) rows: image-level labels (attributes, classes) or the
categories of an image's boxes, which a rule removes together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RULES = ("majority_vote", "component_pruning", "label_pruning", "label_intersection", "image_pruning")
DEFAULT_RULE = "majority_vote"


@dataclass(frozen=True)
class CleaningRule:
    name: str = DEFAULT_RULE
    max_variance: float = 0.1  # component_pruning
    min_share: float = 0.5  # label_pruning: a label held by fewer than this share of members goes
    min_agreement: float = 0.6  # image_pruning
    min_members: int = 3  # smaller components cannot outvote anyone

    def __post_init__(self):
        if self.name not in RULES:
            raise ValueError(f"unknown cleaning rule {self.name!r}: choose from {', '.join(RULES)}")


@dataclass
class Cleaned:
    labels: pd.DataFrame  # the labels after the rule (the input's columns)
    dropped_images: list[str]  # frames the rule removed whole
    removals: pd.DataFrame  # rule, group_id, frame_id, category ("" for a whole image), change, share
    disagreement: pd.DataFrame  # group_id, members, variance: every component, most disagreeing first


def _matrix(members: list[str], labels: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Members x categories, 1 where a member holds the category."""
    categories = sorted(labels["category"].unique())
    index = {f: i for i, f in enumerate(members)}
    matrix = np.zeros((len(members), len(categories)), dtype=np.float32)
    col = {c: j for j, c in enumerate(categories)}
    for f, c in zip(labels["frame_id"], labels["category"]):
        matrix[index[f], col[c]] = 1.0
    return matrix, categories


def _label_row(held: pd.DataFrame, frame_id: str, category: str) -> dict:
    """An image-level label for ``frame_id``, with its split (from its own rows or the component's)."""
    own = held[held["frame_id"] == frame_id]
    template = (own if len(own) else held).iloc[0].to_dict()
    return {**template, **dict.fromkeys(("x", "y", "w", "h"), np.nan), "frame_id": frame_id, "category": category}


def clean_labels(labels: pd.DataFrame, groups: pd.DataFrame, rule: CleaningRule = CleaningRule()) -> Cleaned:
    """Apply ``rule`` over the components of ``groups`` (frame_id, group_id) to ``labels``
    (frame_id, category, ...); frames outside ``groups`` are their own component."""
    group_of = dict(zip(groups["frame_id"], groups["group_id"]))
    frames = pd.Series(sorted(set(labels["frame_id"]) | set(groups["frame_id"])))
    component = frames.map(lambda f: group_of.get(f, f))
    drop_pairs: set[tuple[str, str]] = set()
    added: list[dict] = []
    dropped: list[str] = []
    removals, disagreement = [], []
    for group_id, members in frames.groupby(component):
        members = list(members)
        held = labels[labels["frame_id"].isin(members)]
        matrix, categories = _matrix(members, held) if len(held) else (np.zeros((len(members), 0)), [])
        share = matrix.mean(axis=0) if len(categories) else np.zeros(0)
        variance = float((share * (1 - share)).mean()) if len(categories) else 0.0
        disagreement.append({"group_id": group_id, "members": len(members), "variance": round(variance, 4)})
        if len(members) < max(rule.min_members, 2):
            continue
        if rule.name == "component_pruning":
            if variance > rule.max_variance:
                dropped += members
                removals += [(rule.name, group_id, f, "", "image dropped", variance) for f in members]
            continue
        if rule.name == "image_pruning":
            majority = share > 0.5
            for i, f in enumerate(members):
                mine = matrix[i] > 0
                # how much the members agree with what this image says, held or not held
                votes = np.where(mine, share, 1 - share)[mine | majority]
                agreement = float(votes.mean()) if votes.size else 1.0
                if agreement < rule.min_agreement:
                    dropped.append(f)
                    removals.append((rule.name, group_id, f, "", "image dropped", agreement))
            continue
        if rule.name == "majority_vote":
            for j in np.flatnonzero(share > 0.5):
                image_level = held.loc[held["category"] == categories[j], "w"].isna().all() if "w" in held else True
                change = "added" if image_level else "missing (a box: not invented)"
                for i in np.flatnonzero(matrix[:, j] == 0):
                    removals.append((rule.name, group_id, members[i], categories[j], change, float(share[j])))
                    if image_level:
                        added.append(_label_row(held, members[i], categories[j]))
        floor = {"label_intersection": 1.0, "majority_vote": 0.5}.get(rule.name, rule.min_share)
        for j in np.flatnonzero(share < floor - 1e-9):
            for i in np.flatnonzero(matrix[:, j]):
                drop_pairs.add((members[i], categories[j]))
                removals.append((rule.name, group_id, members[i], categories[j], "removed", float(share[j])))
    pairs = list(zip(labels["frame_id"], labels["category"]))
    keep = [(f not in dropped) and ((f, c) not in drop_pairs) for f, c in pairs]
    dropped_set = set(dropped)
    kept = labels[np.asarray(keep, dtype=bool)] if len(labels) else labels
    kept = kept[~kept["frame_id"].isin(dropped_set)]
    if added:
        kept = pd.concat([kept, pd.DataFrame(added, columns=labels.columns)], ignore_index=True)
    return Cleaned(
        kept.sort_values(["frame_id", "category"], kind="stable").reset_index(drop=True),
        sorted(dropped_set),
        pd.DataFrame(removals, columns=["rule", "group_id", "frame_id", "category", "change", "share"]),
        pd.DataFrame(disagreement).sort_values(["variance", "members"], ascending=False, ignore_index=True),
    )
