"""A run launcher that knows when a run's process is gone.

Dagster's DefaultRunLauncher starts each run in a process of the user-code gRPC server and
cannot tell afterwards whether that process still lives: a code server restarted or killed
mid-run leaves its runs STARTED forever. This one answers the daemon's run monitoring: a
run is lost when the server that launched it no longer runs it *and* the run has been
silent for a while (a reloaded server's previous process may still be finishing it; our
long steps log progress every few seconds). A lost run is failed with that reason, and the
sensor retries its video. Named in docker/dagster.yaml.
"""

from __future__ import annotations

import json
import time

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster_shared.serdes import deserialize_value

LOST_AFTER_S = 60.0  # default: a run the server does not know is lost once it has said nothing this long


class CodeServerRunLauncher(dg.DefaultRunLauncher):
    def __init__(self, inst_data=None, lost_after_seconds: float = LOST_AFTER_S):
        super().__init__(inst_data=inst_data)
        self.lost_after_seconds = lost_after_seconds

    @classmethod
    def config_type(cls):
        return {"lost_after_seconds": dg.Field(float, is_required=False, default_value=LOST_AFTER_S)}

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        info = json.loads(run.tags.get(GRPC_INFO_TAG, "null"))
        if not info:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not launched through a gRPC server")
        where = f"{info['host']}:{info.get('port') or info.get('socket')}"
        client = DagsterGrpcClient(
            host=info["host"], port=info.get("port"), socket=info.get("socket"), use_ssl=bool(info.get("use_ssl"))
        )
        try:
            answer = client.can_cancel_execution(CanCancelExecutionRequest(run_id=run.run_id), timeout=10)
            running_there = deserialize_value(answer, CanCancelExecutionResult).can_cancel
        except Exception as exc:  # noqa: BLE001 - a server that is restarting: asked again next time
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"code server {where} unreachable ({type(exc).__name__})")
        if running_there:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        silent = time.time() - self._last_event_time(run.run_id)
        if silent < self.lost_after_seconds:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"not known to {where}, but spoke {silent:.0f} s ago")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the code server at {where} is not running this run and it has been silent for {silent:.0f} s: "
            "its process was lost (the code server was restarted or killed mid-run)",
        )

    def _last_event_time(self, run_id: str) -> float:
        records = self._instance.get_records_for_run(run_id, limit=1, ascending=False).records
        return records[0].event_log_entry.timestamp if records else 0.0
