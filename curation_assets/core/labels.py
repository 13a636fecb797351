"""Labeling round-trip: export manifests, import and validate COCO annotations, split.

Import never drops a row silently: every annotation is either accepted or rejected with
its reason and position in the file.
"""

from __future__ import annotations

import functools
import hashlib
import json
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
    category_names = {c.get("id"): c.get("name") for c in doc.get("categories", [])}
    image_frame: dict = {}
    for img in doc.get("images", []):
        frame_id = img.get("frame_id") or by_uri.get(img.get("file_name"))
        image_frame[img.get("id")] = frame_id if frame_id in size else None

    accepted, seen = [], set()
    for row, ann in enumerate(doc.get("annotations", [])):
        reject = functools.partial(_reject, rejected, source, row)

        image_id = ann.get("image_id")
        frame_id = image_frame.get(image_id)
        name = category_names.get(ann.get("category_id"))
        bbox = ann.get("bbox")
        if frame_id is None:
            reject(f"annotation {ann.get('id')}: image {image_id} is not a frame selected for labeling")
            continue
        if name not in categories:
            reject(f"annotation {ann.get('id')}: unknown category {ann.get('category_id')} ({name})")
            continue
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            reject(f"annotation {ann.get('id')}: bbox {bbox!r} is not [x, y, w, h]")
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


def split_by_group(group_ids: pd.Series, salt: str = "curation-split-v1") -> pd.Series:
    """train / val / test per duplicate group, from a hash of the group id.

    Every member of a group lands in the same split, and a group keeps its split as the
    dataset grows, so a later version cannot leak a near-copy into another split.
    """

    def assign(group_id: str) -> str:
        u = int(hashlib.sha256(f"{salt}:{group_id}".encode()).hexdigest()[:15], 16) / 16**15
        edge = 0.0
        for name, fraction in SPLITS:
            edge += fraction
            if u < edge:
                return name
        return SPLITS[-1][0]

    return group_ids.map(assign)


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
            {
                "id": i + 1,
                "image_id": image_ids[r.frame_id],
                "category_id": cat_ids[r.category],
                "bbox": [r.x, r.y, r.w, r.h],
                "area": r.w * r.h,
                "iscrowd": 0,
            }
            for i, r in enumerate(ann.itertuples())
        ],
        "categories": [{"id": i, "name": n} for n, i in cat_ids.items()],
    }
