"""Each labeled-dataset format read into the same entries, malformed input reported by file
and line, never a crash of the source."""

import io
import json
import math

import pandas as pd
import pytest

from curation_assets.cli import headless
from curation_assets.core import layout
from curation_assets.core.frames import UnreadableSourceError
from curation_assets.core.label_formats import dataset_root, read_labeled
from curation_assets.core.sources import is_image
from tests.conftest import encoded, photo


def _read(files: dict[str, bytes | str], kind: str, root: str = "ds/"):
    data = {k: v.encode() if isinstance(v, str) else v for k, v in files.items()}
    problems: list[str] = []
    entries = read_labeled(kind, root, tuple(sorted(data)), data.__getitem__, is_image, problems)
    return {e.file_name: e for e in entries}, problems


def test_each_format_is_recognised_by_what_its_folder_holds():
    assert dataset_root("ds/annotations/instances_val2017.json", is_image) == ("ds/", "coco")
    assert dataset_root("voc/Annotations/0001.xml", is_image) == ("voc/", "voc")
    assert dataset_root("a/b/data.yaml", is_image) == ("a/b/", "yolo")
    assert dataset_root("gt/output.manifest", is_image) == ("gt/", "groundtruth")
    assert dataset_root("peds/attributes.csv", is_image) == ("peds/", "attributes")
    assert dataset_root("imnet/train/n01440764/x.JPEG", is_image) == ("imnet/", "imagefolder")
    assert dataset_root("cam-a/shelf.mp4", is_image) is None
    assert dataset_root("cam-a/photos/x.jpg", is_image) is None  # a plain image folder


def test_yolo_boxes_are_normalised_with_names_and_bad_lines_are_reported():
    files = {
        "ds/data.yaml": "names: {0: person, 1: forklift}\n",
        "ds/images/train/a.jpg": b"x",
        "ds/labels/train/a.txt": "1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1\n\n7 0.5 0.5 0.1 0.1\n0 0.5 nope 0.1 0.1\n",
        "ds/images/val/b.jpg": b"x",  # no label file: a background image
    }
    entries, problems = _read(files, "yolo")
    a = entries["images/train/a.jpg"]
    assert a.member == "ds/images/train/a.jpg" and a.split == "train" and a.normalized
    assert a.annotations[0] == pytest.approx(("forklift", 0.4, 0.3, 0.2, 0.4))
    assert [b[0] for b in a.annotations] == ["forklift", "person"]
    assert entries["images/val/b.jpg"].annotations == () and entries["images/val/b.jpg"].split == "val"
    assert problems == [
        "landing/ds/labels/train/a.txt:4: class 7 is not among the 2 class names; skipped",
        "landing/ds/labels/train/a.txt:5: not numbers: '0 0.5 nope 0.1 0.1'; skipped",
    ]
    with pytest.raises(UnreadableSourceError, match="needs its class names"):
        _read({"ds/obj_train_data/a.jpg": b"x", "ds/obj_train_data/a.txt": "0 .5 .5 .1 .1"}, "yolo")


def test_voc_boxes_become_x_y_w_h_with_splits_from_image_sets():
    good = """<annotation><filename>0001.jpg</filename>
      <object><name>dog</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>110</xmax><ymax>70</ymax></bndbox></object>
      <object><name>cat</name><bndbox><xmin>5</xmin></bndbox></object></annotation>"""
    files = {
        "ds/Annotations/0001.xml": good,
        "ds/Annotations/0002.xml": "<annotation><filename>0002.jpg</filename",
        "ds/JPEGImages/0001.jpg": b"x",
        "ds/ImageSets/Main/val.txt": "0001\n",
    }
    entries, problems = _read(files, "voc")
    assert list(entries) == ["0001.jpg"]
    assert entries["0001.jpg"].member == "ds/JPEGImages/0001.jpg" and entries["0001.jpg"].split == "val"
    assert entries["0001.jpg"].annotations == (("dog", 10.0, 20.0, 100.0, 50.0),)
    assert problems[0] == "landing/ds/Annotations/0001.xml: object 1 has no name or a malformed <bndbox>; skipped"
    assert problems[1].startswith("landing/ds/Annotations/0002.xml: malformed XML")


def test_class_folders_give_one_image_level_label():
    entries, problems = _read({"ds/train/cat/1.jpg": b"x", "ds/val/dog/2.png": b"x"}, "imagefolder")
    assert entries["train/cat/1.jpg"].annotations[0][0] == "cat" and entries["val/dog/2.png"].split == "val"
    assert all(math.isnan(v) for v in entries["train/cat/1.jpg"].annotations[0][1:]) and not problems


def test_ground_truth_manifests_of_boxes_classes_and_multi_labels():
    lines = [
        {"source-ref": "s3://bucket/in/a.jpg", "job": {"annotations": [{"class_id": 1, "left": 4, "top": 5,
         "width": 6, "height": 7}], "image_size": [{"width": 64, "height": 48}]},
         "job-metadata": {"type": "groundtruth/object-detection", "class-map": {"0": "car", "1": "bike"}}},
        {"source-ref": "s3://bucket/in/b.jpg", "cls": 0,
         "cls-metadata": {"type": "groundtruth/image-classification", "class-name": "car"}},
        {"source-ref": "s3://bucket/in/c.jpg", "ml": [0, 1], "ml-metadata": {
            "type": "groundtruth/image-classification-multilabel", "class-map": {"0": "red", "1": "tall"}}},
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\n{not json\n" + json.dumps({"source-ref": "x.jpg"})
    files = {"ds/train.manifest": text, "ds/a.jpg": b"x", "ds/b.jpg": b"x", "ds/c.jpg": b"x"}
    entries, problems = _read(files, "groundtruth")
    assert entries["a.jpg"].annotations == (("bike", 4.0, 5.0, 6.0, 7.0),) and entries["a.jpg"].split == "train"
    assert entries["b.jpg"].annotations[0][0] == "car" and entries["b.jpg"].member == "ds/b.jpg"
    assert [a[0] for a in entries["c.jpg"].annotations] == ["red", "tall"]
    assert [p.split(": ")[0] for p in problems] == ["landing/ds/train.manifest:4", "landing/ds/train.manifest:5"]


@pytest.mark.parametrize("table_format", ["csv", "parquet"])
def test_attribute_tables_give_one_label_per_true_attribute(table_format):
    table = pd.DataFrame({"image": ["p1.jpg", "p2.jpg", "p3.jpg"], "split": ["train", "val", "train"],
                          "female": [1, 0, 1], "backpack": [1, 1, 0], "hat": [0, 0, 2]})  # fmt: skip
    if table_format == "csv":
        data = table.to_csv(index=False) + "p4.jpg,train,1\n"
    else:
        buf = io.BytesIO()
        table.to_parquet(buf)
        data = buf.getvalue()
    files = {f"ds/attributes.{table_format}": data, "ds/img/p1.jpg": b"x", "ds/img/p2.jpg": b"x"}
    entries, problems = _read(files, "attributes")
    assert [a[0] for a in entries["p1.jpg"].annotations] == ["female", "backpack"]
    assert entries["p2.jpg"].split == "val" and entries["p1.jpg"].member == "ds/img/p1.jpg"
    assert "p3.jpg" not in entries  # hat = 2 is no 0/1
    first = 2 if table_format == "csv" else 1
    assert problems[0] == f"landing/ds/attributes.{table_format}: row {first + 2}: not 0/1 in ['hat']; skipped"
    if table_format == "csv":
        assert problems[1] == "landing/ds/attributes.csv: row 5 has 3 fields, the header 5; skipped"


def test_a_yolo_and_an_attribute_dataset_are_ingested_with_labels_and_audited(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    images = {f"img_{i}.jpg": encoded(photo(300 + i, size=(200, 100)), quality=92) for i in range(4)}
    landing.put_bytes("yolo-ds/data.yaml", b"names: [person, forklift]\n")
    for name, data in images.items():
        landing.put_bytes(f"yolo-ds/images/train/{name}", data)
        landing.put_bytes(f"yolo-ds/labels/train/{name[:-4]}.txt", b"1 0.5 0.5 0.5 0.2\n")
    landing.put_bytes("yolo-ds/images/val/copy.jpg", images["img_0.jpg"])  # a leak into val
    landing.put_bytes("yolo-ds/labels/val/copy.txt", b"1 0.5 0.5 0.5 0.2\n9 0.5 0.5 0.5 0.2\n")
    for name, data in images.items():
        landing.put_bytes(f"peds/img/{name}", data)
    landing.put_bytes("peds/attributes.csv", b"image,female,hat\nimg_0.jpg,1,0\nimg_1.jpg,0,1\nimg_2.jpg,1,1\n")

    outcomes = headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert sorted(o.name for o in outcomes) == ["peds", "yolo-ds"] and all(o.success for o in outcomes)
    assert "labels/val/copy.txt:2: class 9" in outcomes[1].metadata["raw_frames"]["damage"]
    labels_of = {o.name: o.metadata["source_labels"] for o in outcomes}  # an asset of its own, beside the frames
    assert (labels_of["yolo-ds"]["boxes"], labels_of["yolo-ds"]["per_class"]) == (5, {"forklift": 5})
    assert (labels_of["peds"]["labels"], labels_of["peds"]["boxes"]) == (4, 0)
    store = local_defs.resources["object_store"].store()
    boxes = store.read_table(layout.table_key("source_labels", "yolo-ds"))
    assert len(boxes) == 5 and set(boxes["category"]) == {"forklift"}
    assert boxes[["x", "y", "w", "h"]].iloc[0].tolist() == pytest.approx([50.0, 40.0, 100.0, 20.0])  # pixels
    attributes = store.read_table(layout.table_key("source_labels", "peds"))
    assert sorted(map(tuple, attributes[["category"]].assign(f=attributes["frame_id"].str[-1]).values)) == [
        ("female", "0"), ("female", "2"), ("hat", "1"), ("hat", "2")]  # fmt: skip
    assert attributes["w"].isna().all()  # image-level labels have no box

    assert headless.run_job(local_defs, instance, "curate").success
    report = store.read_table(layout.table_key("dataset_audit"))
    leak = report[(report["source"] == "yolo-ds") & report["reason"].str.startswith("leak")]
    assert list(leak["source_name"]) == ["yolo-ds/images/val/copy.jpg"]
    assert "landing/peds/: 1 image(s) named by no label file, e.g. peds/img/img_3.jpg" in outcomes[0].metadata[
        "raw_frames"]["damage"]  # fmt: skip
    cleaned = [o.key for o in store.list("datasets/") if o.key.endswith("/all.json") and "peds" in o.key]
    doc = json.loads(store.get_bytes(cleaned[0]))
    assert doc["annotations"] and all("bbox" not in a for a in doc["annotations"])  # classification labels


def test_sources_in_several_formats_merge_into_one_coco_dataset(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    shared = encoded(photo(500, size=(200, 100)), quality=92)  # the same picture in both datasets
    landing.put_bytes("yolo-ds/classes.txt", b"person\nforklift\n")
    for i in range(3):
        data = shared if i == 0 else encoded(photo(510 + i, size=(200, 100)), quality=92)
        landing.put_bytes(f"yolo-ds/images/train/y{i}.jpg", data)
        landing.put_bytes(f"yolo-ds/labels/train/y{i}.txt", b"0 0.5 0.5 0.5 0.5\n1 0.2 0.2 0.1 0.1\n")
    voc = ("<annotation><filename>{}</filename><object><name>{}</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
           "<xmax>30</xmax><ymax>40</ymax></bndbox></object></annotation>")  # fmt: skip
    others = [encoded(photo(520 + i, size=(200, 100))) for i in range(2)]
    for i, (data, name) in enumerate([(shared, "dog"), (others[0], "pedestrian"), (others[1], "dog")]):
        landing.put_bytes(f"voc-ds/JPEGImages/v{i}.jpg", data)
        landing.put_bytes(f"voc-ds/Annotations/v{i}.xml", voc.format(f"v{i}.jpg", name).encode())
    landing.put_bytes("voc-ds/JPEGImages/v9.jpg", b"not a jpeg")
    landing.put_bytes("voc-ds/Annotations/v9.xml", voc.format("v9.jpg", "dog").encode())
    assert all(o.success for o in headless.ingest_landing(local_defs, instance, log=lambda _: None))
    assert headless.run_job(local_defs, instance, "curate").success

    config = {"sources": ["yolo-ds", "voc-ds"], "category_map": {"pedestrian": "person", "dog": ""}}
    result = headless.run_job(local_defs, instance, "merge_datasets",
                              run_config={"ops": {"merged_dataset": {"config": config}}})  # fmt: skip
    assert result.success
    meta = result.asset_materializations_for_node("merged_dataset")[0].metadata
    counts = {k: meta[k].value for k in ("images_in", "images_out", "images_dropped", "labels_in", "labels_out",
                                         "labels_dropped_by_map", "labels_of_dropped_images")}  # fmt: skip
    assert counts == {
        "images_in": 7,
        "images_out": 5,
        "images_dropped": {"duplicate": 1, "unreadable image": 1},
        "labels_in": 10,
        "labels_out": 7,
        "labels_dropped_by_map": 1,
        "labels_of_dropped_images": 2,
    }
    assert counts["images_in"] == counts["images_out"] + sum(counts["images_dropped"].values())
    assert counts["labels_in"] == counts["labels_out"] + counts["labels_dropped_by_map"] + 2
    store = local_defs.resources["object_store"].store()
    folder = store.key_for_uri(meta["dataset"].value).rstrip("/")
    doc = json.loads(store.get_bytes(f"{folder}/train.json"))  # the YOLO split; VOC's images had none
    assert sorted(c["name"] for c in doc["categories"]) == ["forklift", "person"] and len(doc["images"]) == 3
    assert len(json.loads(store.get_bytes(f"{folder}/all.json"))["images"]) == 2
    provenance = json.loads(store.get_bytes(f"{folder}/provenance.json"))
    drop = next(d for d in provenance["drops"] if d["reason"].startswith("duplicate"))
    assert drop["source"] == "voc-ds" and drop["reason"] == "duplicate of yolo-ds/000000 in yolo-ds"
    assert {(p["category"], p["source_category"]) for p in provenance["labels"]} >= {("person", "pedestrian")}
