"""Object-level curation: boxes cropped and embedded once, outliers among crops, frames
selected for the boxes they add (real photographs, the packaged model, the embedded store)."""

import io

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from curation_assets.core import layout
from curation_assets.core.objects import (
    CropParams,
    ObjectOutlierParams,
    boxes_table,
    class_weights,
    crop,
    object_duplicates,
    object_outliers,
    select_by_objects,
)
from curation_assets.definitions import build_defs
from tests.conftest import encoded, make_resources, photo

FRAMES = pd.DataFrame({"frame_id": ["v/000000", "v/000001"], "video_id": "v", "width": 100, "height": 80})


def test_boxes_get_stable_ids_and_broken_ones_say_why():
    boxes = pd.DataFrame(
        {
            "frame_id": ["v/000000", "v/000000", "v/000001", "v/000001", "gone/000000", "v/000001"],
            "category": ["cup", "cup", "cat", "cup", "cup", "tag"],
            "x": [10, 50, 0, 120, 1, np.nan],  # the fourth lies outside its 100x80 image; the last has no box
            "y": [10, 10, 0, 10, 1, np.nan],
            "w": [20, 0.5, 30, 20, 5, np.nan],
            "h": [20, 20, 30, 20, 5, np.nan],
        }
    )
    objects = boxes_table(boxes, FRAMES, "labels")
    assert list(objects["object_id"]) == ["v/000000/labels-000", "v/000000/labels-001", "v/000001/labels-000",
                                          "v/000001/labels-001"]  # fmt: skip
    assert set(objects["video_id"]) == {"v"}  # the box of an unknown frame is left out, and the image-level label
    problems = dict(zip(objects["object_id"], objects["problem"]))
    assert problems["v/000000/labels-000"] == "" and problems["v/000001/labels-000"] == ""
    assert problems["v/000000/labels-001"].startswith("broken box") and "no area" in problems["v/000000/labels-001"]
    assert "outside the 100x80 image" in problems["v/000001/labels-001"]


def test_a_crop_keeps_its_shape_on_a_square_and_a_tiny_box_is_padded_not_enlarged():
    image = photo(1, size=(200, 100))
    tall = crop(image, 50, 10, 20, 60, CropParams(context=0.0, min_side=32))
    assert tall.size == (60, 60)
    assert np.asarray(tall)[:, :15].std() < 1  # grey padding beside a tall box, not the image stretched
    tiny = crop(image, 100, 50, 4, 4, CropParams(context=0.0, min_side=32))
    assert tiny.size == (32, 32) and np.asarray(tiny)[0, 0].tolist() == [128, 128, 128]


def test_rare_classes_weigh_more_and_strength_zero_ignores_classes():
    classes = pd.Series(["car"] * 8 + ["cat"] * 2)
    w = class_weights(classes)
    assert w[-1] == pytest.approx(4 * w[0]) and w.mean() == pytest.approx(1.0)
    assert np.allclose(class_weights(classes, 0.0), 1.0)


def _cluster(rng, centre: np.ndarray, n: int, spread: float = 0.05) -> np.ndarray:
    x = centre + spread * rng.standard_normal((n, len(centre)))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_a_frame_is_chosen_for_the_new_object_it_adds_not_for_how_crowded_it_is():
    rng = np.random.default_rng(0)
    a, b = np.eye(16)[0], np.eye(16)[1]
    # frame 0: five objects like the covered ones; frame 1: one object unlike anything; frame 2: none
    vectors = np.concatenate([_cluster(rng, a, 5), _cluster(rng, b, 1)])
    frames = np.array([0, 0, 0, 0, 0, 1])
    picks, scores = select_by_objects(frames, vectors, 3, 3, seed=0, covered=_cluster(rng, a, 3))
    assert list(picks) == [1, 0, 2] and scores[0] > scores[1] > 0 and scores[2] == 0
    again, _ = select_by_objects(frames, vectors, 3, 3, seed=0, covered=_cluster(rng, a, 3))
    assert list(again) == list(picks)


def test_a_rare_class_outbids_an_equally_new_common_one():
    rng = np.random.default_rng(1)
    vectors = np.concatenate([_cluster(rng, np.eye(8)[0], 6), _cluster(rng, np.eye(8)[1], 1)])
    frames = np.arange(7)
    weights = class_weights(pd.Series(["car"] * 6 + ["cat"]))
    picks, _ = select_by_objects(frames, vectors, 7, 1, seed=3, weights=weights)
    assert list(picks) == [6]


def test_a_swapped_label_and_a_broken_box_are_flagged_and_clean_boxes_are_not():
    rng = np.random.default_rng(2)
    cups, cats = _cluster(rng, np.eye(32)[0], 30), _cluster(rng, np.eye(32)[1], 30)
    vectors = np.concatenate([cups, cats, np.zeros((1, 32))])
    objects = pd.DataFrame(
        {
            "object_id": [f"o{i}" for i in range(61)],
            "category": ["cup"] * 30 + ["cat"] * 29 + ["cup", "cat"],  # o59 is a cat labeled cup
            "problem": [""] * 60 + ["broken box: 0x5 at (1, 1) has no area"],
        }
    )
    flags = object_outliers(objects, vectors).set_index("object_id")
    assert flags.loc["o59", "reason"] == "looks like cat"
    assert flags.loc["o60", "reason"].startswith("broken box")
    assert flags["is_outlier"].sum() == 2 and flags.loc["o60", "score"] > flags.loc["o59", "score"]


def test_crops_of_one_object_seen_again_form_one_group_led_by_the_largest_box():
    rng = np.random.default_rng(3)
    same = _cluster(rng, np.eye(16)[0], 3, spread=0.01)
    other = _cluster(rng, np.eye(16)[1], 1, spread=0.01)
    objects = pd.DataFrame(
        {"object_id": ["a", "b", "c", "d"], "category": "cup", "problem": "", "w": [10, 30, 20, 10], "h": 10}
    )
    groups = object_duplicates(objects, np.concatenate([same, other]), ObjectOutlierParams(duplicate_cosine=0.95))
    assert list(groups["object_group"]) == ["b", "b", "b", "d"]
    assert list(groups["is_representative"]) == [False, True, False, True]


# --- through the graph ---------------------------------------------------------------------------


def _scene(seed: int, objects: list[tuple[str, int, int, int]]) -> tuple[Image.Image, list[dict]]:
    """A 320x240 photograph with real photographs pasted in as objects: (class, x, y, side)."""
    # photo() seeds (astronaut, cell, coffee, clock): the class names are only labels
    sources = {"cup": 10, "person": 1, "cat": 8, "vehicle": 21}
    background = photo([13, 14, 4][seed % 3] * 3 % 23, size=(320, 240))
    boxes = []
    for category, x, y, side in objects:
        piece = photo(sources[category], size=(side, side))
        background.paste(piece, (x, y))
        boxes.append({"category": category, "x": float(x), "y": float(y), "w": float(side), "h": float(side)})
    return background, boxes


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """Eight unlabeled frames in one folder, a detector's boxes for them under the root: cups,
    people and vehicles everywhere, one cat in one frame, one box with no area, one unsure box."""
    from curation_assets.cli import headless

    tmp = tmp_path_factory.mktemp("objects")
    resources = make_resources(str(tmp / "root"), tmp / "qdrant")
    landing = resources["object_store"].landing_store()
    rows = []
    layouts = [[("cup", 20, 30, 70), ("person", 150, 40, 80)], [("vehicle", 30, 20, 90), ("cup", 180, 100, 60)],
               [("person", 10, 10, 90), ("vehicle", 160, 60, 80)], [("cup", 200, 20, 70), ("person", 40, 120, 70)],
               [("vehicle", 100, 100, 90), ("cup", 10, 10, 60)], [("cat", 120, 70, 80)],
               [("person", 200, 30, 80), ("cup", 30, 150, 60)],
               [("vehicle", 20, 100, 80), ("person", 180, 90, 70)]]  # fmt: skip
    for i, objects in enumerate(layouts):
        image, boxes = _scene(i, objects)
        landing.put_bytes(f"cam-a/street/f{i:02d}.jpg", encoded(image, quality=92))
        rows += [{"file": f"f{i:02d}.jpg", "confidence": 0.9, **b} for b in boxes]
    rows.append({"file": "f00.jpg", "category": "cup", "confidence": 0.9, "x": 5.0, "y": 5.0, "w": 0.0, "h": 20.0})
    rows.append({"file": "f01.jpg", "category": "cat", "confidence": 0.2, "x": 5.0, "y": 5.0, "w": 40.0, "h": 40.0})
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        assert all(o.success for o in headless.ingest_landing(defs, instance, log=lambda _: None))
        assert headless.run_job(defs, instance, "curate").success
        store = resources["object_store"].store()
        frames = store.read_tables(layout.table_prefix("raw_frames"))
        frame_of = dict(zip(frames["source_name"].str.rsplit("/", n=1).str[-1], frames["frame_id"]))
        predictions = pd.DataFrame(rows).assign(frame_id=lambda t: t["file"].map(frame_of)).drop(columns="file")
        store.put_bytes("predictions/boxes.csv", predictions.to_csv(index=False).encode())
        yield defs, instance, resources, frame_of


OBJECTS_CONFIG = {"ops": {"object_embeddings": {"config": {"predictions": "predictions/boxes.csv"}}}}


def _curate_objects(defs, instance, config=OBJECTS_CONFIG):
    from curation_assets.cli import headless

    result = headless.run_job(defs, instance, "curate_objects", run_config=config)
    assert result.success, _errors(result)
    return result


def _errors(result) -> str:
    return " ".join(str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure)


def _metadata(result, asset: str) -> dict:
    [m] = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in m.metadata.items()}


def test_boxes_are_embedded_into_their_own_collection_once(street):
    defs, instance, resources, _ = street
    first = _metadata(_curate_objects(defs, instance), "object_embeddings")
    assert first["objects"] == 16 and first["broken_boxes"] == 1  # the unsure box is left out
    assert first["embedded"] == 15 and first["reused"] == 0
    assert first["collection"].startswith("frames-objects__")
    with resources["vector_store"].open() as vs:
        assert vs.count(first["collection"]) == 15
        [(_, _, payload)] = vs.nearest(first["collection"], first["vector_name"], np.ones(1280) / np.sqrt(1280), 1)
        assert set(payload) >= {"object_id", "frame_id", "video_id", "category"}

    again = _metadata(_curate_objects(defs, instance), "object_embeddings")
    assert again["embedded"] == 0 and again["reused"] == 15
    with resources["vector_store"].open() as vs:
        assert vs.count(first["collection"]) == 15


def test_a_moved_box_is_embedded_again_and_nothing_else(street):
    defs, instance, resources, _ = street
    store = resources["object_store"].store()
    _curate_objects(defs, instance)
    original = store.get_bytes("predictions/boxes.csv")
    boxes = pd.read_csv(io.BytesIO(original))
    boxes.loc[0, "x"] += 8
    store.put_bytes("predictions/boxes.csv", boxes.to_csv(index=False).encode())
    try:
        moved = _metadata(_curate_objects(defs, instance), "object_embeddings")
        assert moved["embedded"] == 1 and moved["reused"] == 14
    finally:
        store.put_bytes("predictions/boxes.csv", original)
        _curate_objects(defs, instance)


def test_boxes_imported_from_a_labeling_round_replace_the_predictions_of_their_frame(street):
    defs, instance, resources, frame_of = street
    store = resources["object_store"].store()
    imported = layout.table_key("labeled_set", "annotations")
    box = {"frame_id": frame_of["f02.jpg"], "category": "person", "x": 10.0, "y": 10.0, "w": 90.0, "h": 90.0}
    store.write_table(imported, pd.DataFrame([box]))  # what labeled_set publishes
    try:
        _curate_objects(defs, instance)
        table = store.read_table(layout.table_key("object_embeddings"))
        mine = table[table["frame_id"] == frame_of["f02.jpg"]]
        assert list(mine["origin"]) == ["labeled_set"] and list(mine["category"]) == ["person"]
        assert (table["origin"] == "predictions").sum() == 14  # the other frames' boxes
    finally:
        store.delete(imported)
        _curate_objects(defs, instance)


def test_object_outliers_flag_the_broken_box_and_group_every_box(street):
    defs, instance, resources, _ = street
    result = _curate_objects(defs, instance)
    meta = _metadata(result, "object_outliers")
    table = resources["object_store"].store().read_table(layout.table_key("object_outliers"))
    assert len(table) == meta["objects"] == 16
    broken = table[table["problem"] != ""]
    assert len(broken) == 1 and broken["is_outlier"].all() and broken["reason"].iloc[0].startswith("broken box")
    assert meta["reasons"].get("broken box", 0) == 1
    assert meta["flagged_objects_preview"].startswith("![flagged_objects](data:image/png;base64,")
    sheet = resources["object_store"].store().get_bytes(layout.report_key("object_outliers.png"))
    assert Image.open(io.BytesIO(sheet)).size[0] > 400
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["object_outliers_every_object_scored"] and checks["object_embeddings_qdrant_count"]


def test_object_diversity_chooses_the_frame_with_the_rare_object_first(street):
    from curation_assets.cli import headless

    defs, instance, resources, frame_of = street
    _curate_objects(defs, instance)
    instance.add_dynamic_partitions("labeling_rounds", ["objects-1"])
    config = {"ops": {"selected_batch": {"config": {"budget": 3, "strategy": "object_diversity"}}}}
    result = headless.run_job(defs, instance, "labeling_round", "objects-1", run_config=config)
    assert result.success
    batch = resources["object_store"].store().read_table(layout.table_key("selected_batch", "objects-1"))
    assert batch.loc[0, "frame_id"] == frame_of["f05.jpg"] and len(batch) == 3
    assert "cat" in _metadata(result, "selected_batch")["box_class_shares"]


def test_object_diversity_without_boxes_and_predictions_without_columns_say_what_to_do(tmp_path):
    from curation_assets.cli import headless

    resources = make_resources(str(tmp_path / "root"), tmp_path / "qdrant")
    landing = resources["object_store"].landing_store()
    for i in range(3):
        landing.put_bytes(f"cam-a/few/p{i}.jpg", encoded(photo(i, size=(160, 120))))
    defs = build_defs(resources)
    with dg.instance_for_test() as instance:
        headless.ingest_landing(defs, instance, log=lambda _: None)
        assert headless.run_job(defs, instance, "curate").success
        instance.add_dynamic_partitions("labeling_rounds", ["r1"])
        config = {"ops": {"selected_batch": {"config": {"budget": 2, "strategy": "object_diversity"}}}}
        result = headless.run_job(defs, instance, "labeling_round", "r1", run_config=config)
        assert not result.success and "materialize object_embeddings (job curate_objects)" in _errors(result)
        resources["object_store"].store().put_bytes("p.csv", b"frame_id,category\nx,cup\n")
        bad = {"ops": {"object_embeddings": {"config": {"predictions": "p.csv"}}}}
        result = headless.run_job(defs, instance, "curate_objects", run_config=bad)
        assert "p.csv: predictions need columns ['confidence', 'h', 'w', 'x', 'y']" in _errors(result)


def test_boxes_are_searched_by_a_picture_of_an_object_by_a_stored_box_and_by_class(street, tmp_path):
    from curation_assets.core.search import SearchError
    from curation_assets.defs.search import SearchConfig, search, write_report

    defs, instance, resources, frame_of = street
    _curate_objects(defs, instance)
    args = resources["object_store"], resources["embedder"], resources["vector_store"]
    cat = tmp_path / "cat.jpg"
    cat.write_bytes(encoded(photo(8, size=(90, 90)), quality=92))  # the photograph pasted as the "cat", resized

    by_picture = search(SearchConfig(image=str(cat), boxes=True, top=3), *args)
    assert by_picture.hits.loc[0, "category"] == "cat" and by_picture.hits.loc[0, "frame_id"] == frame_of["f05.jpg"]

    cups = by_picture.boxes[(by_picture.boxes["category"] == "cup") & (by_picture.boxes["problem"] == "")]
    query = cups["object_id"].iloc[0]
    by_box = search(SearchConfig(box=query, top=3), *args)
    assert query not in set(by_box.hits["object_id"]) and by_box.hits.loc[0, "category"] == "cup"

    vehicles = search(SearchConfig(image=str(cat), boxes=True, categories=["vehicle"], top=10), *args)
    assert len(vehicles.hits) == 4 and set(vehicles.hits["category"]) == {"vehicle"}
    pictures, _ = write_report(resources["object_store"].store(), by_box, "boxes-test")
    assert pictures["search_hits_report"].value.endswith("search/boxes-test.png")

    with pytest.raises(SearchError, match="classes filter boxes"):
        search(SearchConfig(image=str(cat), categories=["cat"]), *args)
    with pytest.raises(SearchError, match="not a frame id"):
        search(SearchConfig(frame=frame_of["f05.jpg"], boxes=True), *args)
