"""Logos and icons on blank slides: are their near copies found, and do different ones stay apart?

    .venv/bin/python bench/slides.py [--layout slide|icon] [--limit N] [--details]

Every PNG picture this machine ships outside the wallpaper folders (Adwaita's and hicolor's
icons, desktop-base's theme logos, Plymouth's pictures: ~190 with the packages of
``bench/quality_data.py``'s held-out set) is flattened on white: ``slide`` shrinks it to at
most 300 px and centres it on a white 1024 x 768 page (a logo on a slide, a product shot on a
white sweep), ``icon`` keeps it at its own size. Each gets the quality benches' near copies
(``bench/quality_data.py``'s ``near_copy``: ±10 % brightness, JPEG q60, a 5 % crop, a shift
by 4 and 3 px, a flip). All of them are grouped as one image folder by the pipeline's grouping
(``find_duplicate_groups`` with the geometric verification). Printed: copies found by kind,
and pairs of different pictures that share a group, with the groups. Pictures that are blank on
white (a white logo made for dark themes) are left out of those pairs.

Not a calibration set: a picture family (the folder icons, an animation's frames, one theme's
logo in two framings) legitimately groups; read the groups, not only the count.
"""

from __future__ import annotations

import argparse
import collections
import io
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import near_copy  # noqa: E402
from bench.rig import folder_frames  # noqa: E402

COPIES = (("brightness", 0), ("brightness", 1), ("jpeg", 0), ("crop", 0), ("shift", 0), ("flip", 0))
SLIDE, LOGO_SIDE = (1024, 768), 300


def pictures(layout: str, limit: int | None) -> dict[str, Image.Image]:
    """Every shipped PNG of at least 64 px a side and 4 kB, flattened on white in ``layout``."""
    found = {}
    for path in sorted(Path("/usr/share").rglob("*.png")):
        if any(part in str(path) for part in ("backgrounds", "wallpapers")) or path.stat().st_size < 4000:
            continue
        try:
            picture = Image.open(path).convert("RGBA")
        except OSError:
            continue
        if min(picture.size) < 64:
            continue
        if layout == "slide":
            page = Image.new("RGBA", SLIDE, "white")
            picture.thumbnail((LOGO_SIDE, LOGO_SIDE))
            page.alpha_composite(picture, ((SLIDE[0] - picture.width) // 2, (SLIDE[1] - picture.height) // 2))
        else:
            page = Image.new("RGBA", picture.size, "white")
            page.alpha_composite(picture)
        found[f"{path.stem}@{path.parent.name}"] = page.convert("RGB")
        if limit and len(found) == limit:
            break
    return found


def evaluate(layout: str, limit: int | None, details: bool = False) -> None:
    from curation_assets.core import geometry
    from curation_assets.core.duplicates import DuplicateParams, blank, find_duplicate_groups
    from curation_assets.core.embedder import Embedder

    originals = pictures(layout, limit)
    files: dict[str, bytes] = {}
    for name, page in originals.items():
        buffer = io.BytesIO()
        page.save(buffer, "JPEG", quality=95)
        files[f"{name}|original"] = buffer.getvalue()
        for kind, index in COPIES:
            files[f"{name}|{kind}{index}"] = near_copy(page, kind, index)
    names = sorted(files)
    decoded = [Image.open(io.BytesIO(files[n])).convert("RGB") for n in names]
    frames = folder_frames(decoded, "slides")
    started = time.perf_counter()
    model = Embedder()
    vectors = model.embed([lambda p=p: p for p in decoded])
    points: dict[int, geometry.Keypoints] = {}

    def verify(i: int, j: int) -> int:
        for row in (i, j):
            if row not in points:
                points[row] = geometry.keypoints(files[names[row]])
        return geometry.inliers(points[i], points[j])

    groups = find_duplicate_groups(frames, vectors, DuplicateParams.for_model(model.calibration), verify=verify)
    seconds = time.perf_counter() - started
    group = dict(zip(names, groups["group_id"]))
    is_blank = dict(zip(names, blank(frames)))

    found, missed = collections.Counter(), []
    for name in names:
        source, kind = name.split("|")
        if kind != "original":
            joined = group[name] == group[f"{source}|original"]
            found[kind.rstrip("0123456789"), joined] += 1
            if not joined:
                missed.append(name)
    together = collections.defaultdict(set)
    for name in names:
        source, kind = name.split("|")
        if kind == "original" and not is_blank[name]:
            together[group[name]].add(source)
    shared = [sorted(s) for s in together.values() if len(s) > 1]
    print(describe())
    print(f"{layout}: {len(originals)} pictures, {len(names)} files, grouped in {seconds:.1f} s")
    print("copies found: " + ", ".join(
        f"{kind} {found[kind, True]}/{found[kind, True] + found[kind, False]}"
        for kind in dict.fromkeys(k for k, _ in COPIES)
    ))  # fmt: skip
    print(f"blank on white (left out): {sum(is_blank[f'{s}|original'] for s in originals)}")
    print(f"pairs of different pictures in one group: {sum(len(s) * (len(s) - 1) // 2 for s in shared)}")
    for members in sorted(shared, key=len, reverse=True):
        print("  " + ", ".join(members))
    if details:
        print("copies not with their picture: " + ", ".join(missed))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["slide", "icon"], default="slide")
    parser.add_argument("--limit", type=int, default=None, help="only the first N pictures (a quick look)")
    parser.add_argument("--details", action="store_true", help="also list the copies not grouped with their picture")
    args = parser.parse_args()
    evaluate(args.layout, args.limit, args.details)


if __name__ == "__main__":
    main()
