"""Similarity search: ``search`` (what the headless command calls) and the Launchpad job.

"Frames like this one": the query (an image file or s3:// URI, a stored frame, or a text
for CLIP models) is embedded with the configured model and looked up in the vector store,
with payload filters (camera, video, time range, split) and, optionally, without outliers
and without the frames that duplicate a kept one. The job's run shows the query beside its
hits (scores under each) and writes the sheet and the hits to ``reports/search/``.
"""

import time
from dataclasses import dataclass, replace

import dagster as dg
import pandas as pd
from PIL import Image
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.contact_sheet import captioned_sheet
from curation_assets.core.embedder import Embedder, EmbedderError
from curation_assets.core.frames import decode_image
from curation_assets.core.ids import point_id_for
from curation_assets.core.objects import crop
from curation_assets.core.search import (
    BOX_HIT_COLUMNS,
    HIT_COLUMNS,
    Query,
    RootMismatch,
    SearchError,
    boxes_left_out,
    curation_needed,
    frames_of_split,
    hits_table,
    stored_root,
    with_originals,
)
from curation_assets.core.sources import load_image
from curation_assets.defs.curation import MEMBER
from curation_assets.defs.reports import png_metadata
from resources import EmbedderResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import ObjectStore
from resources.vector_store import VectorStoreError, Where


class SearchConfig(dg.Config):
    image: str = Field(default="", description="Search by an image: a file path or s3:// URI.")
    frame: str = Field(default="", description="Search by a stored frame id (e.g. cam-a--lobby/000042).")
    text: str = Field(default="", description="Search by text (open_clip models, which have a text tower).")
    top: int = Field(default=20, ge=1, le=1000, description="How many hits.")
    cameras: list[str] = Field(default=[], description="Only these cameras.")
    videos: list[str] = Field(default=[], description="Only these videos (source ids).")
    time_from_s: float | None = Field(default=None, description="Only frames at or after this time in their video.")
    time_to_s: float | None = Field(default=None, description="... and at or before this one.")
    split: str = Field(default="", description="Only frames of this split (labeled datasets: train, val, test).")
    exclude_outliers: bool = Field(default=False, description="Leave flagged outliers out.")
    exclude_duplicates: bool = Field(default=False, description="Leave out frames that duplicate a kept frame.")
    boxes: bool = Field(
        default=False,
        description="Search the boxes' crops (the curate_objects job's collection) instead of whole frames: "
        "an image query is then a picture of one object.",
    )
    box: str = Field(default="", description="Search by a stored box (its object id); implies boxes.")
    categories: list[str] = Field(default=[], description="Boxes only: only these classes.")


@dataclass
class SearchResult:
    query: Query
    model: str
    collection: str
    hits: pd.DataFrame  # core.search.HIT_COLUMNS, best first
    seconds: float  # the store's query alone
    query_image: Image.Image | None
    boxes: pd.DataFrame | None = None  # box searches: every stored box (object_embeddings' table), for the sheet


def _table(store: ObjectStore, asset: str) -> pd.DataFrame | None:
    key = layout.table_key(asset)
    return store.read_table(key) if store.exists(key) else None


def _where(config: SearchConfig, store: ObjectStore) -> Where:
    if config.boxes or config.box:
        if config.split or config.time_from_s is not None or config.time_to_s is not None:
            raise SearchError("splits and time ranges filter frames; boxes filter by camera, video and class")
        skip = boxes_left_out(_table(store, "object_outliers"), config.exclude_outliers, config.exclude_duplicates)
        return Where(cameras=config.cameras, videos=config.videos, categories=config.categories, exclude_frames=skip)
    if config.categories:
        raise SearchError("classes filter boxes: add boxes (search the boxes' crops)")
    only = None
    if config.split:
        frames = store.read_tables(layout.table_prefix("raw_frames"))
        if frames is None:
            raise SearchError("no frames are stored yet: ingest a landing zone first")
        only = frames_of_split(frames, config.split)
    # outliers and duplicates are left out by the payload curation keeps on every point, inside
    # the k-NN query: no curation table is read, however many sources are stored
    curated = {asset: store.exists(layout.state_key(asset)) for asset in ("outliers", "duplicate_groups")}
    curation_needed(curated, config.exclude_outliers, config.exclude_duplicates)
    return Where(cameras=config.cameras, videos=config.videos, time_from_s=config.time_from_s,
                 time_to_s=config.time_to_s, only_frames=only, exclude_outliers=config.exclude_outliers,
                 exclude_group_roles=[MEMBER] if config.exclude_duplicates else ())  # fmt: skip


def stored_key(store: ObjectStore, uri: str) -> str:
    """The key of a frame the vector store names, under this storage root; a frame stored under
    another root means the root and the vector store do not belong together."""
    try:
        return store.key_for_uri(uri)
    except ValueError as exc:
        raise RootMismatch(
            f"the vector store's frames are stored under {stored_root(uri)}, not under the storage root "
            f"{store.root}: pass --root {stored_root(uri)} (CURATION_STORAGE_URI), or the vector store that "
            f"belongs to {store.root} (CURATION_QDRANT_PATH or QDRANT_URL)"
        ) from exc


def _originals(object_store: ObjectStoreResource, store: ObjectStore, hits: pd.DataFrame) -> pd.DataFrame:
    """The hits with the user's own file names and landing URIs, read from the hit sources' frame tables."""
    keys = [layout.table_key("raw_frames", v) for v in sorted(set(hits["video_id"]))]
    tables = [store.read_table(key)[["frame_id", "source_name"]] for key in keys if store.exists(key)]
    frames = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["frame_id", "source_name"])
    landing = object_store.landing_store()

    def landing_uri(name: str) -> str:
        try:
            return landing.uri(name)
        except ValueError:  # an archive member or a name that is no landing key
            return ""

    return with_originals(hits, frames, landing_uri)


def _no_vectors(model: Embedder, collection: str, existing: list[str]) -> SearchError:
    if not existing:
        return SearchError("the vector store is empty: ingest a landing zone first (python -m curation_assets run)")
    return SearchError(
        f"the store holds no vectors from {model.model} ({collection} does not exist; it has {', '.join(existing)}): "
        "a query must use the model that embedded the frames. Set CURATION_EMBEDDER_MODEL (and "
        "CURATION_EMBEDDER_PRETRAINED) to that model, or re-embed the frames with this one"
    )


def search(
    config: SearchConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> SearchResult:
    """Run one query; a query that cannot be answered raises SearchError saying why."""
    query = Query(config.image or None, config.frame or None, config.text or None, config.box or None)
    store = object_store.store()
    model = Embedder(**embedder.settings())  # here, not in a model process: one query, maybe a text
    if query.text and not model.has_text_tower:
        model.embed_text([query.text])  # raises the error that says which setting to change
    over_boxes = config.boxes or bool(config.box)
    if over_boxes and query.frame:
        raise SearchError("a box search takes an image, a box id or a text, not a frame id")
    collection = vector_store.collection_for(model.vector_name, items="objects" if over_boxes else "frames")
    where = _where(config, store)
    boxes = _table(store, "object_embeddings") if over_boxes else None
    query_image = None
    if query.image:
        try:
            loaded = load_image(object_store.read(query.image), query.image)
        except (OSError, ValueError, RuntimeError) as exc:
            raise SearchError(f"query image {query.image}: cannot be read ({exc})") from exc
        if loaded.rgb is None:
            raise SearchError(f"query image {query.image}: {loaded.error}")
        query_image = Image.fromarray(loaded.rgb)
    with vector_store.open() as vs:
        existing = vs.collections()
        if collection not in existing or vs.count(collection) == 0:
            if over_boxes:
                raise SearchError(f"no boxes embedded with {model.model} yet: run the curate_objects job first")
            raise _no_vectors(model, collection, existing)
        stored = query.box or query.frame  # a stored point: its own vector, itself left out
        if stored:
            what = "box" if query.box else "frame"
            try:
                vectors, payloads = vs.retrieve(collection, model.vector_name, [point_id_for(stored)])
            except VectorStoreError as exc:
                raise SearchError(f"{what} {stored} has no vector from {model.model} in the store") from exc
            vector = vectors[0]
            where = replace(where, exclude_frames=[*where.exclude_frames, stored])
            if query.box:
                query_image = _crop(store, boxes, stored)
            else:
                query_image = decode_image(store.get_bytes(stored_key(store, payloads[0]["uri"])))
        elif query.text:
            vector = model.embed_text([query.text])[0]
        else:
            vector = model.embed([lambda: query_image])[0]
        started = time.perf_counter()
        hits = vs.nearest(collection, model.vector_name, vector, config.top, where)
        seconds = time.perf_counter() - started
    table = hits_table(hits, BOX_HIT_COLUMNS if over_boxes else HIT_COLUMNS)
    if not over_boxes and len(table):
        stored_key(store, table.loc[0, "uri"])  # frames of another root: say so before reading any
        table = _originals(object_store, store, table)
    return SearchResult(query, model.model, collection, table, seconds, query_image, boxes)


def _crop(store: ObjectStore, boxes: pd.DataFrame | None, object_id: str) -> Image.Image:
    """A stored box's crop, as it was embedded."""
    row = boxes.set_index("object_id").loc[object_id]
    frame = decode_image(store.get_bytes(store.key_for_uri(row["uri"])))
    return crop(frame, row["x"], row["y"], row["w"], row["h"])


def sheet(store: ObjectStore, result: SearchResult) -> bytes:
    """The query beside its hits (frames, or the boxes' crops), rank and score under each."""
    if result.boxes is not None:
        tiles = [
            (_crop(store, result.boxes, row.object_id), f"#{row.rank} {row.score:.3f} {row.category}\n{row.object_id}")
            for row in result.hits.itertuples()
        ]
    else:
        tiles = [
            (
                decode_image(store.get_bytes(stored_key(store, row.uri))),
                f"#{row.rank} {row.score:.3f}\n{row.source_name or row.frame_id}",
            )
            for row in result.hits.itertuples()
        ]
    title = f"{result.query.describe()}: top {len(tiles)} from {result.model}"
    return captioned_sheet(title, result.query_image, tiles)


def write_report(store: ObjectStore, result: SearchResult, name: str) -> tuple[dict, str]:
    """The sheet (PNG) and hits (parquet) under reports/search/; returns picture metadata and the table's URI."""
    pictures = png_metadata(store, "search_hits", sheet(store, result), f"search/{name}.png")
    return pictures, store.write_table(layout.report_key(f"search/{name}.parquet"), result.hits)


@dg.op(
    pool="qdrant",
    description="Frames (or boxes) like an image, a stored frame or box, or a text, with filters (Launchpad config).",
)
def similarity_search(
    context: dg.OpExecutionContext,
    config: SearchConfig,
    object_store: ObjectStoreResource,
    embedder: EmbedderResource,
    vector_store: VectorStoreResource,
) -> str:
    try:
        result = search(config, object_store, embedder, vector_store)
    except (SearchError, EmbedderError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    store = object_store.store()
    pictures, table_uri = write_report(store, result, context.run_id)
    shown = ["object_id", "category"] if result.boxes is not None else ["frame_id", "source_name", "timestamp_s"]
    top = result.hits.head(10)[["rank", "score", *shown, "camera_id"]]
    context.log.info(f"{result.query.describe()}: {len(result.hits)} hits in {result.seconds * 1000:.1f} ms")
    context.add_output_metadata(
        {
            "query": result.query.describe(),
            "model": result.model,
            "hits": len(result.hits),
            "best_score": float(result.hits["score"].iloc[0]) if len(result.hits) else None,
            "query_ms": round(result.seconds * 1000, 2),
            "top_hits": dg.MetadataValue.md(top.to_markdown(index=False) if len(top) else "no hits"),
            "table": dg.MetadataValue.path(table_uri),
            **pictures,
        }
    )
    return table_uri


@dg.job(description="Similarity search over the stored frames: set the query and filters in the Launchpad.")
def search_frames():
    similarity_search()
