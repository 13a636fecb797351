"""frame_embeddings: one video's frames -> embedding vectors in Qdrant + a vector table."""

import time
from collections.abc import Iterable

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.duplicates import DuplicateParams, embedding_sources
from curation_assets.core.embedder import Embedder
from curation_assets.core.ids import point_id_for
from curation_assets.core.progress import Progress, Stopwatch
from curation_assets.defs import checks
from curation_assets.defs.executors import GPU_TAGS
from curation_assets.defs.partitions import videos
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from curation_assets.runtime.model_process import RemoteEmbedder
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import ObjectStore

ASSET = "frame_embeddings"
# phash lets incremental duplicate matching compare a new frame with a stored one without reading its table;
# brightness, contrast and edge density say whether it is blank and of what brightness (a black frame never
# joins a white one)
PAYLOAD_COLUMNS = ["frame_id", "video_id", "camera_id", "frame_index", "timestamp_s", "uri", "phash", "brightness",
                   "contrast", "edge_density"]  # fmt: skip


class EmbeddingConfig(dg.Config):
    reuse_vectors_for_copies: bool = Field(
        default=True, description="Frames copying the last embedded frame reuse its vector instead of the model's."
    )
    copy_phash_distance: int = Field(
        default=DuplicateParams.identical_phash_distance, description="pHash bits apart that make a frame a copy."
    )


def vector_table(frames: pd.DataFrame, vectors: np.ndarray, vector_name: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "frame_id": frames["frame_id"].to_numpy(),
            "video_id": frames["video_id"].to_numpy(),
            "point_id": [point_id_for(f) for f in frames["frame_id"]],
            "vector_name": vector_name,
            "vector": list(vectors.astype(np.float32)),
        }
    )


def vector_summary(table: pd.DataFrame, id_column: str = "frame_id") -> pd.DataFrame:
    """One row per vector with what the contract bounds: dimension, finiteness, norm."""
    vectors = [np.asarray(v, dtype=np.float64) for v in table["vector"]]
    return pd.DataFrame(
        {
            id_column: table[id_column],
            "dim": [len(v) for v in vectors],
            "finite": [bool(np.isfinite(v).all()) for v in vectors],
            "norm": [float(np.linalg.norm(v)) if np.isfinite(v).all() else np.nan for v in vectors],
        }
    )


def vector_checks(expectations, asset: str, table: pd.DataFrame, dim: int, stored: int, collection: str,
                  items: str, id_column: str = "frame_id") -> list[dg.AssetCheckResult]:  # fmt: skip
    """The two checks of an asset that writes vectors: one valid vector per row of ``table``
    (GX), and Qdrant holding exactly one point per row (``items`` names the rows in metadata)."""
    summary = vector_summary(table, id_column)
    validation = expectations.validate(summary, asset, suites.vector_summary(len(table), dim, id_column))
    return [
        checks.from_validation(f"{asset}_vectors_valid", validation, dim=dim),
        checks.from_assertion(
            f"{asset}_qdrant_count",
            stored == len(table),
            qdrant_points=stored,
            collection=collection,
            **{items: len(table)},
        ),  # fmt: skip
    ]


@dg.asset(
    retry_policy=TRANSIENT,
    partitions_def=videos,
    deps=["raw_frames"],
    group_name="embedding",
    kinds={"pytorch", "qdrant", "parquet"},
    pool="qdrant",  # the embedded store admits one process at a time
    op_tags=GPU_TAGS,
    check_specs=[
        checks.blocking(
            "frame_embeddings_vectors_valid",
            ASSET,
            "one vector per frame, configured dimension, finite, unit norm (GX)",
        ),
        checks.blocking(
            "frame_embeddings_qdrant_count", ASSET, "Qdrant holds exactly one point per frame of the video"
        ),
    ],
)
@transient_only
def frame_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Embed every frame of the video and upsert it into Qdrant (idempotent).

    Frames that copy the last embedded frame (same pixels, or pHash within a couple of bits)
    reuse its vector instead of going through the model: most frames of a static camera.
    """
    video_id = context.partition_key
    vector_store.check()  # a bad setting or a refused key fails now, before the embedding
    store, watch = object_store.store(), Stopwatch()
    frames = store.read_table(layout.table_key("raw_frames", video_id))
    frames = frames[~frames["corrupt"]].reset_index(drop=True)  # unreadable images have no pixels
    with watch.stage("load model"):  # waits for the model process the headless command started early
        model = embedder.embedder(load=True)
    # a frame's source: the frame whose vector it takes (itself, or the last embedded frame it copies)
    copies = config.reuse_vectors_for_copies
    source = embedding_sources(frames, config.copy_phash_distance) if copies else np.arange(len(frames))
    started = time.perf_counter()
    vectors, embedded = _embed_frames(context, store, model, frames, source, watch)
    embed_s = time.perf_counter() - started
    table = vector_table(frames, vectors, model.vector_name)
    collection = vector_store.collection_for(model.vector_name)
    points = [(video_id, list(table["point_id"]), vectors, frames[PAYLOAD_COLUMNS].to_dict("records"))]
    with watch.stage("vector store"):
        stored = replace_video_points(vector_store, collection, model, points, count_video=video_id)
    upsert_s = time.perf_counter() - started - embed_s
    with watch.stage("checks"):
        results = vector_checks(expectations, ASSET, table, model.dim, stored, collection, "frames")
    with watch.stage("write table"):
        verdict = checks.publish(store, results, ASSET, video_id, table)
    return dg.MaterializeResult(
        metadata={
            "frames": len(frames),
            **{f"embedder_{k}": v for k, v in model.describe().items()},
            "vector_name": model.vector_name,
            "vector_store": vector_store.describe(),
            "collection": collection,
            "embed_seconds": round(embed_s, 2),
            "frames_embedded": embedded,
            "frames_reused_copies": len(frames) - embedded,
            "images_per_second": round(embedded / embed_s, 1) if embed_s else None,
            "upsert_seconds": round(upsert_s, 3),
            "timings": dg.MetadataValue.json(watch.rounded()),
            "published": verdict.published,
        },
        check_results=results,
    )


def _embed_frames(
    context: dg.AssetExecutionContext,
    store: ObjectStore,
    model: Embedder | RemoteEmbedder,
    frames: pd.DataFrame,
    source: np.ndarray,
    watch: Stopwatch,
) -> tuple[np.ndarray, int]:
    """A vector per frame: the model embeds the frames that are their own ``source``, and a
    copy takes its source's vector. Returns the vectors and how many the model made."""
    to_embed = np.unique(source)
    progress = Progress(f"{context.partition_key} embeddings", len(to_embed), context.log.info)

    def stored_jpegs():
        for uri in frames["uri"].to_numpy()[to_embed]:
            yield lambda uri=uri: store.get_bytes(store.key_for_uri(uri))
            progress.advance()

    embedded = model.embed_encoded(stored_jpegs(), watch)
    progress.finish()
    return (embedded[np.searchsorted(to_embed, source)] if len(frames) else embedded), len(to_embed)


def replace_video_points(
    vector_store: VectorStoreResource,
    collection: str,
    model: Embedder | RemoteEmbedder,
    points: Iterable[tuple[str, list[str], np.ndarray, list[dict]]],
    count_video: str | None = None,
) -> int:
    """Each video's points in ``collection`` become exactly the given ones (video, point ids,
    vectors, payloads): a re-run leaves no stale point. Returns the points ``count_video`` has
    afterwards (None: the whole collection), what the qdrant_count check compares."""
    with vector_store.open() as vs:
        vs.ensure_collection(collection, model.vector_name, model.dim)
        for video, point_ids, vectors, payloads in points:
            vs.replace_video(collection, model.vector_name, video, point_ids, vectors, payloads)
        return vs.count(collection, count_video)
