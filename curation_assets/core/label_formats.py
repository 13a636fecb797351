"""Labeled datasets in the formats people collect them in, read into one form.

A labeled dataset in the landing zone is a folder recognised by what it holds:

==============  ===========================================================================
``coco``        ``annotations/*.json`` (``instances_train2017.json`` beside ``train2017/``)
``yolo``        ``data.yaml`` (``names:``) or ``classes.txt`` / ``obj.names``, with
                ``labels/<split>/<stem>.txt`` beside ``images/<split>/<stem>.jpg`` (or the
                label file next to its image): ``class cx cy w h``, normalised
``voc``         ``Annotations/*.xml`` (Pascal VOC) and ``JPEGImages/``; splits from
                ``ImageSets/Main/{train,val,test}.txt``
``imagefolder`` ``{train,val,test}/<class>/<image>`` (ImageNet style): one label per image
``groundtruth`` ``*.manifest``: SageMaker Ground Truth output (bounding boxes, image
                classification, multi-label classification), images by ``source-ref`` name
``attributes``  ``attributes.csv`` / ``attributes.parquet``: an ``image`` column, optional
                ``split``, and one 0/1 column per attribute (multi-label attribute sets)
==============  ===========================================================================

Every format becomes ``LabeledEntry`` rows: the image's landing key, its split and its
labels as (category, x, y, w, h) in pixels, or normalised to the image (YOLO: converted once
the image's size is known), or with no box (NaN) for image-level labels. What is wrong in a
file is reported with the file and the line (or row) and skipped: a malformed row never
stops the source.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

from curation_assets.core.frames import UnreadableSourceError

LABELED_KINDS = ("coco", "yolo", "voc", "imagefolder", "groundtruth", "attributes")
SPLIT_FOLDERS = ("train", "val", "valid", "validation", "test")
YOLO_NAMES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
ATTRIBUTE_TABLES = ("attributes.csv", "attributes.parquet")
IMAGE_COLUMNS = ("image", "file_name", "filename", "path")
TRUE, FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f", ""}
NO_BOX = (math.nan,) * 4

Box = tuple[str, float, float, float, float]  # (category, x, y, w, h)


@dataclass(frozen=True)
class LabeledEntry:
    member: str | None  # landing key of the image file; None when it is missing
    file_name: str
    split: str
    annotations: tuple[Box, ...]  # pixels, or fractions of the image when ``normalized``; NaN box: image-level
    problem: str | None = None  # why its labels cannot be trusted (the image is then left out)
    normalized: bool = False


def split_name(key: str) -> str:
    """``annotations/instances_val2017.json`` -> ``val``; unknown names keep their stem."""
    stem = posixpath.basename(key).rsplit(".", 1)[0].lower()
    for split, words in (("train", ("train",)), ("val", ("val", "valid")), ("test", ("test",))):
        if any(w in stem for w in words):
            return split
    return stem


def dataset_root(key: str, is_image: Callable[[str], bool]) -> tuple[str, str] | None:
    """(root folder ending in "/" or "", kind) when ``key`` marks a labeled dataset."""
    parts = key.split("/")
    folder = "/".join(parts[:-1]) + "/" if len(parts) > 1 else ""
    parent = "/".join(parts[:-2]) + "/" if len(parts) > 2 else ""
    name = parts[-1]
    if len(parts) >= 2 and parts[-2] == "annotations" and name.endswith(".json"):
        return parent, "coco"
    if len(parts) >= 2 and parts[-2] == "Annotations" and name.endswith(".xml"):
        return parent, "voc"
    if name in YOLO_NAMES:
        return folder, "yolo"
    if name.endswith(".manifest"):
        return folder, "groundtruth"
    if name in ATTRIBUTE_TABLES:
        return folder, "attributes"
    if len(parts) >= 3 and parts[-3].lower() in SPLIT_FOLDERS and is_image(key):
        return "/".join(parts[:-3]) + "/" if len(parts) > 3 else "", "imagefolder"
    return None


def belongs(kind: str, relative: str, is_image: Callable[[str], bool]) -> bool:
    """Whether a file under a dataset's root is part of it (its images and label files)."""
    if is_image(relative):
        return True
    name = posixpath.basename(relative)
    return {
        "coco": relative.startswith("annotations/") and name.endswith(".json"),
        "yolo": name in YOLO_NAMES or name.endswith(".txt"),
        "voc": relative.endswith(".xml") or relative.startswith("ImageSets/"),
        "groundtruth": name.endswith(".manifest"),
        "attributes": name in ATTRIBUTE_TABLES,
        "imagefolder": False,
    }[kind]


class _Images:
    """The dataset's images, found by relative path or, failing that, by a unique file name."""

    def __init__(self, root: str, members: tuple[str, ...], is_image: Callable[[str], bool]):
        self.root = root
        self.by_path = {m[len(root) :]: m for m in members if is_image(m)}
        self.by_name: dict[str, list[str]] = {}
        for rel, key in self.by_path.items():
            self.by_name.setdefault(posixpath.basename(rel), []).append(key)

    def find(self, file_name: str, *folders: str) -> str | None:
        for folder in ("", *folders):
            if (found := self.by_path.get(posixpath.join(folder, file_name) if folder else file_name)) is not None:
                return found
        same_name = self.by_name.get(posixpath.basename(file_name), [])
        return same_name[0] if len(same_name) == 1 else None

    def entry(self, file_name: str, split: str, boxes, *folders: str, normalized: bool = False) -> LabeledEntry:
        return LabeledEntry(self.find(file_name, *folders), file_name, split, tuple(boxes), normalized=normalized)


def read_labeled(
    kind: str,
    root: str,
    members: tuple[str, ...],
    read: Callable[[str], bytes],
    is_image: Callable[[str], bool],
    problems: list[str] | None = None,
) -> list[LabeledEntry]:
    """Every image of a labeled dataset with its split and labels; what is wrong goes to
    ``problems`` (file and line or row, and the cause)."""
    problems = [] if problems is None else problems
    images = _Images(root, members, is_image)
    reader = {"coco": _coco, "yolo": _yolo, "voc": _voc, "imagefolder": _imagefolder, "groundtruth": _groundtruth,
              "attributes": _attributes}[kind]  # fmt: skip
    entries = reader(root, members, read, images, problems)
    unlabeled = sorted(set(images.by_path.values()) - {e.member for e in entries})
    if unlabeled:
        example = unlabeled[0]
        problems.append(f"landing/{root}: {len(unlabeled)} image(s) named by no label file, e.g. {example}; left out")
    return entries


# -- COCO ----------------------------------------------------------------------------------
def _coco(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    """Images sharing an id are both left out with their boxes (they cannot be told apart);
    annotations of no image, of a category that is not listed (or listed twice under two
    names) and boxes that are not four finite numbers with a width and height >= 0 are
    reported and skipped."""
    entries = []
    for ann_key in sorted(m for m in members if m.endswith(".json")):
        doc = _json(read, ann_key, "COCO JSON")
        if not isinstance(doc, dict):
            raise UnreadableSourceError(f"landing/{ann_key}: not a COCO document (top level is not an object)")
        split, where = split_name(ann_key), f"landing/{ann_key}"
        names = _coco_categories(doc, where, problems)
        valid = []
        for row, image in enumerate(_rows(doc, "images")):
            if not (isinstance(image, dict) and isinstance(image.get("file_name"), str) and _id(image.get("id"))):
                problems.append(f"{where}: image row {row} has no file_name and id; skipped")
                continue
            valid.append(image)
        ids = [image["id"] for image in valid]
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
            if not _finite_box(bbox):
                problems.append(f"{where}: annotation row {row} has bbox {json.dumps(bbox)[:80]}: not four finite "
                                "numbers with width and height >= 0; skipped")  # fmt: skip
                continue
            category = ann.get("category_id")
            if not _id(category) or category not in names or names[category] is None:
                why = "listed twice under different names" if category in names else "not in categories"
                problems.append(f"{where}: annotation row {row} has category_id {category!r}, {why}; skipped")
                continue
            if ann["image_id"] not in ids:
                orphans += 1
                continue
            boxes.setdefault(ann["image_id"], []).append((names[category], *(float(v) for v in bbox)))
        if orphans:
            problems.append(f"{where}: {orphans} annotations refer to no image; skipped")
        for image in valid:
            left_out = image["id"] in shared
            entry = images.entry(image["file_name"], split, () if left_out else boxes.get(image["id"], ()), split)
            problem = f"image id {image['id']} is used twice in {where}" if left_out else None
            entries.append(LabeledEntry(entry.member, entry.file_name, split, entry.annotations, problem))
    return entries


def _coco_categories(doc: dict, where: str, problems: list[str]) -> dict:
    """Category id -> name; None for an id listed twice under different names (ambiguous)."""
    names: dict = {}
    for row, category in enumerate(_rows(doc, "categories")):
        if not (isinstance(category, dict) and _id(category.get("id")) and isinstance(category.get("name"), str)):
            problems.append(f"{where}: category row {row} has no id and name; skipped")
            continue
        key, name = category["id"], category["name"]
        if key in names and names[key] != name:
            if names[key] is not None:
                problems.append(f"{where}: category id {key!r} is listed twice ({names[key]!r}, {name!r}); "
                                "its annotations are skipped")  # fmt: skip
            names[key] = None
        else:
            names[key] = name
    return names


def _finite_box(bbox) -> bool:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    return numbers and bbox[2] >= 0 and bbox[3] >= 0


# -- YOLO ----------------------------------------------------------------------------------
def _yolo(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    names = _yolo_names(root, members, read)
    labels = {m[len(root) :]: m for m in members if m.endswith(".txt") and posixpath.basename(m) not in YOLO_NAMES}
    entries = []
    for rel, key in sorted(images.by_path.items()):
        stem = rel.rsplit(".", 1)[0]
        label_rel = ("labels/" + stem[len("images/") :] if stem.startswith("images/") else
                     stem.replace("/images/", "/labels/")) + ".txt"  # fmt: skip
        label_key = labels.get(label_rel) or labels.get(stem + ".txt")
        boxes = []
        if label_key is not None:
            text = read(label_key).decode("utf-8", errors="replace")
            for line_no, line in enumerate(text.splitlines(), 1):
                if not line.strip():
                    continue
                box = _yolo_box(line, names)
                if isinstance(box, str):
                    problems.append(f"landing/{label_key}:{line_no}: {box}; skipped")
                else:
                    boxes.append(box)
        folders = [p for p in rel.split("/")[:-1] if p.lower() in SPLIT_FOLDERS]
        split = split_name(folders[-1]) if folders else ""
        entries.append(LabeledEntry(key, rel, split, tuple(boxes), normalized=True))
    return entries


def _yolo_names(root: str, members, read) -> list[str]:
    for name in YOLO_NAMES:
        key = f"{root}{name}"
        if key not in members:
            continue
        text = read(key).decode("utf-8", errors="replace")
        if name.endswith((".yaml", ".yml")):
            import yaml

            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise UnreadableSourceError(f"landing/{key}: malformed YAML ({str(exc)[:200]})") from exc
            found = doc.get("names") if isinstance(doc, dict) else None
            if isinstance(found, dict):
                return [str(found[k]) for k in sorted(found)]
            if isinstance(found, list):
                return [str(n) for n in found]
            raise UnreadableSourceError(f"landing/{key}: no 'names' list or mapping of class names")
        return [line.strip() for line in text.splitlines() if line.strip()]
    raise UnreadableSourceError(f"landing/{root}: a YOLO dataset needs its class names ({', '.join(YOLO_NAMES)})")


def _yolo_box(line: str, names: list[str]) -> Box | str:
    fields = line.split()
    if len(fields) != 5:
        return f"expected 'class cx cy w h', got {len(fields)} fields"
    try:
        cls, cx, cy, w, h = int(fields[0]), *(float(f) for f in fields[1:])
    except ValueError:
        return f"not numbers: {line.strip()[:60]!r}"
    if not 0 <= cls < len(names):
        return f"class {cls} is not among the {len(names)} class names"
    if not all(0 <= v <= 1 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
        return "box outside the image (coordinates are fractions of it, 0..1)"
    return names[cls], cx - w / 2, cy - h / 2, w, h


# -- Pascal VOC ----------------------------------------------------------------------------
def _voc(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    split_of = {}
    for split in ("trainval", "train", "val", "test"):  # the specific lists win over trainval
        key = f"{root}ImageSets/Main/{split}.txt"
        if key in members:
            for line in read(key).decode("utf-8", errors="replace").split():
                split_of[line.strip()] = split
    entries = []
    for key in sorted(m for m in members if m.startswith(f"{root}Annotations/") and m.endswith(".xml")):
        where = f"landing/{key}"
        try:
            doc = ET.fromstring(read(key))
        except ET.ParseError as exc:
            problems.append(f"{where}: malformed XML ({exc}); skipped")
            continue
        file_name = (doc.findtext("filename") or "").strip()
        if not file_name:
            problems.append(f"{where}: no <filename>; skipped")
            continue
        boxes = []
        for n, obj in enumerate(doc.iter("object")):
            box = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                name = (obj.findtext("name") or "").strip()
                if not name or not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
                    raise ValueError("empty name or box")  # NaN compares false, so finiteness first
            except (AttributeError, TypeError, ValueError):
                problems.append(f"{where}: object {n} has no name or a malformed <bndbox>; skipped")
                continue
            boxes.append((name, x0, y0, x1 - x0, y1 - y0))
        stem = posixpath.basename(key)[: -len(".xml")]
        entries.append(images.entry(file_name, split_of.get(stem, ""), boxes, "JPEGImages"))
    return entries


# -- ImageNet-style class folders ----------------------------------------------------------
def _imagefolder(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    entries = []
    for rel, key in sorted(images.by_path.items()):
        parts = rel.split("/")
        if len(parts) != 3:
            problems.append(f"landing/{key}: not in <split>/<class>/; skipped")
            continue
        entries.append(LabeledEntry(key, rel, split_name(parts[0]), ((parts[1], *NO_BOX),)))
    return entries


# -- SageMaker Ground Truth ----------------------------------------------------------------
def _groundtruth(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    entries = []
    for key in sorted(m for m in members if m.endswith(".manifest")):
        split = split_name(key) if split_name(key) in ("train", "val", "test") else ""
        for line_no, line in enumerate(read(key).decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            where = f"landing/{key}:{line_no}"
            try:
                row = json.loads(line)
                ref = row["source-ref"]
                boxes = _groundtruth_labels(row)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                problems.append(f"{where}: not a Ground Truth output line ({type(exc).__name__}: {exc}); skipped")
                continue
            entries.append(images.entry(posixpath.basename(ref), split, boxes))
    return entries


def _groundtruth_labels(row: dict) -> list[Box]:
    """The boxes or classes of every labeling job in an output line (``<job>`` beside ``<job>-metadata``)."""
    found = []
    jobs = [k[: -len("-metadata")] for k in row if k.endswith("-metadata") and k[: -len("-metadata")] in row]
    if not jobs:
        raise KeyError("no '<job>' attribute beside a '<job>-metadata'")
    for job in jobs:
        value, meta = row[job], row[f"{job}-metadata"]
        kind, classes = meta.get("type", ""), {str(k): v for k, v in (meta.get("class-map") or {}).items()}
        if kind.endswith("object-detection"):
            for box in value["annotations"]:
                name = classes.get(str(box["class_id"]), str(box["class_id"]))
                x, y, w, h = (float(box[k]) for k in ("left", "top", "width", "height"))
                if not all(map(math.isfinite, (x, y, w, h))) or w < 0 or h < 0:
                    raise ValueError(f"box {[x, y, w, h]} is not four finite numbers with width and height >= 0")
                found.append((name, x, y, w, h))
        elif kind.endswith("image-classification-multilabel"):
            found += [(classes.get(str(c), str(c)), *NO_BOX) for c in value]
        elif kind.endswith("image-classification"):
            found.append((meta.get("class-name") or classes.get(str(value), str(value)), *NO_BOX))
        else:
            raise ValueError(
                f"labeling job type {kind!r} is not one of object-detection, image-classification(-multilabel)"
            )
    return found


# -- attribute tables ----------------------------------------------------------------------
def _attributes(root, members, read, images: _Images, problems: list[str]) -> list[LabeledEntry]:
    key = next(f"{root}{n}" for n in ATTRIBUTE_TABLES if f"{root}{n}" in members)
    where = f"landing/{key}"
    if key.endswith(".parquet"):
        import pandas as pd

        try:
            table = pd.read_parquet(io.BytesIO(read(key)))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a broken file
            raise UnreadableSourceError(f"{where}: unreadable Parquet ({type(exc).__name__})") from exc
        header = [str(c) for c in table.columns]
        rows = [[("" if v is None else str(v)) for v in r] for r in table.itertuples(index=False)]
        first_row = 1
    else:
        reader = csv.reader(io.StringIO(read(key).decode("utf-8-sig", errors="replace")))
        header = [h.strip() for h in next(reader, [])]
        rows, first_row = list(reader), 2
    image_column = next((c for c in IMAGE_COLUMNS if c in header), None)
    if image_column is None:
        raise UnreadableSourceError(f"{where}: no image column (one of {', '.join(IMAGE_COLUMNS)})")
    at, split_at = header.index(image_column), header.index("split") if "split" in header else None
    attributes = [(i, name) for i, name in enumerate(header) if i not in (at, split_at)]
    entries = []
    for n, row in enumerate(rows, first_row):
        if len(row) != len(header):
            problems.append(f"{where}: row {n} has {len(row)} fields, the header {len(header)}; skipped")
            continue
        values = {name: row[i].strip().lower() for i, name in attributes}
        odd = [name for name, v in values.items() if v not in TRUE | FALSE]
        if odd or not row[at].strip():
            problems.append(f"{where}: row {n}: " + (f"not 0/1 in {odd[:3]}" if odd else "no image") + "; skipped")
            continue
        labels = [(name, *NO_BOX) for name, v in values.items() if v in TRUE]
        split = split_name(row[split_at]) if split_at is not None and row[split_at].strip() else ""
        entries.append(images.entry(row[at].strip(), split, labels))
    return entries


# -- helpers -------------------------------------------------------------------------------
def _json(read, key: str, what: str):
    try:
        return json.loads(read(key))
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than any real file
        raise UnreadableSourceError(f"landing/{key}: malformed {what} ({str(exc)[:200]})") from exc


def _rows(doc: dict, key: str) -> list:
    rows = doc.get(key, [])
    return rows if isinstance(rows, list) else []


def _id(value) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)
