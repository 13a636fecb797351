"""Geometric verification: do two pictures show the same scene from a slightly different view?

A pooled embedding says two frames look alike; it cannot say they show the *same* place
(two pages of text, two aisles of one store look alike too). Local features can: ORB
keypoints matched with Lowe's ratio test (ambiguous matches, such as the corners of a
regular grid or repeated letters, are dropped), then a homography fitted with RANSAC. Many
matches that agree on one geometry mean the same scene re-shot: a viewpoint, zoom, framing
or exposure change that moves every pixel and defeats perceptual hashes. A repetitive
pattern (a chessboard, tiles, a shelf of identical products) leaves the ratio test nothing,
so the pictures are also aligned densely (``alignment``): the same picture shifted or
slightly re-projected lines up under a nearly rigid warp; another pose of the pattern does not.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

SIDE = 512  # keypoints are found on the luma scaled to this long side
FEATURES = 1000
RATIO = 0.75  # Lowe's ratio test
REPROJECTION_PX = 5.0
JUDGED_FROM = 150  # keypoints each picture needs before their disagreement means anything
PLENTY = 100  # matches agreeing on one geometry past any doubt: no dense alignment needed


@dataclass(frozen=True)
class Keypoints:
    points: np.ndarray  # (n, 2) float32, in the scaled image
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB descriptors
    grey: np.ndarray | None = None  # the picture for dense alignment (``dense``)


def keypoints(image: Image.Image | bytes) -> Keypoints:
    import cv2

    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(image))
        image.draft("L", (SIDE, SIDE))
    grey = image.convert("L")
    whole = dense(grey)
    grey.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
    found, descriptors = cv2.ORB_create(nfeatures=FEATURES).detectAndCompute(np.asarray(grey), None)
    points = np.float32([k.pt for k in found]).reshape(-1, 2)
    return Keypoints(points, descriptors, whole)


def inliers(a: Keypoints, b: Keypoints) -> int:
    """How many local features of two pictures agree on one geometry: ``ALIGNED`` (every one)
    when the pictures align densely (the same picture, shifted or slightly re-projected, such
    as two cameras of a rig at one instant, even on a repetitive pattern), else the
    ratio-tested matches that agree on one homography; -1 when either picture has too few
    keypoints to judge (a smooth gradient, a flat design) and they do not align."""
    found = matched(a, b)
    if found >= PLENTY or a.grey is None or b.grey is None:  # many agree: dense alignment adds nothing
        return found
    return ALIGNED if alignment(a.grey, b.grey) >= ALIGNED_DETAIL else found


def matched(a: Keypoints, b: Keypoints) -> int:
    """How many ratio-tested matches between two keypoint sets agree on one homography; -1
    when either picture has too few keypoints to judge."""
    import cv2

    if a.descriptors is None or b.descriptors is None or min(len(a.points), len(b.points)) < JUDGED_FROM:
        return -1
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 8:
        return 0
    source = a.points[[m.queryIdx for m in good]]
    target = b.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, REPROJECTION_PX)
    return int(mask.sum()) if mask is not None else 0


# Dense alignment: repetitive patterns (a chessboard, tiles, a shelf of identical products, a
# fence, a facade) defeat the ratio test, since every corner has a twin, so keypoints cannot
# say "the same picture, shifted". The pictures themselves can: the translation from phase
# correlation, refined by ECC under an affine model that may barely deform (a camera beside
# the first at the same instant, not another pose), then the band-pass detail of one
# compared with the other's over their overlap.
DENSE_SIDE = 512  # grey pictures compared at this long side (text must not blur into lines)
MAX_DEFORMATION = 0.06  # the affine part within this of the identity (scale, rotation, shear)
MIN_OVERLAP = 0.6  # share of the first picture the aligned second one must cover
ALIGNED_DETAIL = 0.6  # band-pass correlation over the overlap: unrelated pictures and other poses sit near 0
ALIGNED = FEATURES  # what an aligned pair counts as: every keypoint agrees
_CRITERIA = (3, 50, 1e-4)  # ECC: at most 50 iterations, or until the warp moves less than 1e-4


def dense(image: Image.Image) -> np.ndarray:
    """The grey picture at ``DENSE_SIDE``, as float32 in [0, 1]."""
    grey = image.convert("L")
    grey.thumbnail((DENSE_SIDE, DENSE_SIDE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float32) / 255.0


def _band(g: np.ndarray) -> np.ndarray:
    """Detail between 1 and 2 pixels (difference of Gaussians): what a shift must line up."""
    import cv2

    return cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 2.0)


def alignment(a: np.ndarray, b: np.ndarray) -> float:
    """Band-pass correlation of ``a`` with ``b`` aligned onto it by a nearly rigid affine
    warp; -1 when the pictures' shapes differ, no such warp is found or they overlap too little."""
    import cv2

    if a.shape != b.shape or min(a.shape) < 32:
        if min(a.shape + b.shape) < 32 or abs(a.shape[0] / a.shape[1] - b.shape[0] / b.shape[1]) > 0.02:
            return -1.0
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    shift = _shift(a, b)
    if shift is None:
        return -1.0
    warp = np.array([[1, 0, shift[0]], [0, 1, shift[1]]], dtype=np.float32)
    try:  # then the slight re-projection, at full size
        _, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_AFFINE, _CRITERIA, None, 5)
    except cv2.error:  # no convergence: nothing lines up
        return -1.0
    if np.abs(warp[:, :2] - np.eye(2)).max() > MAX_DEFORMATION:
        return -1.0
    size = (a.shape[1], a.shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(_band(b), warp, size, flags=flags)
    inside = cv2.warpAffine(np.ones_like(b), warp, size, flags=flags) > 0.99
    if inside.mean() < MIN_OVERLAP:
        return -1.0
    x, y = _band(a)[inside], aligned[inside]
    x, y = x - x.mean(), y - y.mean()
    norm = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / norm if norm > 1e-12 else -1.0


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float] | None:
    """The translation of ``b`` onto ``a``, searched at half size. A periodic pattern gives
    phase correlation a peak per period, so ECC starts from it, from the shift found 4x
    coarser still (where a shift is smaller than the pattern's period) and from no shift at
    all; the start that lines up best wins. None when none converges."""
    import cv2

    half = (max(16, a.shape[1] // 2), max(16, a.shape[0] // 2))
    small_a, small_b = (cv2.resize(g, half, interpolation=cv2.INTER_AREA) for g in (a, b))
    starts = {cv2.phaseCorrelate(small_a, small_b, cv2.createHanningWindow(half, cv2.CV_32F))[0], (0.0, 0.0)}
    quarter = (max(8, half[0] // 4), max(8, half[1] // 4))
    coarse = _translation(*(cv2.resize(g, quarter, interpolation=cv2.INTER_AREA) for g in (small_a, small_b)))
    if coarse is not None:
        starts.add((coarse[1][0] * half[0] / quarter[0], coarse[1][1] * half[1] / quarter[1]))
    found = [t for t in (_translation(small_a, small_b, start) for start in starts) if t is not None]
    if not found:
        return None
    _, (dx, dy) = max(found)
    return dx * a.shape[1] / half[0], dy * a.shape[0] / half[1]


def _translation(a: np.ndarray, b: np.ndarray, start=(0.0, 0.0)) -> tuple[float, tuple[float, float]] | None:
    """ECC's translation of ``b`` onto ``a`` from ``start``: (correlation, (dx, dy)), or None."""
    import cv2

    warp = np.array([[1, 0, start[0]], [0, 1, start[1]]], dtype=np.float32)
    try:
        score, warp = cv2.findTransformECC(a, b, warp, cv2.MOTION_TRANSLATION, _CRITERIA, None, 3)
    except cv2.error:
        return None
    return float(score), (float(warp[0, 2]), float(warp[1, 2]))
