"""Per-image quality metrics and hashes, on RGB uint8 arrays (H, W, 3).

All metrics are in fixed ranges so checks can bound them:
brightness and contrast in [0, 1], sharpness >= 0, entropy in [0, 8] bits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class ImageStats:
    sha256: str
    phash: int  # 64-bit DCT perceptual hash, as a signed int64 bit pattern
    brightness: float
    contrast: float
    sharpness: float
    entropy: float


def grayscale(rgb: np.ndarray) -> np.ndarray:
    """Luma in [0, 1] as float32."""
    return (rgb.astype(np.float32) @ _LUMA) / 255.0


def pixel_sha256(rgb: np.ndarray) -> str:
    """Hash of the decoded pixels (shape included), independent of the file encoding."""
    h = hashlib.sha256(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float32)


_DCT32 = _dct_matrix(32)


def perceptual_hash(rgb: np.ndarray, gray: np.ndarray | None = None) -> int:
    """pHash: 32x32 grey thumbnail -> 2-D DCT -> 8x8 low frequencies (DC dropped) vs median.

    The thumbnail is an area average (box filter) of the luma, which is what the DCT's low
    frequencies need and several times cheaper than a Lanczos resize of the RGB frame.
    """
    luma = grayscale(rgb) if gray is None else gray
    thumb = Image.fromarray(luma * 255.0, mode="F").resize((32, 32), Image.Resampling.BOX)
    pixels = np.asarray(thumb, dtype=np.float32)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return int(np.array(value, dtype=np.uint64).view(np.int64))


def hamming_distance(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between int64 hash bit patterns (broadcasts)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(np.asarray(x).view(np.uint64))  # unsigned: a signed count ignores the sign bit


def laplacian_variance(gray: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: low for blurry images."""
    if gray.shape[0] < 3 or gray.shape[1] < 3:
        return 0.0
    lap = gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4.0 * gray[1:-1, 1:-1]
    return float(lap.var())


def shannon_entropy(gray: np.ndarray) -> float:
    """Entropy in bits of the 256-bin grey histogram (0 = uniform image, 8 = white noise)."""
    hist = np.bincount(np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8).ravel(), minlength=256)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum())


def image_stats(rgb: np.ndarray) -> ImageStats:
    gray = grayscale(rgb)
    return ImageStats(
        sha256=pixel_sha256(rgb),
        phash=perceptual_hash(rgb, gray),
        brightness=float(gray.mean()),
        contrast=float(gray.std()),
        sharpness=laplacian_variance(gray),
        entropy=shannon_entropy(gray),
    )
