import numpy as np
import pandas as pd

from curation_assets.core.duplicates import find_duplicate_groups
from curation_assets.core.outliers import score_outliers


def _frames(n=30):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "frame_id": [f"v/{i:06d}" for i in range(n)],
            "video_id": "v",
            "camera_id": "cam",
            "frame_index": range(n),
            "sha256": [f"h{i}" for i in range(n)],
            "phash": rng.integers(0, 2**62, n),
            "width": 320,
            "height": 240,
            "brightness": rng.uniform(0.4, 0.6, n),
            "sharpness": rng.uniform(0.012, 0.016, n),
            "entropy": rng.uniform(4.5, 5.5, n),
        }
    )


def _vectors(n=30, outlier=None):
    rng = np.random.default_rng(1)
    centre = rng.normal(size=64)
    v = centre + 0.3 * rng.normal(size=(n, 64))
    if outlier is not None:
        v[outlier] = rng.normal(size=64) * 3
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def _score(frames, vectors):
    return score_outliers(frames, find_duplicate_groups(frames, vectors), vectors).set_index("frame_id")


def test_ordinary_frames_are_not_flagged():
    scored = _score(_frames(), _vectors())
    assert not scored["is_outlier"].any()
    assert scored["score"].notna().all()


def test_each_bad_image_gets_its_reason():
    frames = _frames()
    frames.loc[1, ["brightness", "entropy", "sharpness"]] = [0.02, 1.7, 0.00001]  # lights off
    frames.loc[2, "brightness"] = 0.97  # blown out
    frames.loc[3, "sharpness"] = 0.002  # motion blur
    frames.loc[4, ["entropy", "sharpness"]] = [7.9, 0.9]  # sensor noise
    frames.loc[5, ["entropy", "sharpness"]] = [0.5, 0.0]  # a flat grey frame
    frames.loc[6, ["width", "height"]] = [640, 480]  # odd size
    scored = _score(frames, _vectors())
    assert "dark" in scored.loc["v/000001", "reasons"]
    assert "blurry" not in scored.loc["v/000001", "reasons"]  # too dark to judge focus
    assert scored.loc["v/000002", "reasons"] == "bright"
    assert scored.loc["v/000003", "reasons"] == "blurry"
    assert scored.loc["v/000004", "reasons"] == "noise"
    assert "low_information" in scored.loc["v/000005", "reasons"]
    assert scored.loc["v/000006", "reasons"] == "odd_size"
    assert scored["is_outlier"].sum() == 6


def test_a_frame_unlike_all_others_is_isolated():
    scored = _score(_frames(), _vectors(outlier=7))
    assert scored.loc["v/000007", "reasons"] == "isolated"
    assert scored["score"].idxmax() == "v/000007"
    assert scored["isolated"].sum() == 1


def test_copies_of_an_odd_frame_do_not_hide_it():
    frames = _frames()
    vectors = _vectors(outlier=7)
    vectors[8] = vectors[9] = vectors[7]  # the odd scene, three times
    frames.loc[[8, 9], "sha256"] = frames.loc[7, "sha256"]
    scored = _score(frames, vectors)
    assert scored.loc[["v/000007", "v/000008", "v/000009"], "isolated"].all()


def test_a_folder_of_unrelated_photos_flags_only_extremes_of_focus_and_size():
    rng = np.random.default_rng(2)
    frames = _frames(40)
    frames["sharpness"] = np.exp(rng.uniform(np.log(1e-3), np.log(5e-2), 40))  # scenes differ 50-fold in detail
    frames["width"] = rng.choice([512, 451, 600, 384], 40)
    frames["height"] = rng.choice([512, 300, 400], 40)
    frames.loc[7, "sharpness"] = 1e-6  # blurred beyond anything else in the folder
    frames.loc[8, ["width", "height"]] = [64, 48]  # a thumbnail
    scored = _score(frames, _vectors(40))
    assert scored.loc["v/000007", "reasons"] == "blurry"
    assert scored.loc["v/000008", "reasons"] == "odd_size"
    assert scored["is_outlier"].sum() == 2
