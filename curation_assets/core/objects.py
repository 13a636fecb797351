"""Object-level curation: each box of a detection set is an item of its own.

A detection set's value is in its boxes, not its frames: a street scene with one rare
cyclist among twenty cars is worth labeling for the cyclist. Boxes come from labels (a
labeled dataset's, or those imported from a labeling round) or from a model's predictions. Each box is cropped
from its stored frame with a little context, padded to a square (the embedder squashes
its input to a square: padding keeps a tall box's shape) of at least ``min_side`` pixels
(a tiny box is not blown up into blur), and embedded by the frames' own model.

On those vectors: duplicates among crops (the same object seen again), outliers within a
class (a box whose nearest crops all carry another label is probably mislabeled; a crop
far from its whole class is broken or unusual; a box with no area is broken), and frame
selection by the objects a frame adds (``select_by_objects``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image

from curation_assets.core.frames import encode_jpeg
from curation_assets.core.ids import object_id_for, point_id_for
from curation_assets.core.neighbors import knn_graph

OBJECT_COLUMNS = ["object_id", "frame_id", "video_id", "category", "origin", "confidence", "x", "y", "w", "h",
                  "problem"]  # fmt: skip
BOX_COLUMNS = ["x", "y", "w", "h"]
BROKEN_SCORE = 10.0  # above any other reason's score: broken boxes sort first


@dataclass(frozen=True)
class CropParams:
    context: float = 0.1  # margin around the box, as a share of its side, on each side
    min_side: int = 32  # crops are padded (not enlarged) to at least this square
    min_box_side: float = 2.0  # a box thinner than this (pixels, after clipping to the image) is broken


@dataclass(frozen=True)
class ObjectOutlierParams:
    neighbors: int = 5  # crops that vote on what a crop looks like
    other_class_share: float = 0.8  # ... and this share of them with one other label: "looks like <class>"
    isolation_z: float = 3.5  # robust z-score of the distance to its own class's nearest crops
    min_class_size: int = 20  # a class smaller than this is not judged for isolation
    duplicate_cosine: float = 0.95  # crops at least this similar (same label) are one object seen again


def boxes_table(
    boxes: pd.DataFrame, frames: pd.DataFrame, origin: str, params: CropParams = CropParams()
) -> pd.DataFrame:
    """``boxes`` (frame_id, category, x, y, w, h[, confidence]) of known ``frames`` as object rows,
    in order, with a stable id per box (its place among its frame's boxes), the parent's video,
    and ``problem``: why the box cannot be cropped ("" when it can)."""
    boxes = boxes.dropna(subset=BOX_COLUMNS)  # image-level labels have no box
    boxes = boxes[boxes["frame_id"].isin(frames["frame_id"])].reset_index(drop=True)
    if boxes.empty:
        return pd.DataFrame(columns=OBJECT_COLUMNS)
    index = boxes.groupby("frame_id").cumcount().to_numpy()
    parent = frames.set_index("frame_id").loc[boxes["frame_id"], ["video_id", "width", "height"]]
    xywh = boxes[BOX_COLUMNS].astype(float).to_numpy()
    return pd.DataFrame(
        {
            "object_id": [object_id_for(f, i, origin) for f, i in zip(boxes["frame_id"], index)],
            "frame_id": boxes["frame_id"].to_numpy(),
            "video_id": parent["video_id"].to_numpy(),
            "category": boxes["category"].astype(str).to_numpy(),
            "origin": origin,
            "confidence": boxes["confidence"].astype(float).to_numpy() if "confidence" in boxes else np.nan,
            **{c: xywh[:, i] for i, c in enumerate(BOX_COLUMNS)},
            "problem": [
                box_problem(*b, int(W), int(H), params) for b, W, H in zip(xywh, parent["width"], parent["height"])
            ],  # fmt: skip
        },
        columns=OBJECT_COLUMNS,
    )


def box_problem(x: float, y: float, w: float, h: float, width: int, height: int, params: CropParams) -> str:
    """Why a box cannot be a crop ("" when it can)."""
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if x1 - x0 < params.min_box_side or y1 - y0 < params.min_box_side:
        inside = x1 > x0 and y1 > y0
        return f"broken box: {w:.0f}x{h:.0f} at ({x:.0f}, {y:.0f}) " + (
            "has no area" if inside else f"lies outside the {width}x{height} image"
        )
    return ""


def crop(image: Image.Image, x: float, y: float, w: float, h: float, params: CropParams = CropParams()) -> Image.Image:
    """The box with ``context`` around it, clipped to the image, centred on a grey square of at
    least ``min_side`` pixels."""
    mx, my = params.context * w, params.context * h
    left, top = max(0, int(np.floor(x - mx))), max(0, int(np.floor(y - my)))
    right, bottom = min(image.width, int(np.ceil(x + w + mx))), min(image.height, int(np.ceil(y + h + my)))
    piece = image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))
    side = max(piece.width, piece.height, params.min_side)
    if piece.size == (side, side):
        return piece
    square = Image.new("RGB", (side, side), (128, 128, 128))
    square.paste(piece.convert("RGB"), ((side - piece.width) // 2, (side - piece.height) // 2))
    return square


def encoded_crops(
    objects: pd.DataFrame, read_frame: Callable[[str], Image.Image], params: CropParams = CropParams()
) -> Iterator[Callable[[], bytes]]:
    """A loader of each object's crop as JPEG (quality 95: what ``Embedder.embed_encoded`` takes,
    here or in a model process), in the order of ``objects``, those with a ``problem`` left
    out; each frame is read once for all its boxes (rows of one frame kept together)."""
    current, image = None, None
    for row in objects.itertuples(index=False):
        if row.problem:
            continue
        if row.frame_id != current:
            current, image = row.frame_id, read_frame(row.frame_id)
        data = encode_jpeg(np.asarray(crop(image, row.x, row.y, row.w, row.h, params)), 95)
        yield lambda data=data: data


def class_weights(categories: pd.Series, strength: float = 1.0) -> np.ndarray:
    """Per object, its class's inverse frequency ** ``strength``, scaled to a mean of 1 over the
    objects (strength 0: every class alike). What lets a rare class compete with a common one."""
    counts = categories.map(categories.value_counts()).to_numpy(dtype=float)
    w = (len(categories) / (categories.nunique() * counts)) ** strength if len(categories) else counts
    return w / (w.mean() if len(w) else 1.0)


def select_by_objects(
    object_frames: np.ndarray,
    vectors: np.ndarray,
    n_frames: int,
    budget: int,
    seed: int,
    weights: np.ndarray | None = None,
    covered: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``budget`` of ``n_frames`` candidate frames for the objects they add.

    k-center greedy over objects, paying by the frame: ``object_frames[i]`` is the candidate
    frame (0..n_frames-1) of object ``i``; each step takes the frame of the object farthest
    (cosine distance, at most 1) from every covered object, times its weight (e.g.
    ``class_weights``), and all that frame's objects become covered. A frame is chosen for the
    most novel object it holds, so a crowded frame of common objects does not outbid one
    rare object. ``covered`` (vectors of objects labeled before) seeds the covered set.
    Frames with no objects come last, in a seeded order. Returns frame indices in pick order
    and each pick's score.
    """
    budget = min(budget, n_frames)
    x = np.asarray(vectors, dtype=np.float32)
    object_frames = np.asarray(object_frames, dtype=np.int64)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, dtype=np.float64)
    gap = np.ones(len(x), dtype=np.float32)  # distance to the nearest covered object, capped at 1
    if covered is not None and len(covered) and len(x):
        for start in range(0, len(covered), 4096):
            block = np.asarray(covered[start : start + 4096], dtype=np.float32)
            gap = np.minimum(gap, (1.0 - x @ block.T).min(axis=1))
    gap = np.clip(gap, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    # the first pick among equals (nothing covered yet) and the frames with no objects: seeded
    ties = rng.random(len(x)) * 1e-6
    empty_order = list(rng.permutation(np.setdiff1d(np.arange(n_frames), object_frames)))
    taken = np.zeros(n_frames, dtype=bool)
    picks, scores = [], []
    while len(picks) < budget:
        gain = np.where(taken[object_frames], -np.inf, gap * w + ties) if len(x) else np.zeros(0)
        if len(gain) and np.isfinite(gain.max()):
            best_object = int(np.argmax(gain))
            best = int(object_frames[best_object])
            scores.append(float(gap[best_object] * w[best_object]))
            mine = np.flatnonzero(object_frames == best)
            gap = np.minimum(gap, np.clip((1.0 - x @ x[mine].T).min(axis=1), 0.0, 1.0))
        else:
            best = int(empty_order.pop(0))
            scores.append(0.0)
        picks.append(best)
        taken[best] = True
    return np.array(picks, dtype=np.int64), np.array(scores)


def select_frames(
    objects: pd.DataFrame,
    candidate_frame_ids: np.ndarray,
    taken_frame_ids: set[str],
    budget: int,
    seed: int,
    class_strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``select_by_objects`` over a table of objects (``frame_id``, ``category``, ``vector``):
    the candidates' objects compete, the taken frames' objects are covered already, and each
    object is weighted by its class's rarity among the candidates' objects (``class_strength``
    0: classes ignored). Returns indices into ``candidate_frame_ids`` and scores."""
    position = pd.Series(np.arange(len(candidate_frame_ids)), index=pd.Index(candidate_frame_ids))
    mine = objects[objects["frame_id"].isin(position.index)]
    covered = objects[objects["frame_id"].isin(taken_frame_ids)]
    weights = class_weights(mine["category"].astype(str), class_strength)
    frames = position.loc[mine["frame_id"]].to_numpy()
    return select_by_objects(frames, _stack(mine), len(candidate_frame_ids), budget, seed, weights, _stack(covered))


def _stack(table: pd.DataFrame) -> np.ndarray:
    return np.stack(table["vector"].to_numpy()).astype(np.float32) if len(table) else np.zeros((0, 0), np.float32)


def object_outliers(
    objects: pd.DataFrame, vectors: np.ndarray, params: ObjectOutlierParams = ObjectOutlierParams()
) -> pd.DataFrame:
    """Per object: ``is_outlier``, ``reason`` and ``score`` (higher = stranger).

    ``objects`` needs ``category`` and ``problem`` (a broken box's reason, "" otherwise);
    ``vectors`` has one row per object (any values for broken boxes: they are not compared).
    - broken box: the box's own problem;
    - "looks like <other>": at least ``other_class_share`` of its nearest crops carry one
      other label, none its own (label noise, or a box drawn on the wrong object);
    - "isolated in <class>": its distance to its class's nearest crops is a robust outlier
      within the class (a crop of background, a half-visible or damaged object).
    """
    n = len(objects)
    categories = objects["category"].astype(str).to_numpy()
    problem = objects["problem"].fillna("").astype(str).to_numpy()
    reason = np.where(problem != "", problem, "").astype(object)
    score = np.where(problem != "", BROKEN_SCORE, 0.0)
    ok = np.flatnonzero(problem == "")
    if len(ok) > params.neighbors:
        nbr, sims = knn_graph(np.asarray(vectors, dtype=np.float32)[ok], min(params.neighbors, len(ok) - 1))
        labels = categories[ok]
        neighbour_labels = labels[nbr]
        for row, i in enumerate(ok):
            values, counts = np.unique(neighbour_labels[row], return_counts=True)
            top = values[np.argmax(counts)]
            share = counts.max() / len(neighbour_labels[row])
            if top != labels[row] and share >= params.other_class_share and labels[row] not in values:
                reason[i] = f"looks like {top}"
                score[i] = 1.0 + share
        distance = _distance_to_own_class(labels, np.asarray(vectors, dtype=np.float32)[ok], params)
        for category in np.unique(labels):
            members = np.flatnonzero(labels == category)
            if len(members) < params.min_class_size:
                continue
            d = distance[members]
            median = np.median(d)
            mad = np.median(np.abs(d - median)) * 1.4826
            z = (d - median) / max(mad, 1e-6)
            for m, zi in zip(members, z):
                i = ok[m]
                if zi > params.isolation_z and reason[i] == "":
                    reason[i] = f"isolated in {category}"
                    score[i] = float(zi) / params.isolation_z
    return pd.DataFrame(
        {
            "object_id": objects["object_id"].to_numpy(),
            "is_outlier": reason != "",
            "reason": reason.astype(str),
            "score": score,
        },
        index=pd.RangeIndex(n),
    )


def _distance_to_own_class(labels: np.ndarray, vectors: np.ndarray, params: ObjectOutlierParams) -> np.ndarray:
    """Mean cosine distance of each crop to the ``neighbors`` nearest crops of its own class."""
    out = np.ones(len(labels))
    for category in np.unique(labels):
        members = np.flatnonzero(labels == category)
        if len(members) < 2:
            continue
        _, sims = knn_graph(vectors[members], min(params.neighbors, len(members) - 1))
        out[members] = (1.0 - sims).mean(axis=1)
    return out


def object_duplicates(
    objects: pd.DataFrame, vectors: np.ndarray, params: ObjectOutlierParams = ObjectOutlierParams()
) -> pd.DataFrame:
    """Group crops of one object seen again (same label, cosine >= ``duplicate_cosine``).

    Anti-chaining as FiftyOne does: the largest box not yet grouped leads a group and takes
    its unassigned near neighbours; a crop joins a leader, never a follower. Returns
    ``object_id``, ``object_group`` (the leader's object id), ``is_representative``.
    """
    n = len(objects)
    leader = np.arange(n)
    usable = np.flatnonzero(objects["problem"].fillna("").astype(str).to_numpy() == "")
    if len(usable) > 1:
        x = np.asarray(vectors, dtype=np.float32)[usable]
        nbr, sims = knn_graph(x, min(10, len(usable) - 1))
        labels = objects["category"].astype(str).to_numpy()[usable]
        area = (objects["w"] * objects["h"]).to_numpy(dtype=float)[usable]
        assigned = np.full(len(usable), -1)
        for a in np.argsort(-area, kind="stable"):
            if assigned[a] >= 0:
                continue
            assigned[a] = a
            for b, s in zip(nbr[a], sims[a]):
                if assigned[b] < 0 and s >= params.duplicate_cosine and labels[b] == labels[a]:
                    assigned[b] = a
        leader[usable] = usable[assigned]
    ids = objects["object_id"].to_numpy()
    return pd.DataFrame({"object_id": ids, "object_group": ids[leader], "is_representative": leader == np.arange(n)})


SAME_BOX = ["object_id", "category", "x", "y", "w", "h", "uri"]  # a stored vector is reused while these match


def known_vectors(
    usable: pd.DataFrame, earlier: pd.DataFrame | None, vector_name: str, dim: int
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for the croppable boxes ``usable`` (zeros where unknown) and which rows an
    ``earlier`` object table already holds: same box, same frame, same model. A re-run embeds
    only new or moved boxes."""
    vectors = np.zeros((len(usable), dim), dtype=np.float32)
    reuse = np.zeros(len(usable), dtype=bool)
    if earlier is not None and len(earlier) and (earlier["vector_name"] == vector_name).all():
        known = earlier[earlier["problem"] == ""].set_index(SAME_BOX)["vector"]
        boxes = usable.set_index(SAME_BOX).index
        reuse = boxes.isin(known.index)
        if reuse.any():
            vectors[reuse] = np.stack(known.loc[boxes[reuse]].to_numpy())
    return vectors, reuse


def object_vector_table(objects: pd.DataFrame, vectors: np.ndarray, vector_name: str) -> pd.DataFrame:
    """``objects`` with their vectors (``vectors``: one per croppable box, in order) and point
    ids; a broken box keeps its row and reason, with an empty vector."""
    table = objects.copy()
    croppable = (table["problem"] == "").to_numpy()
    table["vector"] = [np.zeros(0, np.float32)] * len(table)
    table.loc[croppable, "vector"] = pd.Series(list(vectors), index=table.index[croppable])
    table["point_id"] = [point_id_for(o) for o in table["object_id"]]
    table["vector_name"] = vector_name
    return table


OUTLIER_COLUMNS = ["object_id", "frame_id", "video_id", "category", "origin", "x", "y", "w", "h", "problem", "uri"]


def object_outlier_table(objects: pd.DataFrame, params: ObjectOutlierParams) -> pd.DataFrame:
    """Every box of an object table (``object_vector_table``) with its duplicate group and its
    outlier flag, reason and score (a broken box stands in as a zero vector, never compared)."""
    dim = max((len(v) for v in objects["vector"]), default=0)
    vectors = (
        np.stack([v if len(v) else np.zeros(dim, np.float32) for v in objects["vector"]]) if len(objects) else None
    )
    flags = object_outliers(objects, vectors, params)
    groups = object_duplicates(objects, vectors, params)
    return objects[OUTLIER_COLUMNS].merge(groups, on="object_id").merge(flags, on="object_id")
