"""Labeling round-trip: export manifests, import and validate COCO annotations, split.

Import never drops a row silently: every annotation is either accepted or rejected with
its reason and position in the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import dataclass

import pandas as pd


def sagemaker_manifest(batch: pd.DataFrame) -> str:
    """SageMaker Ground Truth input manifest: JSON Lines with ``source-ref``."""
    lines = [
        json.dumps({"source-ref": row.uri, "frame-id": row.frame_id, "camera-id": row.camera_id})
        for row in batch.itertuples()
    ]
    return "\n".join(lines) + ("\n" if lines else "")


def coco_images(batch: pd.DataFrame, categories: list[str]) -> dict:
    """A COCO file with images and categories, no annotations: the labeling task list."""
    return {
        "info": {"description": "frames selected for labeling"},
        "images": [
            {
                "id": i + 1,
                "file_name": row.uri,
                "width": int(row.width),
                "height": int(row.height),
                "frame_id": row.frame_id,
            }
            for i, row in enumerate(batch.itertuples())
        ],
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(categories)],
        "annotations": [],
    }


def label_studio_tasks(batch: pd.DataFrame) -> list[dict]:
    """Label Studio task import format: one task per image, ``data.image`` holding its URI."""
    return [
        {"data": {"image": row.uri, "frame_id": row.frame_id, "camera_id": row.camera_id}} for row in batch.itertuples()
    ]


def validate_sagemaker_manifest(text: str) -> list[str]:
    """Problems with a Ground Truth input manifest (JSON Lines, each with a ``source-ref``)."""
    problems = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {n}: not JSON ({exc})")
            continue
        ref = entry.get("source-ref") if isinstance(entry, dict) else None
        if not isinstance(ref, str) or not ref:
            problems.append(f"line {n}: no source-ref")
    return problems


def validate_coco_images(doc: dict) -> list[str]:
    problems = []
    for key in ("images", "categories", "annotations"):
        if not isinstance(doc.get(key), list):
            problems.append(f"'{key}' is missing or not a list")
    ids = [img.get("id") for img in doc.get("images", [])]
    if len(ids) != len(set(ids)):
        problems.append("image ids are not unique")
    for img in doc.get("images", []):
        if not (
            isinstance(img.get("id"), int)
            and img.get("file_name")
            and img.get("width", 0) > 0
            and img.get("height", 0) > 0
        ):
            problems.append(f"image {img.get('id')}: needs int id, file_name, positive width and height")
    names = [c.get("name") for c in doc.get("categories", [])]
    if len(names) != len(set(names)) or not all(isinstance(c.get("id"), int) for c in doc.get("categories", [])):
        problems.append("categories need unique names and int ids")
    return problems


def validate_label_studio_tasks(tasks) -> list[str]:
    if not isinstance(tasks, list):
        return ["tasks must be a JSON list"]
    return [f"task {i}: needs data.image" for i, t in enumerate(tasks) if not (t.get("data") or {}).get("image")]


def export_bundle(batch: pd.DataFrame, categories: list[str]) -> tuple[dict[str, str], list[str]]:
    """A round's files for the labeling tools (SageMaker Ground Truth input manifest, COCO
    images, Label Studio tasks) and what is wrong with them, each checked in its own format."""
    files = {
        "manifest.jsonl": sagemaker_manifest(batch),
        "coco_images.json": json.dumps(coco_images(batch, categories), indent=1),
        "label_studio_tasks.json": json.dumps(label_studio_tasks(batch), indent=1),
    }
    problems = (
        validate_sagemaker_manifest(files["manifest.jsonl"])
        + validate_coco_images(json.loads(files["coco_images.json"]))
        + validate_label_studio_tasks(json.loads(files["label_studio_tasks.json"]))
    )
    return files, problems


@dataclass
class ImportResult:
    accepted: pd.DataFrame  # frame_id, category, x, y, w, h, source, row
    rejected: pd.DataFrame  # source, row, reason
    labeled_frames: list[str]  # selected frames the file covers, with or without boxes


ACCEPTED_COLUMNS = ["frame_id", "category", "x", "y", "w", "h", "source", "row"]


def import_coco(text: str, source: str, frames: pd.DataFrame, categories: list[str]) -> ImportResult:
    """Validate a COCO annotation file against the selected ``frames``.

    ``frames`` holds frame_id, uri, width, height of the frames sent for labeling. An image
    is matched by its ``frame_id`` field, else by ``file_name`` equal to the frame's URI.
    """
    rejected: list[dict] = []
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict):
            raise ValueError("top level is not an object")
    except ValueError as exc:
        return ImportResult(
            pd.DataFrame(columns=ACCEPTED_COLUMNS),
            pd.DataFrame([{"source": source, "row": -1, "reason": f"malformed JSON: {exc}"}]),
            [],
        )
    by_uri = frames.set_index("uri")["frame_id"].to_dict()
    size = frames.set_index("frame_id")[["width", "height"]].to_dict("index")
    category_names = {c.get("id"): c.get("name") for c in _objects(doc, "categories")}
    image_frame: dict = {}
    for img in _objects(doc, "images"):
        frame_id = img.get("frame_id") or by_uri.get(img.get("file_name"))
        image_frame[_hashable(img.get("id"))] = frame_id if isinstance(frame_id, str) and frame_id in size else None

    accepted, seen = [], set()
    annotations = doc.get("annotations", [])
    for row, ann in enumerate(annotations if isinstance(annotations, list) else []):
        reject = functools.partial(_reject, rejected, source, row)
        if not isinstance(ann, dict):  # one structurally wrong row is rejected alone
            reject(f"annotation row {row}: {type(ann).__name__} where an annotation object belongs")
            continue

        image_id = _hashable(ann.get("image_id"))
        frame_id = image_frame.get(image_id)
        name = category_names.get(ann.get("category_id"))
        bbox = ann.get("bbox")
        if frame_id is None:
            reject(f"annotation {ann.get('id')}: image {image_id} is not a frame selected for labeling")
            continue
        if name not in categories:
            reject(f"annotation {ann.get('id')}: unknown category {ann.get('category_id')} ({name})")
            continue
        numbers = isinstance(bbox, list) and len(bbox) == 4 and all(_finite_number(v) for v in bbox)
        if not numbers:  # NaN and Infinity parse as floats in Python's json
            reject(f"annotation {ann.get('id')}: bbox {bbox!r} is not [x, y, w, h] in finite numbers")
            continue
        x, y, w, h = (float(v) for v in bbox)
        width, height = size[frame_id]["width"], size[frame_id]["height"]
        if w <= 0 or h <= 0:
            reject(f"annotation {ann.get('id')}: box {bbox} has non-positive size")
            continue
        if x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
            reject(f"annotation {ann.get('id')}: box {bbox} is outside the {width}x{height} image")
            continue
        key = (frame_id, name, round(x, 1), round(y, 1), round(w, 1), round(h, 1))
        if key in seen:
            reject(f"annotation {ann.get('id')}: duplicate of an earlier annotation")
            continue
        seen.add(key)
        accepted.append(
            {"frame_id": frame_id, "category": name, "x": x, "y": y, "w": w, "h": h, "source": source, "row": row}
        )
    return ImportResult(
        pd.DataFrame(accepted, columns=ACCEPTED_COLUMNS),
        pd.DataFrame(rejected, columns=["source", "row", "reason"]),
        sorted({f for f in image_frame.values() if f is not None}),
    )


def import_sagemaker(text: str, source: str, frames: pd.DataFrame, categories: list[str]) -> ImportResult:
    """Validate a SageMaker Ground Truth bounding-box *output* manifest (JSON Lines).

    Each line: ``source-ref``, a label attribute holding ``annotations`` (class_id, left,
    top, width, height) and ``image_size``, and ``<attribute>-metadata`` with a
    ``class-map``. A malformed line is rejected alone; the other lines are kept.
    """
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": c} for i, c in enumerate(categories)]}
    rejected = []
    by_uri = frames.set_index("uri")["frame_id"].to_dict()
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            attribute = next(k for k, v in entry.items() if isinstance(v, dict) and "annotations" in v)
            class_map = entry.get(f"{attribute}-metadata", {}).get("class-map", {})
        except (ValueError, StopIteration, AttributeError) as exc:
            rejected.append({"source": source, "row": n, "reason": f"line {n}: not a bounding-box result ({exc!r})"})
            continue
        boxes = entry[attribute]["annotations"]
        if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            rejected.append({"source": source, "row": n, "reason": f"line {n}: annotations are not a list of objects"})
            continue
        image_id = len(coco["images"]) + 1
        ref = entry.get("source-ref")
        coco["images"].append(
            {"id": image_id, "file_name": ref, "frame_id": by_uri.get(ref) if isinstance(ref, str) else None}
        )
        for box in boxes:
            name = class_map.get(str(box.get("class_id")))
            coco["annotations"].append(
                {
                    "id": f"line {n}",
                    "image_id": image_id,
                    "category_id": categories.index(name) if name in categories else f"{box.get('class_id')}",
                    "bbox": [box.get("left"), box.get("top"), box.get("width"), box.get("height")],
                }
            )
    result = import_coco(json.dumps(coco), source, frames, categories)
    result.rejected = pd.concat([pd.DataFrame(rejected, columns=result.rejected.columns), result.rejected])
    return result


def _objects(doc: dict, key: str) -> list[dict]:
    """The list under ``key``, keeping only its objects (malformed entries cannot crash a lookup)."""
    values = doc.get(key, [])
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _hashable(value):
    return value if isinstance(value, str | int | float | type(None)) else repr(value)


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _reject(rejected: list[dict], source: str, row: int, reason: str) -> None:
    rejected.append({"source": source, "row": row, "reason": reason})


def box_iou(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    ix = (pd.concat([a.x + a.w, b.x + b.w], axis=1).min(axis=1) - pd.concat([a.x, b.x], axis=1).max(axis=1)).clip(
        lower=0
    )
    iy = (pd.concat([a.y + a.h, b.y + b.h], axis=1).min(axis=1) - pd.concat([a.y, b.y], axis=1).max(axis=1)).clip(
        lower=0
    )
    inter = ix * iy
    return inter / (a.w * a.h + b.w * b.h - inter)


def label_conflicts(annotations: pd.DataFrame, iou: float = 0.8) -> pd.DataFrame:
    """Pairs of boxes on the same frame covering the same object with different categories."""
    ann = annotations.reset_index(drop=True).assign(_i=lambda d: d.index)
    pairs = ann.merge(ann, on="frame_id", suffixes=("_a", "_b"))
    pairs = pairs[(pairs["_i_a"] < pairs["_i_b"]) & (pairs["category_a"] != pairs["category_b"])]
    if pairs.empty:
        return pd.DataFrame(columns=["frame_id", "category_a", "category_b", "iou"])
    a = pairs[["x_a", "y_a", "w_a", "h_a"]].set_axis(["x", "y", "w", "h"], axis=1)
    b = pairs[["x_b", "y_b", "w_b", "h_b"]].set_axis(["x", "y", "w", "h"], axis=1)
    pairs = pairs.assign(iou=box_iou(a, b).to_numpy())
    return pairs.loc[pairs["iou"] >= iou, ["frame_id", "category_a", "category_b", "iou"]].reset_index(drop=True)


SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
DEFAULT_CATEGORIES = ("person", "product", "cart")  # what the labelers may draw unless configured


def _stable_hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def split_units(frames: pd.DataFrame, by_video: bool = False) -> pd.Series:
    """The unit that must stay in one split: the duplicate group, merged per video if asked."""
    if not by_video:
        return frames["group_id"].astype(str)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for g, v in zip(frames["group_id"], frames["video_id"]):
        a, b = find(f"g:{g}"), find(f"v:{v}")
        if a != b:
            parent[max(a, b)] = min(a, b)
    return frames["group_id"].map(lambda g: find(f"g:{g}"))


def assign_splits(
    frames: pd.DataFrame,
    annotations: pd.DataFrame,
    fractions: tuple[tuple[str, float], ...] = SPLITS,
    by_video: bool = False,
    previous: dict[str, str] | None = None,
) -> pd.Series:
    """train / val / test per frame, keeping every unit (duplicate group) in one split.

    Units that held a frame in an earlier dataset version keep that split, so a group never
    moves between versions. New units are placed greedily, largest first, into the split
    whose frame count and per-class counts are furthest below target (stratification as
    far as the units allow). Deterministic.
    """
    units = split_units(frames, by_video)
    classes = annotations.groupby("frame_id")["category"].agg(lambda c: set(c))
    unit_of = dict(zip(frames["frame_id"], units))
    split_of_unit: dict[str, str] = {}
    for frame_id, split in (previous or {}).items():
        if frame_id in unit_of:
            split_of_unit.setdefault(unit_of[frame_id], split)
    names = [name for name, _ in fractions]
    target = dict(fractions)
    total = len(frames)
    class_total = pd.Series([c for cs in classes for c in cs]).value_counts().to_dict()
    count = {n: 0 for n in names}
    class_count = {n: {} for n in names}

    def add(unit_frames: pd.Series, split: str) -> None:
        count[split] += len(unit_frames)
        for f in unit_frames:
            for c in classes.get(f, ()):
                class_count[split][c] = class_count[split].get(c, 0) + 1

    members = frames.groupby(units.to_numpy())["frame_id"]
    for unit, unit_frames in members:
        if unit in split_of_unit:
            add(unit_frames, split_of_unit[unit])
    new_units = [(u, f) for u, f in members if u not in split_of_unit]
    new_units.sort(key=lambda uf: (-len(uf[1]), _stable_hash(str(uf[0]))))
    for unit, unit_frames in new_units:
        unit_classes = {c for f in unit_frames for c in classes.get(f, ())}

        best = max(
            names, key=lambda n: (_deficit(n, unit_classes, target, total, count, class_total, class_count), target[n])
        )
        split_of_unit[unit] = best
        add(unit_frames, best)
    return units.map(split_of_unit)


def _deficit(split, unit_classes, target, total, count, class_total, class_count) -> float:
    """How far ``split`` is below its target, overall and for the unit's classes."""
    d = (target[split] * total - count[split]) / max(total, 1)
    for c in unit_classes:
        d += (target[split] * class_total[c] - class_count[split].get(c, 0)) / class_total[c]
    return d


def group_label_report(annotations: pd.DataFrame, groups: pd.Series, rare_share: float = 1 / 3) -> tuple:
    """Duplicate groups whose labeled frames disagree, and frames with a label rare in their group.

    ``groups`` maps frame_id -> group_id. Returns (groups: group_id, frames, class_counts;
    rare: frame_id, group_id, category, share) as fastdup's component analysis reports them.
    """
    per_frame = annotations.groupby("frame_id")["category"].agg(lambda c: tuple(sorted(set(c))))
    table = pd.DataFrame({"labels": per_frame, "group_id": per_frame.index.map(groups)}).dropna(subset=["group_id"])
    rows, rare = [], []
    for group_id, members in table.groupby("group_id"):
        if len(members) < 2 or members["labels"].nunique() == 1:
            continue
        counts = pd.Series([c for labels in members["labels"] for c in labels]).value_counts()
        rows.append({"group_id": group_id, "frames": len(members), "class_counts": counts.to_dict()})
        for frame_id, labels in members["labels"].items():
            for c in labels:
                share = counts[c] / len(members)
                if share <= rare_share:
                    rare.append({"frame_id": frame_id, "group_id": group_id, "category": c, "share": round(share, 3)})
    return (
        pd.DataFrame(rows, columns=["group_id", "frames", "class_counts"]),
        pd.DataFrame(rare, columns=["frame_id", "group_id", "category", "share"]),
    )


def _annotation(i: int, image_id: int, category_id: int, r) -> dict:
    """A box, or an image-level label (no box: classification, attributes) with no bbox."""
    if pd.isna(r.w):
        return {"id": i, "image_id": image_id, "category_id": category_id, "iscrowd": 0}
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": [r.x, r.y, r.w, r.h],
            "area": r.w * r.h, "iscrowd": 0}  # fmt: skip


def coco_dataset(frames: pd.DataFrame, annotations: pd.DataFrame, categories: list[str]) -> dict:
    """COCO JSON for ``frames`` (frame_id, uri, width, height) and their annotations."""
    image_ids = {fid: i + 1 for i, fid in enumerate(frames["frame_id"])}
    cat_ids = {name: i + 1 for i, name in enumerate(categories)}
    ann = annotations[annotations["frame_id"].isin(image_ids)]
    return {
        "images": [
            {
                "id": image_ids[r.frame_id],
                "file_name": r.uri,
                "width": int(r.width),
                "height": int(r.height),
                "frame_id": r.frame_id,
            }
            for r in frames.itertuples()
        ],
        "annotations": [
            _annotation(i + 1, image_ids[r.frame_id], cat_ids[r.category], r) for i, r in enumerate(ann.itertuples())
        ],  # fmt: skip
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
    }


@dataclass
class LabeledSet:
    """One import of the labelers' files, split and checked (nothing written yet)."""

    frames: pd.DataFrame  # the labeled frames: the selected batch's columns, group_id (current groups), split
    accepted: pd.DataFrame  # ACCEPTED_COLUMNS + width, height, inside_image
    rejected: pd.DataFrame  # source, row, reason
    conflicts: pd.DataFrame  # the same object boxed twice with different classes (label_conflicts)
    disagreeing_groups: pd.DataFrame  # duplicate groups whose frames disagree (group_label_report)
    rare_labels: pd.DataFrame
    splits_per_group: pd.DataFrame  # group_id, splits: how many splits each group's frames landed in

    @property
    def rejected_fraction(self) -> float:
        return len(self.rejected) / max(len(self.rejected) + len(self.accepted), 1)


def assemble_labeled_set(
    selected: pd.DataFrame,
    imports: list[ImportResult],
    groups: pd.Series,
    fractions: tuple[tuple[str, float], ...] = SPLITS,
    by_video: bool = False,
    previous: dict[str, str] | None = None,
) -> LabeledSet:
    """The labeled frames of ``selected`` (every round's batch) and their accepted labels, each
    frame in the split of its duplicate group (``groups``: frame_id -> current group_id; a frame
    grouped since its round moves with its new group), an earlier version's frames in their
    earlier split."""
    accepted = pd.concat([i.accepted for i in imports], ignore_index=True)
    rejected = pd.concat([i.rejected for i in imports], ignore_index=True)
    labeled = {f for i in imports for f in i.labeled_frames}
    frames = selected[selected["frame_id"].isin(labeled)].drop_duplicates("frame_id").reset_index(drop=True)
    frames["group_id"] = frames["frame_id"].map(groups).fillna(frames["group_id"])
    frames["split"] = assign_splits(frames, accepted, fractions, by_video, previous).to_numpy()
    accepted = accepted.join(frames.set_index("frame_id")[["width", "height"]], on="frame_id")
    accepted["inside_image"] = (
        (accepted["x"] >= 0)
        & (accepted["y"] >= 0)
        & (accepted["x"] + accepted["w"] <= accepted["width"] + 0.5)
        & (accepted["y"] + accepted["h"] <= accepted["height"] + 0.5)
    )  # fmt: skip  (half a pixel: tools round box corners)
    disagreeing, rare = group_label_report(accepted, groups)
    return LabeledSet(
        frames=frames,
        accepted=accepted,
        rejected=rejected,
        conflicts=label_conflicts(accepted),
        disagreeing_groups=disagreeing,
        rare_labels=rare,
        splits_per_group=frames.groupby("group_id")["split"].nunique().rename("splits").reset_index(),
    )
