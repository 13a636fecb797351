"""Every job of the code location, in one place."""

import dagster as dg

from curation_assets.defs.partitions import labeling_rounds, videos
from curation_assets.defs.search import search_frames

ingest_video_job = dg.define_asset_job(
    "ingest_video",
    selection=dg.AssetSelection.assets("raw_frames", "source_labels", "frame_embeddings"),
    partitions_def=videos,
    description="Frames (and a labeled dataset's own labels) and embeddings for one landing source.",
)
curate_job = dg.define_asset_job(
    "curate",
    selection=dg.AssetSelection.assets("duplicate_groups", "outliers", "dataset_audit"),
    description="Duplicates, outliers and labeled-dataset audits over all sources.",
)
rebuild_curation_job = dg.define_asset_job(
    "rebuild_curation",
    selection=dg.AssetSelection.assets("duplicate_groups", "outliers"),
    config={
        "ops": {"duplicate_groups": {"config": {"incremental": False}}, "outliers": {"config": {"incremental": False}}}
    },  # fmt: skip
    description="Every duplicate group and outlier flag from scratch: after a model or threshold change, and to "
    "refresh stored frames' isolation (curate adds new sources alone).",
)
labeling_round_job = dg.define_asset_job(
    "labeling_round",
    selection=dg.AssetSelection.assets("selected_batch"),
    partitions_def=labeling_rounds,
    description="Select and export one labeling round (config: budget, strategy, seed).",
)
map_job = dg.define_asset_job(
    "draw_map",
    selection=dg.AssetSelection.assets("embedding_map"),
    description="The 2-D embedding map (UMAP), coloured by camera, group size, outlier reason and round.",
)
merge_job = dg.define_asset_job(
    "merge_datasets",
    selection=dg.AssetSelection.assets("merged_dataset"),
    description="Labeled sources as one COCO dataset (config: sources, category_map, name).",
)
objects_job = dg.define_asset_job(
    "curate_objects",
    selection=dg.AssetSelection.assets("object_embeddings", "object_outliers"),
    description="Every labeled or predicted box cropped and embedded; box outliers and duplicates "
    "(config: predictions).",
)
import_labels_job = dg.define_asset_job(
    "import_labels",
    selection=dg.AssetSelection.assets("labeled_set"),
    description="Import annotations, split, version.",
)

JOBS = [
    ingest_video_job,
    curate_job,
    rebuild_curation_job,
    map_job,
    merge_job,
    objects_job,
    labeling_round_job,
    import_labels_job,
    search_frames,
]
