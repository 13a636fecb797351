"""Geometric verification: do two pictures show the same scene from a slightly different view?

A pooled embedding says two frames look alike; it cannot say they show the *same* place
(two pages of text, two aisles of one store look alike too). Local features can: ORB
keypoints matched with Lowe's ratio test (ambiguous matches, such as the corners of a
regular grid or repeated letters, are dropped), then a homography fitted with RANSAC. Many
matches that agree on one geometry mean the same scene re-shot: a viewpoint, zoom, framing
or exposure change that moves every pixel and defeats perceptual hashes. A repetitive
pattern (a chessboard, tiles, a shelf of identical products) leaves the ratio test nothing,
so the pictures are also compared part by part (``covered``): the same picture shifted or
slightly re-projected, even with parallax (two cameras of a rig), has each part of one found
in the other near where the dominant shift puts it; another pose of the pattern does not,
and keypoints that agree only on the unchanged room around it are overruled.
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
PLENTY = 100  # matches agreeing on one geometry past any doubt: no single warp needed
JUDGED_BY_MATCHES = 20  # agreeing matches from which their homography places one picture on the other


@dataclass(frozen=True)
class Keypoints:
    points: np.ndarray  # (n, 2) float32, in the scaled image
    descriptors: np.ndarray | None  # (n, 32) uint8 ORB descriptors
    # the picture for dense alignment, kept as its 8-bit luma: ``dense``'s float32 copy is 4x the
    # size (0.8 MB a frame at 512 x 384), and a rebuild's verifier keeps thousands of frames' keypoints
    luma: np.ndarray | None = None

    @property
    def grey(self) -> np.ndarray | None:
        """The picture as ``dense`` makes it (the same float32 values, made from ``luma`` on each call)."""
        return None if self.luma is None else _as_grey(self.luma)


def keypoints(image: Image.Image | bytes) -> Keypoints:
    import cv2

    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(image))
        image.draft("L", (SIDE, SIDE))
    grey = image.convert("L")
    whole = _dense_luma(grey)
    grey.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
    found, descriptors = cv2.ORB_create(nfeatures=FEATURES).detectAndCompute(np.asarray(grey), None)
    points = np.float32([k.pt for k in found]).reshape(-1, 2)
    return Keypoints(points, descriptors, whole)


def inliers(a: Keypoints, b: Keypoints) -> int:
    """How many local features of two pictures agree on one geometry: ``ALIGNED`` (every one)
    when the pictures are the same picture, shifted or slightly re-projected (``covered``: the
    detail of each found in the other near where the dominant shift or the keypoints'
    homography puts it, within a parallax's reach: two cameras of a rig at one instant, even
    on a repetitive pattern; or a single nearly rigid warp lines them up, ``alignment``);
    0 when keypoints agree on a geometry for a part of the pictures only, most of the detail
    being found nowhere near (the same room, the board held in another pose); else the
    ratio-tested matches that agree on one homography, -1 when either picture has too few
    keypoints to judge (a smooth gradient, a flat design)."""
    found, homography = _matches(a, b)
    if a.luma is None or b.luma is None:
        return found
    grey_a, grey_b = a.grey, b.grey
    if _page_like(grey_a) or _page_like(grey_b):  # lines of text are found anywhere near: parts confirm nothing
        if found >= PLENTY:
            return found
        if alignment(grey_a, grey_b) >= ALIGNED_DETAIL:
            return ALIGNED
        # but they can deny: too few keypoints to judge (a logo or an icon on a blank page), and the
        # detail of one is mostly found nowhere near in the other: two pictures that share a layout
        return 0 if found < 0 and 0 <= covered(grey_a, grey_b) < PARTLY_COVERED else found
    share = _found_share(grey_a, grey_b, found, homography)
    if share >= COVERED:
        return ALIGNED
    if found >= JUDGED_BY_MATCHES and 0 <= share < PARTLY_COVERED:
        return 0
    if found >= PLENTY:  # many agree: a single warp adds nothing
        return found
    return ALIGNED if alignment(grey_a, grey_b) >= ALIGNED_DETAIL else found


def found_share(a: Keypoints, b: Keypoints, found: int, homography: np.ndarray | None) -> float:
    """``covered`` with the pictures placed by the dominant shift, or by the keypoints'
    homography (``found`` agreeing matches) when that places more and only zooms a little."""
    return _found_share(a.grey, b.grey, found, homography)


def _found_share(grey_a: np.ndarray, grey_b: np.ndarray, found: int, homography: np.ndarray | None) -> float:
    share = covered(grey_a, grey_b)  # placed by the dominant shift: what a homography of keypoints misses
    if found >= JUDGED_BY_MATCHES and share < COVERED and _slight(homography):
        share = max(share, covered(grey_a, grey_b, homography))
    return share


def _page_like(grey: np.ndarray) -> bool:
    """Mostly one background level (a page, a chart): ``duplicates.page_like``'s rule, on the grey picture."""
    from curation_assets.core.duplicates import PAGE_MODE_SHARE
    from curation_assets.core.image_stats import luma_histogram, mode_share

    return mode_share(luma_histogram(np.clip(grey * 255 + 0.5, 0, 255).astype(np.uint8))) >= PAGE_MODE_SHARE


def _slight(homography: np.ndarray | None) -> bool:
    """A homography that only zooms a little (a crop, a step closer) and barely turns, shears
    or tilts: one that places the same picture, not a pattern moved to another pose."""
    if homography is None or abs(homography[2, 2]) < 1e-9:
        return False
    h = homography / homography[2, 2]
    zoom = (h[0, 0] + h[1, 1]) / 2
    bent = np.abs(h[:2, :2] - zoom * np.eye(2)).max()
    tilt = np.abs(h[2, :2]).max() * DENSE_SIDE
    return abs(zoom - 1) <= MAX_ZOOM and bent <= MAX_DEFORMATION and tilt <= MAX_DEFORMATION


def matched(a: Keypoints, b: Keypoints) -> int:
    """How many ratio-tested matches between two keypoint sets agree on one homography; -1
    when either picture has too few keypoints to judge."""
    return _matches(a, b)[0]


def _matches(a: Keypoints, b: Keypoints) -> tuple[int, np.ndarray | None]:
    """``matched``, and the homography they agree on (``b`` onto ``a``, in the scaled images)."""
    import cv2

    if a.descriptors is None or b.descriptors is None or min(len(a.points), len(b.points)) < JUDGED_FROM:
        return -1, None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 8:
        return 0, None
    source = a.points[[m.queryIdx for m in good]]
    target = b.points[[m.trainIdx for m in good]]
    homography, mask = cv2.findHomography(target, source, cv2.RANSAC, REPROJECTION_PX)
    return (int(mask.sum()), homography) if mask is not None else (0, None)


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
    return _as_grey(_dense_luma(image))


def _dense_luma(image: Image.Image) -> np.ndarray:
    """The grey picture at ``DENSE_SIDE``, 8 bits."""
    grey = image.convert("L")
    grey.thumbnail((DENSE_SIDE, DENSE_SIDE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.uint8)


def _as_grey(luma: np.ndarray) -> np.ndarray:
    return luma.astype(np.float32) / 255.0


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


# Coverage: the same picture, shifted or slightly re-projected, with parallax. Two cameras of a
# rig see near things shift more than far ones (a board held at 0.5-1.5 m by 20-100 px at 640,
# the wall behind by a few), so no single warp lines up both; but every detailed part of one
# picture is found in the other, near where the dominant geometry puts it. Another pose of the
# board (turned 10-40 degrees) leaves the board's part found nowhere, although the room matches.
COVER_SIDE = 256  # pictures compared at this long side (sensor noise averaged away)
TILE = 32  # parts of this many pixels each
PART_BAND = (1.0, 2.5)  # the detail parts are compared by (difference of Gaussians, pixels)
NEAR = 2  # pixels: a part is first looked for this close to its place (most are, in a copy or a rig pair)
REACH = 0.2  # how far (share of the long side) a part may sit from where the geometry puts it: parallax
TILE_MATCH = 0.7  # band-pass correlation at which a part counts as found (0.6 let a nearer board pass)
# thresholds from bench/rig.py's calibration parts (bench/rig_data.py; held-out parts never used to choose)
COVERED = 0.85  # share of the detail (weighted by its contrast) found: the same picture (other poses: up to 0.795)
MAX_ZOOM = 0.15  # a homography placing one picture on the other zooms at most this much
MIN_OVERLAP = 0.5  # share of one picture's detail that must lie in the other's view
PARTLY_COVERED = 0.5  # under this, agreeing keypoints describe a part only (rig pairs from 0.561, copies 0.89)
_FLAT_TILE = 2e-3
_POWER = 1.0  # parts with less band-pass contrast than this hold no detail to find


def covered(a: np.ndarray, b: np.ndarray, homography: np.ndarray | None = None) -> float:
    """Share of the pictures' detail found in the other picture (the lesser of both ways):
    each ``TILE`` part's best band-pass correlation within ``REACH`` of where ``homography``
    (``b`` onto ``a``, pixels at ``DENSE_SIDE``; the dominant shift when None) puts it, at
    least ``TILE_MATCH``; parts that fall outside the other picture do not count. -1 when
    there is no detail to judge."""
    import cv2

    small_a, small_b = _cover_scale(a), _cover_scale(b)
    if homography is not None:  # in the pictures at DENSE_SIDE: scaled to the small ones
        to_a, to_b = (np.diag([COVER_SIDE / max(g.shape)] * 2 + [1.0]) for g in (a, b))
        onto_a = to_a @ homography @ np.linalg.inv(to_b)
    else:
        if small_a.shape != small_b.shape:
            if abs(a.shape[0] / a.shape[1] - b.shape[0] / b.shape[1]) > 0.02:
                return -1.0  # pictures of two shapes, and no keypoints to place one on the other
            small_b = cv2.resize(small_b, small_a.shape[::-1], interpolation=cv2.INTER_AREA)
        dx, dy = _shift(small_a, small_b) or (0.0, 0.0)
        onto_a = np.array([[1, 0, -dx], [0, 1, -dy], [0, 0, 1]], dtype=np.float64)
    ways = [_found(small_a, small_b, onto_a), _found(small_b, small_a, np.linalg.inv(onto_a))]
    if min(share for share, _ in ways) < 0 or max(inside for _, inside in ways) < MIN_OVERLAP:
        return -1.0  # no detail, or a warp that leaves the pictures hardly overlapping (a wrong homography)
    return min(share for share, _ in ways)


def _cover_scale(g: np.ndarray) -> np.ndarray:
    import cv2

    scale = COVER_SIDE / max(g.shape)
    size = (max(TILE, round(g.shape[1] * scale)), max(TILE, round(g.shape[0] * scale)))
    return cv2.resize(g, size, interpolation=cv2.INTER_AREA)


def _found(a: np.ndarray, b: np.ndarray, b_to_a: np.ndarray) -> tuple[float, float]:
    """Share of ``a``'s detail (its parts weighted by their contrast) found in ``b`` placed
    onto it by ``b_to_a``, each part within ``REACH`` of its place (-1 when ``a`` has no
    detail inside ``b``'s view), and the share of ``a``'s detail inside that view."""
    import cv2

    size = (a.shape[1], a.shape[0])
    flags = cv2.INTER_LINEAR
    placed = cv2.warpPerspective(b, b_to_a, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpPerspective(np.ones_like(b), b_to_a, size, flags=flags) > 0.99
    fine, coarse = PART_BAND
    band_a, band_b = (cv2.GaussianBlur(g, (0, 0), fine) - cv2.GaussianBlur(g, (0, 0), coarse) for g in (a, placed))
    h, w = band_a.shape
    reach = int(REACH * max(a.shape))
    found = total = everywhere = 0.0
    for y in range(0, h - TILE + 1, TILE):
        for x in range(0, w - TILE + 1, TILE):
            part = band_a[y : y + TILE, x : x + TILE]
            contrast = float(part.std())
            everywhere += contrast * (contrast >= _FLAT_TILE)
            if contrast < _FLAT_TILE or inside[y : y + TILE, x : x + TILE].mean() < 0.5:
                continue  # no detail, or out of the other picture's view
            total += contrast
            # a part found near its place is found within its reach: the wide search is for the rest
            if _best(band_b, part, x, y, NEAR) < TILE_MATCH and _best(band_b, part, x, y, reach) < TILE_MATCH:
                continue
            found += contrast
    return (found / total if total else -1.0), (total / everywhere if everywhere else 0.0)


def _best(band: np.ndarray, part: np.ndarray, x: int, y: int, reach: int) -> float:
    """``part``'s best band-pass correlation in ``band`` within ``reach`` pixels of (x, y)."""
    import cv2

    h, w = band.shape
    x0, x1, y0, y1 = max(0, x - reach), min(w, x + TILE + reach), max(0, y - reach), min(h, y + TILE + reach)
    return float(cv2.matchTemplate(band[y0:y1, x0:x1], part, cv2.TM_CCOEFF_NORMED).max())
