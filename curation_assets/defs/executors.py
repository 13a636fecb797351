"""Which executor runs the steps: the component's ``executor`` (CURATION_EXECUTOR here)."""

import os
from collections.abc import Mapping

import dagster as dg

# frame_embeddings asks Kubernetes for a GPU node; ignored by every other executor.
GPU_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
    }
}


def executor_from_env(env: Mapping[str, str] = os.environ) -> dg.ExecutorDefinition | None:
    """The executor ``CURATION_EXECUTOR`` chooses (see ``VideoCuration.executor_def``)."""
    from curation_assets.location import component

    return component(env).executor_def()
