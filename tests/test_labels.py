import json

import pandas as pd
import pytest

from curation_assets.core.labels import (
    coco_images,
    import_coco,
    label_conflicts,
    sagemaker_manifest,
    split_by_group,
)

CATEGORIES = ["person", "cart"]
SELECTED = pd.DataFrame(
    {
        "frame_id": ["v/000001", "v/000002"],
        "uri": ["s3://b/frames/v/000001.jpg", "s3://b/frames/v/000002.jpg"],
        "width": [320, 320],
        "height": [240, 240],
        "camera_id": ["cam-a", "cam-a"],
    }
)


def _coco(annotations, images=None):
    doc = coco_images(SELECTED, CATEGORIES)
    if images is not None:
        doc["images"] = images
    doc["annotations"] = annotations
    return json.dumps(doc)


def _ann(i, image_id=1, category_id=1, bbox=(10, 10, 50, 80)):
    return {"id": i, "image_id": image_id, "category_id": category_id, "bbox": list(bbox)}


def test_exports_are_valid_manifest_lines_and_coco_images():
    lines = [json.loads(line) for line in sagemaker_manifest(SELECTED).splitlines()]
    assert [line["source-ref"] for line in lines] == list(SELECTED["uri"])
    doc = coco_images(SELECTED, CATEGORIES)
    assert {i["file_name"] for i in doc["images"]} == set(SELECTED["uri"])
    assert [c["name"] for c in doc["categories"]] == CATEGORIES


def test_valid_annotations_are_accepted_with_their_frame():
    result = import_coco(_coco([_ann(1), _ann(2, image_id=2, category_id=2)]), "a.json", SELECTED, CATEGORIES)
    assert list(result.accepted["frame_id"]) == ["v/000001", "v/000002"]
    assert list(result.accepted["category"]) == ["person", "cart"]
    assert result.rejected.empty
    assert result.labeled_frames == ["v/000001", "v/000002"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_ann(9, image_id=77), "image 77 is not a frame selected"),
        (_ann(9, category_id=5), "unknown category 5"),
        (_ann(9, bbox=(300, 10, 50, 50)), "outside the 320x240 image"),
        (_ann(9, bbox=(10, 10, 0, 50)), "non-positive size"),
        (_ann(9, bbox=(10, 10, 50, 80)), "duplicate of an earlier annotation"),
        ({"id": 9, "image_id": 1, "category_id": 1, "bbox": "wide"}, "is not \\[x, y, w, h\\]"),
    ],
    ids=["unknown image", "unknown category", "box outside image", "zero width", "duplicate", "malformed bbox"],
)
def test_each_bad_annotation_is_rejected_with_its_reason_and_the_rest_kept(bad, reason):
    result = import_coco(_coco([_ann(1), bad]), "round.json", SELECTED, CATEGORIES)
    assert len(result.accepted) == 1
    assert len(result.rejected) == 1
    assert result.rejected.iloc[0]["row"] == 1
    assert pd.Series(result.rejected["reason"]).str.contains(reason).all()


def test_malformed_json_is_reported_not_raised():
    result = import_coco("{not json", "broken.json", SELECTED, CATEGORIES)
    assert result.accepted.empty
    assert "malformed JSON" in result.rejected.iloc[0]["reason"]


def test_the_same_object_boxed_with_two_classes_is_a_conflict():
    result = import_coco(
        _coco([_ann(1), _ann(2, category_id=2, bbox=(11, 10, 50, 80)), _ann(3, image_id=2)]), "a", SELECTED, CATEGORIES
    )
    conflicts = label_conflicts(result.accepted)
    assert len(conflicts) == 1
    assert conflicts.iloc[0]["frame_id"] == "v/000001"


def test_split_keeps_each_group_whole_and_stable():
    groups = pd.Series([f"g{i // 3}" for i in range(3000)])
    splits = split_by_group(groups)
    assert (pd.DataFrame({"g": groups, "s": splits}).groupby("g")["s"].nunique() == 1).all()
    fractions = splits.value_counts(normalize=True)
    assert 0.75 < fractions["train"] < 0.85 and 0.07 < fractions["val"] < 0.13
    assert split_by_group(groups.iloc[::-1]).sort_index().equals(splits)  # order does not matter
