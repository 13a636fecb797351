import json

import pandas as pd
import pytest

from curation_assets.core.labels import (
    assemble_labeled_set,
    assign_splits,
    coco_images,
    export_bundle,
    group_label_report,
    import_coco,
    import_sagemaker,
    label_conflicts,
    label_studio_tasks,
    sagemaker_manifest,
    validate_coco_images,
    validate_label_studio_tasks,
    validate_sagemaker_manifest,
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
        (_ann(9, bbox=(10, float("nan"), 50, 80)), "in finite numbers"),
        ("a string", "str where an annotation object belongs"),
        (_ann(9, image_id=[1]), "is not a frame selected"),
    ],
    ids=[
        "unknown image",
        "unknown category",
        "box outside image",
        "zero width",
        "duplicate",
        "malformed bbox",
        "NaN in a box",
        "a string instead of an object",
        "a list as image id",
    ],  # fmt: skip
)
def test_each_bad_annotation_is_rejected_with_its_reason_and_the_rest_kept(bad, reason):
    result = import_coco(_coco([_ann(1), bad]), "round.json", SELECTED, CATEGORIES)
    assert len(result.accepted) == 1
    assert len(result.rejected) == 1
    assert result.rejected.iloc[0]["row"] == 1
    assert pd.Series(result.rejected["reason"]).str.contains(reason).all()


def test_one_nan_box_among_valid_ones_is_rejected_alone():
    annotations = [_ann(i, bbox=(10 + i, 10, 20, 20)) for i in range(10)] + [_ann(99, bbox=(float("nan"), 1, 2, 3))]
    result = import_coco(_coco(annotations), "round.json", SELECTED, CATEGORIES)
    assert len(result.accepted) == 10 and list(result.rejected["row"]) == [10]


def test_a_sagemaker_line_with_a_string_for_a_box_is_rejected_alone():
    good = _gt_line(SELECTED.uri[0], [(0, (10, 10, 50, 80))])
    bad = json.loads(good)
    bad["bbox-job"]["annotations"] = ["not a box"]
    result = import_sagemaker(good + "\n" + json.dumps(bad) + "\n", "out.manifest", SELECTED, CATEGORIES)
    assert len(result.accepted) == 1
    assert list(result.rejected["row"]) == [2] and "not a list of objects" in result.rejected.iloc[0]["reason"]


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


def _split_frames(n_groups=300, per_group=3, videos=30):
    ids = [f"v{g % videos}/{g:04d}{k}" for g in range(n_groups) for k in range(per_group)]
    frames = pd.DataFrame(
        {
            "frame_id": ids,
            "group_id": [f"g{i // per_group}" for i in range(len(ids))],
            "video_id": [f"v{(i // per_group) % videos}" for i in range(len(ids))],
        }
    )
    rare = {f"g{g}" for g in range(0, n_groups, 25)}  # a rare class: 12 of 300 groups
    annotations = pd.DataFrame(
        {"frame_id": ids, "category": ["cart" if g in rare else "person" for g in frames["group_id"]]}
    )
    return frames, annotations


def test_split_keeps_each_group_whole_near_the_target_fractions():
    frames, annotations = _split_frames()
    splits = assign_splits(frames, annotations)
    assert (frames.assign(s=splits.to_numpy()).groupby("group_id")["s"].nunique() == 1).all()
    fractions = splits.value_counts(normalize=True)
    assert abs(fractions["train"] - 0.8) < 0.02 and abs(fractions["val"] - 0.1) < 0.02


def test_split_stratifies_a_rare_class_across_splits():
    frames, annotations = _split_frames()
    splits = pd.Series(assign_splits(frames, annotations).to_numpy(), index=frames["frame_id"])
    carts = annotations.loc[annotations["category"] == "cart", "frame_id"]
    per_split = splits[carts].value_counts()
    assert set(per_split.index) == {"train", "val", "test"}  # 12 rare groups spread, not all in train
    assert per_split["train"] >= per_split["val"]


def test_split_by_video_keeps_every_video_in_one_split():
    frames, annotations = _split_frames()
    splits = assign_splits(frames, annotations, by_video=True)
    assert (frames.assign(s=splits.to_numpy()).groupby("video_id")["s"].nunique() == 1).all()


def test_a_group_keeps_its_split_in_later_versions():
    frames, annotations = _split_frames()
    first = dict(zip(frames["frame_id"], assign_splits(frames, annotations)))
    more, more_ann = _split_frames(n_groups=400)
    second = dict(zip(more["frame_id"], assign_splits(more, more_ann, previous=first)))
    assert all(second[f] == s for f, s in first.items())


def _gt_line(ref, boxes, attribute="bbox-job"):
    return json.dumps(
        {
            "source-ref": ref,
            attribute: {
                "annotations": [
                    {"class_id": c, "left": x, "top": y, "width": w, "height": h} for c, (x, y, w, h) in boxes
                ],
                "image_size": [{"width": 320, "height": 240, "depth": 3}],
            },
            f"{attribute}-metadata": {
                "class-map": {"0": "person", "1": "cart", "7": "dog"},
                "type": "groundtruth/object-detection",
            },
        }
    )


def test_sagemaker_output_manifest_imports_boxes_and_rejects_bad_lines_alone():
    text = "\n".join(
        [
            _gt_line(SELECTED.uri[0], [(0, (10, 10, 50, 80)), (1, (100, 100, 40, 40))]),
            "{ broken json",
            _gt_line(SELECTED.uri[1], [(7, (5, 5, 20, 20)), (0, (300, 200, 50, 50))]),
            _gt_line("s3://b/frames/unknown.jpg", [(0, (1, 1, 5, 5))]),
        ]
    )
    result = import_sagemaker(text, "out.manifest", SELECTED, CATEGORIES)
    assert sorted(zip(result.accepted["frame_id"], result.accepted["category"])) == [
        ("v/000001", "cart"),
        ("v/000001", "person"),
    ]
    reasons = " | ".join(result.rejected["reason"])
    assert "line 2" in reasons and "unknown category" in reasons and "outside the 320x240 image" in reasons
    assert "not a frame selected" in reasons
    assert len(result.rejected) == 4


def test_exports_pass_their_format_validators_and_broken_ones_do_not():
    assert validate_sagemaker_manifest(sagemaker_manifest(SELECTED)) == []
    assert validate_coco_images(coco_images(SELECTED, CATEGORIES)) == []
    tasks = label_studio_tasks(SELECTED)
    assert validate_label_studio_tasks(tasks) == [] and tasks[0]["data"]["image"] == SELECTED.uri[0]
    no_ref, not_json = validate_sagemaker_manifest('{"source-ref": "s3://x"}\n{"other": 1}\nnope')
    assert no_ref == "line 2: no source-ref" and not_json.startswith("line 3: not JSON (")
    broken = coco_images(SELECTED, CATEGORIES)
    broken["images"][1]["id"] = broken["images"][0]["id"]
    assert "image ids are not unique" in validate_coco_images(broken)
    assert validate_label_studio_tasks([{"data": {}}]) == ["task 0: needs data.image"]


def test_groups_whose_frames_disagree_are_reported_with_class_counts_and_rare_labels():
    annotations = pd.DataFrame(
        {
            "frame_id": ["a1", "a2", "a3", "b1", "b2", "c1"],
            "category": ["person", "person", "cart", "person", "person", "cart"],
        }
    )
    groups = pd.Series({"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C"})
    disagreeing, rare = group_label_report(annotations, groups)
    assert list(disagreeing["group_id"]) == ["A"]
    assert disagreeing.iloc[0]["class_counts"] == {"person": 2, "cart": 1}
    assert list(zip(rare["frame_id"], rare["category"])) == [("a3", "cart")]


def test_a_labeled_set_follows_the_current_groups_and_counts_what_was_rejected():
    # frame 2 was its own group when selected; since then it joined frame 1's group
    selected = SELECTED.assign(group_id=["g1", "g2"], round=["r1", "r1"], video_id="v")
    text = _coco([_ann(1), _ann(2, image_id=2, bbox=(300, 10, 50, 80)), _ann(3, category_id=9)])
    imports = [import_coco(text, "a.json", selected, CATEGORIES)]
    current = pd.Series({"v/000001": "g1", "v/000002": "g1"})

    found = assemble_labeled_set(selected, imports, current, (("train", 0.5), ("val", 0.5), ("test", 0.0)))

    assert list(found.frames["group_id"]) == ["g1", "g1"]
    assert found.frames["split"].nunique() == 1  # one group, one split
    assert found.splits_per_group.to_dict("records") == [{"group_id": "g1", "splits": 1}]
    assert list(found.accepted["inside_image"]) == [True]  # 300 + 50 > 320 was refused at import
    assert len(found.rejected) == 2 and found.rejected_fraction == pytest.approx(2 / 3)


def test_a_round_exports_three_files_and_a_frame_without_an_image_fails_each_format():
    files, problems = export_bundle(SELECTED, CATEGORIES)
    assert set(files) == {"manifest.jsonl", "coco_images.json", "label_studio_tasks.json"} and problems == []
    _, problems = export_bundle(SELECTED.assign(uri=["", SELECTED.uri[1]]), CATEGORIES)
    assert [p.split(":")[0] for p in problems] == ["line 1", "image 1", "task 0"]
