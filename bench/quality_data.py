"""A labelled image set for the duplicate and outlier quality benchmark (deterministic).

    bench/peers/.venv/bin/python bench/quality_data.py OUT   # needs numpy, pillow, scikit-image

Real photographs that scikit-image ships (no download), each written as an original plus
one copy per near-copy category: exact (same bytes), shift (4 and 3 px), brightness
(+-10 %), jpeg (quality 60), crop (5 % border, resized back) — the categories the goal is
measured on — and two harder ones reported apart: flip (mirror) and view (the other camera
of a real stereo pair, or a 8 degree rotation with a 12 % crop). Bad images come from
tiles of other photographs, so they are nobody's near copy: truncated JPEGs, dark, bright
(over-exposed), blurry (Gaussian, radius 4), uniform noise, and uniform colour
(low information). ``OUT/images/`` holds the files, ``OUT/truth.json`` what each one is.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

NEAR_COPIES = ("exact", "shift", "brightness", "jpeg", "crop")
HARD_COPIES = ("flip", "view")
BAD = ("truncated", "dark", "bright", "blurry", "noise", "uniform")
BASES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "moon",
    "rocket",
    "cell",
    "page",
    "text",
    "colorwheel",
    "stereo_motorcycle",
)  # fmt: skip  (cat is chelsea again, so it is left out)
BAD_SOURCES = ("retina", "immunohistochemistry", "hubble_deep_field")


def _rgb(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array)
    image = image.convert("RGB")
    image.thumbnail((512, 512))
    return image


def _load(name: str) -> tuple[Image.Image, Image.Image | None]:
    import skimage.data

    data = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":  # (left, right, disparity): a real second view
        return _rgb(data[0]), _rgb(data[1])
    return _rgb(data), None


def _jpeg(image: Image.Image, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _shift(image: Image.Image, dx: int = 4, dy: int = 3) -> Image.Image:
    a = np.asarray(image)
    a = np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: a.shape[0], : a.shape[1]]
    return Image.fromarray(a)


def _scale(image: Image.Image, factor: float) -> Image.Image:
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * factor, 0, 255).astype(np.uint8))


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = int(w * fraction / 2), int(h * fraction / 2)
    return image.crop((dx, dy, w - dx, h - dy)).resize((w, h), Image.BILINEAR)


def _view(image: Image.Image) -> Image.Image:
    return _crop(image.rotate(8, resample=Image.BILINEAR), 0.12)


def near_copy(image: Image.Image, category: str, index: int, second_view: Image.Image | None) -> bytes:
    if category == "exact":
        return _jpeg(image)
    if category == "shift":
        return _jpeg(_shift(image))
    if category == "brightness":
        return _jpeg(_scale(image, 1.1 if index % 2 else 0.9))
    if category == "jpeg":
        return _jpeg(image, quality=60)
    if category == "crop":
        return _jpeg(_crop(image, 0.05))
    if category == "flip":
        return _jpeg(image.transpose(Image.FLIP_LEFT_RIGHT))
    if category == "view":
        return _jpeg(second_view if second_view is not None else _view(image))
    raise ValueError(category)


def _tiles(count: int) -> list[Image.Image]:
    import skimage.data

    tiles = []
    for name in BAD_SOURCES:
        data = np.asarray(Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
        h, w = data.shape[:2]
        for y in range(0, h - 255, 256):
            for x in range(0, w - 255, 256):
                tile = data[y : y + 256, x : x + 256]
                if tile.std() > 20:  # a tile with something in it
                    tiles.append(Image.fromarray(tile))
    rng = np.random.default_rng(0)
    return [tiles[i] for i in rng.choice(len(tiles), count, replace=False)]


def bad_image(category: str, tile: Image.Image, index: int, rng: np.random.Generator) -> bytes:
    if category == "truncated":
        data = _jpeg(tile)
        return data[: len(data) // 2]
    if category == "dark":
        return _jpeg(_scale(tile, 0.06))
    if category == "bright":  # washed out: every pixel pushed most of the way to white
        return _jpeg(Image.fromarray((255 - (255 - np.asarray(tile, dtype=np.float32)) * 0.1).astype(np.uint8)))
    if category == "blurry":
        return _jpeg(tile.filter(ImageFilter.GaussianBlur(4)))
    if category == "noise":
        return _jpeg(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)))
    if category == "uniform":
        return _jpeg(Image.new("RGB", (256, 256), tuple(int(v) for v in rng.integers(0, 256, 3))))
    raise ValueError(category)


def generate(out: Path, per_bad: int = 5) -> dict[str, dict]:
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    truth: dict[str, dict] = {}

    def write(name: str, data: bytes, **what) -> None:
        (images / name).write_bytes(data)
        truth[name] = what

    for b, base in enumerate(BASES):
        image, second_view = _load(base)
        write(f"{base}.jpg", _jpeg(image), base=base, category="original")
        for category in NEAR_COPIES + HARD_COPIES:
            write(f"{base}__{category}.jpg", near_copy(image, category, b, second_view), base=base, category=category)
    rng = np.random.default_rng(1)
    tiles = iter(_tiles(per_bad * 4))
    for category in BAD:
        for i in range(per_bad):
            tile = next(tiles) if category in ("truncated", "dark", "bright", "blurry") else None
            write(f"bad_{category}_{i}.jpg", bad_image(category, tile, i, rng), base=f"bad_{category}_{i}",
                  category=category)  # fmt: skip
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.quality")
    made = generate(target)
    print(f"{len(made)} images under {target / 'images'}")
