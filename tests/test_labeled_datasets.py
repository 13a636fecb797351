"""A COCO dataset as a source: planted leaks, duplicates, conflicts and a broken file are found,
and the cleaned copy holds none of them."""

import json

import numpy as np
from PIL import Image

from curation_assets.cli import headless
from curation_assets.core import layout
from curation_assets.core.ids import source_id_for
from curation_assets.core.label_formats import read_labeled, split_name
from curation_assets.core.sources import is_image
from curation_assets.defs.curation import read_outliers
from tests.conftest import encoded, photo

CATEGORIES = [{"id": 1, "name": "bottle"}, {"id": 2, "name": "can"}]


def _coco(images: dict[str, str]) -> bytes:
    """images: file name -> category; one box per image."""
    cat = {c["name"]: c["id"] for c in CATEGORIES}
    return json.dumps(
        {
            "images": [{"id": i, "file_name": f, "width": 96, "height": 64} for i, f in enumerate(images, 1)],
            "annotations": [
                {"id": i, "image_id": i, "category_id": cat[c], "bbox": [10, 10, 30, 30]}
                for i, c in enumerate(images.values(), 1)
            ],
            "categories": CATEGORIES,
        }
    ).encode()


def planted_dataset() -> dict[str, bytes]:
    files = {f"train/img_{i:02d}.jpg": encoded(photo(100 + i), quality=95) for i in range(8)}
    files |= {f"val/img_{i:02d}.jpg": encoded(photo(200 + i), quality=95) for i in range(4)}
    brighter = np.clip(np.asarray(photo(101)).astype(int) + 8, 0, 255).astype(np.uint8)
    files |= {
        "val/leak_exact.jpg": files["train/img_00.jpg"],  # the same file in train and val
        "val/leak_near.jpg": encoded(Image.fromarray(brighter), quality=80),  # re-exposed, re-encoded copy
        "train/img_dup.jpg": files["train/img_02.jpg"],  # twice in train, same label
        "train/conflict.jpg": files["train/img_03.jpg"],  # twice in train, other label
        "train/broken.jpg": files["train/img_04.jpg"][:300],  # truncated
    }
    train = {f"img_{i:02d}.jpg": "bottle" for i in range(8)} | {
        "img_dup.jpg": "bottle",
        "conflict.jpg": "can",
        "broken.jpg": "bottle",
    }
    val = {f"img_{i:02d}.jpg": "can" for i in range(4)} | {"leak_exact.jpg": "bottle", "leak_near.jpg": "bottle"}
    files["annotations/instances_train.json"] = _coco(train)
    files["annotations/instances_val.json"] = _coco(val)
    return files


def test_split_names_follow_coco_conventions():
    assert [split_name(f"a/annotations/instances_{s}2017.json") for s in ("train", "val", "test")] == [
        "train",
        "val",
        "test",
    ]
    assert split_name("annotations/extra.json") == "extra"


def test_a_coco_dataset_is_audited_and_cleaned(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    for name, data in planted_dataset().items():
        landing.put_bytes(f"shelf-dataset/{name}", data)
    ingested = {o.name: o for o in headless.ingest_landing(local_defs, instance, log=lambda _: None)}
    source_id = source_id_for("shelf-dataset/")
    assert list(ingested) == [source_id]  # one source: images and annotations together
    assert ingested[source_id].success, ingested[source_id].error
    curate = headless.outcome("curate", headless.run_job(local_defs, instance, "curate"))
    assert curate.success, curate.error
    assert curate.checks["dataset_audit_cleaned_is_leak_free"] == "passed"

    store = local_defs.resources["object_store"].store()
    report = store.read_table(layout.table_key("dataset_audit")).set_index("source_name")
    reason = report["reason"]
    prefix = "shelf-dataset/"
    assert reason[prefix + "train/broken.jpg"].startswith("corrupt")
    assert reason[prefix + "val/leak_exact.jpg"].startswith("leak")
    assert reason[prefix + "val/leak_near.jpg"].startswith("leak")
    assert report.loc[prefix + "val/leak_near.jpg", "related"] == report.loc[prefix + "train/img_01.jpg", "frame_id"]
    assert report.loc[prefix + "val/leak_exact.jpg", "related"] == report.loc[prefix + "train/img_00.jpg", "frame_id"]
    assert sum(reason[[prefix + "train/img_02.jpg", prefix + "train/img_dup.jpg"]].str.startswith("duplicate")) == 1
    assert reason[[prefix + "train/img_03.jpg", prefix + "train/conflict.jpg"]].str.startswith("labels disagree").all()
    findings = curate.metadata["dataset_audit"]["findings"]
    scored = read_outliers(store)
    flagged = scored["is_outlier"].sum()  # this one source: what the outliers asset flagged
    assert json.loads(json.dumps(findings))[source_id] == {
        "frames": 17,
        "corrupt": 1,
        "outliers": int(flagged),
        "duplicates_within_split": 1,
        "cross_split_leaks": 2,
        "label_conflicts": 2,
        "kept": 11,
    }

    folder = store.key_for_uri(curate.metadata["dataset_audit"]["cleaned_datasets"][source_id]).rstrip("/") + "/"
    cleaned = {s: json.loads(store.get_bytes(f"{folder}{s}.json")) for s in ("train", "val")}
    kept_files = {"/".join(img["file_name"].split("/")[-2:]) for split in cleaned.values() for img in split["images"]}
    planted = {"train/broken.jpg", "val/leak_exact.jpg", "val/leak_near.jpg", "train/img_03.jpg", "train/conflict.jpg"}
    assert kept_files.isdisjoint(planted)
    assert len({"train/img_02.jpg", "train/img_dup.jpg"} & kept_files) == 1
    assert len(cleaned["train"]["images"]) == 7 and len(cleaned["val"]["images"]) == 4
    removals = json.loads(store.get_bytes(f"{folder}removals.json"))
    assert {r["source_name"].removeprefix(prefix) for r in removals} >= planted
    assert landing.get_bytes("shelf-dataset/train/broken.jpg") == planted_dataset()["train/broken.jpg"]  # untouched


def _broken_coco() -> bytes:
    return json.dumps(
        {
            "images": [
                {"id": 1, "file_name": "a.jpg"},
                {"id": 2, "file_name": "b.jpg"},
                {"id": 2, "file_name": "c.jpg"},  # the same id twice: whose boxes are whose?
                {"id": 4, "file_name": "../../../etc/passwd"},
                "not an image",
            ],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
                {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5]},
                {"id": 3, "image_id": 77, "category_id": 1, "bbox": [1, 1, 5, 5]},  # no such image
                {"id": 4, "category_id": 1, "bbox": [1, 1, 5, 5]},  # no image_id
            ],
            "categories": CATEGORIES,
        }
    ).encode()


def test_malformed_coco_rows_are_reported_with_file_and_row_never_raised():
    files = {"ds/a.jpg": b"", "ds/b.jpg": b"", "ds/c.jpg": b"", "ds/annotations/train.json": _broken_coco()}
    problems: list[str] = []
    entries = {e.file_name: e for e in read_labeled("coco", "ds/", tuple(files), files.__getitem__, is_image, problems)}
    assert entries["a.jpg"].problem is None and len(entries["a.jpg"].annotations) == 1
    assert "used twice" in entries["b.jpg"].problem and "used twice" in entries["c.jpg"].problem
    assert entries["../../../etc/passwd"].member is None  # never resolved to a file outside the dataset
    joined = " | ".join(problems)
    assert "landing/ds/annotations/train.json: image ids used twice: [2]" in joined
    assert "image row 4 has no file_name and id" in joined
    assert "annotation row 3 has no image_id" in joined and "1 annotations refer to no image" in joined


def test_a_hostile_file_name_is_one_rejected_image_in_one_dataset(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    for dataset in ("ds-a", "ds-b"):
        for name, data in planted_dataset().items():
            landing.put_bytes(f"{dataset}/{name}", data)
    doc = json.loads(landing.get_bytes("ds-a/annotations/instances_train.json"))
    doc["images"].append({"id": 99, "file_name": "../../../etc/passwd", "width": 10, "height": 10})
    landing.put_bytes("ds-a/annotations/instances_train.json", json.dumps(doc).encode())
    headless.ingest_landing(local_defs, instance, log=lambda _: None)
    curate = headless.outcome("curate", headless.run_job(local_defs, instance, "curate"))
    assert curate.success, curate.error
    report = local_defs.resources["object_store"].store().read_table(layout.table_key("dataset_audit"))
    hostile = report[report["source_name"] == "../../../etc/passwd"]
    assert list(hostile["source"]) == [source_id_for("ds-a/")] and hostile["reason"].str.startswith("corrupt").all()
    assert set(report["source"]) == {source_id_for("ds-a/"), source_id_for("ds-b/")}  # both audited
