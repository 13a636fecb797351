"""Run the whole graph without the UI: the sensor, every per-video run, curation, a round.

Uses the same Definitions, checks and instance as the UI (runs made here show up there),
executing each run in process. The demo and CI drive the pipeline through this module.
"""

import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field

import dagster as dg

from curation_assets.defs.jobs import OWNER_TAG
from curation_assets.defs.partitions import labeling_rounds, videos
from curation_assets.defs.sensors import IN_FLIGHT, MAX_RUNS_PER_TICK, SOURCE_TAG, load_cursor, plan_ingest

CURSOR_KEY = "curation/headless/new_video_sensor"


@dataclass
class RunOutcome:
    name: str
    success: bool
    error: str | None = None
    checks: dict[str, str] = field(default_factory=dict)  # check name -> passed / failed / WARN
    metadata: dict[str, dict] = field(default_factory=dict)  # asset -> materialization metadata
    seconds: float | None = None  # the whole run, Dagster's own work included
    steps: dict[str, dict] = field(default_factory=dict)  # step -> wall seconds and its stages' seconds


def _failure_message(result: dg.ExecuteInProcessResult) -> str | None:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            if data.user_failure_data and data.user_failure_data.description:
                return data.user_failure_data.description
            if data.error and data.error.message.startswith(RETRIES_EXHAUSTED) and data.error.cause:
                # Dagster's own words name no cause: the last attempt's exception does
                gave_up = data.error.message.strip()
                return f"{_last_line(data.error.cause.message)} ({gave_up[0].lower()}{gave_up[1:]})"
            return _last_line(data.error.message) if data.error else "step failed"
    return None


RETRIES_EXHAUSTED = "Exceeded max_retries"


def _last_line(message: str) -> str:
    """An error's last line, without the exception's module path (``pkg.mod.Error: x`` -> ``Error: x``)."""
    line = message.strip().splitlines()[-1] if message.strip() else "step failed"
    name, sep, rest = line.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}{sep}{rest}" if sep and " " not in name else line


def failed_outside_runs(name: str, exc: BaseException) -> RunOutcome:
    """A stage that failed before or between its runs (e.g. the landing zone could not be
    listed): its cause, as a run's would be."""
    cause = str(exc) if isinstance(exc, OSError | ValueError) and str(exc) else f"{type(exc).__name__}: {exc}"
    return RunOutcome(name, False, cause[:2000])


STEP_ENDS = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)


def step_timings(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    """Each step's wall time (start to success or failure, from the event log), the stage
    timings its asset reported, and its process start-up where a step has its own process."""
    worker, started, steps, reported = {}, {}, {}, {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        key = event.step_key
        if event.event_type == dg.DagsterEventType.STEP_WORKER_STARTING:
            worker[key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_START:
            started[key] = entry.timestamp
        elif event.event_type in STEP_ENDS and key in started:
            steps[key] = {"wall_s": round(entry.timestamp - started[key], 3)}
            if key in worker:
                steps[key]["process start-up"] = round(started[key] - worker[key], 3)
        elif event.is_step_materialization:
            metadata = event.step_materialization_data.materialization.metadata
            if "timings" in metadata:
                reported[key] = metadata["timings"].value
    return {key: {**step, **reported.get(key, {})} for key, step in steps.items()}


def outcome(
    name: str,
    result: dg.ExecuteInProcessResult,
    seconds: float | None = None,
    instance: dg.DagsterInstance | None = None,
) -> RunOutcome:
    checks = {}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            verdict = "passed"
        else:
            verdict = "WARN" if evaluation.severity == dg.AssetCheckSeverity.WARN else "FAILED"
        checks[evaluation.check_name] = verdict
    metadata = {}
    for event in result.get_asset_materialization_events():
        mat = event.step_materialization_data.materialization
        metadata[mat.asset_key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()}
    error = None if result.success else _failure_message(result)
    steps = step_timings(instance, result.run_id) if instance is not None else {}
    return RunOutcome(name, result.success, error, checks, metadata, seconds, steps)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived: the run in progress was finished, no other starts."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGTERM and SIGINT, seen even while Dagster holds the handlers: during an in-process run
    it captures both and carries on, so the command would go on to the next run. The
    interpreter writes every signal's number to a wakeup pipe whoever handles it; ``check``
    reads it between runs."""

    def __init__(self) -> None:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def received(self) -> int | None:
        """The first stop signal that arrived since the last look, if any."""
        try:
            data = os.read(self._read, 256)
        except BlockingIOError:
            return None
        stops = [s for s in data if s in (signal.SIGTERM, signal.SIGINT)]
        return stops[0] if stops else None

    def check(self) -> None:
        if (signum := self.received()) is not None:
            raise Interrupted(signum)


STOP: StopSignals | None = None  # set by the command line; tests and the demo run without


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job_name: str,
    partition_key: str | None = None,
    run_config: dict | None = None,
    tags: dict | None = None,
    log_level: str = "CRITICAL",
) -> dg.ExecuteInProcessResult:
    config = {"loggers": {"console": {"config": {"log_level": log_level}}}, **(run_config or {})}
    if STOP:
        STOP.check()
    result = defs.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config=config,
        tags={**_owner(), **(tags or {})},
        raise_on_error=False,
    )
    if STOP:
        STOP.check()
    return result


def ingest_landing(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    log=print,
    max_runs_per_tick: int = MAX_RUNS_PER_TICK,
    outcomes: list[RunOutcome] | None = None,
) -> list[RunOutcome]:
    """Ingest every landing source not yet ingested successfully, as the sensor would (planning
    at most ``max_runs_per_tick`` at a time), and retry what failed or died before: each
    command tries each source once. Each run's outcome is appended to ``outcomes`` as it ends
    (so a caller stopped half-way still holds those)."""
    release_dead_runs(instance, log)
    outcomes = [] if outcomes is None else outcomes
    attempted = set()
    # the cursor lives in the instance's key-value store, so a second command skips what the
    # first ingested, as the daemon-run sensor would
    cursor = load_cursor(instance.run_storage.get_cursor_values({CURSOR_KEY}).get(CURSOR_KEY))
    landing = defs.resources["object_store"].landing_store()
    while True:
        requests, new_keys, cursor = plan_ingest(
            instance, landing, cursor, max_failed=None, skip=attempted, log=log, max_runs=max_runs_per_tick
        )
        if new_keys:
            instance.add_dynamic_partitions(videos.name, new_keys)
        if requests and not attempted:  # the model loads while the first source is read
            defs.resources["embedder"].warm_up()
        for request in requests:
            attempted.add(request.tags[SOURCE_TAG])
            log(f"ingesting {request.tags.get('curation/landing_key', request.partition_key)}")
            started = time.perf_counter()
            res = run_job(defs, instance, "ingest_video", request.partition_key, tags=request.tags)
            outcomes.append(outcome(request.partition_key, res, time.perf_counter() - started, instance))
        instance.run_storage.set_cursor_values({CURSOR_KEY: json.dumps(cursor, sort_keys=True)})
        if not requests:
            return outcomes


def _owner() -> dict[str, str]:
    return {OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}"}


def release_dead_runs(instance: dg.DagsterInstance, log=print) -> list[str]:
    """Mark runs whose headless process is gone (killed, crashed) as failed and free their pool
    slots, so they neither wedge later runs nor count as in flight. Daemon-launched runs are
    left to Dagster's run monitoring."""
    released = []
    host = socket.gethostname()
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_FLIGHT))):
        run = record.dagster_run
        owner_host, _, pid = run.tags.get(OWNER_TAG, "").partition(":")
        if owner_host != host or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        instance.report_run_failed(run, f"its process ({pid}) is gone: killed or crashed")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        released.append(run.run_id)
        log(f"released run {run.run_id[:8]} of a process that is gone")
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_round(
    defs: dg.Definitions, instance: dg.DagsterInstance, round_id: str, budget: int, strategy: str, seed: int = 0
) -> RunOutcome:
    if not instance.has_dynamic_partition(labeling_rounds.name, round_id):
        instance.add_dynamic_partitions(labeling_rounds.name, [round_id])
    config = {"ops": {"selected_batch": {"config": {"budget": budget, "strategy": strategy, "seed": seed}}}}
    return timed_run(defs, instance, round_id, "labeling_round", round_id, run_config=config)


def timed_run(
    defs: dg.Definitions, instance: dg.DagsterInstance, name: str, job_name: str, partition_key=None, **kwargs
) -> RunOutcome:
    """Run a job and tell how it went, with its timings."""
    started = time.perf_counter()
    result = run_job(defs, instance, job_name, partition_key, **kwargs)
    return outcome(name, result, time.perf_counter() - started, instance)


# (label, asset, metadata key) of the figures every summary reports
FIGURES = (
    ("frames", "duplicate_groups", "frames"),
    ("duplicate groups", "duplicate_groups", "groups"),
    ("duplicate frames", "duplicate_groups", "duplicate_frames"),
    ("outliers", "outliers", "outliers"),
    ("boxes", "object_embeddings", "objects"),
    ("box outliers", "object_outliers", "flagged"),
    ("selected", "selected_batch", "selected"),
    ("labeled frames", "labeled_set", "labeled_frames"),
    ("annotations accepted", "labeled_set", "annotations_accepted"),
    ("annotations rejected", "labeled_set", "annotations_rejected"),
    ("label conflicts", "labeled_set", "label_conflicts"),
    ("dataset version", "labeled_set", "dataset_version"),
)


def timings(videos: list[RunOutcome], stages: list[RunOutcome], startup_s: float | None) -> dict:
    """Where the command's time went: start-up, then each run's steps and Dagster's share of it."""
    runs = []
    for o in [*videos, *stages]:
        if o.seconds is None:
            continue
        in_steps = sum(step["wall_s"] for step in o.steps.values())
        runs.append({"run": o.name, "wall_s": round(o.seconds, 3), "dagster_s": round(max(o.seconds - in_steps, 0), 3),
                     "steps": o.steps})  # fmt: skip
    return {"startup_s": None if startup_s is None else round(startup_s, 3), "runs": runs}


def summarize(
    videos: list[RunOutcome], stages: list[RunOutcome], elapsed_s: float, startup_s: float | None = None
) -> dict:
    """Everything a person (or a scheduler) needs to judge a headless run, as plain JSON."""
    metadata: dict[str, dict] = {}
    for o in [*videos, *stages]:
        for asset, values in o.metadata.items():
            metadata.setdefault(asset, values)
    embedder = metadata.get("frame_embeddings", {})
    verdicts: dict[str, dict[str, int]] = {}
    for o in [*videos, *stages]:
        for check, verdict in o.checks.items():
            verdicts.setdefault(check, {}).setdefault(verdict, 0)
            verdicts[check][verdict] += 1
    return {
        "elapsed_s": round(elapsed_s, 1),
        "videos": [
            {
                "partition": v.name,
                "success": v.success,
                "error": v.error,
                "frames": v.metadata.get("raw_frames", {}).get("frames"),
            }
            for v in videos
        ],
        "stages": [{"name": o.name, "success": o.success, "error": o.error} for o in stages],
        "embedder": {k: embedder.get(f"embedder_{k}") for k in ("model", "weights", "random_init", "device")},
        "figures": {
            **{label: _plain(metadata.get(asset, {}).get(key)) for label, asset, key in FIGURES[:1]},
            "frames through model": _sum_over(videos, "frame_embeddings", "frames_embedded"),
            "copies, vector reused": _sum_over(videos, "frame_embeddings", "frames_reused_copies"),
            **{label: _plain(metadata.get(asset, {}).get(key)) for label, asset, key in FIGURES[1:]},
        },
        "checks": verdicts,
        "blocking_checks_failed": sorted(c for c, counts in verdicts.items() if counts.get("FAILED")),
        "timings": timings(videos, stages, startup_s),
        # each step's own stages and, for curation, what it did (incremental, unchanged, rebuild)
        "steps": {
            asset: {k: values[k] for k in ("mode", "timings", "payload_points_written") if k in values}
            for o in stages
            for asset, values in o.metadata.items()
            if "timings" in values or "mode" in values
        },
    }


def _sum_over(outcomes: list[RunOutcome], asset: str, key: str) -> int | None:
    values = [o.metadata[asset][key] for o in outcomes if key in o.metadata.get(asset, {})]
    return int(sum(values)) if values else None


def _plain(value):
    return value if value is None or isinstance(value, int | float | str | bool) else str(value)


def format_summary(summary: dict) -> str:
    lines = ["", "=== videos ==="]
    for v in summary["videos"]:
        ok_line, failed_line = (
            f"  ok      {v['partition']}: {v['frames']} frames",
            f"  FAILED  {v['partition']}: {v['error']}",
        )
        lines.append(ok_line if v["success"] else failed_line)
    ok = sum(v["success"] for v in summary["videos"])
    lines.append(f"  {ok} ok, {len(summary['videos']) - ok} failed")
    emb = summary["embedder"]
    lines += ["", "=== pipeline ===", f"  embedder: {emb['model']} / {emb['weights']}"]
    lines[-1] += f" (random init: {emb['random_init']})"
    if emb["random_init"]:
        lines.append("  WARNING: random-init weights separate nothing: duplicates rest on hashes, isolation is off")
    lines += [f"  {label:22s} {'-' if value is None else value}" for label, value in summary["figures"].items()]
    lines += [f"  FAILED {s['name']}: {s['error']}" for s in summary["stages"] if not s["success"]]
    lines += ["", "=== checks ==="]
    for check, counts in summary["checks"].items():
        lines.append(f"  {check:40s} " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    return "\n".join(lines + format_timings(summary["timings"]))


def format_timings(t: dict) -> list[str]:
    """One line per run and per step; a step's biggest stages follow it (busy seconds: stages
    on worker threads overlap, so they may add up to more than the step)."""
    lines = ["", "=== time (s) ==="]
    if t["startup_s"] is not None:
        lines.append(f"  {'start-up (imports, definitions, instance)':44s} {t['startup_s']:7.2f}")
    for run in t["runs"]:
        lines.append(f"  {'run ' + run['run']:44s} {run['wall_s']:7.2f}   (Dagster itself {run['dagster_s']:.2f})")
        for step, stages in run["steps"].items():
            inside = sorted(((s, name) for name, s in stages.items() if name != "wall_s" and s >= 0.01), reverse=True)
            detail = ", ".join(f"{name} {s:.2f}" for s, name in inside[:4])
            lines.append(f"    {step:42s} {stages['wall_s']:7.2f}" + (f"   ({detail})" if detail else ""))
    return lines
