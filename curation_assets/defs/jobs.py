"""Every job of the code location, in one place; ``jobs_for`` names them for one fleet."""

import dagster as dg

from curation_assets.defs.fleet import Fleet, op_copy, partitions
from curation_assets.defs.partitions import labeling_rounds, videos
from curation_assets.defs.search import search_frames

# name -> (assets, partitions, description)
ASSET_JOBS = {
    "ingest_video": (
        ["raw_frames", "source_labels", "frame_embeddings"],
        videos,
        "Frames (and a labeled dataset's own labels) and embeddings for one landing source.",
    ),
    "curate": (
        ["duplicate_groups", "outliers", "dataset_audit"],
        None,
        "Duplicates, outliers and labeled-dataset audits over all sources.",
    ),
    "draw_map": (
        ["embedding_map"],
        None,
        "The 2-D embedding map (UMAP), coloured by camera, group size, outlier reason and round.",
    ),
    "merge_datasets": (
        ["merged_dataset"],
        None,
        "Labeled sources as one COCO dataset (config: sources, category_map, name).",
    ),
    "curate_objects": (
        ["object_embeddings", "object_outliers"],
        None,
        "Every labeled or predicted box cropped and embedded; box outliers and duplicates (config: predictions).",
    ),
    "labeling_round": (
        ["selected_batch"],
        labeling_rounds,
        "Select and export one labeling round (config: budget, strategy, seed).",
    ),
    "import_labels": (["labeled_set"], None, "Import annotations, split, version."),
}


def jobs_for(fleet: Fleet, executor: dg.ExecutorDefinition | None = None) -> list:
    """The fleet's jobs: its assets only, its partitions, its executor (None: the location's)."""
    jobs = [
        dg.define_asset_job(
            fleet.name(name),
            selection=dg.AssetSelection.assets(*(fleet.key(asset) for asset in assets)),
            partitions_def=partitions(fleet, partitions_def),
            description=description,
            executor_def=executor,
        )
        for name, (assets, partitions_def, description) in ASSET_JOBS.items()
    ]
    search = search_frames
    if fleet.prefix or fleet.pools or fleet.step_defaults.get("similarity_search") or executor:
        op = op_copy(search_frames.graph.node_defs[0], fleet)
        search = dg.GraphDefinition(name=fleet.name(search_frames.name), node_defs=[op]).to_job(
            description=search_frames.description, executor_def=executor
        )
    return [*jobs, search]


JOBS = jobs_for(Fleet())
ingest_video_job = JOBS[0]
