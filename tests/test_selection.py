import numpy as np
import pandas as pd
import pytest

from curation_assets.core.selection import (
    UNCERTAINTY_MEASURES,
    candidate_mask,
    cap_shares,
    coverage_radius,
    k_center_greedy,
    predicted_classes,
    resolve_budget,
    select,
    select_balanced,
    select_random,
    uncertainty,
)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_candidates_exclude_outliers_non_representatives_and_groups_already_taken():
    groups = pd.DataFrame(
        {
            "frame_id": ["a", "b", "c", "d", "e"],
            "group_id": ["a", "a", "c", "d", "e"],
            "is_representative": [True, False, True, True, True],
            "is_outlier": [False, False, True, False, False],
        }
    )
    # "e" itself was never selected, but its group holds nothing else; "d" was labeled
    mask = candidate_mask(groups, groups, taken_frame_ids={"d"})
    assert list(groups["frame_id"][mask]) == ["a", "e"]
    # a frame selected earlier blocks its whole group, including a new representative
    assert list(groups["frame_id"][candidate_mask(groups, groups, {"b"})]) == ["d", "e"]


def test_k_center_greedy_covers_every_cluster_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 32)) * 5
    sizes = [80, 10, 5, 3, 2]  # one dominant cluster, as with a busy camera
    points = _unit(np.vstack([c + rng.normal(size=(s, 32)) * 0.3 for c, s in zip(centres, sizes)]))
    labels = np.repeat(np.arange(5), sizes)
    picks, scores = k_center_greedy(points, 5, seed=0)
    assert sorted(labels[picks]) == [0, 1, 2, 3, 4]
    random_picks, _ = select_random(len(points), 5, seed=0)
    assert coverage_radius(points, points[picks]) < coverage_radius(points, points[random_picks])
    assert np.all(np.diff(scores[1:]) <= 1e-6)  # each pick closes a smaller gap


def test_k_center_greedy_fills_gaps_left_by_earlier_rounds():
    rng = np.random.default_rng(1)
    a = _unit(rng.normal(size=(1, 16)) + rng.normal(size=(20, 16)) * 0.1)
    b = _unit(rng.normal(size=(1, 16)) * 3 + rng.normal(size=(20, 16)) * 0.1)
    picks, _ = k_center_greedy(np.vstack([a, b]), 1, seed=0, already=a[:3])
    assert picks[0] >= 20  # cluster a is already covered


def test_selection_is_deterministic_and_respects_the_budget():
    points = _unit(np.random.default_rng(2).normal(size=(50, 8)))
    assert np.array_equal(k_center_greedy(points, 10, seed=3)[0], k_center_greedy(points, 10, seed=3)[0])
    assert np.array_equal(select_random(50, 10, 3)[0], select_random(50, 10, 3)[0])
    assert len(k_center_greedy(points, 80, seed=0)[0]) == 50
    assert len(set(select_random(50, 10, 3)[0])) == 10


def _two_cameras(n_major=80, n_minor=20, seed=5):
    rng = np.random.default_rng(seed)
    a = _unit(rng.normal(size=(1, 16)) + rng.normal(size=(n_major, 16)) * 0.4)
    b = _unit(rng.normal(size=(1, 16)) + rng.normal(size=(n_minor, 16)) * 0.4)
    return np.vstack([a, b]), pd.Series(["cam-a"] * n_major + ["cam-b"] * n_minor)


def test_budget_can_be_a_fraction_of_the_candidates():
    assert resolve_budget(20, 0.0, 500) == 20
    assert resolve_budget(20, 0.1, 500) == 50
    assert resolve_budget(20, 0.0, 7) == 7


def test_typicality_prefers_dense_regions():
    rng = np.random.default_rng(0)
    dense = _unit(np.ones((1, 8)) + rng.normal(size=(30, 8)) * 0.05)
    sparse = _unit(rng.normal(size=(5, 8)))
    picks, scores = select("typicality", np.vstack([dense, sparse]), 5, seed=0)
    assert (picks < 30).all() and np.all(np.diff(scores) <= 0)


def test_classification_uncertainty_measures():
    preds = pd.DataFrame(
        {"frame_id": ["sure", "torn", "flat"], "probs": [[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [1 / 3] * 3]}
    )
    for measure in UNCERTAINTY_MEASURES:
        u = uncertainty(preds, measure)
        assert u["sure"] < u["torn"] and u["sure"] < u["flat"], measure
        assert ((u >= 0) & (u <= 1 + 1e-9)).all()
    assert uncertainty(preds, "margin")["torn"] == pytest.approx(0.99)  # the top two nearly tie
    assert uncertainty(preds, "least_confidence")["torn"] == pytest.approx(0.5)
    assert uncertainty(preds, "entropy")["flat"] == pytest.approx(1.0)


def test_detection_uncertainty_aggregates_box_confidences_per_image():
    preds = pd.DataFrame({"frame_id": ["a", "a", "b", "c"], "confidence": [0.99, 0.5, 0.95, 0.02]})
    u = uncertainty(preds, aggregate="max")
    assert u["a"] == pytest.approx(1.0) and u["b"] == pytest.approx(0.1) and u["c"] == pytest.approx(0.04)
    assert uncertainty(preds, aggregate="mean")["a"] == pytest.approx(0.51)


def test_hybrid_prefers_uncertain_frames_among_diverse_ones():
    vectors, _ = _two_cameras()
    u = np.full(len(vectors), 0.05)
    u[::7] = 1.0
    picks, _ = select("hybrid", vectors, 10, seed=0, uncertainty_scores=u)
    assert (u[picks] == 1.0).mean() >= 0.8
    with pytest.raises(ValueError, match="needs a predictions table"):
        select("uncertainty", vectors, 5, seed=0)


def test_balance_gives_the_minority_camera_its_share():
    vectors, cameras = _two_cameras()
    picks, _, plan = select_balanced("random", vectors, cameras, 20, seed=0)
    assert (cameras[picks] == "cam-b").sum() == 10
    picks, _, plan = select_balanced("diversity", vectors, cameras, 40, seed=0, targets={"cam-a": 0.5, "cam-b": 0.5})
    chosen = {q.value: q.chosen for q in plan}
    assert chosen == {"cam-a": 20, "cam-b": 20} and len(set(picks)) == 40


def test_balance_fills_a_shortfall_from_the_other_values():
    vectors, cameras = _two_cameras(n_major=80, n_minor=5)
    picks, _, plan = select_balanced("random", vectors, cameras, 30, seed=0)
    by_value = {q.value: q for q in plan}
    assert by_value["cam-b"].chosen == 5 and by_value["cam-b"].target == 15  # all there is, shortfall reported
    assert len(picks) == 30


def test_predicted_classes_from_class_probabilities_and_from_boxes():
    probs = pd.DataFrame({"frame_id": ["a", "b"], "probs": [[0.1, 0.9], [0.8, 0.2]]})
    assert predicted_classes(probs, ["bottle", "can"]).to_dict() == {"a": "can", "b": "bottle"}
    boxes = pd.DataFrame({"frame_id": ["a", "a", "a", "b"], "category": ["tool", "tool", "box", "box"],
                          "confidence": [0.9, 0.8, 0.9, 0.2]})  # fmt: skip
    assert predicted_classes(boxes, []).to_dict() == {"a": "tool", "b": "none"}  # b's only box is unsure
    with pytest.raises(ValueError, match="'category' and 'confidence'"):
        predicted_classes(boxes[["frame_id", "confidence"]], [])


@pytest.mark.parametrize("strategy", ["random", "diversity"])
def test_a_cap_keeps_a_dominant_class_to_its_share_and_refills_from_the_others(strategy):
    vectors, cameras = _two_cameras(n_major=80, n_minor=20)
    classes = np.where(np.arange(100) % 5 == 0, "can", np.where(np.arange(100) < 90, "tool", "box"))
    picks, scores, _ = select_balanced(strategy, vectors, pd.Series(["all"] * 100), 20, seed=0)
    capped, capped_scores = cap_shares(strategy, vectors, classes, picks, scores, {"tool": 0.25}, seed=0)
    counts = pd.Series(classes[capped]).value_counts().to_dict()
    assert len(capped) == len(set(capped)) == 20 == len(capped_scores)
    assert counts["tool"] == 5 and counts.get("can", 0) + counts.get("box", 0) == 15  # 20 cans and 8 boxes exist
    kept = [p for p in picks if classes[p] == "tool"][:5]
    assert [p for p in capped if classes[p] == "tool"] == kept  # the capped class keeps its first picks
