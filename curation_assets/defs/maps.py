"""embedding_map: where every frame sits among the others, coloured four ways.

Its own asset, after outliers, so that drawing a map (UMAP: a minute at 100 k frames,
plus numba's compile the first time in a process) never delays duplicate groups and
outliers; automation refreshes it after they change, or materialize it by hand.
"""

import time

import dagster as dg
import pandas as pd

from curation_assets.core.maps import MAX_POINTS, draw_panels, group_size_bins, layout_2d, map_table
from curation_assets.defs import checks
from curation_assets.defs.curation import following, load_corpus, read_groups, read_outliers
from curation_assets.defs.reports import png_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.selected_batch import earlier_selections
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "embedding_map"


def _selection_rounds(store: ObjectStore) -> dict[str, str]:
    """frame_id -> the labeling round that selected it (the first, where several did)."""
    batches = earlier_selections(store)
    if batches.empty:
        return {}
    first = batches.sort_values("round").drop_duplicates("frame_id")
    return dict(zip(first["frame_id"], first["round"]))


def panels(frames: pd.DataFrame, groups: pd.DataFrame, scored: pd.DataFrame, rounds: dict[str, str]) -> list:
    """(panel title, label per frame) for the frames in ``frames``' order."""
    ids = frames["frame_id"]
    size = ids.map(groups.set_index("frame_id")["group_size"]).fillna(1).astype(int)
    reasons = ids.map(scored.set_index("frame_id")["reasons"]).fillna("")
    return [
        ("camera", list(frames["camera_id"])),
        ("duplicate group size", group_size_bins(size)),
        ("outlier reason", [r.split(",")[0] if r else "none" for r in reasons]),
        ("selection round", [rounds.get(f, "not selected") for f in ids]),
    ]


class MapConfig(dg.Config):
    max_points: int = MAX_POINTS
    seed: int = 0


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["outliers", "selected_batch", "duplicate_groups", "raw_frames", "frame_embeddings"],
    group_name="curation",
    kinds={"umap", "parquet"},
    automation_condition=following("duplicate_groups", "raw_frames", "frame_embeddings"),  # a new round redraws it
    check_specs=[checks.blocking("embedding_map_places_frames", ASSET, "every placed frame once, at finite x, y (GX)")],
)
@transient_only
def embedding_map(
    context: dg.AssetExecutionContext,
    config: MapConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """A 2-D UMAP map of the frames' embeddings, coloured by camera, duplicate group size,
    outlier reason and selection round; the coordinates as a table."""
    store = object_store.store()
    model = embedder.embedder()
    corpus = load_corpus(store, model.vector_name)
    groups = read_groups(store)
    scored = read_outliers(store)
    started = time.perf_counter()
    placed = layout_2d(corpus.vectors, config.max_points, config.seed)
    layout_s = time.perf_counter() - started
    frames = corpus.frames.iloc[placed.rows].reset_index(drop=True)
    coloured = panels(frames, groups, scored, _selection_rounds(store))
    table = map_table(corpus.frames["frame_id"], placed, coloured)
    sampled = (
        f", a sample of {len(placed.rows)} of {len(corpus.frames)}" if len(placed.rows) < len(corpus.frames) else ""
    )
    title = f"{placed.method.upper()} of {len(placed.rows)} frames' {model.model} embeddings{sampled}"
    started = time.perf_counter()
    png = draw_panels(placed.coords, coloured, title)
    draw_s = time.perf_counter() - started
    results = [
        checks.from_validation(
            "embedding_map_places_frames", expectations.validate(table, ASSET, suites.map_points(len(placed.rows)))
        )
    ]
    verdict = checks.publish(store, results, ASSET, table=table)
    context.log.info(
        f"{placed.method} layout of {len(placed.rows)} frames in {layout_s:.1f} s, drawn in {draw_s:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "frames": len(corpus.frames),
            "placed": len(placed.rows),
            "method": placed.method,
            "layout_seconds": round(layout_s, 2),
            "draw_seconds": round(draw_s, 2),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
            **png_metadata(store, ASSET, png),
        },
        check_results=results,
    )
