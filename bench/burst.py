"""A burst of new videos: the production topology's sensor path against the headless command.

    python bench/burst.py [--clips 50] [--seconds 10] [--rounds 1] [--sources-per-run 8] [--sensor-interval S]
                          [--drops 1]

N real-looking clips (PyAV-encoded scenes, 320x240 at 10 fps) are uploaded at once to the S3
landing prefix (moto's server) of the production topology (curation_assets/deploy/topology.py:
Postgres, the gRPC code server, the daemon and its sensor, the run queue), once for each
``--sources-per-run`` setting; and the same clips go through the headless command
(``python -m curation_assets run``, ingest and curate) against their own S3 prefix.
Topology and headless alternate, ``--rounds`` times. Each prints: wall time (upload to
duplicate groups and outliers published by a run that started after the last ingest; the
command's start to its exit), runs launched through the queue (automation runs included),
seconds per video, what each launched run paid to start (queue, run worker, a batch's set-up,
its first source's wait for the model and validation processes against the later sources'),
peak RSS per kind of process, videos, frames and Qdrant points lost and duplicated, frames
left out of groups or scores; then ``--drops`` more clips dropped alone into the same topology, one at a
time: each one's latency to published groups and outliers and where it went, with the sensor interval
used and how far apart its ticks were.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reliability import _partition, _process_kind, moto_bucket  # noqa: E402

RUNS = """query { runsOrError { ... on Runs { results { runId status jobName creationTime startTime endTime
  tags { key value } assetSelection { path } } } } }"""
OUTLIERS = """query { assetOrError(assetKey: {path: ["outliers"]}) { ... on Asset {
  assetMaterializations(limit: 20) { runId timestamp } } } }"""


class Peaks:
    """Every process of a kind we start (in ``sessions``, when given: the topology's or the
    command's own, not other work on the machine): its resident-memory high-water mark, and the
    CPU seconds each kind used while sampled (a process that lived less than a sample is missed)."""

    def __init__(self, named: dict[int, str] | None = None, sessions: set[int] | None = None) -> None:
        from bench.machine import peak_rss_mb

        self.mb: dict[str, int] = {}
        self._cpu: dict[int, tuple[str, float]] = {}
        self._done = threading.Event()

        def sample() -> None:
            while not self._done.wait(0.5):
                for entry in os.listdir("/proc"):
                    pid = int(entry) if entry.isdigit() else None
                    if not pid or (sessions is not None and _session(pid) not in sessions):
                        continue
                    if kind := (named or {}).get(pid) or _process_kind(pid):
                        self.mb[kind] = max(self.mb.get(kind, 0), peak_rss_mb(pid) or 0)
                        if (seconds := _cpu_seconds(pid)) is not None:
                            self._cpu[pid] = (kind, seconds)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> dict[str, int]:
        self._done.set()
        return self.mb

    def cpu_s(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for kind, seconds in self._cpu.values():
            total[kind] = round(total.get(kind, 0.0) + seconds, 1)
        return total


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counted(env: dict, expected: dict[str, int]) -> dict:
    """Frames and points lost and duplicated, against what each clip's sampling yields."""
    from curation_assets.core import layout
    from curation_assets.core.ids import video_id_for
    from curation_assets.defs.curation import read_groups, read_outliers
    from curation_assets.defs.settings import resources_from_env

    resources = resources_from_env(env)
    store = resources["object_store"].store()
    frames, readable = {}, set()
    for name in expected:
        key = layout.table_key("raw_frames", video_id_for(name))
        table = store.read_table(key) if store.exists(key) else None
        frames[name] = 0 if table is None else len(table)
        readable |= set() if table is None else set(table.loc[~table["corrupt"], "frame_id"])
    groups, scored = read_groups(store), read_outliers(store)
    with resources["vector_store"].open() as vectors:
        collection = resources["vector_store"].collection_for(resources["embedder"].embedder().vector_name)
        points = {name: vectors.count(collection, video_id_for(name)) for name in expected}
    return {
        "videos_lost": sum(frames[n] == 0 for n in expected),
        "frames_lost": sum(max(expected[n] - frames[n], 0) for n in expected),
        "frames_duplicated": sum(max(frames[n] - expected[n], 0) for n in expected),
        "points_lost": sum(max(expected[n] - points[n], 0) for n in expected),
        "points_duplicated": sum(max(points[n] - expected[n], 0) for n in expected),
        "frames_not_grouped": len(readable - set(() if groups is None else groups["frame_id"])),
        "frames_not_scored": len(readable - set(() if scored is None else scored["frame_id"])),
    }


def published_after(topology, runs: list[dict], moment: float) -> float | None:
    """When outliers (the last of duplicate_groups, outliers) were first published by a run
    that started after ``moment``: one that read every source ingested by then."""
    started = {r["runId"]: r["startTime"] for r in runs}
    found = topology.graphql(OUTLIERS)["assetOrError"].get("assetMaterializations") or []
    times = [float(m["timestamp"]) / 1000 for m in found if (started.get(m["runId"]) or 0) >= moment]
    return min(times) if times else None


def instance_of(topology):
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    os.environ.update({k: v for k, v in topology.env.items() if k.startswith("DAGSTER_POSTGRES")})
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(topology.home)))


def run_events(instance, run_id: str) -> dict[str, float]:
    """The first timestamp of each run-level event (RUN_DEQUEUED, RUN_STARTING, RUN_START, ...)."""
    first = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event and entry.dagster_event.step_key is None:
            first.setdefault(entry.dagster_event.event_type_value, entry.timestamp)
    return first


def start_costs(instance, results: list[dict]) -> list[dict]:
    """What each launched run paid before its work, from the event log: the queue (created ->
    RUN_STARTING), the run worker (RUN_STARTING -> RUN_START: a spawned process, its imports and
    the definitions), in a batch the set-up before its first source's run (resources, the in-process
    jobs), and what its first source waited for the model and validation processes beyond the
    later sources (frame_embeddings' 'load model' and raw_frames' 'checks' stages)."""
    from curation_assets.cli.headless import step_timings

    rows = []
    for run in sorted((r for r in results if launched(r)), key=lambda r: r["creationTime"]):
        events = run_events(instance, run["runId"])
        row = {"job": run["jobName"], "queue_s": _gap(run["creationTime"], events.get("PIPELINE_STARTING")),
               "run_worker_s": _gap(events.get("PIPELINE_STARTING"), events.get("PIPELINE_START"))}  # fmt: skip
        sources = sorted(
            (r for r in results if _tag(r, "curation/batch") == run["runId"]), key=lambda r: r["creationTime"]
        )
        if sources:
            row["batch_setup_s"] = _gap(events.get("PIPELINE_START"), sources[0]["creationTime"])
            stages = [step_timings(instance, r["runId"]) for r in sources]
            for label, step, stage in (
                ("model", "frame_embeddings", "load model"),
                ("validation", "raw_frames", "checks"),
            ):
                seconds = [t.get(step, {}).get(stage) for t in stages]
                row[f"{label}_first_s"] = seconds[0]
                later = sorted(x for x in seconds[1:] if x is not None)
                row[f"{label}_later_median_s"] = later[len(later) // 2] if later else None
        rows.append(row)
    return rows


def _gap(a: float | None, b: float | None) -> float | None:
    return round(b - a, 2) if a is not None and b is not None else None


def _tag(run: dict, key: str) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == key), None)


def launched(run: dict) -> bool:
    """A run the queue launched: a batch, a plain ingest_video run, an automation run (not the
    runs a batch executes in its own process)."""
    if run["jobName"] == "ingest_video":
        return _tag(run, "curation/batch") is None
    return run["jobName"] in ("ingest_batch", "__ASSET_JOB")


def through_topology(
    base: Path, clips: Path, expected: dict[str, int], env: dict, s3, prefix: str, drop: Path, drops: int = 1
) -> dict:
    """The burst through the topology, then ``drops`` more clips dropped alone, each once the last is curated."""
    from bench.ui_path import sensor_ticks
    from curation_assets.deploy.topology import Topology

    base.mkdir(parents=True, exist_ok=True)
    env = {**env, "CURATION_STORAGE_URI": f"s3://bench/{prefix}", "CURATION_QDRANT_PATH": str(base / "qdrant")}
    with tempfile.TemporaryDirectory(prefix="bench-postgres-") as pg:
        os.chmod(pg, 0o755)  # the postgres user must reach it
        with Topology(base / "topology", env=env, postgres_folder=Path(pg) / "postgres") as topology:
            peaks = Peaks(sessions={p.pid for p in topology.processes.values()})
            sessions_before = postgres_sessions(topology)
            started = time.time()
            for name in expected:
                s3.upload_file(str(clips / name), "bench", f"{prefix}/landing/{name}")
            ingested_at = curated_at = None
            while time.time() < started + 3600:
                time.sleep(2)  # the figures come from the runs' own timestamps: polling only costs the webserver CPU
                results = topology.graphql(RUNS)["runsOrError"]["results"]
                ingest = [r for r in results if r["jobName"] == "ingest_video"]
                ok = {_partition(r) for r in ingest if r["status"] == "SUCCESS"}
                if ingested_at is None and len(ok) == len(expected):
                    ingested_at = max(r["endTime"] for r in ingest if r["status"] == "SUCCESS")
                if ingested_at is not None and (curated_at := published_after(topology, results, ingested_at)):
                    break
            rss = peaks.stop()
            sessions = postgres_sessions(topology) - sessions_before
            burst_results = results
            after_burst = settled(topology)  # the lone clip is timed on an idle topology
            singles = []
            for i in range(drops):  # each on a settled topology, at another moment of the sensor's loop
                if i:
                    settled(topology)
                    time.sleep(random.Random(i).uniform(0, 5))
                singles.append(drop_one(topology, s3, prefix, drop, f"drop-{i}.mp4"))
            with instance_of(topology) as instance:
                costs = start_costs(instance, burst_results)
                for single in singles:
                    single["stages"] = single_stages(instance, single.pop("runs"), single.pop("uploaded"),
                                                     single.pop("published"))  # fmt: skip
                ticks = sensor_ticks(instance, "new_video_sensor", started)
        figures = counted(env, expected)
    wall = (curated_at - started) if curated_at else None
    return {
        "wall_s": round(wall, 1) if wall else None,
        "ingested_s": round(ingested_at - started, 1) if ingested_at else None,
        "runs_launched": sum(launched(r) for r in burst_results),
        "automation_runs_during_burst": sum(r["jobName"] == "__ASSET_JOB" for r in burst_results),
        "automation_runs_after_burst": [
            f"{','.join(k['path'][-1] for k in r['assetSelection'] or [])} {r['status']} "
            f"{_gap(r['startTime'], r['endTime'])} s"
            for r in after_burst
            if r["jobName"] == "__ASSET_JOB" and r["runId"] not in {b["runId"] for b in burst_results}
        ],
        "ingest_runs": len(ingest),
        "s_per_video": round(wall / len(expected), 2) if wall else None,
        "start_costs": costs,
        "single_drop": singles[0],
        "single_drop_latencies_s": [x["latency_s"] for x in singles],
        "single_drop_median_s": median([x["latency_s"] for x in singles]),
        "single_drop_pick_up_s": [x["stages"].get("sensor_pick_up_s") for x in singles],
        "new_video_sensor_ticks": ticks,
        "peak_rss_mb": rss,
        "cpu_s_during_burst": peaks.cpu_s(),
        "postgres_sessions_during_burst": sessions,
        **figures,
    }


def postgres_sessions(topology) -> int:
    """Sessions opened on the instance's database so far (each a server process and a password exchange)."""
    from curation_assets.deploy.topology import POSTGRES_DB

    sql = f"SELECT sessions + numbackends FROM pg_stat_database WHERE datname = '{POSTGRES_DB}'"
    return int(topology.postgres._psql(sql))


def median(values: list) -> float | None:
    found = sorted(v for v in values if v is not None)
    return found[len(found) // 2] if found else None


def drop_one(topology, s3, prefix: str, clip: Path, name: str) -> dict:
    """One clip uploaded alone: seconds until duplicate groups and outliers that include it are published."""
    uploaded = time.time()
    s3.upload_file(str(clip), "bench", f"{prefix}/landing/cam-z/{name}")
    while time.time() < uploaded + 600:
        time.sleep(0.5)
        results = topology.graphql(RUNS)["runsOrError"]["results"]
        new = [r for r in results if r["creationTime"] >= uploaded]
        sources = [r for r in new if r["jobName"] == "ingest_video" and r["status"] == "SUCCESS"]
        if sources and (published := published_after(topology, results, max(r["endTime"] for r in sources))):
            return {"latency_s": round(published - uploaded, 1), "uploaded": uploaded, "runs": new,
                    "published": published}  # fmt: skip
    return {"latency_s": None, "uploaded": uploaded, "runs": [], "published": None}


def settled(topology, timeout: float = 300) -> list[dict]:
    """The runs once none is queued or in flight (what the automation sensor launches after a burst
    included: a map), after the automation sensor has had a tick to launch one."""
    time.sleep(12)
    deadline = time.time() + timeout
    while True:
        results = topology.graphql(RUNS)["runsOrError"]["results"]
        if time.time() > deadline or all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in results):
            return results
        time.sleep(1)


def single_stages(instance, runs: list[dict], uploaded: float, published: float | None) -> dict:
    """Where a lone clip's seconds went: the sensor's pick-up (its interval included), the queue,
    the run worker's start, the source's ingest run, and curation until published."""
    from curation_assets.cli.headless import step_timings

    first = min(runs, key=lambda r: r["creationTime"], default=None)
    if first is None:
        return {}
    events = run_events(instance, first["runId"])
    source = next((r for r in runs if r["jobName"] == "ingest_video"), None)
    curate = next((r for r in runs if r["jobName"] in ("curate", "__ASSET_JOB") and r["runId"] != first["runId"]), None)
    stages = {
        "sensor_pick_up_s": _gap(uploaded, first["creationTime"]),
        "queue_s": _gap(first["creationTime"], events.get("PIPELINE_STARTING")),
        "run_worker_s": _gap(events.get("PIPELINE_STARTING"), events.get("PIPELINE_START")),
    }
    if source:
        stages["ingest_run_s"] = _gap(source["startTime"], source["endTime"])
    if source:
        stages["batch_setup_s"] = _gap(events.get("PIPELINE_START"), source["creationTime"])
        stages["source_run_start_s"] = _gap(source["creationTime"], source["startTime"])
        stages["ingest_steps"] = step_timings(instance, source["runId"])
    if curate:
        stages["curate_run_to_published_s"] = _gap(curate["startTime"], published)
        stages["curate_steps"] = step_timings(instance, curate["runId"])
        if source:
            stages["ingest_end_to_curate_start_s"] = _gap(source["endTime"], curate["startTime"])
    return stages


def through_headless(base: Path, clips: Path, expected: dict[str, int], env: dict, s3, prefix: str) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    env = {**env, "CURATION_STORAGE_URI": f"s3://bench/{prefix}", "CURATION_QDRANT_PATH": str(base / "qdrant")}
    for name in expected:
        s3.upload_file(str(clips / name), "bench", f"{prefix}/landing/{name}")
    started = time.perf_counter()
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", f"s3://bench/{prefix}/landing",
               "--root", f"s3://bench/{prefix}"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    peaks = Peaks({proc.pid: "headless command"}, sessions={proc.pid})
    output, _ = proc.communicate()
    wall = time.perf_counter() - started
    rss = peaks.stop()
    if proc.returncode:
        print(output[:6000], file=sys.stderr)
    return {
        "wall_s": round(wall, 1),
        "exit": proc.returncode,
        "runs_launched": 0,
        "s_per_video": round(wall / len(expected), 2),
        "peak_rss_mb": rss,
        "cpu_s": peaks.cpu_s(),
        **counted(env, expected),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sources-per-run", default="8", help="topology settings to try, comma-separated")
    parser.add_argument("--drops", type=int, default=1, help="clips dropped alone after each topology burst")
    parser.add_argument(
        "--sensor-interval", type=int, default=None, help="new_video_sensor's (default: the component's)"
    )
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    from bench.machine import describe
    from curation_assets.component import SensorSettings
    from curation_assets.core.frames import sample_frames
    from curation_assets.demo.scenes import Event, Scene, write_video

    interval = args.sensor_interval or SensorSettings().interval_s
    print(f"machine: {describe()} (shared with other work: read the trend)")
    print(f"new_video_sensor interval: {interval} s; clips: {args.clips} of {args.seconds} s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per moto request
    moto, endpoint, s3 = moto_bucket("bench")
    env = {**os.environ, "CURATION_S3_ENDPOINT_URL": endpoint}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clips, expected = Path(tmp) / "clips", {}
            for i in range(args.clips):
                name = f"cam-{i % 5}/burst-{i:03d}.mp4"
                events = (Event("walk", 2.0, 5.0),) if i % 3 == 0 else ()
                write_video(Scene(name, seed=100 + i, duration_s=args.seconds, events=events, width=320, height=240,
                                  fps=10), clips / name)  # fmt: skip
                expected[name] = sum(1 for _ in sample_frames(clips / name, name=name))
            drop = clips / "drop.mp4"  # the lone clip dropped once a burst is curated
            write_video(Scene("drop", seed=99, duration_s=args.seconds, width=320, height=240, fps=10), drop)
            print(f"frames expected: {sum(expected.values())}")
            run = 0
            for round_ in range(args.rounds):
                for setting in [int(s) for s in args.sources_per_run.split(",")]:
                    run += 1
                    row = through_headless(Path(tmp) / f"h{run}", clips, expected, env, s3, f"headless-{run}")
                    print(f"round {round_ + 1} headless:", json.dumps(row), flush=True)
                    topology_env = {**env, "CURATION_SOURCES_PER_RUN": str(setting),
                                    "CURATION_SENSOR_INTERVAL_S": str(interval)}  # fmt: skip
                    row = through_topology(Path(tmp) / f"t{run}", clips, expected, topology_env, s3, f"topo-{run}",
                                           drop, args.drops)  # fmt: skip
                    print(f"round {round_ + 1} topology, {setting} sources per run:", json.dumps(row), flush=True)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
