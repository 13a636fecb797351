"""merged_dataset: several labeled sources as one COCO dataset, with a category mapping.

Collecting public datasets into one common format before labeling the rest: the sources
(any format core/label_formats.py reads) become one COCO file per split, categories renamed
or dropped by the mapping, an image that several sources share (one duplicate group) kept
once, and the provenance of every image and label kept beside it. Versioned like every
dataset (defs/versions.py); the sources are never touched.
"""

from functools import partial

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.datasets import class_balance, content_sha256, merge_counts, merge_sources, merged_files
from curation_assets.core.ids import video_id_of
from curation_assets.defs import checks
from curation_assets.defs.audit import landing_uri
from curation_assets.defs.curation import read_groups
from curation_assets.defs.retries import TRANSIENT, transient_only
from curation_assets.defs.versions import publish_dataset_files
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore

ASSET = "merged_dataset"


class MergeConfig(dg.Config):
    sources: list[str] = Field(
        default=[], description="Labeled sources (partition keys), first kept on a tie; [] = all."
    )
    category_map: dict[str, str] = Field(
        default={}, description="Source category -> target category; '' drops it; unmapped keep their name."
    )
    name: str = Field(default="merged", description="Folder name prefix under datasets/.")


def _labeled_sources(store: ObjectStore, wanted: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Every published frame and source label, and the labeled sources to merge (``wanted``, or all)."""
    labels = store.read_tables(layout.table_prefix("source_labels"))
    frames = store.read_tables(layout.table_prefix("raw_frames"))
    if labels is None or frames is None:
        raise dg.Failure("no labeled source has been ingested yet", allow_retries=False)
    labeled = sorted(set(labels["frame_id"].map(video_id_of)))
    sources = wanted or labeled
    unknown = sorted(set(sources) - set(labeled))
    if unknown:
        raise dg.Failure(f"not labeled sources: {unknown}; labeled sources are {labeled}", allow_retries=False)
    return frames, labels, sources


@dg.asset(
    retry_policy=TRANSIENT,
    deps=["raw_frames", "source_labels", "duplicate_groups"],  # what it reads
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
    frames, labels, sources = _labeled_sources(store, config.sources)
    merged = merge_sources(frames, labels, read_groups(store), sources, config.category_map)
    images, merged_labels, drops = merged
    counts = merge_counts(frames, labels, sources, merged, config.category_map)
    expected = suites.merged_images(counts["images_in"] - int((drops["kind"] == "image").sum()))
    validation = expectations.validate(images[["frame_id", "group_id"]], ASSET, expected, "frame_id")
    results = [checks.from_validation("merged_dataset_accounts_for_everything", validation)]
    landing = object_store.landing_store()
    images = images.assign(uri=[landing_uri(landing, name) for name in images["source_name"]])
    files = merged_files(images, merged_labels, drops)
    folder = f"{config.name}-{content_sha256(files)[:10]}"
    table = images[["frame_id", "source", "source_name", "split", "group_id", "uri"]]
    write_dataset = partial(publish_dataset_files, store, folder, files, counts)
    verdict = checks.publish(store, results, ASSET, config.name, table, first=write_dataset)
    context.log.info(f"merged {len(sources)} sources: {counts['images_in']} images in, {len(images)} out")
    return dg.MaterializeResult(
        metadata={
            **{k: dg.MetadataValue.json(v) if isinstance(v, dict | list) else v for k, v in counts.items()},
            "class_balance": dg.MetadataValue.json(class_balance(merged_labels, images)),
            "dataset": dg.MetadataValue.path(store.uri(layout.dataset_key(folder, ""))),
            "drop_examples": dg.MetadataValue.json(drops.head(20).to_dict("records")),
            "table": dg.MetadataValue.path(store.uri(verdict.key)),
            "published": verdict.published,
        },
        check_results=results,
    )
