"""The code location: every asset, check, sensor and job, with resources from the environment."""

import dagster as dg

from curation_assets.allocator import keep_frame_buffers
from curation_assets.defs.audit import dataset_audit
from curation_assets.defs.curation import duplicate_groups, outliers
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.executors import executor_from_env
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.jobs import JOBS
from curation_assets.defs.labeled_set import labeled_set
from curation_assets.defs.maps import embedding_map
from curation_assets.defs.merge import merged_dataset
from curation_assets.defs.objects import object_embeddings, object_outliers
from curation_assets.defs.selected_batch import selected_batch
from curation_assets.defs.sensors import SENSORS
from curation_assets.defs.settings import adaptation_enabled, resources_from_env

ASSETS = [raw_frames, frame_embeddings, duplicate_groups, outliers, embedding_map, dataset_audit, merged_dataset,
          object_embeddings, object_outliers, selected_batch, labeled_set]  # fmt: skip


def optional_assets(adaptation: bool) -> list:
    """Assets off by default: embedder_adaptation (CURATION_ADAPTATION=1, the ssl extra)."""
    if not adaptation:
        return []
    from curation_assets.defs.adaptation import embedder_adaptation

    return [embedder_adaptation]


def build_defs(
    resources: dict, executor: dg.ExecutorDefinition | None = None, adaptation: bool = False
) -> dg.Definitions:
    """The same graph with other resources (tests bind temporary folders and a moto S3)."""
    return dg.Definitions(
        assets=ASSETS + optional_assets(adaptation),
        jobs=JOBS,
        sensors=SENSORS,
        resources=resources,
        executor=executor,
    )


keep_frame_buffers()  # every process that loads the code location: the UI's step processes too
defs = build_defs(resources_from_env(), executor_from_env(), adaptation_enabled())
