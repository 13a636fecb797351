"""Embedding maps: the UMAP layout, the panels, and the embedding_map asset on real frames."""

import io

import numpy as np
from PIL import Image

from curation_assets.cli import headless
from curation_assets.core import layout
from curation_assets.core.maps import MIN_UMAP_POINTS, draw_panels, group_size_bins, layout_2d
from curation_assets.defs.curation import read_outliers


def _three_scenes(per_scene: int, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, dim))
    scene = np.repeat(np.arange(3), per_scene)
    x = centres[scene] + 0.2 * rng.normal(size=(len(scene), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), scene


def test_umap_keeps_scenes_apart_and_is_the_same_twice():
    vectors, scene = _three_scenes(70)
    placed = layout_2d(vectors)
    assert placed.method == "umap" and placed.coords.shape == (210, 2) and np.isfinite(placed.coords).all()
    d = np.linalg.norm(placed.coords[:, None] - placed.coords[None], axis=-1)
    same = scene[:, None] == scene[None]
    assert d[same].mean() * 3 < d[~same].mean()  # each scene its own island
    assert np.allclose(layout_2d(vectors).coords, placed.coords)


def test_few_frames_get_the_pca_plane_and_many_a_seeded_sample():
    vectors, _ = _three_scenes(5)
    few = layout_2d(vectors)
    assert few.method == "pca" and few.coords.shape == (15, 2) and len(vectors) < MIN_UMAP_POINTS
    one = layout_2d(vectors[:1])
    assert one.method == "pca" and one.coords.shape == (1, 2)
    sample = layout_2d(np.repeat(vectors, 4, axis=0), max_points=40)
    assert sample.method == "pca" and len(sample.rows) == 40 and (np.diff(sample.rows) > 0).all()
    assert np.array_equal(layout_2d(np.repeat(vectors, 4, axis=0), max_points=40).rows, sample.rows)


def test_panels_are_drawn_with_a_legend_per_colouring():
    coords = np.random.default_rng(1).normal(size=(30, 2))
    png = draw_panels(coords, [("camera", ["cam-a"] * 20 + ["cam-b"] * 10), ("size", group_size_bins([1] * 29 + [25]))],
                      "title")  # fmt: skip
    image = Image.open(io.BytesIO(png))
    assert image.size[0] == 2 * 520 and image.size[1] > 520
    assert group_size_bins([1, 2, 4, 5, 19, 20]) == ["unique", "2-4 frames", "2-4 frames", "5-19 frames",
                                                      "5-19 frames", "20+ frames"]  # fmt: skip


def test_the_map_asset_places_every_frame_and_colours_it(corpus):
    defs, instance, resources, _ = corpus
    result = headless.run_job(defs, instance, "draw_map")
    assert result.success
    store = resources["object_store"].store()
    table = store.read_table(layout.table_key("embedding_map"))
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    assert sorted(table["frame_id"]) == sorted(frames.loc[~frames["corrupt"], "frame_id"])
    assert set(table["camera"]) == {"cam-a", "cam-b"}
    outliers = read_outliers(store)
    flagged = set(outliers.loc[outliers["is_outlier"], "frame_id"])
    assert flagged and set(table.loc[table["outlier reason"] != "none", "frame_id"]) == flagged & set(table["frame_id"])
    metadata = result.asset_materializations_for_node("embedding_map")[0].metadata
    assert metadata["placed"].value == len(table) < MIN_UMAP_POINTS and metadata["method"].value == "pca"
    assert Image.open(io.BytesIO(store.get_bytes(layout.report_key("embedding_map.png")))).size[0] == 1040
