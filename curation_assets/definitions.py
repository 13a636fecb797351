"""The code location: every asset, check, sensor and job, with resources from the environment."""

import dagster as dg

from curation_assets.allocator import keep_frame_buffers
from curation_assets.defs.audit import dataset_audit
from curation_assets.defs.curation import duplicate_groups, outliers
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.executors import executor_from_env
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.labeling import labeled_set
from curation_assets.defs.partitions import labeling_rounds
from curation_assets.defs.resources import resources_from_env
from curation_assets.defs.selection import selected_batch
from curation_assets.defs.sensors import ingest_video_job, new_video_sensor

ASSETS = [raw_frames, frame_embeddings, duplicate_groups, outliers, dataset_audit, selected_batch, labeled_set]

curate_job = dg.define_asset_job(
    "curate",
    selection=dg.AssetSelection.assets(duplicate_groups, outliers, dataset_audit),
    description="Duplicates, outliers and labeled-dataset audits over all sources.",
)
labeling_round_job = dg.define_asset_job(
    "labeling_round",
    selection=dg.AssetSelection.assets(selected_batch),
    partitions_def=labeling_rounds,
    description="Select and export one labeling round (config: budget, strategy, seed).",
)
import_labels_job = dg.define_asset_job(
    "import_labels", selection=dg.AssetSelection.assets(labeled_set), description="Import annotations, split, version."
)

automation_sensor = dg.AutomationConditionSensorDefinition(
    "curation_automation",
    target=dg.AssetSelection.assets(duplicate_groups, outliers, dataset_audit),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,  # a new video's groups follow its embeddings within seconds
)


def build_defs(resources: dict, executor: dg.ExecutorDefinition | None = None) -> dg.Definitions:
    """The same graph with other resources (tests bind temporary folders and a moto S3)."""
    return dg.Definitions(
        assets=ASSETS,
        jobs=[ingest_video_job, curate_job, labeling_round_job, import_labels_job],
        sensors=[new_video_sensor, automation_sensor],
        resources=resources,
        executor=executor,
    )


keep_frame_buffers()  # every process that loads the code location: the UI's step processes too
defs = build_defs(resources_from_env(), executor_from_env())
