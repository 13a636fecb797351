"""object_embeddings and object_outliers: every labeled or predicted box as an item of its own."""

import io
import time
from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd
from PIL import Image
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.contact_sheet import captioned_sheet
from curation_assets.core.ids import point_id_for
from curation_assets.core.objects import (
    OBJECT_COLUMNS,
    CropParams,
    ObjectOutlierParams,
    boxes_table,
    crop,
    encoded_crops,
    known_vectors,
    object_outlier_table,
    object_vector_table,
)
from curation_assets.core.progress import Stopwatch
from curation_assets.defs import checks
from curation_assets.defs.embedding import replace_video_points, vector_checks
from curation_assets.defs.reports import png_metadata
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.quality import suites
from resources import EmbedderResource, ExpectationsResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import ObjectStore

EMBEDDINGS, OUTLIERS = "object_embeddings", "object_outliers"
PAYLOAD_COLUMNS = ["object_id", "frame_id", "video_id", "camera_id", "category", "origin"]


class ObjectsConfig(dg.Config):
    predictions: str = Field(
        default="",
        description="Key under the root of a detection predictions table (Parquet/CSV: frame_id, category, "
        "confidence, x, y, w, h in pixels) whose boxes join the labeled ones; '' = labeled boxes only.",
    )
    min_confidence: float = Field(default=0.5, description="Predicted boxes less sure than this are left out.")
    context: float = Field(default=CropParams.context, description="Margin around each box, as a share of its side.")
    min_side: int = Field(default=CropParams.min_side, description="Crops are padded to at least this square.")


def boxes_from_labeling_rounds(store: ObjectStore) -> pd.DataFrame | None:
    """The boxes our labeling rounds brought back: labeled_set's published annotations.

    A read this asset cannot declare: labeled_set follows selected_batch, which follows this
    asset (object_diversity chooses frames by these boxes), so the dep would close a cycle.
    The loop is real (each round's labels steer the next round) and a DAG shows one turn of
    it; the materialization's ``by_origin`` counts the boxes that came this way."""
    imported = layout.table_key("labeled_set", "annotations")
    return store.read_table(imported) if store.exists(imported) else None


def all_boxes(store: ObjectStore, frames: pd.DataFrame, config: ObjectsConfig, params: CropParams) -> pd.DataFrame:
    """Every box, one source per frame: a labeled dataset's own labels, else the labels imported
    from our labeling rounds (labeled_set), else (with ``predictions``) a model's boxes."""
    sources = [("labels", store.read_tables(layout.table_prefix("source_labels")))]
    sources.append(("labeled_set", boxes_from_labeling_rounds(store)))
    if config.predictions:
        if not store.exists(config.predictions):
            raise dg.Failure(f"no predictions table at {store.uri(config.predictions)}", allow_retries=False)
        predicted = store.read_table(config.predictions)
        missing = {"frame_id", "category", "confidence", "x", "y", "w", "h"} - set(predicted.columns)
        if missing:
            raise dg.Failure(f"{config.predictions}: predictions need columns {sorted(missing)}", allow_retries=False)
        sources.append(("predictions", predicted[predicted["confidence"].astype(float) >= config.min_confidence]))
    objects, boxed = [], set()
    for origin, boxes in sources:
        if boxes is None or boxes.empty:
            continue
        table = boxes_table(boxes[~boxes["frame_id"].isin(boxed)], frames, origin, params)
        boxed |= set(table["frame_id"])
        objects.append(table)
    return pd.concat(objects, ignore_index=True) if objects else pd.DataFrame(columns=OBJECT_COLUMNS)


def readable_frames(store: ObjectStore) -> pd.DataFrame:
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    if frames is None:
        raise dg.Failure("no published frames yet: materialize raw_frames first", allow_retries=False)
    return frames[~frames["corrupt"]][["frame_id", "video_id", "camera_id", "uri", "width", "height"]]


@dg.asset(
    retry_policy=TRANSIENT,
    # it reads labeled_set's boxes too, undeclared: see boxes_from_labeling_rounds
    deps=["raw_frames", "source_labels"],
    group_name="objects",
    kinds={"pytorch", "qdrant", "parquet"},
    pool="qdrant",  # the embedded store admits one process at a time
    check_specs=[
        checks.blocking(
            "object_embeddings_vectors_valid",
            EMBEDDINGS,
            "one vector per croppable box, configured dimension, finite, unit norm (GX)",
        ),
        checks.blocking(
            "object_embeddings_qdrant_count", EMBEDDINGS, "Qdrant holds exactly one point per croppable box"
        ),
    ],
)
@transient_only
def object_embeddings(
    context: dg.AssetExecutionContext,
    config: ObjectsConfig,
    object_store: ObjectStoreResource,
    vector_store: VectorStoreResource,
    embedder: EmbedderResource,
    expectations: ExpectationsResource,
):
    """Crop every labeled box (a labeled dataset's, or imported from our labeling rounds) and,
    with ``predictions``, every predicted box from its stored frame, and embed it with the
    frames' model into its own Qdrant collection (payload: the parent frame, its video and
    camera, the box's class). Boxes whose crop and model are unchanged keep their vector: a re-run embeds
    only new or moved boxes. Boxes with no area are kept in the table with the reason, and no
    vector."""
    vector_store.check()  # a bad setting or a refused key fails now, before the embedding
    store = object_store.store()
    params = CropParams(context=config.context, min_side=config.min_side)
    watch = Stopwatch()
    frames = readable_frames(store)
    objects = all_boxes(store, frames, config, params).merge(frames[["frame_id", "uri", "camera_id"]], on="frame_id")
    objects = objects.sort_values("object_id", ignore_index=True)
    model = embedder.embedder(load=True)
    usable = objects[objects["problem"] == ""].reset_index(drop=True)
    earlier = store.read_table(layout.table_key(EMBEDDINGS)) if store.exists(layout.table_key(EMBEDDINGS)) else None
    vectors, reuse = known_vectors(usable, earlier, model.vector_name, model.dim)
    todo = usable[~reuse]  # sorted by object id, so a frame's boxes are together: one read each
    started = time.perf_counter()
    if len(todo):
        crops = encoded_crops(todo, _frame_reader(store, frames), params)
        vectors[todo.index.to_numpy()] = model.embed_encoded(crops, watch)
    embed_s = time.perf_counter() - started
    table = object_vector_table(objects, vectors, model.vector_name)
    collection = vector_store.collection_for(model.vector_name, items="objects")
    videos = set(table["video_id"]) | (set(earlier["video_id"]) if earlier is not None else set())
    with watch.stage("vector store"):
        stored = replace_video_points(vector_store, collection, model, _points_by_video(usable, vectors, videos))
    with watch.stage("checks"):
        summary = usable.assign(vector=list(vectors))
        results = vector_checks(expectations, EMBEDDINGS, summary, model.dim, stored, collection, "boxes", "object_id")
    verdict = checks.publish(store, results, EMBEDDINGS, table=table)
    embedded = {"embedded": len(todo), "reused": int(reuse.sum()), "embed_seconds": round(embed_s, 2)}
    return dg.MaterializeResult(
        metadata=_describe_objects(store, objects, embedded, collection, model.vector_name, watch, verdict),
        check_results=results,
    )


def _frame_reader(store: ObjectStore, frames: pd.DataFrame) -> Callable[[str], Image.Image]:
    """A frame's stored image, by frame id."""
    uri_of = dict(zip(frames["frame_id"], frames["uri"]))
    return lambda frame_id: Image.open(io.BytesIO(store.get_bytes(store.key_for_uri(uri_of[frame_id])))).convert("RGB")


def _points_by_video(usable: pd.DataFrame, vectors: np.ndarray, videos: set[str]):
    """Each video's croppable boxes as points (a video whose boxes are all gone: none, so it loses its points)."""
    point_ids = np.array([point_id_for(o) for o in usable["object_id"]], dtype=object)
    for video in sorted(videos):
        rows = np.flatnonzero(usable["video_id"].to_numpy() == video)
        yield video, list(point_ids[rows]), vectors[rows], usable.iloc[rows][PAYLOAD_COLUMNS].to_dict("records")


def _describe_objects(store: ObjectStore, objects: pd.DataFrame, embedded: dict, collection: str, vector_name: str,
                      watch: Stopwatch, verdict: checks.Verdict) -> dict:  # fmt: skip
    return {
        "objects": len(objects),
        "by_origin": dg.MetadataValue.json(objects["origin"].value_counts().to_dict()),
        "by_class": dg.MetadataValue.json(objects["category"].value_counts().to_dict()),
        "broken_boxes": int((objects["problem"] != "").sum()),
        **embedded,
        "collection": collection,
        "vector_name": vector_name,
        "timings": dg.MetadataValue.json(watch.rounded()),
        "table": dg.MetadataValue.path(store.uri(verdict.key)),
        "published": verdict.published,
    }


def selectable_objects(store: ObjectStore) -> pd.DataFrame:
    """Embedded boxes that may steer a selection: not broken, not flagged by object_outliers."""
    if not store.exists(layout.table_key(EMBEDDINGS)):
        raise dg.Failure("object_diversity needs boxes: materialize object_embeddings (job curate_objects) "
                         "with labeled sources or a predictions table first", allow_retries=False)  # fmt: skip
    objects = store.read_table(layout.table_key(EMBEDDINGS))
    objects = objects[objects["problem"] == ""]
    if store.exists(layout.table_key(OUTLIERS)):
        flags = store.read_table(layout.table_key(OUTLIERS))
        objects = objects[~objects["object_id"].isin(flags.loc[flags["is_outlier"], "object_id"])]
    return objects.reset_index(drop=True)


class ObjectOutlierConfig(dg.Config):
    neighbors: int = Field(default=ObjectOutlierParams.neighbors, description="Crops that vote on what a crop shows.")
    other_class_share: float = Field(
        default=ObjectOutlierParams.other_class_share,
        description="This share of a crop's nearest crops with one other label (none its own): 'looks like'.",
    )
    isolation_z: float = Field(
        default=ObjectOutlierParams.isolation_z, description="Robust z-score of the distance to its own class."
    )
    duplicate_cosine: float = Field(
        default=ObjectOutlierParams.duplicate_cosine, description="Crops this similar (same label): one object."
    )
    max_flagged_fraction: float = Field(default=0.1, description="Above this share flagged, a WARN check fails.")


def flagged_sheet(store: ObjectStore, table: pd.DataFrame, per_reason: int = 6) -> bytes:
    """The most certain flags of each reason, cropped from their frames, each with its label
    and why (a broken box shows its whole frame)."""
    flagged = table[table["is_outlier"]].sort_values("score", ascending=False)
    kind = flagged["reason"].str.split(":").str[0].str.split(" in ").str[0].str.split(" like ").str[0]
    shown = flagged.groupby(kind, sort=False).head(per_reason)
    tiles = []
    for r in shown.itertuples():
        image = Image.open(io.BytesIO(store.get_bytes(store.key_for_uri(r.uri)))).convert("RGB")
        if r.problem:  # the whole frame: a broken box has nothing to crop
            tiles.append((image, f"{r.category}\nbroken box"))
        else:
            tiles.append((crop(image, r.x, r.y, r.w, r.h), f"{r.category}\n{r.reason}"))
    title = f"{len(flagged)} of {len(table)} boxes flagged (label, then why); the most certain of each kind"
    return captioned_sheet(title, None, tiles)


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["object_embeddings"],
    group_name="objects",
    kinds={"numpy", "parquet"},
    check_specs=[
        checks.blocking(
            "object_outliers_every_object_scored",
            OUTLIERS,
            "one row per box, unique ids, each in one duplicate group (GX)",
        ),  # fmt: skip
        checks.warning("object_outliers_flagged_fraction", OUTLIERS, "flagged share under the configured ceiling"),
    ],
)
@transient_only
def object_outliers(
    context: dg.AssetExecutionContext,
    config: ObjectOutlierConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Boxes that do not fit their label (their nearest crops carry another class), crops far
    from their whole class, boxes with no area, and crops of one object seen again."""
    store = object_store.store()
    if not store.exists(layout.table_key(EMBEDDINGS)):
        raise dg.Failure("no object embeddings yet: materialize object_embeddings first", allow_retries=False)
    objects = store.read_table(layout.table_key(EMBEDDINGS))
    params = ObjectOutlierParams(neighbors=config.neighbors, other_class_share=config.other_class_share,
                                 isolation_z=config.isolation_z, duplicate_cosine=config.duplicate_cosine)  # fmt: skip
    table = object_outlier_table(objects, params)
    validation = expectations.validate(table, OUTLIERS, suites.object_outliers(list(objects["object_id"])))
    fraction = float(table["is_outlier"].mean()) if len(table) else 0.0
    results = [
        checks.from_validation("object_outliers_every_object_scored", validation, objects=len(table)),
        checks.from_assertion(
            "object_outliers_flagged_fraction",
            fraction <= config.max_flagged_fraction,
            severity=dg.AssetCheckSeverity.WARN,
            flagged_fraction=round(fraction, 4),
            ceiling=config.max_flagged_fraction,
        ),  # fmt: skip
    ]
    verdict = checks.publish(store, results, OUTLIERS, table=table)
    reasons = table.loc[table["is_outlier"], "reason"].str.split(":").str[0].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "objects": len(table),
            "flagged": int(table["is_outlier"].sum()),
            "flagged_fraction": round(fraction, 4),
            "reasons": dg.MetadataValue.json(reasons),
            "duplicate_groups": int(table["is_representative"].sum()),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
            **png_metadata(store, "flagged_objects", flagged_sheet(store, table), f"{OUTLIERS}.png"),
        },
        check_results=results,
    )
