"""Per-image quality metrics and hashes, on RGB uint8 arrays (H, W, 3).

All metrics are in fixed ranges so checks can bound them: brightness, contrast, luma
percentiles, edge density in [0, 1]; sharpness and detail >= 0; entropy in [0, 8] bits;
pixel correlation in [-1, 1]. Structure (edges, detail, correlation) is measured on the
luma scaled to at most 512 pixels a side, so it does not depend on the resolution.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ImageStats:
    sha256: str
    phash: int  # 64-bit DCT perceptual hash, as a signed int64 bit pattern
    phash_mirror: int  # the same hash of the left-right mirrored image (finds flipped copies)
    brightness: float
    contrast: float
    sharpness: float  # variance of the Laplacian at the working scale: near 0 when the whole frame is blurred ...
    entropy: float
    luma_p01: float  # 1st and 99th percentile of luma, in [0, 1]: how much of the frame is dark or light
    luma_p99: float
    mode_share: float  # share of pixels within 2 grey levels of the commonest: near 1 for a screen of one colour
    edge_density: float  # share of pixels on an edge, at the working scale: 0 for a blank frame
    coarse_detail: float  # ... while the same 4x coarser says there was a picture to blur
    broad_detail: float  # the same 8x coarser: blur takes detail at 4x away long before it reaches 8x
    fine_detail: float  # sharpness after a 1-pixel Gaussian: sensor noise (or an encoder smoothing it) hardly counts
    pixel_correlation: float  # neighbouring pixels' correlation: near 0 for noise, high for any picture


# the per-frame measurements (everything but the hashes); NaN for a frame that could not be read
METRICS = ("brightness", "contrast", "sharpness", "entropy", "luma_p01", "luma_p99", "mode_share", "edge_density",
           "coarse_detail", "broad_detail", "fine_detail", "pixel_correlation")  # fmt: skip


def luma8(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma as uint8 (OpenCV's fixed-point conversion: 2.5x PIL's, within one level of it)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def pixel_sha256(rgb: np.ndarray) -> str:
    """Hash of the decoded pixels (shape included), independent of the file encoding."""
    h = hashlib.sha256(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    h.update(memoryview(np.ascontiguousarray(rgb)).cast("B"))  # the pixels' own buffer, not a copy
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


_DCT32 = _dct_matrix(32)


def perceptual_hashes(rgb: np.ndarray, luma: np.ndarray | None = None) -> tuple[int, int]:
    """pHash of the image and of its mirror image: 32x32 grey thumbnail -> 2-D DCT -> 8x8
    low frequencies (DC dropped) vs their median.

    The thumbnail is an area average (box filter) of the luma, which is what the DCT's low
    frequencies need and several times cheaper than a Lanczos resize of the RGB frame; the
    mirror's hash comes from the mirrored thumbnail (one more 32x32 DCT).
    """
    luma = luma8(rgb) if luma is None else luma
    pixels = np.asarray(Image.fromarray(luma).resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    return _dct_bits(pixels), _dct_bits(pixels[:, ::-1])


def _dct_bits(pixels: np.ndarray) -> int:
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return int(np.array(value, dtype=np.uint64).view(np.int64))


# A picture with no structure (a covered lens, a blown-out sensor, a blank file): hardly any
# contrast (luma standard deviation) and hardly an edge pixel. Its perceptual hash says nothing
# about it: the DCT's low frequencies are all near 0, so their bits are rounding noise.
UNIFORM_CONTRAST = 0.012
UNIFORM_EDGES = 0.001
# A hash's bits are set against the median of its 63 AC coefficients, so a picture with any
# structure sets about half of them; a hash far from half set comes from coefficients that tie
# (a flat picture) and carries no information (a uniform picture: 0 to 9 bits set)
HASH_INFORMATIVE_BITS = (16, 48)


def informative_hash(phash: np.ndarray | int) -> np.ndarray:
    """Whether a pHash carries information: between 16 and 48 of its 64 bits set."""
    ones = np.bitwise_count(np.asarray(phash, dtype=np.int64).view(np.uint64))
    low, high = HASH_INFORMATIVE_BITS
    return (ones >= low) & (ones <= high)


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between int64 hash bit patterns (broadcasts)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(np.asarray(x).view(np.uint64))  # unsigned: a signed count ignores the sign bit


def luma_histogram(luma: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(luma).histogram(), dtype=np.int64)  # PIL's, in C: 5x numpy's bincount


def shannon_entropy(luma: np.ndarray, hist: np.ndarray | None = None) -> float:
    """Entropy in bits of the 256-bin grey histogram (0 = uniform image, 8 = white noise)."""
    hist = luma_histogram(luma) if hist is None else hist
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def mode_share(hist: np.ndarray, levels: int = 2) -> float:
    """Share of pixels within ``levels`` grey levels of the commonest level."""
    peak = int(np.argmax(hist))
    return float(hist[max(0, peak - levels) : peak + levels + 1].sum() / max(int(hist.sum()), 1))


WORKING_SIDE = 512  # structure is judged at one scale, so a 4K photo and a 320x240 frame compare


def _working(luma: np.ndarray) -> np.ndarray:
    image = Image.fromarray(luma)
    if max(image.size) > WORKING_SIDE:
        scale = WORKING_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BOX)
    return np.asarray(image, dtype=np.float32) / 255.0


def laplacian_variance(g: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of luma in [0, 1] (float): low for blurry images."""
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)[1:-1, 1:-1]  # ksize 1: the 4-neighbour kernel; interior only
    _, std = cv2.meanStdDev(lap)
    return float(std[0, 0]) ** 2


def structure(luma: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(sharpness, edge density, coarse detail, broad detail, fine detail, pixel correlation)
    of a luma image, judged at the working scale so that the figures mean the same for a 4K
    photo and a 320x240 frame."""
    g = _working(luma)
    if g.shape[0] < 4 or g.shape[1] < 4:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 1.0
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    edges = float(np.count_nonzero(dx[:-1] + dy[:, :-1] > 0.1)) / dx[:-1].size
    quarter = Image.fromarray(g).resize((max(3, g.shape[1] // 4), max(3, g.shape[0] // 4)), Image.BOX)
    centred = g - np.float32(g.mean(dtype=np.float64))
    a, b = np.ascontiguousarray(centred[:, :-1]).ravel(), np.ascontiguousarray(centred[:, 1:]).ravel()
    norm = float(np.dot(a, a)) * float(np.dot(b, b))
    correlation = float(np.dot(a, b)) / np.sqrt(norm) if norm > 1e-12 else 1.0
    eighth = quarter.resize((max(3, g.shape[1] // 8), max(3, g.shape[0] // 8)), Image.BOX)
    fine = laplacian_variance(cv2.GaussianBlur(g, (0, 0), 1.0))
    coarse, broad = laplacian_variance(np.asarray(quarter)), laplacian_variance(np.asarray(eighth))
    return laplacian_variance(g), edges, coarse, broad, fine, correlation


def image_stats(rgb: np.ndarray) -> ImageStats:
    luma = luma8(rgb)
    hist = luma_histogram(luma)
    levels = np.arange(256) / 255.0
    n = hist.sum()
    brightness = float(hist @ levels / n)  # mean and spread from the histogram: exact for 8-bit luma
    contrast = float(np.sqrt(max(hist @ levels**2 / n - brightness**2, 0.0)))
    phash, phash_mirror = perceptual_hashes(rgb, luma)
    cumulative = np.cumsum(hist) / n
    sharpness, edges, coarse, broad, fine, correlation = structure(luma)
    return ImageStats(
        sha256=pixel_sha256(rgb),
        phash=phash,
        phash_mirror=phash_mirror,
        brightness=brightness,
        contrast=contrast,
        sharpness=sharpness,
        entropy=shannon_entropy(luma, hist),
        luma_p01=float(np.searchsorted(cumulative, 0.01) / 255.0),
        luma_p99=float(np.searchsorted(cumulative, 0.99) / 255.0),
        mode_share=mode_share(hist),
        edge_density=edges,
        coarse_detail=coarse,
        broad_detail=broad,
        fine_detail=fine,
        pixel_correlation=correlation,
    )
