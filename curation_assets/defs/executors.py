"""Which executor runs the steps: chosen by CURATION_EXECUTOR, same definitions everywhere."""

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
    """``multiprocess`` (Dagster's default), ``in_process``, or ``k8s`` (one pod per step)."""
    kind = env.get("CURATION_EXECUTOR", "multiprocess")
    if kind == "multiprocess":
        return None
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(
            {"max_concurrent": int(env.get("CURATION_K8S_MAX_CONCURRENT", "8")), "step_k8s_config": {}}
        )
    raise ValueError(f"CURATION_EXECUTOR={kind!r}: use multiprocess, in_process or k8s")
