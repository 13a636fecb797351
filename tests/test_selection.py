import numpy as np
import pandas as pd

from curation_assets.core.selection import candidate_mask, coverage_radius, k_center_greedy, select_random


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
