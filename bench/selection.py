"""Does diversity selection beat random at small budgets, and re-balance the cameras?

    python bench/selection.py [--pool 2000] [--seeds 5]

An offline labeled image set with two sources at 80/20: shapes (circle, square, triangle)
seen by a bright camera (80 %, a mostly static scene: each view recurs as near-copies, as
consecutive video frames do) and a dark, noisy one (20 %). Each strategy labels a budget
of the pool (the same random 1 % to start with, as a team's first round), the same simple
model (softmax regression on pixel features) is trained on it, and accuracy is measured
on a test set balanced between the sources. Prints accuracy and the minority source's
share of the labeled set per strategy and budget, averaged over seeds, and the machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation_assets.core.selection import k_center_greedy, uncertainty  # noqa: E402

CLASSES = ("circle", "square", "triangle")
SIZE = 32


def render(rng: np.random.Generator, label: int, dark: bool) -> np.ndarray:
    bg = rng.integers(10, 60, 3) if dark else rng.integers(170, 250, 3)
    image = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in bg))
    draw = ImageDraw.Draw(image)
    r = rng.uniform(5, 9) if dark else rng.uniform(7, 13)
    cx, cy = rng.uniform(r + 1, SIZE - r - 1, 2)
    fill = tuple(int(v) for v in (rng.integers(120, 255, 3) if dark else rng.integers(0, 120, 3)))
    if label == 0:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif label == 1:
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if dark:
        pixels = np.clip(pixels + rng.normal(0, 0.08, pixels.shape), 0, 1)
    return pixels


def dataset(n: int, minority: float, seed: int, copies: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` images, a ``minority`` share from the dark camera. The bright camera films a
    mostly static scene: each of its views comes ``copies`` times with slight sensor noise,
    as consecutive video frames do."""
    rng = np.random.default_rng(seed)
    n_dark = int(round(n * minority))
    n_views = -(-(n - n_dark) // copies)
    view_labels = rng.integers(0, len(CLASSES), n_views)
    views = [render(rng, int(y), False) for y in view_labels]
    bright = [np.clip(v + rng.normal(0, 0.01, v.shape), 0, 1) for v in views for _ in range(copies)][: n - n_dark]
    labels = np.concatenate([np.repeat(view_labels, copies)[: n - n_dark], rng.integers(0, len(CLASSES), n_dark)])
    dark = [render(rng, int(y), True) for y in labels[n - n_dark :]]
    order = rng.permutation(n)
    is_dark = np.arange(n) >= n - n_dark
    return np.stack(bright + dark)[order], labels[order], is_dark[order]


def features(images: np.ndarray) -> np.ndarray:
    """Unit vectors of the centred silhouette |grey - background| at 16x16 (the 'embedding' here).

    The magnitude makes both cameras' shapes (dark on bright, bright on dark) comparable; a
    threshold and 2x2 averaging tame the dark camera's sensor noise; its shapes stay smaller.
    """
    grey = images.mean(axis=3)
    mask = np.abs(grey - np.median(grey.reshape(len(images), -1), axis=1)[:, None, None])
    mask = np.where(mask > 0.25, mask, 0.0)
    ys, xs = np.mgrid[:SIZE, :SIZE]
    for i, m in enumerate(mask):  # centre the silhouette: position says nothing about the class
        total = m.sum() or 1.0
        dy, dx = SIZE // 2 - int((m * ys).sum() / total), SIZE // 2 - int((m * xs).sum() / total)
        mask[i] = np.roll(m, (dy, dx), axis=(0, 1))
    small = mask.reshape(len(images), SIZE // 2, 2, SIZE // 2, 2).mean(axis=(2, 4))
    x = small.reshape(len(images), -1)
    x = x - x.mean(axis=1, keepdims=True)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def train(x: np.ndarray, y: np.ndarray, epochs: int = 300, lr: float = 2.0) -> np.ndarray:
    w = np.zeros((x.shape[1] + 1, len(CLASSES)))
    xb = np.hstack([x, np.ones((len(x), 1))])
    onehot = np.eye(len(CLASSES))[y]
    for _ in range(epochs):
        logits = xb @ w
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        w -= lr * (xb.T @ (p - onehot) / len(x) + 1e-3 * w)
    return w


def predict_proba(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    logits = np.hstack([x, np.ones((len(x), 1))]) @ w
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def choose(strategy: str, x: np.ndarray, y: np.ndarray, budget: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    start = rng.choice(len(x), size=max(len(x) // 100, 3), replace=False)  # the first round, shared
    rest = np.setdiff1d(np.arange(len(x)), start)
    extra = budget - len(start)
    if strategy == "random":
        return np.concatenate([start, rng.choice(rest, size=extra, replace=False)])
    weights = None
    if strategy == "hybrid":
        import pandas as pd

        probs = predict_proba(train(x[start], y[start]), x[rest])
        weights = uncertainty(pd.DataFrame({"frame_id": rest, "probs": list(probs)}), "entropy").loc[rest].to_numpy()
    picks, _ = k_center_greedy(x[rest], extra, seed, already=x[start], weights=weights)
    return np.concatenate([start, rest[picks]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budgets", default="0.05,0.10,0.20")
    parser.add_argument("--copies", type=int, default=8, help="near-copies per view of the busy camera")
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.platform()}")
    print(
        f"pool {args.pool} images (20 % dark camera; bright camera views repeated {args.copies}x), "
        f"test {args.test} images (50 % dark), {args.seeds} seeds"
    )
    test_images, test_labels, test_dark = dataset(args.test, 0.5, seed=999)
    x_test = features(test_images)
    rows = []
    for budget_fraction in (float(b) for b in args.budgets.split(",")):
        for strategy in ("random", "diversity", "hybrid"):
            acc, acc_minority, share = [], [], []
            for seed in range(args.seeds):
                images, labels, dark = dataset(args.pool, 0.2, seed, copies=args.copies)
                x = features(images)
                chosen = choose(strategy, x, labels, int(budget_fraction * args.pool), seed)
                w = train(x[chosen], labels[chosen])
                pred = predict_proba(w, x_test).argmax(axis=1)
                acc.append((pred == test_labels).mean())
                acc_minority.append((pred[test_dark] == test_labels[test_dark]).mean())
                share.append(dark[chosen].mean())
            rows.append((budget_fraction, strategy, np.mean(acc), np.std(acc), np.mean(acc_minority), np.mean(share)))
    print(f"\n{'budget':>7} {'strategy':>10} {'accuracy':>14} {'acc. dark cam':>14} {'dark share':>11}")
    for budget_fraction, strategy, a, sd, am, sh in rows:
        print(f"{budget_fraction:>7.0%} {strategy:>10} {a:>8.3f} ±{sd:.3f} {am:>14.3f} {sh:>11.2f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
