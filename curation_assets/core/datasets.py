"""The audit of labeled datasets, and the cleaned copy it makes.

A labeled dataset in the landing zone (any format of core/label_formats.py) is read like
any other source; its labels come along. The audit then reports what published
studies keep finding in real datasets: duplicates inside a split, near-copies across splits
(train/val leaks), unreadable images, outliers and copies whose labels disagree, and builds
a cleaned, leak-free version. Source images are never modified or deleted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass

import pandas as pd

from curation_assets.core.label_cleaning import Cleaned, CleaningRule, clean_labels
from curation_assets.core.labels import coco_dataset

SPLIT_PRIORITY = ("train", "val", "test")  # on a leak, the copy in the earliest split is kept


def audit(
    frames: pd.DataFrame,
    groups: pd.DataFrame,
    outliers: pd.DataFrame,
    labels: pd.DataFrame,
    remove_outliers: bool = False,
    relabel: Collection[str] = (),
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
    remove(t["frame_id"].isin(set(relabel)), "labels disagree with its near copies (label cleaning)")
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


@dataclass
class SourceAudit:
    report: pd.DataFrame  # one row per frame: keep or remove, and why (``audit``)
    labels: pd.DataFrame  # the labels after cleaning
    cleaning: Cleaned | None  # what the label-cleaning rule changed (None: no rule)
    balance: dict  # ``class_balance`` of what the cleaned copy keeps


def audit_source(
    frames: pd.DataFrame,
    labels: pd.DataFrame,
    groups: pd.DataFrame,
    outliers: pd.DataFrame,
    rule: CleaningRule | None,
    remove_outliers: bool = False,
) -> SourceAudit:
    """One labeled source: labels cleaned over its duplicate groups, then the audit."""
    cleaning = None
    if rule is not None:
        cleaning = clean_labels(labels, groups[groups["frame_id"].isin(frames["frame_id"])], rule)
        labels = cleaning.labels
    relabel = cleaning.dropped_images if cleaning is not None else ()
    report = audit(frames, groups, outliers, labels, remove_outliers, relabel)
    kept = set(report.loc[report["keep"], "frame_id"])
    return SourceAudit(report, labels, cleaning, class_balance(labels[labels["frame_id"].isin(kept)], frames))


def class_balance(labels: pd.DataFrame, frames: pd.DataFrame) -> dict:
    """How the classes of a labeled set are spread: per class the images holding it, its
    boxes and boxes per image; images per class in each split and camera; and the imbalance
    (the commonest class's images over the rarest's)."""
    if labels.empty:
        return {"classes": {}, "imbalance": None}
    t = labels.merge(frames[["frame_id", "camera_id"]], on="frame_id", how="left")
    boxed = t["w"].notna() if "w" in t else pd.Series(False, index=t.index)
    images = t.groupby("category")["frame_id"].nunique()
    boxes = t[boxed].groupby("category").size().reindex(images.index, fill_value=0)
    per = {
        c: {"images": int(images[c]), "boxes": int(boxes[c]), "boxes_per_image": round(boxes[c] / images[c], 2)}
        for c in images.index
    }

    def spread(by: str) -> dict:
        table = t.groupby([by, "category"])["frame_id"].nunique()
        return {str(k or "(none)"): {c: int(n) for c, n in g.droplevel(0).items()} for k, g in table.groupby(level=0)}

    return {
        "classes": per,
        "by_split": spread("split"),
        "by_camera": spread("camera_id"),
        "imbalance": round(float(images.max() / images.min()), 2),
        "dominant": str(images.idxmax()),
        "dominant_share_of_images": round(float(images.max() / t["frame_id"].nunique()), 3),
    }


def merge_sources(
    frames: pd.DataFrame,
    labels: pd.DataFrame,
    groups: pd.DataFrame,
    sources: list[str],
    category_map: dict[str, str],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Several labeled sources as one dataset: (images, labels, drops).

    Categories are renamed by ``category_map`` (source category -> target; "" drops it;
    unmapped ones keep their name). An image whose duplicate group already has an image from
    an earlier source in ``sources`` (or earlier in the same source) is kept once: the first.
    Unreadable images are dropped. Every image and label keeps its provenance (source, file,
    original category); every drop says why, so images in = images out + drops.
    """
    images = frames[frames["video_id"].isin(sources)].copy()
    images["source"] = images["video_id"]
    images["_order"] = images["source"].map({s: i for i, s in enumerate(sources)})
    images = images.merge(groups[["frame_id", "group_id"]], on="frame_id", how="left")
    images["group_id"] = images["group_id"].fillna(images["frame_id"])
    images = images.sort_values(["_order", "frame_index"], kind="stable")
    first = images.loc[~images["corrupt"]].drop_duplicates("group_id").set_index("group_id")["frame_id"]
    survivor = images["group_id"].map(first)
    corrupt = images["corrupt"].to_numpy()
    duplicate = ~corrupt & (images["frame_id"] != survivor).to_numpy()
    reason = pd.Series("", index=images.index, dtype=object)
    reason[corrupt] = "unreadable image"
    source_of = images.set_index("frame_id")["source"]
    reason[duplicate] = [f"duplicate of {s} in {source_of[s]}" for s in survivor[duplicate]]
    dropped_images = images.loc[reason != "", ["frame_id", "source", "source_name"]]
    dropped_images = dropped_images.assign(kind="image", category="", reason=reason[reason != ""])
    kept = images[reason == ""].drop(columns=["_order"]).reset_index(drop=True)

    t = labels[labels["frame_id"].isin(kept["frame_id"])].copy()
    t["source_category"] = t["category"]
    t["category"] = t["category"].map(lambda c: category_map.get(c, c))
    unmapped = t[t["category"] == ""]
    dropped_labels = pd.DataFrame({
        "frame_id": unmapped["frame_id"], "source": unmapped["frame_id"].map(source_of),
        "source_name": unmapped["frame_id"].map(images.set_index("frame_id")["source_name"]), "kind": "label",
        "category": unmapped["source_category"], "reason": "dropped by the category map",
    })  # fmt: skip
    drops = pd.concat([dropped_images, dropped_labels], ignore_index=True)
    return kept, t[t["category"] != ""].reset_index(drop=True), drops


def content_sha256(files: dict[str, bytes]) -> str:
    """One hash of a dataset's files, whatever order they were made in: names a folder by its content."""
    return hashlib.sha256(b"".join(files[name] for name in sorted(files))).hexdigest()


def coco_files_by_split(frames: pd.DataFrame, labels: pd.DataFrame, categories: list[str]) -> dict[str, bytes]:
    """One COCO file per split of ``frames`` (``all.json`` for frames with no split), holding
    their ``labels``."""
    return {
        f"{split or 'all'}.json": json.dumps(
            coco_dataset(frames[frames["split"] == split], labels, categories), indent=1, sort_keys=True
        ).encode()
        for split in sorted(frames["split"].unique())
    }


def findings(report: pd.DataFrame) -> dict[str, int]:
    """What an audit report found, counted by kind."""
    reason = report["reason"]
    return {
        "frames": len(report),
        "corrupt": int(reason.str.startswith("corrupt").sum()),
        "outliers": int((report["outlier_reasons"] != "").sum()),
        "duplicates_within_split": int(reason.str.startswith("duplicate inside").sum()),
        "cross_split_leaks": int(reason.str.startswith("leak").sum()),
        "label_conflicts": int(reason.str.startswith("labels disagree").sum()),
        "kept": int(report["keep"].sum()),
    }


def cleaned_copy(
    source_id: str, frames: pd.DataFrame, result: SourceAudit, rule: CleaningRule | None
) -> tuple[str, dict[str, bytes], dict]:
    """The cleaned copy of one source: (folder, files, manifest), written only once the check passed."""
    report, labels, cleaned = result.report, result.labels, result.cleaning
    keep = set(report.loc[report["keep"], "frame_id"])
    kept_frames = frames[frames["frame_id"].isin(keep)]
    files = coco_files_by_split(kept_frames, labels, sorted(labels["category"].unique()))
    removals = report.loc[~report["keep"], ["frame_id", "source_name", "split", "reason", "related"]]
    files["removals.json"] = json.dumps(removals.to_dict("records"), indent=1).encode()
    if cleaned is not None:  # what the label-cleaning rule dropped, and with which thresholds
        record = {"rule": rule.__dict__, "removals": cleaned.removals.to_dict("records")}
        files["label_cleaning.json"] = json.dumps(record, indent=1).encode()
    folder = f"{source_id}-cleaned-{content_sha256(files)[:10]}"
    return folder, files, {"source": source_id, "findings": findings(report)}


@dataclass
class DatasetsAudit:
    """Every labeled source audited, and its cleaned copy (nothing written yet)."""

    report: pd.DataFrame  # every source's ``audit`` report, with a ``source`` column
    findings: dict[str, dict[str, int]]  # per source: ``findings``
    balance: dict[str, dict]  # per source: ``class_balance`` of what its cleaned copy keeps
    cleaning: dict[str, dict]  # per source the label-cleaning rule acted on: what it changed
    disagreeing: list[tuple[str, tuple]]  # (source, component row) of components whose labels disagree
    cleaned: dict[str, tuple[str, dict[str, bytes], dict]]  # per source: ``cleaned_copy``
    per_group: pd.DataFrame  # kept frames per (source, group): frames, splits, any corrupt


def audit_sources(
    frames: pd.DataFrame,
    labels: pd.DataFrame,
    groups: pd.DataFrame,
    outliers: pd.DataFrame,
    rule: CleaningRule | None,
    remove_outliers: bool,
    original_uri: Callable[[str], str],
) -> DatasetsAudit:
    """``audit_source`` for each labeled source of ``frames``; the cleaned copies name each
    image by ``original_uri`` of its ``source_name`` (the landing zone's original, untouched)."""
    reports, summary, cleaned, cleaning, disagreeing, balance = [], {}, {}, {}, [], {}
    for source_id in sorted(frames["video_id"].unique()):
        source_frames = frames[frames["video_id"] == source_id]
        source_labels = labels[labels["frame_id"].isin(source_frames["frame_id"])]
        result = audit_source(source_frames, source_labels, groups, outliers, rule, remove_outliers)
        reports.append(result.report.assign(source=source_id))
        summary[source_id], balance[source_id] = findings(result.report), result.balance
        if result.cleaning is not None:
            changes = result.cleaning.removals["change"].value_counts()
            cleaning[source_id] = {"rule": rule.name, "labels_removed": int(changes.get("removed", 0)),
                                   "labels_added": int(changes.get("added", 0)),
                                   "images_removed": len(result.cleaning.dropped_images)}  # fmt: skip
            disagreeing += [(source_id, r) for r in result.cleaning.disagreement.head(6).itertuples() if r.variance > 0]
        originals = source_frames.assign(uri=[original_uri(name) for name in source_frames["source_name"]])
        cleaned[source_id] = cleaned_copy(source_id, originals, result, rule)
    report = pd.concat(reports, ignore_index=True)
    kept = report[report["keep"]].merge(frames[["frame_id", "corrupt"]], on="frame_id")
    per_group = kept.groupby(["source", "group_id"], as_index=False).agg(
        frames=("frame_id", "size"), splits=("split", "nunique"), corrupt=("corrupt", "any")
    )
    return DatasetsAudit(report, summary, balance, cleaning, disagreeing, cleaned, per_group)


def merged_files(images: pd.DataFrame, labels: pd.DataFrame, drops: pd.DataFrame) -> dict[str, bytes]:
    """A merged dataset's files (``merge_sources``' output): one COCO file per split, and
    ``provenance.json`` with where every image and label came from and every drop."""
    files = coco_files_by_split(images, labels, sorted(labels["category"].unique()))
    provenance = {
        "images": images[["frame_id", "source", "source_name", "split"]].to_dict("records"),
        "labels": labels[["frame_id", "category", "source_category"]].to_dict("records"),
        "drops": drops.to_dict("records"),
    }
    files["provenance.json"] = json.dumps(provenance, indent=1).encode()
    return files


def merge_counts(
    frames: pd.DataFrame,
    labels: pd.DataFrame,
    sources: list[str],
    merged: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame],
    category_map: dict[str, str],
) -> dict:
    """What went into a merge (``merged``: ``merge_sources``' output) and what came out: every
    image and label in is out or dropped, with why."""
    images, merged_labels, drops = merged
    image_drops = drops[drops["kind"] == "image"]
    source_frames = frames.loc[frames["video_id"].isin(sources), "frame_id"]
    return {
        "sources": sources,
        "images_in": int(frames["video_id"].isin(sources).sum()),
        "images_out": len(images),
        "images_dropped": {k: int(v) for k, v in image_drops["reason"].str.split(" of ").str[0].value_counts().items()},
        "labels_in": int(labels["frame_id"].isin(source_frames).sum()),
        "labels_out": len(merged_labels),
        "labels_dropped_by_map": int((drops["kind"] == "label").sum()),
        "labels_of_dropped_images": int(labels["frame_id"].isin(image_drops["frame_id"]).sum()),
        "category_map": category_map,
    }
