"""Object-level curation on a detection set with a rare class: selection and box outliers.

    .venv/bin/python bench/objects.py [--frames 800] [--rare 0.03] [--budgets 40,80] [--seeds 3]

The set: frames cut from real photographs (Debian wallpapers: meadows, dunes, water, wood...)
with real photographed objects pasted in (scikit-image's astronaut, coffee cup, motorcycle,
rocket; wallpaper flowers and insects), 1-4 per frame, each a random part of its photo,
scaled, flipped and re-lit, its box the label. One class is rare: a cat (chelsea) appears
in ``--rare`` of the frames. Backgrounds repeat (a few places, re-framed), as camera
footage does, so the frames differ mostly by where they were taken.

1. Selection at equal frame budgets: the share of the selected frames' boxes that are the
   rare class, and how many of the rare boxes a round finds, for random (mean over seeds),
   frame-level diversity (k-center greedy on whole-frame vectors), object-level diversity
   without classes (class-agnostic boxes: ``select_by_objects``), and object-level with
   class balance from a noisy detector's classes (10 % of them wrong).
2. Box outliers among the crops, with planted annotation errors: labels swapped to another
   class (3 % of boxes), boxes drawn on background (1 %), boxes with no area (0.5 %).
   Recall per kind, and the share of clean boxes flagged (false alarms).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import PLASMA, WALLPAPERS, _open, _skimage  # noqa: E402
from curation_assets.core.embedder import Embedder  # noqa: E402
from curation_assets.core.objects import (  # noqa: E402
    boxes_table,
    class_weights,
    encoded_crops,
    object_outliers,
    select_by_objects,
)
from curation_assets.core.selection import k_center_greedy  # noqa: E402

SIZE = (640, 480)
RARE = "cat"
BACKGROUNDS = [WALLPAPERS / "mate/nature" / f"{n}.jpg" for n in ("Garden", "Dune", "Wood", "Aqua", "Storm",
               "GreenMeadow", "RainDrops", "Blinds")] + \
              [PLASMA / n / "contents/images/2560x1600.jpg" for n in
               ("Autumn", "BytheWater", "ColdRipple", "Path")]  # fmt: skip


def object_photos() -> dict[str, list[Image.Image]]:
    def wallpaper(name: str) -> Image.Image:
        image = _open(WALLPAPERS / "mate/nature" / f"{name}.jpg")
        if image is None:
            raise SystemExit("wallpapers missing: apt-get install -y mate-backgrounds plasma-workspace-wallpapers")
        image = image.convert("RGB")
        image.thumbnail((800, 800))
        return image

    motorcycle = Image.fromarray(__import__("skimage.data").data.stereo_motorcycle()[0])
    return {
        "person": [_skimage("astronaut")],
        "cup": [_skimage("coffee")],
        "vehicle": [motorcycle, _skimage("rocket")],
        "flower": [wallpaper("FreshFlower"), wallpaper("YellowFlower")],
        "insect": [wallpaper("LadyBird"), wallpaper("TwoWings")],
        RARE: [_skimage("chelsea")],
    }


def instance(photo: Image.Image, rng: np.random.Generator, side: int) -> Image.Image:
    """A random part (60-100 %) of the photo, flipped or not, re-lit, ``side`` pixels on its long side."""
    w, h = photo.size
    fw, fh = rng.uniform(0.6, 1.0, 2)
    left, top = rng.uniform(0, 1 - fw) * w, rng.uniform(0, 1 - fh) * h
    piece = photo.convert("RGB").crop((int(left), int(top), int(left + fw * w), int(top + fh * h)))
    if rng.random() < 0.5:
        piece = piece.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    piece = ImageEnhance.Brightness(piece).enhance(rng.uniform(0.75, 1.25))
    scale = side / max(piece.size)
    return piece.resize((max(8, round(piece.width * scale)), max(8, round(piece.height * scale))))


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection over the smaller box's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0) / min(a[2] * a[3], b[2] * b[3])


def make_set(frames: int, rare: float, seed: int):
    """Frames (PIL) and their boxes (frame_id, category, x, y, w, h)."""
    rng = np.random.default_rng(seed)
    photos = object_photos()
    common = [c for c in photos if c != RARE]
    places = []
    for path in BACKGROUNDS:
        image = _open(path)
        if image is not None:
            image = image.convert("RGB")
            image.thumbnail((1280, 1280))
            places.append(image)
    weights = rng.dirichlet(np.ones(len(places)) * 0.7)  # some places are filmed far more than others
    images, rows = [], []
    for f in range(frames):
        place = places[rng.choice(len(places), p=weights)]
        x0 = rng.integers(0, place.width - SIZE[0])
        y0 = rng.integers(0, place.height - SIZE[1])
        frame = place.crop((x0, y0, x0 + SIZE[0], y0 + SIZE[1]))
        classes = list(rng.choice(common, rng.integers(1, 5)))
        if rng.random() < rare:
            classes[rng.integers(len(classes))] = RARE
        boxes_here: list[tuple] = []
        for category in classes:
            photo = photos[category][rng.integers(len(photos[category]))]
            piece = instance(photo, rng, int(rng.integers(70, 200)))
            for _ in range(20):  # objects may touch, not hide each other (an occluded box is another test)
                x, y = rng.integers(0, SIZE[0] - piece.width), rng.integers(0, SIZE[1] - piece.height)
                if all(_overlap((x, y, piece.width, piece.height), placed) < 0.2 for placed in boxes_here):
                    break
            else:
                continue
            boxes_here.append((x, y, piece.width, piece.height))
            frame.paste(piece, (int(x), int(y)))
            rows.append({"frame_id": f"bench/{f:06d}", "category": str(category),
                         "x": float(x), "y": float(y), "w": float(piece.width), "h": float(piece.height)})  # fmt: skip
        images.append(frame)
    frame_table = pd.DataFrame({"frame_id": [f"bench/{f:06d}" for f in range(frames)], "video_id": "bench",
                                "width": SIZE[0], "height": SIZE[1]})  # fmt: skip
    return images, frame_table, pd.DataFrame(rows)


def plant_errors(boxes: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.Series, list]:
    """Swapped labels (3 %), boxes on background (1 %, a copy of a real box moved to where no
    object is, keeping its label) and boxes with no area (0.5 %). Returns the boxes and the
    planted kind per box ("" for clean)."""
    boxes = boxes.copy()
    kind = pd.Series("", index=boxes.index, dtype=object)
    classes = sorted(boxes["category"].unique())
    n = len(boxes)
    order = rng.permutation(n)
    swap, background, broken = (
        order[: int(0.03 * n)],
        order[int(0.03 * n) : int(0.04 * n)],
        order[int(0.04 * n) : int(0.045 * n)],
    )
    for i in swap:
        boxes.loc[i, "category"] = str(rng.choice([c for c in classes if c != boxes.loc[i, "category"]]))
        kind[i] = "swapped label"
    extra = []
    for i in background:
        row = boxes.loc[i].copy()
        row["w"], row["h"] = 60.0, 60.0
        row["x"], row["y"] = 0.0, 0.0  # top-left corner: objects are pasted anywhere, so check it is empty
        extra.append(row)
    for i in broken:
        boxes.loc[i, "w"] = 0.0
        kind[i] = "no area"
    return boxes, kind, extra


def background_boxes(boxes: pd.DataFrame, candidates: list) -> tuple[pd.DataFrame, list]:
    """Keep the planted background boxes whose corner region no real box overlaps."""
    by_frame = boxes.groupby("frame_id")
    kept = []
    for row in candidates:
        others = by_frame.get_group(row["frame_id"])
        overlaps = ((others["x"] < 60) & (others["y"] < 60) & (others["w"] > 0)).any()
        if not overlaps:
            kept.append(row)
    return pd.DataFrame(kept), ["box on background"] * len(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=800)
    parser.add_argument("--rare", type=float, default=0.03)
    parser.add_argument("--budgets", default="40,80")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--verbose", action="store_true", help="why clean boxes were flagged")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    embedder = Embedder(model=args.model)
    print(f"machine: {describe()}")
    print(f"set: {args.frames} frames {SIZE[0]}x{SIZE[1]}, 1-4 boxes each, rare class {RARE!r} in {args.rare:.0%} "
          f"of frames; {args.seeds} set seeds; model {args.model}")  # fmt: skip
    selection_rows, outlier_rows = [], []
    for seed in range(args.seeds):
        started = time.perf_counter()
        images, frames, truth = make_set(args.frames, args.rare, seed)
        frame_vectors = embedder.embed(lambda image=image: image for image in images)
        objects = boxes_table(truth, frames, "labels")
        by_id = dict(zip(frames["frame_id"], images))
        object_vectors = embedder.embed_encoded(encoded_crops(objects, by_id.__getitem__))
        embed_s = time.perf_counter() - started
        frame_of = pd.factorize(objects["frame_id"])[0]
        frame_index = frames.reset_index().set_index("frame_id").loc[objects["frame_id"].unique(), "index"].to_numpy()
        object_frames = frame_index[frame_of]
        rng = np.random.default_rng(100 + seed)
        noisy = objects["category"].copy()
        flip = rng.random(len(noisy)) < 0.1
        noisy[flip] = rng.choice(sorted(noisy.unique()), flip.sum())
        rare_total = int((objects["category"] == RARE).sum())
        for budget in budgets:
            methods = {
                "random": [rng.permutation(len(frames))[:budget] for _ in range(5)],
                "frame diversity": [k_center_greedy(frame_vectors, budget, seed)[0]],
                "object diversity": [select_by_objects(object_frames, object_vectors, len(frames), budget, seed)[0]],
                "object diversity + class balance": [
                    select_by_objects(
                        object_frames, object_vectors, len(frames), budget, seed, weights=class_weights(noisy)
                    )[0]  # fmt: skip
                ],
            }
            for method, runs in methods.items():
                shares, found, classes = [], [], []
                for picks in runs:
                    chosen = objects[np.isin(object_frames, picks)]
                    shares.append(float((chosen["category"] == RARE).mean()) if len(chosen) else 0.0)
                    found.append(int((chosen["category"] == RARE).sum()))
                    counts = chosen["category"].value_counts(normalize=True)
                    classes.append(float(-(counts * np.log(counts)).sum() / np.log(6)))
                selection_rows.append({"seed": seed, "budget": budget, "method": method, "rare share": np.mean(shares),
                                       "rare found": np.mean(found), "rare total": rare_total,
                                       "class balance": np.mean(classes)})  # fmt: skip
        boxes, kind, candidates = plant_errors(truth, rng)
        extra, extra_kind = background_boxes(boxes, candidates)
        boxes = pd.concat([boxes, extra], ignore_index=True)
        kind = pd.concat([kind, pd.Series(extra_kind, dtype=object)], ignore_index=True)
        planted = boxes_table(boxes, frames, "labels")
        vectors = np.zeros((len(planted), object_vectors.shape[1]), dtype=np.float32)
        usable = (planted["problem"] == "").to_numpy()
        vectors[usable] = embedder.embed_encoded(encoded_crops(planted, by_id.__getitem__))
        flags = object_outliers(planted, vectors)
        for k in ("swapped label", "box on background", "no area"):
            rows = (kind == k).to_numpy()
            outlier_rows.append({"seed": seed, "kind": k, "planted": int(rows.sum()),
                                 "found": int(flags["is_outlier"].to_numpy()[rows].sum())})  # fmt: skip
        clean = (kind == "").to_numpy()
        if args.verbose:
            print(flags[clean & flags["is_outlier"].to_numpy()]["reason"].value_counts().to_string())
        outlier_rows.append({"seed": seed, "kind": "clean (false alarms)", "planted": int(clean.sum()),
                             "found": int(flags["is_outlier"].to_numpy()[clean].sum())})  # fmt: skip
        print(f"  seed {seed}: {len(objects)} boxes ({rare_total} {RARE}), embedded in {embed_s:.0f} s")

    table = pd.DataFrame(selection_rows).groupby(["budget", "method"], sort=False).mean(numeric_only=True)
    print("\nselection at equal frame budgets (mean over set seeds; random: 5 draws each)")
    print("| budget | method | rare-class share of selected boxes | rare boxes found | of | class balance (entropy) |")
    print("|---|---|---|---|---|---|")
    for (budget, method), r in table.iterrows():
        print(
            f"| {budget} | {method} | {r['rare share']:.3f} | {r['rare found']:.1f} | {r['rare total']:.0f} | "
            f"{r['class balance']:.3f} |"
        )
    o = pd.DataFrame(outlier_rows).groupby("kind", sort=False)[["planted", "found"]].sum()
    print("\nbox outliers (summed over seeds)")
    print("| planted | boxes | flagged | rate |")
    print("|---|---|---|---|")
    for k, r in o.iterrows():
        print(f"| {k} | {r['planted']} | {r['found']} | {r['found'] / max(r['planted'], 1):.3f} |")


if __name__ == "__main__":
    main()
