"""Multi-label cleaning by component: does each rule find planted label errors, and does a
model trained on the cleaned labels do better?

    .venv/bin/python bench/label_cleaning.py [--identities 80] [--shots 4] [--flip 0.04]

The set: ``--identities`` real photographs (windows of Debian wallpapers and scikit-image's
photographs), each shot ``--shots`` times (a few pixels' shift, exposure, JPEG quality, a
small crop: near-identical shots, as a re-identification set has), with eight visual
attributes per identity (bright, dark, red, green, blue, saturated, high contrast, busy: each
true for about half of them, measured on the identity's picture). Every (shot, attribute) is
flipped with probability ``--flip``: a planted annotator disagreement. It is written as an
attribute table (``attributes.csv``) and run through the headless command, whose duplicate
groups are the components.

Prints, per rule with its default threshold: precision and recall at finding the images with
a planted error (among components of 3 or more images, and overall), labels and images
removed; then a linear probe (ridge regression per attribute on the frozen embeddings),
trained on the noisy labels, on each rule's cleaned labels and on the true ones, scored by
macro F1 on held-out identities' true attributes.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import PHOTOS, SKIMAGE_PHOTOS, _open, _skimage  # noqa: E402
from curation_assets.core.label_cleaning import RULES, CleaningRule, clean_labels  # noqa: E402
from curation_assets.defs.curation import read_groups  # noqa: E402

SIZE = (320, 240)
ATTRIBUTES = ("bright", "dark", "red", "green", "blue", "saturated", "high_contrast", "busy")


def identities(n: int) -> list[Image.Image]:
    """Distinct real pictures: three far-apart windows of each wallpaper, then skimage's photos."""
    found = []
    for path in PHOTOS:
        big = _open(path)
        if big is None:
            continue
        big = big.convert("RGB")
        w, h = big.size
        for fx, fy in ((0.05, 0.05), (0.55, 0.5), (0.1, 0.6)):
            box = (int(w * fx), int(h * fy), int(w * fx) + w // 3, int(h * fy) + h // 3)
            found.append(big.crop(box).resize(SIZE, Image.Resampling.LANCZOS))
    found += [_skimage(name).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS) for name in SKIMAGE_PHOTOS]
    if len(found) < n:
        raise SystemExit(f"only {len(found)} pictures available (apt-get install -y mate-backgrounds "
                         "plasma-workspace-wallpapers); ask for fewer --identities")  # fmt: skip
    return found[:n]


def measures(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32) / 255.0
    luma = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    saturation = a.max(axis=2) - a.min(axis=2)
    edges = np.abs(np.diff(luma, axis=1)).mean() + np.abs(np.diff(luma, axis=0)).mean()
    mean = a.reshape(-1, 3).mean(axis=0)
    dominance = mean - mean.mean()
    return np.array([luma.mean(), -luma.mean(), *dominance, saturation.mean(), luma.std(), edges])


def shot(image: Image.Image, rng: np.random.Generator) -> bytes:
    """A near-identical shot: shift, exposure, a small crop, another JPEG quality."""
    a = np.asarray(image, dtype=np.float32)
    dx, dy = rng.integers(0, 6, 2)
    a = np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: a.shape[0], : a.shape[1]]
    a = np.clip(a * rng.uniform(0.92, 1.08), 0, 255).astype(np.uint8)
    out = Image.fromarray(a)
    c = int(rng.integers(0, 8))
    out = out.crop((c, c, SIZE[0] - c, SIZE[1] - c)).resize(SIZE, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=int(rng.integers(75, 96)))
    return buf.getvalue()


def build(folder: Path, n: int, shots: int, flip: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    pictures = identities(n)
    m = np.stack([measures(p) for p in pictures])
    truth = m > np.median(m, axis=0)  # identity x attribute, each true for about half
    images = folder / "peds" / "img"
    images.mkdir(parents=True)
    rows, files = [], {}
    for i, picture in enumerate(pictures):
        for s in range(shots):
            name = f"id{i:03d}_s{s}.jpg"
            (images / name).write_bytes(shot(picture, rng))
            noisy = truth[i] ^ (rng.random(len(ATTRIBUTES)) < flip)
            rows.append([name, *(int(v) for v in noisy)])
            files[name] = {"identity": i, "true": truth[i], "given": noisy}
    with open(folder / "peds" / "attributes.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", *ATTRIBUTES], *rows])
    return files


def ridge_f1(x_train, y_train, x_test, y_test, lam: float = 1.0) -> float:
    """Macro F1 of one ridge regressor per attribute (targets +-1, threshold 0)."""
    x_train = np.hstack([x_train, np.ones((len(x_train), 1))])
    x_test = np.hstack([x_test, np.ones((len(x_test), 1))])
    w = np.linalg.solve(x_train.T @ x_train + lam * np.eye(x_train.shape[1]), x_train.T @ (2.0 * y_train - 1))
    pred = (x_test @ w) > 0
    f1 = []
    for j in range(y_test.shape[1]):
        tp = np.sum(pred[:, j] & y_test[:, j])
        f1.append(2 * tp / max(1, pred[:, j].sum() + y_test[:, j].sum()))
    return float(np.mean(f1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=80)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--flip", type=float, default=0.04)
    args = parser.parse_args()
    import pandas as pd

    from curation_assets.core import layout
    from curation_assets.defs.settings import resources_from_env

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = build(work / "landing", args.identities, args.shots, args.flip)
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        subprocess.run([sys.executable, "-m", "curation_assets", "run", "--landing", str(work / "landing"),
                        "--root", str(work / "root")], cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
        store = resources_from_env({**env, "CURATION_STORAGE_URI": str(work / "root")})["object_store"].store()
        frames = store.read_tables(layout.table_prefix("raw_frames"))
        labels = store.read_tables(layout.table_prefix("source_labels"))
        groups = read_groups(store)
        vectors = store.read_tables(layout.table_prefix("frame_embeddings"))
    name_of = dict(zip(frames["frame_id"], frames["source_name"].str.rsplit("/", n=1).str[-1]))
    frame_of = {v: k for k, v in name_of.items()}
    wrong = {frame_of[n] for n, f in files.items() if (f["true"] != f["given"]).any()}
    size = groups.set_index("frame_id")["group_size"]
    big = {f for f in frame_of.values() if size.get(f, 1) >= 3}
    identity_of_group = groups.assign(identity=groups["frame_id"].map(lambda f: files[name_of[f]]["identity"]))
    pure = identity_of_group.groupby("group_id")["identity"].nunique().eq(1).mean()
    print(f"machine: {describe()}")
    print(f"set: {args.identities} identities x {args.shots} shots, {len(ATTRIBUTES)} attributes, flip rate "
          f"{args.flip}: {len(wrong)} of {len(files)} images carry a planted error; components found: "
          f"{groups['group_id'].nunique()} (pure: {pure:.3f}), {len(big)} images in components of 3+")  # fmt: skip

    flipped = {(frame_of[n], a) for n, f in files.items() for a, t, g in zip(ATTRIBUTES, f["true"], f["given"])
               if t != g}  # fmt: skip
    print("\n| rule (default threshold) | images: precision, components of 3+ | recall, components of 3+ | recall, all "
          "| labels: precision / recall, components of 3+ | labels removed / added | images removed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    cleaned_labels = {}
    for rule in RULES:
        cleaned = clean_labels(labels, groups, CleaningRule(rule))
        cleaned_labels[rule] = cleaned
        flagged = set(cleaned.removals["frame_id"])
        in_big = flagged & big
        precision = len(in_big & wrong) / max(1, len(in_big))
        recall_big = len(in_big & wrong) / max(1, len(wrong & big))
        recall = len(flagged & wrong) / max(1, len(wrong))
        changed = cleaned.removals[cleaned.removals["change"].isin(["removed", "added"])]
        pairs = {(f, c) for f, c in zip(changed["frame_id"], changed["category"]) if f in big}
        planted = {p for p in flipped if p[0] in big}
        by_label = (f"{len(pairs & planted) / len(pairs):.3f} / {len(pairs & planted) / max(1, len(planted)):.3f}"
                    if pairs else "-")  # fmt: skip
        counts = changed["change"].value_counts()
        print(f"| {rule} | {precision:.3f} | {recall_big:.3f} | {recall:.3f} | {by_label} | "
              f"{counts.get('removed', 0)} / {counts.get('added', 0)} | {len(cleaned.dropped_images)} |")  # fmt: skip

    vec = vectors.set_index("frame_id")["vector"]
    ids = np.array([files[name_of[f]]["identity"] for f in frame_of.values()])
    order = list(frame_of.values())
    x = np.stack([vec[f] for f in order]).astype(np.float64)
    true = np.stack([files[name_of[f]]["true"] for f in order])
    train = ids % 2 == 0  # identities split in half: the probe is scored on identities it never saw

    def label_matrix(table: pd.DataFrame) -> np.ndarray:
        held = set(zip(table["frame_id"], table["category"]))
        return np.array([[(f, a) in held for a in ATTRIBUTES] for f in order])

    print("\n| probe trained on | images | macro F1 on held-out identities |")
    print("|---|---|---|")
    for label, table, dropped in [("noisy labels", labels, set())] + [
        (f"cleaned: {r}", c.labels, set(c.dropped_images)) for r, c in cleaned_labels.items()
    ] + [("true labels (ceiling)", None, set())]:  # fmt: skip
        keep = train & ~np.isin(order, list(dropped))
        y = true if table is None else label_matrix(table)
        print(f"| {label} | {keep.sum()} | {ridge_f1(x[keep], y[keep], x[~train], true[~train]):.3f} |")


if __name__ == "__main__":
    main()
