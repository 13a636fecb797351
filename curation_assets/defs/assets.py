"""The template graph: every asset of one fleet, under the plain names (see defs/fleet.py)."""

from curation_assets.defs.audit import dataset_audit
from curation_assets.defs.curation import duplicate_groups, outliers
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.labeled_set import labeled_set
from curation_assets.defs.maps import embedding_map
from curation_assets.defs.merge import merged_dataset
from curation_assets.defs.objects import object_embeddings, object_outliers
from curation_assets.defs.selected_batch import selected_batch

ASSETS = [raw_frames, frame_embeddings, duplicate_groups, outliers, embedding_map, dataset_audit, merged_dataset,
          object_embeddings, object_outliers, selected_batch, labeled_set]  # fmt: skip


def optional_assets(adaptation: bool) -> list:
    """Assets off by default: embedder_adaptation (the component's ``adaptation``; the ssl extra)."""
    if not adaptation:
        return []
    from curation_assets.defs.adaptation import embedder_adaptation

    return [embedder_adaptation]
