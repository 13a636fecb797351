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
    """``in_process`` (default), ``multiprocess`` (Dagster's default), or ``k8s`` (one pod per step).

    Every run of this graph is a chain (raw_frames -> frame_embeddings for a video;
    duplicate_groups -> outliers -> audit), so a process per step buys no parallelism and
    costs each step a process start and its own imports: 1.9 s start-up plus Great
    Expectations' 2.5 s import per step under ``dagster dev`` (bench/ui_path.py). Videos
    still run in parallel: each is its own run. The model runs in its own process anyway.
    """
    kind = env.get("CURATION_EXECUTOR", "in_process")
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
