"""Each cleaning rule on a tiny hand-made component: what it drops, what it leaves alone."""

import json

import pandas as pd
import pytest

from curation_assets.cli import headless
from curation_assets.core.datasets import class_balance
from curation_assets.core.label_cleaning import CleaningRule, clean_labels
from tests.conftest import encoded, photo, shifted

# one identity shot four times (group g1): everyone is "female" and "backpack", except that
# p3 was also marked "hat" (a slip) and p4 misses "backpack"; p5 stands alone with a "hat"
LABELS = pd.DataFrame(
    [(f, c) for f, cs in {"p1": "female backpack", "p2": "female backpack", "p3": "female backpack hat",
                          "p4": "female", "p5": "hat"}.items() for c in cs.split()],
    columns=["frame_id", "category"],
)  # fmt: skip
GROUPS = pd.DataFrame({"frame_id": ["p1", "p2", "p3", "p4", "p5"], "group_id": ["g1"] * 4 + ["p5"]})


def _kept(rule: str, **thresholds) -> dict[str, set[str]]:
    cleaned = clean_labels(LABELS, GROUPS, CleaningRule(rule, **thresholds))
    return {f: set(c["category"]) for f, c in cleaned.labels.groupby("frame_id")}


def test_majority_vote_gives_each_member_what_most_of_its_component_holds():
    cleaned = clean_labels(LABELS, GROUPS)  # the default rule
    kept = {f: set(c["category"]) for f, c in cleaned.labels.groupby("frame_id")}
    assert kept["p1"] == kept["p2"] == kept["p3"] == kept["p4"] == {"female", "backpack"} and kept["p5"] == {"hat"}
    assert sorted(cleaned.removals[["frame_id", "category", "change", "share"]].values.tolist()) == [
        ["p3", "hat", "removed", 0.25], ["p4", "backpack", "added", 0.75]]  # fmt: skip


def test_label_pruning_drops_a_minority_label_and_adds_nothing():
    kept = _kept("label_pruning")
    assert kept["p3"] == {"female", "backpack"} and kept["p4"] == {"female"} and kept["p5"] == {"hat"}
    removals = clean_labels(LABELS, GROUPS, CleaningRule("label_pruning")).removals
    assert removals[["frame_id", "category", "share"]].values.tolist() == [["p3", "hat", 0.25]]


def test_label_intersection_keeps_only_what_every_member_holds():
    kept = _kept("label_intersection")
    assert kept["p1"] == kept["p2"] == kept["p3"] == kept["p4"] == {"female"} and kept["p5"] == {"hat"}


def test_component_pruning_drops_a_component_past_its_variance_threshold():
    assert "p1" not in _kept("component_pruning", max_variance=0.05)  # (0 + 3/16 + 3/16) / 3 = 0.125
    assert _kept("component_pruning", max_variance=0.2) == _kept("label_pruning", min_share=0.0)  # untouched


def test_image_pruning_drops_the_members_that_disagree_with_their_component():
    # agreement: p3 (female 1, backpack 3/4, hat 1/4) = 0.67; p4 (female 1, lacks backpack 1/4) = 0.625
    cleaned = clean_labels(LABELS, GROUPS, CleaningRule("image_pruning", min_agreement=0.7))
    assert cleaned.dropped_images == ["p3", "p4"] == sorted(set(cleaned.removals["frame_id"]))
    assert clean_labels(LABELS, GROUPS, CleaningRule("image_pruning", min_agreement=0.65)).dropped_images == ["p4"]
    assert "p4" not in set(
        clean_labels(LABELS, GROUPS, CleaningRule("image_pruning", min_agreement=0.7)).labels["frame_id"]
    )


def test_singletons_and_small_components_are_left_alone_and_rules_are_named():
    pair = pd.DataFrame({"frame_id": ["a", "a", "b"], "category": ["x", "y", "x"]})
    cleaned = clean_labels(pair, pd.DataFrame({"frame_id": ["a", "b"], "group_id": ["g", "g"]}))
    assert len(cleaned.labels) == 3 and cleaned.removals.empty  # two members cannot outvote each other
    assert cleaned.disagreement.loc[0, "variance"] == 0.125
    with pytest.raises(ValueError, match="unknown cleaning rule 'majority'"):
        CleaningRule("majority")


def test_the_audit_cleans_an_attribute_dataset_by_its_duplicate_groups(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    person = photo(400, size=(240, 320))
    shots = [person, shifted(person), person.point(lambda v: int(v * 0.95)), shifted(shifted(person))]
    for i, image in enumerate(shots):
        landing.put_bytes(f"peds/img/p{i}.jpg", encoded(image, quality=90 - 3 * i))
    landing.put_bytes("peds/img/other.jpg", encoded(photo(401, size=(240, 320)), quality=90))
    table = "image,female,backpack,hat\np0.jpg,1,1,0\np1.jpg,1,1,0\np2.jpg,1,1,1\np3.jpg,1,1,0\nother.jpg,0,0,1\n"
    landing.put_bytes("peds/attributes.csv", table.encode())

    assert all(o.success for o in headless.ingest_landing(local_defs, instance, log=lambda _: None))
    curate = headless.run_job(local_defs, instance, "curate")
    assert curate.success
    metadata = curate.asset_materializations_for_node("dataset_audit")[0].metadata
    assert metadata["label_cleaning"].value == {"peds": {"rule": "majority_vote", "labels_removed": 1,
                                                         "labels_added": 0, "images_removed": 0}}  # fmt: skip
    store = local_defs.resources["object_store"].store()
    folder = metadata["cleaned_datasets"].value["peds"].rstrip("/") + "/"
    record = json.loads(store.get_bytes(store.key_for_uri(folder + "label_cleaning.json")))
    assert [(r["frame_id"][-1], r["category"]) for r in record["removals"]] == [("2", "hat")]
    assert record["rule"]["min_share"] == 0.5
    doc = json.loads(store.get_bytes(store.key_for_uri(folder + "all.json")))
    hats = {a["image_id"] for a in doc["annotations"] if doc["categories"][a["category_id"] - 1]["name"] == "hat"}
    assert [i["file_name"].rsplit("/", 1)[-1] for i in doc["images"] if i["id"] in hats] == ["other.jpg"]
    assert "disagreeing_components_preview" in metadata
    kept = metadata["class_balance"].value["peds"]["classes"]  # the one copy kept, and "other"
    assert kept["female"]["images"] == kept["backpack"]["images"] == kept["hat"]["images"] == 1


def test_class_balance_counts_images_boxes_splits_and_the_imbalance():
    labels = pd.DataFrame({"frame_id": ["a", "a", "a", "b", "c"], "split": ["train", "train", "train", "val", "val"],
                           "category": ["tool", "tool", "box", "tool", "hat"],
                           "x": [0, 0, 0, 0, None], "y": [0, 0, 0, 0, None], "w": [1, 1, 1, 1, None],
                           "h": [1, 1, 1, 1, None]})  # fmt: skip
    frames = pd.DataFrame({"frame_id": ["a", "b", "c"], "camera_id": ["cam-a", "cam-a", "cam-b"]})
    balance = class_balance(labels, frames)
    assert balance["classes"]["tool"] == {"images": 2, "boxes": 3, "boxes_per_image": 1.5}
    assert balance["classes"]["hat"] == {"images": 1, "boxes": 0, "boxes_per_image": 0.0}
    assert balance["by_split"] == {"train": {"box": 1, "tool": 1}, "val": {"hat": 1, "tool": 1}}
    assert balance["by_camera"]["cam-b"] == {"hat": 1}
    assert (
        balance["imbalance"] == 2.0 and balance["dominant"] == "tool" and balance["dominant_share_of_images"] == 0.667
    )
