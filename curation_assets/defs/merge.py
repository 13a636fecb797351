"""merged_dataset: several labeled sources as one COCO dataset, with a category mapping.

Collecting public datasets into one common format before labeling the rest: the sources
(any format core/label_formats.py reads) become one COCO file per split, categories renamed
or dropped by the mapping, an image that several sources share (one duplicate group) kept
once, and the provenance of every image and label kept beside it. Versioned like every
dataset (defs/versions.py); the sources are never touched.
"""

import json

import dagster as dg
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.datasets import class_balance, merge_sources
from curation_assets.core.ids import video_id_of
from curation_assets.core.labels import coco_dataset
from curation_assets.defs import checks
from curation_assets.defs.audit import landing_uri
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import content_sha256, publish_dataset_files
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource

ASSET = "merged_dataset"


class MergeConfig(dg.Config):
    sources: list[str] = Field(
        default=[], description="Labeled sources (partition keys), first kept on a tie; [] = all."
    )
    category_map: dict[str, str] = Field(
        default={}, description="Source category -> target category; '' drops it; unmapped keep their name."
    )
    name: str = Field(default="merged", description="Folder name prefix under datasets/.")


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["raw_frames", "source_labels", "duplicate_groups", "dataset_audit"],
    group_name="datasets",
    kinds={"coco", "parquet"},
    check_specs=[
        checks.blocking(
            "merged_dataset_accounts_for_everything", ASSET, "images in = images out + drops; each image once (GX)"
        )
    ],
)
@transient_only
def merged_dataset(
    context: dg.AssetExecutionContext,
    config: MergeConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Merge labeled sources into one COCO dataset under ``datasets/<name>-<hash>/``."""
    store = object_store.store()
    labels = store.read_tables(layout.table_prefix("source_labels"))
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    if labels is None or frames is None:
        raise dg.Failure("no labeled source has been ingested yet", allow_retries=False)
    labeled = sorted(set(labels["frame_id"].map(video_id_of)))
    sources = config.sources or labeled
    unknown = sorted(set(sources) - set(labeled))
    if unknown:
        raise dg.Failure(f"not labeled sources: {unknown}; labeled sources are {labeled}", allow_retries=False)
    groups = store.read_table(layout.table_key("duplicate_groups"))
    images, merged, drops = merge_sources(frames, labels, groups, sources, config.category_map)
    images_in = int(frames["video_id"].isin(sources).sum())
    image_drops = drops[drops["kind"] == "image"]
    expected = suites.merged_images(images_in - len(image_drops))
    validation = expectations.validate(images[["frame_id", "group_id"]], ASSET, expected, "frame_id")
    results = [checks.from_validation("merged_dataset_accounts_for_everything", validation)]
    landing = object_store.landing_store()
    images = images.assign(uri=[landing_uri(landing, name) for name in images["source_name"]])
    categories = sorted(merged["category"].unique())
    files = {
        f"{split or 'all'}.json": json.dumps(
            coco_dataset(images[images["split"] == split], merged, categories), indent=1, sort_keys=True
        ).encode()
        for split in sorted(images["split"].unique())
    }
    provenance = {
        "images": images[["frame_id", "source", "source_name", "split"]].to_dict("records"),
        "labels": merged[["frame_id", "category", "source_category"]].to_dict("records"),
        "drops": drops.to_dict("records"),
    }
    files["provenance.json"] = json.dumps(provenance, indent=1).encode()
    folder = f"{config.name}-{content_sha256(files)[:10]}"
    counts = {
        "sources": sources,
        "images_in": images_in,
        "images_out": len(images),
        "images_dropped": {k: int(v) for k, v in image_drops["reason"].str.split(" of ").str[0].value_counts().items()},
        "labels_in": int(labels["frame_id"].isin(frames.loc[frames["video_id"].isin(sources), "frame_id"]).sum()),
        "labels_out": len(merged),
        "labels_dropped_by_map": int((drops["kind"] == "label").sum()),
        "labels_of_dropped_images": int(labels["frame_id"].isin(image_drops["frame_id"]).sum()),
        "category_map": config.category_map,
    }
    verdict = checks.publish(
        store,
        results,
        ASSET,
        config.name,
        images[["frame_id", "source", "source_name", "split", "group_id", "uri"]],
        first=lambda: publish_dataset_files(store, folder, files, counts),
    )
    context.log.info(f"merged {len(sources)} sources: {images_in} images in, {len(images)} out")
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in counts.items()},
            "class_balance": dg.MetadataValue.json(class_balance(merged, images)),
            "dataset": dg.MetadataValue.path(store.uri(layout.dataset_key(folder, ""))),
            "drop_examples": dg.MetadataValue.json(drops.head(20).to_dict("records")),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
        },
        check_results=results,
    )
