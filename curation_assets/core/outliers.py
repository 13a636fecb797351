"""Outliers: image-statistics flags plus isolation in embedding space.

Image flags follow cleanvision's families (dark, bright, blurry, low information) plus two
it lacks: noise (structureless high entropy) and odd size. Blur is judged relative to the
camera's own sharpness, since absolute Laplacian variance depends on the scene: below half
its median and an outlier of its log-sharpness spread, so a folder of unrelated photos
(wide spread) flags only extremes while a fixed camera (narrow spread) flags every soft frame.
Isolation is measured between duplicate-group representatives, so a frame with many
copies of itself does not hide an unusual scene: the distance to the k-th nearest other
group, as a robust z-score (median / MAD).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_assets.core.neighbors import knn_graph

REASONS = ("corrupt", "dark", "bright", "blurry", "low_information", "noise", "odd_size", "isolated")


@dataclass(frozen=True)
class OutlierParams:
    dark_brightness: float = 0.12
    bright_brightness: float = 0.9
    blurry_ratio: float = 0.5  # sharpness below this fraction of the camera's median ...
    blurry_z: float = -3.0  # ... and this far below the camera's log-sharpness spread (robust z)
    odd_size_factor: float = 5.0  # area this many times off the camera's median, either way,
    usual_size_share: float = 0.9  # or any other size where this share of the camera's frames agree
    low_information_entropy: float = 3.0  # bits of the grey histogram
    noise_entropy: float = 7.5
    noise_sharpness_ratio: float = 20.0  # ... and sharpness this many times the median
    isolation_k: int = 5
    isolation_z: float = 3.5


def robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    spread = mad if mad > 1e-9 else (values.std() or 1.0)
    return (values - median) / spread


def isolation_scores(vectors: np.ndarray, k: int) -> np.ndarray:
    """Cosine distance to the k-th nearest other vector (0 when there are no others)."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    kk = min(k, n - 1)
    _, sims = knn_graph(vectors, kk)
    return (1.0 - sims[:, kk - 1]).astype(np.float32)


def score_outliers(
    frames: pd.DataFrame,
    groups: pd.DataFrame,
    vectors: np.ndarray,
    params: OutlierParams = OutlierParams(),
) -> pd.DataFrame:
    """One row per frame: frame_id, score (isolation z), is_outlier, reasons (comma list),
    isolation (k-th neighbour distance of its group's representative), and one boolean
    column per reason.

    ``frames``: the frame table; ``groups``: duplicate groups aligned by frame_id;
    ``vectors``: unit embeddings aligned with ``frames`` rows.
    """
    frames = frames.reset_index(drop=True)
    g = groups.set_index("frame_id").loc[frames["frame_id"]].reset_index()
    out = pd.DataFrame({"frame_id": frames["frame_id"]})

    exposed = frames["brightness"].between(params.dark_brightness, params.bright_brightness)
    camera_sharpness = (
        frames[exposed].groupby("camera_id")["sharpness"].median().reindex(frames["camera_id"]).to_numpy()
    )
    camera_sharpness = np.where(np.isnan(camera_sharpness), frames["sharpness"].median(), camera_sharpness)
    sharp_ratio = frames["sharpness"].to_numpy() / np.maximum(camera_sharpness, 1e-12)
    area = (frames["width"] * frames["height"]).astype(float)
    usual_area = area.groupby(frames["camera_id"]).transform("median")
    size = frames["width"].astype(str) + "x" + frames["height"].astype(str)
    size_share = size.groupby([frames["camera_id"], size]).transform("size") / size.groupby(
        frames["camera_id"]
    ).transform("size")
    dominant = size_share.groupby(frames["camera_id"]).transform("max") >= params.usual_size_share
    # the spread of focus among frames whose focus can be judged (exposed, with some detail)
    log_sharpness = np.log(frames["sharpness"].clip(lower=1e-9))
    judged = exposed & (frames["entropy"] >= params.low_information_entropy)
    centre = log_sharpness[judged].groupby(frames["camera_id"]).median().reindex(frames["camera_id"]).to_numpy()
    spread = (
        ((log_sharpness[judged] - centre[judged.to_numpy()]).abs().groupby(frames["camera_id"]).median() * 1.4826)
        .reindex(frames["camera_id"])
        .to_numpy()
    )
    sharpness_z = (log_sharpness.to_numpy() - centre) / np.maximum(np.nan_to_num(spread, nan=1.0), 1e-6)

    out["dark"] = frames["brightness"] < params.dark_brightness
    out["bright"] = frames["brightness"] > params.bright_brightness
    out["low_information"] = frames["entropy"] < params.low_information_entropy
    out["noise"] = (frames["entropy"] > params.noise_entropy) & (sharp_ratio > params.noise_sharpness_ratio)
    # dark or flat frames have no edges to judge blur by; they are flagged for that instead
    soft = (sharp_ratio < params.blurry_ratio) & (sharpness_z < params.blurry_z)
    out["blurry"] = soft & exposed & ~out["low_information"]
    off = area / usual_area
    out["odd_size"] = ((off > params.odd_size_factor) | (off < 1 / params.odd_size_factor)).to_numpy() | (
        dominant & (size_share < params.usual_size_share)
    ).to_numpy()
    out["corrupt"] = False  # unreadable frames never get here; see corrupt_outliers

    reps = np.flatnonzero(g["is_representative"].to_numpy())
    rep_isolation = isolation_scores(np.asarray(vectors, dtype=np.float32)[reps], params.isolation_k)
    rep_z = robust_z(rep_isolation) if len(reps) > 2 else np.zeros(len(reps))
    by_group = pd.DataFrame({"isolation": rep_isolation, "score": rep_z}, index=frames["frame_id"].to_numpy()[reps])
    per_frame = by_group.reindex(g["group_id"].to_numpy())
    out["isolation"] = per_frame["isolation"].to_numpy(dtype=np.float32)
    out["score"] = per_frame["score"].to_numpy(dtype=np.float64)
    out["isolated"] = out["score"] > params.isolation_z

    flags = out[list(REASONS)].to_numpy()
    out["is_outlier"] = flags.any(axis=1)
    out["reasons"] = [",".join(r for r, f in zip(REASONS, row) if f) for row in flags]
    return out[["frame_id", "score", "is_outlier", "reasons", "isolation", *REASONS]]


def corrupt_outliers(frames: pd.DataFrame) -> pd.DataFrame:
    """Rows in ``score_outliers``' shape for frames that could not be read at all."""
    out = pd.DataFrame({"frame_id": frames["frame_id"].to_numpy()})
    out["score"] = np.inf
    out["is_outlier"] = True
    out["reasons"] = "corrupt"
    out["isolation"] = np.float32(np.nan)
    for reason in REASONS:
        out[reason] = reason == "corrupt"
    return out
