"""The seeds' loop on real pixels: does selection pay off when one camera dominates the pool?

    PYTHONPATH=. .venv/bin/python bench/seed_experiment.py [--pool 2000] [--test 400] [--seeds 4]
        [--clip-length 40] [--no-dedup] [--pretrained CHECKPOINT | --adapt-steps N] [--png PATH]

(needs ``apt-get install -y mate-backgrounds plasma-workspace-wallpapers``; ``--adapt-steps``
needs ``make ssl``). Rounds choose among the representatives of the pool's duplicate groups
(``core.duplicates``), as ``selected_batch`` does; ``--no-dedup`` makes every frame a candidate.

The footage: two fixed cameras, each with a few preset views of real places (camera A:
Debian's MATE nature photographs, daylight; camera B: Plasma's photographs, filmed at dusk
with a blue cast, more sensor noise, a wider lens and a lower JPEG quality). Real
photographed objects walk through (scikit-image's astronaut, coffee cup, motorcycle, rocket
and cat, wallpaper flowers and insects: bench/objects.py's six classes), their boxes known
because we paste them. Clips are what cameras record: the objects stand still for a third of
the clip, move slowly, stand still again (static periods, slow motion), and camera A's clips
are replayed (the same scene again, fresh sensor noise). Camera A gives 80 % of the training
pool, camera B 20 %; the test frames are camera B's only, from clips the pool never saw.

The loop (per seed): a random 5 % of the pool is labeled; each round trains the model on the
labeled pool, then a strategy picks the next frames through ``core.selection.choose_round``
(what the ``selected_batch`` asset calls), until 10, 15, 20, 25, 50 and 100 % are labeled.

The model: per-class presence (multi-label logistic regression on the frames' embeddings),
trained from the boxes' classes; the metric is its mean average precision over classes on
camera B's test frames. Why not a detector: none trains in minutes on two shared CPU cores,
and 5 strategies x 4 seeds x 7 budgets = 140 trainings must fit in a few minutes; a presence
classifier retrains in well under a second and is scored, like mAP, by ranking.

Strategies: random, diversity (k-center greedy seeded with the labeled pool), typicality,
hybrid (diversity x the uncertainty of the previous round's model: each class's probability
read as a detection's confidence, the frame's most uncertain class counts), and object
diversity over the pool's boxes with classes ignored (``object_class_strength`` 0: an unlabeled
frame's classes are unknown). Object diversity is given the true boxes' geometry, as a perfect
class-agnostic box proposer would: an advantage a real detector's proposals would not fully give.

Frames and crops are embedded once per model and cached (``--cache``); the footage is the same
for every seed (the seeds vary the first 5 %, random picks and k-center's start).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time

# the per-round models are small matrix products: one BLAS thread each is 10x faster than two
# when the cores are shared (1.7 against 15 s for a fit on 2 000 frames, measured here)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.objects import instance, object_photos  # noqa: E402
from bench.quality_data import PLASMA, WALLPAPERS, _open  # noqa: E402
from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups  # noqa: E402
from curation_assets.core.image_stats import image_stats  # noqa: E402
from curation_assets.core.objects import boxes_table, encoded_crops  # noqa: E402
from curation_assets.core.selection import RoundSettings, candidate_mask, choose_round  # noqa: E402

FOOTAGE_VERSION = 1  # bump when the footage changes: cached embeddings of another version are not used
SIZE = (320, 240)
STRATEGIES = ("random", "diversity", "typicality", "hybrid", "object_diversity")
POINTS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.50, 1.00)
VIEWS = {
    "A": [WALLPAPERS / "mate/nature" / f"{n}.jpg" for n in ("Garden", "Dune", "Wood", "GreenMeadow")],
    "B": [PLASMA / n / "contents/images/2560x1600.jpg" for n in ("Autumn", "BytheWater", "Path")],
}


@dataclass(frozen=True)
class Camera:
    name: str
    brightness: float  # scene light
    tint: tuple[float, float, float]  # colour cast per channel
    noise: float  # sensor noise, grey levels
    jpeg_quality: int
    object_side: tuple[int, int]  # long side of a pasted object, pixels (a wider lens: smaller)


CAMERAS = {
    "A": Camera("A", 1.0, (1.0, 1.0, 1.0), 2.0, 90, (70, 140)),
    "B": Camera("B", 0.55, (0.85, 0.95, 1.2), 7.0, 60, (50, 110)),
}


def views(camera: str) -> list[Image.Image]:
    """The camera's preset views: a fixed crop of each place, the same in every clip."""
    out = []
    rng = np.random.default_rng(len(camera))
    for path in VIEWS[camera]:
        image = _open(path)
        if image is None:
            raise SystemExit(f"{path} missing: apt-get install -y mate-backgrounds plasma-workspace-wallpapers")
        image = image.convert("RGB")
        image.thumbnail((900, 900))
        x0, y0 = rng.integers(0, image.width - SIZE[0]), rng.integers(0, image.height - SIZE[1])
        out.append(image.crop((int(x0), int(y0), int(x0) + SIZE[0], int(y0) + SIZE[1])))
    return out


def clip_plan(rng: np.random.Generator, camera: Camera, n_views: int, photos: dict, length: int) -> dict:
    """One clip: a view, 1-3 objects each with its picture, where it stands and where it goes."""
    classes = sorted(photos)
    p = np.array([CLASS_WEIGHTS[c] for c in classes])
    chosen = rng.choice(classes, size=int(rng.integers(1, 4)), replace=False, p=p / p.sum())
    objects = []
    for category in chosen:
        photo = photos[category][rng.integers(len(photos[category]))]
        piece = instance(photo, rng, int(rng.integers(*camera.object_side)))
        start = rng.uniform(0, [SIZE[0] - piece.width, SIZE[1] - piece.height])
        end = np.clip(start + rng.normal(0, 40, 2), 0, [SIZE[0] - piece.width, SIZE[1] - piece.height])
        enter = int(rng.integers(0, length // 3)) if rng.random() < 0.4 else 0  # some walk in later
        objects.append({"category": str(category), "piece": piece, "start": start, "end": end, "enter": enter})
    return {"view": int(rng.integers(n_views)), "objects": objects, "length": length}


# how often each class walks through a clip: some are common, the cat rare
CLASS_WEIGHTS = {"person": 0.22, "cup": 0.2, "vehicle": 0.2, "flower": 0.16, "insect": 0.15, "cat": 0.07}


def render_clip(plan: dict, background: Image.Image, camera: Camera, rng: np.random.Generator):
    """Frames (JPEG bytes, PIL) and boxes of one clip: still, slow move, still."""
    n = plan["length"]
    for t in range(n):
        progress = float(np.clip((t - n / 3) / (n / 3), 0, 1))  # static thirds around a slow move
        frame = background.copy()
        boxes = []
        for obj in plan["objects"]:
            if t < obj["enter"]:
                continue
            x, y = (1 - progress) * obj["start"] + progress * obj["end"]
            frame.paste(obj["piece"], (int(x), int(y)))
            boxes.append((obj["category"], float(int(x)), float(int(y)), float(obj["piece"].width),
                          float(obj["piece"].height)))  # fmt: skip
        pixels = np.asarray(frame, dtype=np.float32) * camera.brightness * np.asarray(camera.tint)
        pixels += rng.normal(0, camera.noise, pixels.shape)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=camera.jpeg_quality)
        yield buf.getvalue(), boxes


def make_footage(pool: int, test: int, minority: float, clip_length: int = 40, seed: int = 0):
    """The frame table (frame_id, camera_id, split, clip) with JPEG bytes, and the boxes."""
    rng = np.random.default_rng(seed)
    photos = object_photos()
    backgrounds = {c: views(c) for c in CAMERAS}
    frames, boxes = [], []
    n_b = int(round(pool * minority))
    wanted = [("A", "pool", pool - n_b, clip_length, 0.5), ("B", "pool", n_b, clip_length, 0.0),
              ("B", "test", test, 8, 0.0)]  # fmt: skip
    clip_id = 0
    for camera_id, split, count, length, replay in wanted:
        camera = CAMERAS[camera_id]
        made, recorded = 0, []
        while made < count:
            if recorded and rng.random() < replay:  # the same scene filmed again
                plan = recorded[rng.integers(len(recorded))]
            else:
                plan = clip_plan(rng, camera, len(backgrounds[camera_id]), photos, length)
                recorded.append(plan)
            for data, frame_boxes in render_clip(plan, backgrounds[camera_id][plan["view"]], camera, rng):
                if made >= count:
                    break
                frame_id = f"cam-{camera_id}-{split}/{len(frames):06d}"
                frames.append({"frame_id": frame_id, "video_id": f"cam-{camera_id}-{split}", "camera_id": camera_id,
                               "split": split, "clip": clip_id, "jpeg": data})  # fmt: skip
                boxes += [{"frame_id": frame_id, "category": c, "x": x, "y": y, "w": w, "h": h}
                          for c, x, y, w, h in frame_boxes]  # fmt: skip
                made += 1
            clip_id += 1
    table = pd.DataFrame(frames)
    table["width"], table["height"] = SIZE
    return table, pd.DataFrame(boxes)


def footage_key(args) -> list:
    # the default clip length keeps the key it had before the option existed (caches stay valid)
    extra = [args.clip_length] if args.clip_length != 40 else []
    return [FOOTAGE_VERSION, args.pool, args.test, args.minority, *extra]


def footage(args) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frames (with JPEG bytes and the pixel statistics raw_frames computes) and boxes, cached."""
    key = json.dumps(footage_key(args))
    cache = Path(args.cache) / f"footage-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (cache / "frames.parquet").is_file():
        return pd.read_parquet(cache / "frames.parquet"), pd.read_parquet(cache / "boxes.parquet")
    frames, boxes = make_footage(args.pool, args.test, args.minority, args.clip_length)
    stats = [image_stats(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) for data in frames["jpeg"]]
    for column in ("sha256", "phash", "sharpness", "brightness"):
        frames[column] = [getattr(st, column) for st in stats]
    frames["frame_index"] = frames.groupby("video_id").cumcount()
    frames["timestamp_s"] = frames["frame_index"] / 10.0  # 10 frames/s
    cache.mkdir(parents=True, exist_ok=True)
    frames.to_parquet(cache / "frames.parquet")
    boxes.to_parquet(cache / "boxes.parquet")
    return frames, boxes


def embedded(args) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, np.ndarray, np.ndarray, dict]:
    """Frames, every frame's boxes, the pool's boxes as objects, frame vectors and those boxes' crop
    vectors: from the cache, or made and embedded."""
    from curation_assets.core.embedder import Embedder

    key = json.dumps([*footage_key(args), args.model, args.pretrained])
    cache = Path(args.cache) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        frames = pd.read_json(io.StringIO(str(data["frames"])), orient="records")
        objects = pd.read_json(io.StringIO(str(data["objects"])), orient="records")
        objects["problem"] = objects["problem"].fillna("").astype(str)
        labels = pd.read_json(io.StringIO(str(data["labels"])), orient="records")
        return frames, labels, objects, data["vectors"], data["object_vectors"], json.loads(str(data["timing"]))
    started = time.perf_counter()
    frames, boxes = footage(args)
    render_s = time.perf_counter() - started
    embedder = Embedder(model=args.model, pretrained=args.pretrained)
    started = time.perf_counter()
    vectors = embedder.embed_encoded(lambda data=data: data for data in frames["jpeg"])
    embed_s = time.perf_counter() - started
    pool_frames = frames[frames["split"] == "pool"]
    objects = boxes_table(boxes, pool_frames, "labels")
    by_id = dict(zip(frames["frame_id"], frames["jpeg"]))
    started = time.perf_counter()
    object_vectors = embedder.embed_encoded(
        encoded_crops(objects, lambda frame_id: Image.open(io.BytesIO(by_id[frame_id])).convert("RGB"))
    )
    crops_s = time.perf_counter() - started
    frames = frames.drop(columns="jpeg")
    timing = {"render_s": render_s, "embed_frames_s": embed_s, "embed_crops_s": crops_s,
              "frames": len(frames), "crops": len(object_vectors)}  # fmt: skip
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=frames.to_json(orient="records"), objects=objects.to_json(orient="records"),
             labels=boxes.to_json(orient="records"), vectors=vectors, object_vectors=object_vectors,
             timing=json.dumps(timing))  # fmt: skip
    return frames, boxes, objects, vectors, object_vectors, timing


def adapted_checkpoint(args) -> str:
    """The encoder fine-tuned on the pool's frames (no labels, no test frames): cached by its settings."""
    from curation_assets.core.adaptation import AdaptationParams, adapt

    params = AdaptationParams(max_steps=args.adapt_steps, time_budget_s=args.adapt_budget_s, learning_rate=3e-4)
    key = json.dumps([*footage_key(args), params.__dict__])
    path = Path(args.cache) / f"adapted-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if not path.is_file():
        frames, _ = footage(args)
        pool = frames.loc[frames["split"] == "pool", "jpeg"]
        adapted = adapt([lambda data=data: Image.open(io.BytesIO(data)) for data in pool], params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(adapted.checkpoint)
        record = {"losses": adapted.losses, "seconds": adapted.seconds, "stopped_by": adapted.stopped_by,
                  "images": adapted.images}  # fmt: skip
        path.with_suffix(".json").write_text(json.dumps(record))
    record = json.loads(path.with_suffix(".json").read_text())
    losses = record["losses"]
    print(f"adapted: {len(losses)} SimCLR steps on {record['images']} pool frames in {record['seconds']:.0f} s "
          f"({record['stopped_by']}), loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f} "
          f"(first and last 5 steps); {path}")  # fmt: skip
    return str(path)


def presence(frames: pd.DataFrame, boxes: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Frame x class: 1 where a box of that class is in the frame."""
    y = np.zeros((len(frames), len(classes)), dtype=np.float32)
    row = pd.Series(np.arange(len(frames)), index=frames["frame_id"])
    boxes = boxes[boxes["frame_id"].isin(row.index)]
    for c, category in enumerate(classes):
        y[row.loc[boxes.loc[boxes["category"] == category, "frame_id"].unique()].to_numpy(), c] = 1
    return y


def fit(x: np.ndarray, y: np.ndarray, steps: int = 300, l2: float = 1e-3) -> np.ndarray:
    """Per-class logistic regression (full-batch Adam on the mean log loss + L2): weights with a bias row."""
    xb = np.hstack([x, np.ones((len(x), 1), dtype=np.float32)])
    w = np.zeros((xb.shape[1], y.shape[1]), dtype=np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for step in range(1, steps + 1):
        p = 1.0 / (1.0 + np.exp(-(xb @ w)))
        grad = xb.T @ (p - y) / len(x) + l2 * w
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad**2
        w -= 0.05 * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(np.hstack([x, np.ones((len(x), 1), dtype=np.float32)]) @ w)))


def mean_average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes with a positive test frame of the average precision of the ranking."""
    aps = []
    for c in range(y.shape[1]):
        if y[:, c].sum() == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = y[order, c]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return float(np.mean(aps))


def duplicate_groups(args, pool: pd.DataFrame, vectors: np.ndarray) -> pd.DataFrame:
    """The pool's duplicate groups as the duplicate_groups asset finds them (the model's calibrated
    thresholds; no geometric verification), or every frame its own group with ``--no-dedup``."""
    if args.no_dedup:
        return pd.DataFrame({"frame_id": pool["frame_id"], "group_id": pool["frame_id"], "is_representative": True})
    from curation_assets.core.embedder import Embedder

    frames, _ = footage(args)
    stats = frames.set_index("frame_id").loc[pool["frame_id"]].reset_index()
    params = DuplicateParams.for_model(Embedder(model=args.model, pretrained=args.pretrained).calibration)
    return find_duplicate_groups(stats, vectors, params)


def run_strategy(strategy, seed, table, vectors, y, objects, x_test, y_test, classes, full_score):
    """One loop: (fraction, mAP, camera B share) at every point of ``POINTS``; ``table`` has the
    duplicate groups: a round chooses among representatives whose group holds no labeled frame."""
    n = len(table)
    no_outliers = pd.DataFrame({"is_outlier": np.zeros(n, dtype=bool)})
    rng = np.random.default_rng(seed)
    labeled = np.zeros(n, dtype=bool)
    labeled[rng.choice(n, size=int(round(POINTS[0] * n)), replace=False)] = True  # the first 5 %: shared
    out = []
    settings = RoundSettings(strategy=strategy, seed=seed, object_class_strength=0.0)
    for i, point in enumerate(POINTS):
        if point == 1.0:  # every frame labeled: the same model whatever the strategy
            out.append({"strategy": strategy, "seed": seed, "point": point, "labeled": n, "map": full_score,
                        "b_share": float((table["camera_id"] == "B").mean())})  # fmt: skip
            continue
        if i:
            w_prev = w  # noqa: F821 - set in the previous iteration
            budget = int(round(point * n)) - int(labeled.sum())
            predictions = None
            if strategy == "hybrid":  # each class's probability read as a detection's confidence
                p = predict(w_prev, vectors)
                predictions = pd.DataFrame({"frame_id": np.repeat(table["frame_id"].to_numpy(), len(classes)),
                                            "category": np.tile(classes, n), "confidence": p.ravel()})  # fmt: skip
            candidates = np.flatnonzero(candidate_mask(table, no_outliers, set(table.loc[labeled, "frame_id"])))
            budget = min(budget, len(candidates))  # redundant footage: fewer groups than the budget
            picked = choose_round(table, vectors, candidates, labeled, budget, settings, predictions, objects)
            labeled[picked.picks] = True
        w = fit(vectors[labeled], y[labeled])
        score = mean_average_precision(y_test, predict(w, x_test))
        out.append({"strategy": strategy, "seed": seed, "point": point, "labeled": int(labeled.sum()),
                    "map": score, "b_share": float((table.loc[labeled, "camera_id"] == "B").mean())})  # fmt: skip
    return out


def plot(results: pd.DataFrame, path: Path, title: str) -> None:
    """Two panels (test mAP, camera B's share of the labeled pool) against the labeled share, PIL only."""
    colors = {"random": (90, 90, 90), "diversity": (31, 119, 180), "typicality": (44, 160, 44),
              "hybrid": (214, 39, 40), "object_diversity": (148, 103, 189)}  # fmt: skip
    results = results.assign(share=results["labeled"] / results["labeled"].max())  # where candidates ran out: less
    mean = results.groupby(["strategy", "point"])[["map", "b_share", "share"]].mean()
    width, height, margin = 1100, 470, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((margin, 8), title, fill="black")
    panels = [("map", "camera B test mAP"), ("b_share", "camera B share of labeled pool")]
    pw = (width - 3 * margin) // 2
    for k, (column, label) in enumerate(panels):
        x0, y0, x1, y1 = margin + k * (pw + margin), 40, margin + k * (pw + margin) + pw, height - 70
        values = mean[column]
        lo, hi = float(values.min()), float(values.max())
        lo, hi = lo - 0.05 * (hi - lo + 1e-6), hi + 0.05 * (hi - lo + 1e-6)
        draw.rectangle((x0, y0, x1, y1), outline="black")
        draw.text((x0, y1 + 28), f"{label} vs share of the pool labeled (log scale)", fill="black")

        def to_xy(point, value, x0=x0, x1=x1, y0=y0, y1=y1, lo=lo, hi=hi):
            fx = (np.log(point) - np.log(POINTS[0])) / (np.log(POINTS[-1]) - np.log(POINTS[0]))
            return x0 + fx * (x1 - x0), y1 - (value - lo) / (hi - lo) * (y1 - y0)

        for point in POINTS:
            x, _ = to_xy(point, lo)
            draw.line((x, y1, x, y1 + 4), fill="black")
            draw.text((x - 10, y1 + 8), f"{point:.0%}", fill="black")
        for tick in np.linspace(lo, hi, 6):
            _, y = to_xy(POINTS[0], tick)
            draw.line((x0 - 4, y, x0, y), fill="black")
            draw.text((x0 - 40, y - 6), f"{tick:.2f}", fill="black")
        for s, strategy in enumerate(STRATEGIES):
            if strategy not in mean.index.get_level_values(0):
                continue
            line = [to_xy(x, v) for x, v in zip(mean.loc[strategy, "share"], values.loc[strategy])]
            draw.line(line, fill=colors[strategy], width=2)
            for x, y in line:
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colors[strategy])
            if k == 0:
                draw.text((x0 + 10, y0 + 8 + 14 * s), strategy, fill=colors[strategy])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def report(results: pd.DataFrame) -> None:
    mean = results.groupby(["strategy", "point"])["map"].mean().unstack()
    sd = results.groupby(["strategy", "point"])["map"].std().unstack()
    share = results.groupby(["strategy", "point"])["b_share"].mean().unstack()
    full = results[results["point"] == 1.0].groupby("seed")["map"].mean()
    rel = results.assign(rel=results["map"] / results["seed"].map(full)).groupby(["strategy", "point"])["rel"].mean()
    order = [s for s in STRATEGIES if s in mean.index]
    print("\ntest mAP (camera B), mean ± sd over seeds, by labeled share of the pool")
    print("| strategy | " + " | ".join(f"{p:.0%}" for p in POINTS) + " | at 20 %: of full |")
    print("|---|" + "---|" * (len(POINTS) + 1))
    for s in order:
        cells = " | ".join(f"{mean.loc[s, p]:.3f} ±{sd.loc[s, p]:.3f}" for p in POINTS)
        print(f"| {s} | {cells} | {rel.loc[(s, 0.20)]:.3f} |")
    print("\ncamera B's share of the labeled pool (the pool holds 20 %)")
    print("| strategy | " + " | ".join(f"{p:.0%}" for p in POINTS) + " |")
    print("|---|" + "---|" * len(POINTS))
    for s in order:
        print(f"| {s} | " + " | ".join(f"{share.loc[s, p]:.2f}" for p in POINTS) + " |")
    labeled = results.groupby(["strategy", "point"])["labeled"].mean().unstack()
    n = labeled[1.0].iloc[0]
    if (labeled.round() < (np.array(POINTS) * n).round()).any().any():
        print("\nframes labeled (mean; under the share where the candidates ran out: every duplicate group taken)")
        print("| strategy | " + " | ".join(f"{p:.0%}" for p in POINTS) + " |")
        print("|---|" + "---|" * len(POINTS))
        for s in order:
            print(f"| {s} | " + " | ".join(f"{labeled.loc[s, p]:.0f}" for p in POINTS) + " |")
    print("\nbeats random (mean mAP) at 5-25 %, and labeling cost to reach 0.9 / 0.95 of the full-data score")
    print("| strategy | beats random at | first measured share ≥ 0.9 full | cost saved vs all | ≥ 0.95 full | "
          "cost saved vs random (0.95) |")  # fmt: skip
    print("|---|---|---|---|---|---|")

    def first(strategy, level):
        reached = [p for p in POINTS if rel.loc[(strategy, p)] >= level]
        return reached[0] if reached else None

    for s in order:
        beats = [f"{p:.0%}" for p in POINTS[1:5] if mean.loc[s, p] > mean.loc["random", p]]
        f90, f95, r95 = first(s, 0.9), first(s, 0.95), first("random", 0.95)
        saved_random = f"{1 - f95 / r95:.0%}" if f95 and r95 else "n/a"
        print(f"| {s} | {', '.join(beats) or 'none'} | {f90:.0%} | {1 - f90:.0%} | {f95:.0%} | {saved_random} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--minority", type=float, default=0.2, help="camera B's share of the pool")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--pretrained", default="", help="a checkpoint (e.g. embedder_adaptation's) for the model")
    parser.add_argument("--cache", default=str(ROOT / ".curation/bench/seed_experiment"))
    parser.add_argument("--png", default=str(ROOT / ".curation/bench/seed_experiment.png"))
    parser.add_argument("--label", default="", help="the run's name in the picture's title")
    parser.add_argument("--clip-length", type=int, default=40, help="frames per pool clip (fewer: less redundancy)")
    parser.add_argument("--no-dedup", action="store_true", help="every frame its own duplicate group")
    parser.add_argument("--adapt-steps", type=int, default=0,
                        help="first fine-tune the encoder on the pool's frames (embedder_adaptation's SimCLR), "
                             "then run with the adapted checkpoint")  # fmt: skip
    parser.add_argument("--adapt-budget-s", type=float, default=600.0)
    args = parser.parse_args()
    started = time.perf_counter()
    print(f"machine: {describe()} (shared with other jobs)")
    if args.adapt_steps:
        args.pretrained = adapted_checkpoint(args)
    frames, labels, objects, vectors, object_vectors, timing = embedded(args)
    print(f"footage: {timing['frames']} frames {SIZE[0]}x{SIZE[1]} ({args.pool} pool, "
          f"{1 - args.minority:.0%} camera A; "
          f"{args.test} test, camera B), {timing['crops']} pool boxes; model {args.model} {args.pretrained or ''}; "
          f"rendered in {timing['render_s']:.0f} s, frames embedded in {timing['embed_frames_s']:.0f} s, "
          f"crops in {timing['embed_crops_s']:.0f} s (cached after the first run)")  # fmt: skip
    classes = sorted(objects["category"].unique())
    pool = frames[frames["split"] == "pool"].reset_index(drop=True)
    test_rows = (frames["split"] == "test").to_numpy()
    pool_rows = (frames["split"] == "pool").to_numpy()
    y_pool, y_test = presence(pool, labels, classes), presence(frames[test_rows], labels, classes)
    print(f"classes {classes}; pool positives {y_pool.sum(axis=0).astype(int).tolist()}, "
          f"test positives {y_test.sum(axis=0).astype(int).tolist()}")  # fmt: skip
    objects = objects.assign(category="object", vector=list(object_vectors))  # class-agnostic boxes
    groups = duplicate_groups(args, pool, vectors[pool_rows])
    pool = pool.merge(groups[["frame_id", "group_id", "is_representative"]], on="frame_id")
    print(f"duplicate groups: {pool['group_id'].nunique()} in the pool of {len(pool)} frames "
          f"(camera A {pool.loc[pool['camera_id'] == 'A', 'group_id'].nunique()}, "
          f"camera B {pool.loc[pool['camera_id'] == 'B', 'group_id'].nunique()})")  # fmt: skip
    full_score = mean_average_precision(y_test, predict(fit(vectors[pool_rows], y_pool), vectors[test_rows]))
    rows = []
    for strategy in args.strategies.split(","):
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            rows += run_strategy(strategy, seed, pool, vectors[pool_rows], y_pool, objects, vectors[test_rows],
                                 y_test, classes, full_score)  # fmt: skip
        print(f"  {strategy}: {time.perf_counter() - t0:.0f} s for {args.seeds} seeds")
    results = pd.DataFrame(rows)
    report(results)
    title = f"seed experiment {args.label or args.model}: {args.pool} pool frames (20 % camera B), {args.seeds} seeds"
    plot(results, Path(args.png), title)
    results.to_csv(Path(args.png).with_suffix(".csv"), index=False)  # every seed's figures, beside the picture
    print(f"\npicture: {args.png}\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
