"""Outliers: image-statistics flags plus isolation in embedding space.

Every absolute rule asks one question of the frame alone, at a resolution-independent
working scale (core/image_stats.py), and separates a damaged frame from a real picture
that merely looks unusual: a light page of text or a logo is not a blank frame (it has
edges and contrast), a smooth gradient is not a blurred photo (nothing coarse either), a
texture is not noise (neighbouring pixels agree).

- dark: nearly every pixel dark (99th luma percentile low); bright: nearly every pixel
  light and little range left (washed out or white). In an image folder, not when crisp
  strokes remain: a few lines of text on a white page (or white on black) are a page; in
  a video they are what a blown-out or black frame keeps of the camera's burned-in overlay;
- low information: almost no contrast and no edges (a uniform frame); in a video, also a
  frame of one colour but for an overlay (a covered lens, a lost signal's screen, with the
  camera's burned-in text on it) where its video normally shows a scene;
- noise: high entropy with no correlation between neighbouring pixels;
- blurry: no fine detail while coarse structure exists (the whole frame blurred), or far
  less fine detail than the rest of its scene (its video; in an image folder its nearest
  frames in embedding space): camera shake or lost focus among sharp frames; a scene that
  is soft throughout is not flagged;
- odd size: a frame whose area is far from the size nearly all of its source shares;
- isolated: a small duplicate group whose k-th nearest other group is both far in absolute
  terms (the model's calibrated cosine) and a robust-z outlier of the population.

Relative rules judge a frame only against a homogeneous population (its scene, its source)
of a minimum size, and compare with the population's median, so they cannot flag most of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from curation_assets.core.duplicates import timed as timed_rows
from curation_assets.core.image_stats import UNIFORM_CONTRAST, UNIFORM_EDGES
from curation_assets.core.models import UNCALIBRATED, Calibration, with_overrides
from curation_assets.core.neighbors import knn_graph

REASONS = ("corrupt", "dark", "bright", "blurry", "low_information", "noise", "odd_size", "isolated")


@dataclass(frozen=True)
class OutlierParams:
    dark_p99: float = 0.15  # 99 % of pixels darker than this
    bright_p01: float = 0.85  # 99 % of pixels lighter than this ...
    bright_range: float = 0.12  # ... within this range of each other
    stroke_edges: float = 0.005  # an image (not a video frame) this edgy is a page, not blank (specks: < 0.001)
    uniform_contrast: float = UNIFORM_CONTRAST  # luma standard deviation below this ...
    uniform_edges: float = UNIFORM_EDGES  # ... and hardly any edge pixel: a uniform frame
    screen_share: float = 0.9  # a video frame with this share of its pixels within 2 grey levels ...
    usual_screen_share: float = 0.5  # ... where its video's median frame has less than this: a screen, not the scene
    # blurry: detail 4x coarser than the working scale is below this share of detail 8x coarser.
    # A blur of a few working pixels empties the first scale long before the second; the
    # share is 1/16 for a picture smooth at both scales, 0.2-1.7 for sharp photographs,
    # designs and footage at any resolution, and sensor noise (averaged away at both) or
    # JPEG artefacts hardly move it. 0.15: a Gaussian blur of sigma >= 4 working pixels
    blurry_detail_ratio: float = 0.15
    blurry_broad_detail: float = 2e-5  # ... where there is structure 8x coarser to blur (a gradient has none)
    blurry_sharpness: float = 3.5e-5  # tables without broad_detail: no fine detail (raw Laplacian variance) ...
    blurry_coarse_detail: float = 2e-5  # ... though there is coarse structure to blur
    scene_blur_ratio: float = 0.25  # fine detail below this share of its scene's median ...
    scene_neighbors: int = 30  # ... among its nearest frames in embedding space (more than a blurred run) ...
    scene_cosine: float | None = UNCALIBRATED.same_view_cosine  # ... this similar (the model's; None: off) ...
    scene_min_frames: int = 5  # ... judged only when at least this many are (or frames in its video)
    noise_correlation: float = 0.15  # neighbouring pixels this uncorrelated ...
    noise_entropy: float = 6.5  # ... with this many bits of grey levels
    odd_size_factor: float = 4.0  # area this many times off the size ...
    usual_size_share: float = 0.95  # ... that this share of the source's frames have
    source_min_frames: int = 20
    isolation_k: int = 5
    isolation_z: float = 3.5
    isolation_cosine: float | None = UNCALIBRATED.isolation_cosine  # the model's (None: isolation off)
    isolation_max_group: int = 2  # a scene seen more often than this is not an outlier
    isolation_min_groups: int = 20

    @classmethod
    def for_model(cls, calibration: Calibration, **overrides) -> OutlierParams:
        model_values = {"isolation_cosine": calibration.isolation_cosine, "scene_cosine": calibration.same_view_cosine}
        return with_overrides(cls, model_values, overrides)


def robust_z(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    mad = np.median(np.abs(values - median)) * 1.4826
    spread = mad if mad > 1e-9 else (values.std() or 1.0)
    return (values - median) / spread


def isolation_scores(vectors: np.ndarray, k: int, frames: np.ndarray | None = None) -> np.ndarray:
    """Cosine distance to the k-th nearest other vector (0 when there are no others). With
    ``frames`` (how many frames each vector stands for: its duplicate group's size), to the
    nearest vector by which k frames are reached: a scene is as familiar as the frames that
    show it, not the groups they were collapsed into."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    kk = min(k, n - 1)
    nbr, sims = knn_graph(vectors, kk)
    if frames is None:
        return (1.0 - sims[:, kk - 1]).astype(np.float32)
    valid = nbr >= 0
    seen = np.cumsum(np.where(valid, np.asarray(frames)[np.where(valid, nbr, 0)], 0), axis=1)
    reached = np.where((seen >= k).any(axis=1), np.argmax(seen >= k, axis=1), kk - 1)
    return (1.0 - sims[np.arange(n), reached]).astype(np.float32)


def _metric(frames: pd.DataFrame, column: str) -> np.ndarray:
    """A metric column, NaN where a table made before it existed lacks it (rules then stay off)."""
    return frames[column].to_numpy(dtype=np.float64) if column in frames else np.full(len(frames), np.nan)


def _video_median(values: np.ndarray, frames: pd.DataFrame, timed: np.ndarray, min_frames: int) -> np.ndarray:
    """Per row, the median of ``values`` over its video: NaN for image-folder rows and for videos
    of fewer than ``min_frames`` frames, which a relative rule does not judge."""
    by_video = pd.Series(values).groupby(frames["video_id"].to_numpy())
    populated = timed & (by_video.transform("size").to_numpy() >= min_frames)
    return np.where(populated, by_video.transform("median").to_numpy(), np.nan)


def _detail(frames: pd.DataFrame) -> np.ndarray:
    """Fine detail past sensor noise (``fine_detail``; raw sharpness for older tables)."""
    fine = _metric(frames, "fine_detail")
    return np.maximum(np.where(np.isnan(fine), _metric(frames, "sharpness"), fine), 1e-12)


def video_blur(frames: pd.DataFrame, params: OutlierParams, timed: np.ndarray) -> np.ndarray:
    """Video frames with far less fine detail than their video's median frame: one camera, one
    place, so a focus failure or camera shake stands out however long it lasts, while a video
    soft throughout has nothing sharper. Detail is measured past sensor noise
    (``fine_detail``): in a noisy night video the encoder smooths the noise of some frames
    away, which left them with a tenth of their neighbours' raw Laplacian variance though
    nothing was blurred."""
    detail = _detail(frames)
    return detail < params.scene_blur_ratio * _video_median(detail, frames, timed, params.scene_min_frames)


def scene_blur(frames: pd.DataFrame, vectors: np.ndarray, params: OutlierParams, timed: np.ndarray) -> np.ndarray:
    """Image-folder frames with far less fine detail than their scene: the frame's nearest
    views in embedding space (at least ``scene_min_frames`` of them; a frame with fewer is not
    judged). Video frames are judged against their video (``video_blur``)."""
    n = len(frames)
    if n <= params.scene_min_frames or params.scene_cosine is None or timed.all():
        return np.zeros(n, dtype=bool)
    detail = _detail(frames)
    k = min(params.scene_neighbors, n - 1)
    nbr, sims = knn_graph(np.asarray(vectors, dtype=np.float32), k)
    same_scene = (nbr >= 0) & (sims >= params.scene_cosine)
    neighbour_detail = np.where(same_scene, detail[np.where(nbr >= 0, nbr, 0)], np.nan)
    judged = ~timed & (same_scene.sum(axis=1) >= params.scene_min_frames)
    with np.errstate(all="ignore"):
        typical = np.nanmedian(np.where(judged[:, None], neighbour_detail, 1.0), axis=1)
    return judged & (detail < params.scene_blur_ratio * typical)


def screens(frames: pd.DataFrame, params: OutlierParams, timed: np.ndarray) -> np.ndarray:
    """Video frames of (nearly) one colour in a video that normally shows a scene: what a
    covered lens or a lost signal leaves, burned-in text and all, which the percentile and
    edge rules take for a picture. Judged against the video, so a camera that does look at a
    blank wall all day is not flagged."""
    share = _metric(frames, "mode_share")
    usual = _video_median(share, frames, timed, params.scene_min_frames)
    return (share > params.screen_share) & (usual < params.usual_screen_share)


def odd_sizes(frames: pd.DataFrame, params: OutlierParams) -> np.ndarray:
    """Frames far from the size nearly all of their source shares (a video never differs)."""
    size = frames["width"].astype(str) + "x" + frames["height"].astype(str)
    source = frames["video_id"]
    count = size.groupby([source, size]).transform("size")
    total = size.groupby(source).transform("size")
    area = (frames["width"] * frames["height"]).astype(float)
    usual = area.where(count == count.groupby(source).transform("max")).groupby(source).transform("max")
    dominant = (count.groupby(source).transform("max") / total >= params.usual_size_share) & (
        total >= params.source_min_frames
    )
    off = area / usual
    return (dominant & ((off >= params.odd_size_factor) | (off <= 1 / params.odd_size_factor))).to_numpy()


def isolation(
    vectors: np.ndarray, groups: pd.DataFrame, params: OutlierParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: its group's k-th neighbour distance, robust z, and whether it is isolated."""
    n = len(groups)
    reps = np.flatnonzero(groups["is_representative"].to_numpy())
    sizes = groups["group_size"].to_numpy()[reps]
    rep_isolation = isolation_scores(np.asarray(vectors, dtype=np.float32)[reps], params.isolation_k, sizes)
    rep_z = robust_z(rep_isolation) if len(reps) > 2 else np.zeros(len(reps))
    by_group = pd.DataFrame({"isolation": rep_isolation, "score": rep_z}, index=groups["frame_id"].to_numpy()[reps])
    per_frame = by_group.reindex(groups["group_id"].to_numpy())
    distance = per_frame["isolation"].to_numpy(dtype=np.float32)
    z = per_frame["score"].to_numpy(dtype=np.float64)
    if params.isolation_cosine is None or len(reps) < params.isolation_min_groups:
        return distance, z, np.zeros(n, dtype=bool)
    small = groups["group_size"].to_numpy() <= params.isolation_max_group
    far = 1.0 - distance < params.isolation_cosine
    return distance, z, small & far & (z > params.isolation_z)


def blurred(frames: pd.DataFrame, params: OutlierParams) -> np.ndarray:
    """The whole frame blurred: detail 4x coarser than the working scale far below detail 8x
    coarser (a ratio of two scales above the noise: neither resolution, sensor noise nor
    exposure moves it), where there is structure to blur. Tables made before ``broad_detail``
    keep the absolute rule on raw sharpness."""
    coarse, broad = _metric(frames, "coarse_detail"), _metric(frames, "broad_detail")
    with np.errstate(all="ignore"):
        by_ratio = (broad > params.blurry_broad_detail) & (coarse < params.blurry_detail_ratio * broad)
    by_sharpness = (_metric(frames, "sharpness") < params.blurry_sharpness) & (coarse > params.blurry_coarse_detail)
    return np.where(np.isnan(broad), by_sharpness, by_ratio)


def image_flags(frames: pd.DataFrame, params: OutlierParams = OutlierParams()) -> pd.DataFrame:
    """The rules that read the frame table alone (no embedding): each frame on its own, or
    against its video or source. One boolean column per reason but ``isolated``; ``blurry``
    here is the whole frame blurred or blurred against its video (``scene_blur`` adds the
    folder's nearest views). Cheap: duplicate grouping asks it which frames must not
    represent a group."""
    frames = frames.reset_index(drop=True)
    out = pd.DataFrame(index=frames.index)
    p01, p99 = _metric(frames, "luma_p01"), _metric(frames, "luma_p99")
    contrast, edges = _metric(frames, "contrast"), _metric(frames, "edge_density")
    timed = timed_rows(frames)

    page = ~timed & (edges >= params.stroke_edges)
    out["dark"] = (p99 < params.dark_p99) & ~page
    out["bright"] = (p01 > params.bright_p01) & (p99 - p01 < params.bright_range) & ~page
    uniform = (contrast < params.uniform_contrast) & (edges < params.uniform_edges)
    out["low_information"] = uniform | screens(frames, params, timed)
    out["noise"] = (_metric(frames, "pixel_correlation") < params.noise_correlation) & (
        _metric(frames, "entropy") > params.noise_entropy
    )
    whole_frame_blurred = blurred(frames, params)
    unjudged = out["dark"] | out["bright"] | out["low_information"]  # nothing left to judge focus by
    out["blurry"] = (whole_frame_blurred | video_blur(frames, params, timed)) & ~unjudged
    has_size = "width" in frames and "height" in frames
    out["odd_size"] = odd_sizes(frames, params) if has_size else False
    out["corrupt"] = False  # unreadable frames never get here; see corrupt_outliers
    return out


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
    flags = image_flags(frames, params)
    for reason in flags:
        out[reason] = flags[reason].to_numpy()
    unjudged = out["dark"] | out["bright"] | out["low_information"]  # nothing left to judge focus by
    out["blurry"] |= scene_blur(frames, vectors, params, timed_rows(frames)) & ~unjudged
    out["isolation"], out["score"], out["isolated"] = isolation(vectors, g, params)

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
