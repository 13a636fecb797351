"""Labeled datasets (COCO) as sources, and the audit that cleans them.

A COCO dataset in the landing zone is a folder holding ``annotations/*.json`` (the standard
layout: ``annotations/instances_train2017.json`` beside ``train2017/``). Its images are read
like any other source; its labels come along. The audit then reports what published
studies keep finding in real datasets: duplicates inside a split, near-copies across splits
(train/val leaks), unreadable images, outliers and copies whose labels disagree, and builds
a cleaned, leak-free version. Source images are never modified or deleted.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from curation_assets.core.frames import UnreadableSourceError

SPLIT_PRIORITY = ("train", "val", "test")  # on a leak, the copy in the earliest split is kept


def split_name(annotation_key: str) -> str:
    """``annotations/instances_val2017.json`` -> ``val``; unknown names keep their stem."""
    stem = posixpath.basename(annotation_key).rsplit(".", 1)[0].lower()
    for split, words in (("train", ("train",)), ("val", ("val", "valid")), ("test", ("test",))):
        if any(w in stem for w in words):
            return split
    return stem


@dataclass(frozen=True)
class CocoEntry:
    member: str | None  # landing key of the image file; None when it is missing
    file_name: str
    split: str
    annotations: tuple[tuple[str, float, float, float, float], ...]  # (category, x, y, w, h)
    problem: str | None = None  # why its labels cannot be trusted (the image is then left out)


def read_coco(
    root: str, members: tuple[str, ...], read: Callable[[str], bytes], problems: list[str] | None = None
) -> list[CocoEntry]:
    """Every image entry of every annotation file under ``root`` (a folder key ending in "/").

    What is wrong in a file is appended to ``problems`` (file, row and cause) instead of
    raising: a malformed image or annotation row is skipped, images sharing an id are both
    left out (their boxes cannot be told apart), annotations of no image are counted."""
    problems = [] if problems is None else problems
    images = {m[len(root) :]: m for m in members if not m.endswith(".json")}
    by_basename: dict[str, list[str]] = {}
    for rel, key in images.items():
        by_basename.setdefault(posixpath.basename(rel), []).append(key)
    entries = []
    for ann_key in sorted(m for m in members if m.endswith(".json")):
        try:
            doc = json.loads(read(ann_key))
        except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than any COCO file
            raise UnreadableSourceError(f"landing/{ann_key}: malformed COCO JSON ({str(exc)[:200]})") from exc
        if not isinstance(doc, dict):
            raise UnreadableSourceError(f"landing/{ann_key}: not a COCO document (top level is not an object)")
        split = split_name(ann_key)
        where = f"landing/{ann_key}"
        names = {c.get("id"): c.get("name") for c in _rows(doc, "categories") if isinstance(c, dict)}
        valid_images = []
        for row, image in enumerate(_rows(doc, "images")):
            if not (isinstance(image, dict) and isinstance(image.get("file_name"), str) and _id(image.get("id"))):
                problems.append(f"{where}: image row {row} has no file_name and id; skipped")
                continue
            valid_images.append(image)
        ids = [image["id"] for image in valid_images]
        shared = {i for i in ids if ids.count(i) > 1}
        if shared:
            problems.append(f"{where}: image ids used twice: {sorted(shared, key=str)[:10]}; those images are left out")
        boxes: dict = {}
        orphans = 0
        for row, ann in enumerate(_rows(doc, "annotations")):
            bbox = ann.get("bbox") if isinstance(ann, dict) else None
            if not (isinstance(bbox, list | tuple) and len(bbox) == 4 and _id(ann.get("image_id"))):
                problems.append(f"{where}: annotation row {row} has no image_id or [x, y, w, h] bbox; skipped")
                continue
            if ann["image_id"] not in ids:
                orphans += 1
                continue
            boxes.setdefault(ann["image_id"], []).append((names.get(ann.get("category_id"), "?"), *bbox))
        if orphans:
            problems.append(f"{where}: {orphans} annotations refer to no image; skipped")
        for image in valid_images:
            file_name = image["file_name"]
            exact = [images[p] for p in (file_name, f"{split}/{file_name}") if p in images]
            by_name = by_basename.get(posixpath.basename(file_name), [])
            member = exact[0] if exact else (by_name[0] if len(by_name) == 1 else None)
            problem = f"image id {image['id']} is used twice in {where}" if image["id"] in shared else None
            entries.append(CocoEntry(member, file_name, split, tuple(boxes.get(image["id"], ())), problem))
    return entries


def _rows(doc: dict, key: str) -> list:
    rows = doc.get(key, [])
    return rows if isinstance(rows, list) else []


def _id(value) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def audit(
    frames: pd.DataFrame,
    groups: pd.DataFrame,
    outliers: pd.DataFrame,
    labels: pd.DataFrame,
    remove_outliers: bool = False,
) -> pd.DataFrame:
    """One row per frame of a labeled source: keep or remove, and why.

    ``frames``: frame_id, split, corrupt, source_name; ``groups``/``outliers``: the global
    tables; ``labels``: frame_id, category. Returns frame_id, split, group_id, keep, reason,
    related (the frame it duplicates, when any).
    """
    t = (
        frames[["frame_id", "split", "corrupt", "source_name"]]
        .reset_index(drop=True)
        .merge(groups[["frame_id", "group_id", "is_representative"]], on="frame_id", how="left")
    )
    t = t.merge(outliers[["frame_id", "is_outlier", "reasons"]], on="frame_id", how="left")
    t["group_id"] = t["group_id"].fillna(t["frame_id"])
    label_sets = labels.groupby("frame_id")["category"].agg(lambda c: tuple(sorted(c)))
    t["labels"] = t["frame_id"].map(label_sets).apply(lambda v: v if isinstance(v, tuple) else ())
    t["keep"], t["reason"], t["related"] = True, "", ""

    def remove(mask, reason: str, related=None) -> None:
        mask = mask & t["keep"]
        t.loc[mask, "keep"] = False
        t.loc[mask, "reason"] = reason
        if related is not None:
            t.loc[mask, "related"] = related[mask]

    error = frames["error"] if "error" in frames else pd.Series("unreadable image", index=frames.index)
    t["error"] = error.to_numpy()
    remove(t["corrupt"], "corrupt: " + t["error"].where(t["error"] != "", "unreadable image"))
    if remove_outliers:
        remove(t["is_outlier"].fillna(False).astype(bool), "outlier: " + t["reasons"].fillna(""))
    conflicting = t[t["keep"]].groupby("group_id")["labels"].nunique()
    remove(t["group_id"].isin(conflicting[conflicting > 1].index), "labels disagree within a duplicate group")
    # one frame per group survives: the earliest split, then the group's representative
    rank = t["split"].map({s: i for i, s in enumerate(SPLIT_PRIORITY)}).fillna(len(SPLIT_PRIORITY))
    order = t.assign(_rank=rank, _rep=~t["is_representative"].fillna(False).astype(bool))
    order = order[order["keep"]].sort_values(["group_id", "_rank", "_rep", "frame_id"])
    kept = order.drop_duplicates("group_id").set_index("group_id")
    survivor = t["group_id"].map(kept["frame_id"])
    survivor_split = t["group_id"].map(kept["split"])
    dup = t["keep"] & (t["frame_id"] != survivor)
    leak = dup & (t["split"] != survivor_split)
    leak_reason = "leak: copy of " + survivor.fillna("") + " in " + survivor_split.fillna("")
    remove(leak, leak_reason, survivor)
    remove(dup, "duplicate inside " + t["split"] + " of " + survivor.fillna(""), survivor)
    t["outlier_reasons"] = t["reasons"].fillna("")
    return t[["frame_id", "source_name", "split", "group_id", "labels", "outlier_reasons", "keep", "reason", "related"]]
