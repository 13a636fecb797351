"""Embedding maps people can read: a 2-D UMAP layout of the frames' vectors, drawn in panels
coloured by camera, duplicate group size, outlier reason and selection round.

UMAP (umap-learn) runs on a 50-component PCA of the unit vectors (the usual first step:
the neighbour search is then cheap and the layout the same), on at most ``MAX_POINTS``
frames (a seeded sample above), with a fixed seed, so a re-run draws the same map. Too few
frames for a neighbourhood graph get the PCA plane instead, and the map says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from curation_assets.core.contact_sheet import png_bytes

MAX_POINTS = 100_000
NEIGHBOURS = 15
PCA_COMPONENTS = 50
MIN_UMAP_POINTS = 4 * NEIGHBOURS  # below this the neighbourhood graph is most of the data
# tab10 without grey (grey is "other" and "none")
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (188, 189, 34), (23, 190, 207)]  # fmt: skip
GREY = (190, 190, 190)
QUIET = ("none", "unique", "not selected", "other")  # drawn grey and underneath


@dataclass(frozen=True)
class Layout:
    coords: np.ndarray  # (points, 2)
    rows: np.ndarray  # the input rows placed (all, or a sorted sample)
    method: str  # "umap" or "pca"


def principal_components(x: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal components of the rows of ``x`` (centred), as float32."""
    x = np.asarray(x, dtype=np.float32)
    x = x - x.mean(axis=0)
    k = min(k, *x.shape)
    if k == 0:
        return np.zeros((len(x), 0), dtype=np.float32)
    _, _, vt = np.linalg.svd(x[: min(len(x), 20_000)], full_matrices=False)  # directions from a sample
    return x @ vt[:k].T


def pca_plane(x: np.ndarray) -> np.ndarray:
    """The plane of the first two principal components, (n, 2) whatever n."""
    coords = principal_components(x, 2)
    return np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]), dtype=np.float32)])


def layout_2d(vectors: np.ndarray, max_points: int = MAX_POINTS, seed: int = 0) -> Layout:
    n = len(vectors)
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    x = np.asarray(vectors, dtype=np.float32)[rows]
    if len(x) < MIN_UMAP_POINTS:
        return Layout(pca_plane(x), rows, "pca")
    import umap  # imported here: numba compiles on first use, only assets that draw maps pay it

    reducer = umap.UMAP(n_neighbors=NEIGHBOURS, min_dist=0.1, random_state=seed, init="pca", n_jobs=1)
    coords = reducer.fit_transform(principal_components(x, PCA_COMPONENTS))
    return Layout(np.asarray(coords, dtype=np.float32), rows, "umap")


def group_size_bins(sizes: Sequence[int]) -> list[str]:
    edges = ((1, "unique"), (4, "2-4 frames"), (19, "5-19 frames"))
    return [next((label for top, label in edges if s <= top), "20+ frames") for s in sizes]


def _legend(labels: Sequence[str], most: int) -> list[str]:
    """The ``most`` commonest labels that get colours (the quiet ones and the rest are grey)."""
    return [name for name, _ in Counter(labels).most_common() if name not in QUIET][:most]


def draw_panels(coords: np.ndarray, panels: Sequence[tuple[str, Sequence[str]]], title: str, side: int = 520) -> bytes:
    """One scatter panel per (title, label per point), two panels a row; returns PNG bytes."""
    pad, head, legend_h = 16, 20, 44
    cols = 2
    rows = -(-len(panels) // cols)
    width, panel_h = cols * side, head + side + legend_h
    sheet = Image.new("RGB", (width, 24 + rows * panel_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), title, fill=(0, 0, 0))
    lo, hi = (coords.min(axis=0), coords.max(axis=0)) if len(coords) else (np.zeros(2), np.ones(2))
    span = np.where(hi - lo > 1e-9, hi - lo, 1.0)
    dot = 1 if len(coords) > 20_000 else 2 if len(coords) > 2_000 else 3
    for i, (name, labels) in enumerate(panels):
        x0, y0 = (i % cols) * side, 24 + (i // cols) * panel_h
        draw.text((x0 + pad, y0 + 4), name, fill=(0, 0, 0))
        canvas = np.full((side, side, 3), 255, dtype=np.uint8)
        xy = (pad + (coords - lo) / span * (side - 2 * pad - 1)).astype(int)
        labels = np.asarray(list(labels), dtype=object)
        shown = _legend(labels, len(COLOURS))
        colour_of = {label: COLOURS[j] for j, label in enumerate(shown)}
        quiet = ~np.isin(labels, shown)
        for mask, colour in [(quiet, GREY)] + [(labels == label, colour_of[label]) for label in shown[::-1]]:
            px, py = xy[mask, 0], xy[mask, 1]
            for dx in range(-dot + 1, dot):
                for dy in range(-dot + 1, dot):
                    canvas[np.clip(side - 1 - py + dy, 0, side - 1), np.clip(px + dx, 0, side - 1)] = colour
        sheet.paste(Image.fromarray(canvas), (x0, y0 + head))
        x, y = x0 + pad, y0 + head + side + 4
        for label in [*shown, "other / none"] if quiet.any() else shown:
            colour = colour_of.get(label, GREY)
            count = int(quiet.sum()) if label == "other / none" else int((labels == label).sum())
            text = f"{label} ({count})"
            if x + 16 + 6 * len(text) > x0 + side - pad:
                x, y = x0 + pad, y + 14
            draw.rectangle((x, y + 2, x + 9, y + 11), fill=colour)
            draw.text((x + 13, y), text, fill=(0, 0, 0))
            x += 24 + 6 * len(text)
    return png_bytes(sheet)


def map_table(frame_ids: Sequence[str], layout: Layout, panels: Sequence[tuple[str, Sequence[str]]]) -> pd.DataFrame:
    """One row per placed frame: its id, x, y and the label it has in each panel."""
    table = pd.DataFrame({"frame_id": np.asarray(frame_ids)[layout.rows], "x": layout.coords[:, 0],
                          "y": layout.coords[:, 1]})  # fmt: skip
    for name, labels in panels:
        table[name] = list(labels)
    return table
