"""The UI path: one new video dropped into the landing zone under `dagster dev`, timed until
duplicate groups and outliers that include it are published.

    .venv/bin/python bench/ui_path.py [--frames 240] [--drops 1]

Starts `dagster dev` (webserver + daemon, SQLite instance, the configured executor:
CURATION_EXECUTOR, default in_process) on a fresh root, waits for it to answer, drops one real-looking camera
video (768x576, 2 fps; see bench/quality_data.py) into the landing folder, and reads the
instance's event log until `duplicate_groups` and `outliers` materialize after the drop.
Prints the timeline: sensor pick-up (its interval included), run queue and launch, each
step's process start-up and wall time, the automation sensor's pick-up, the curate run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import PHOTOS, _open, film, write_video  # noqa: E402
from curation_assets.component import SensorSettings  # noqa: E402
from curation_assets.defs.jobs import CURATES_BATCH_TAG  # noqa: E402
from curation_assets.deploy.topology import free_port  # noqa: E402


def step_lines(instance, run_id: str, since: float) -> list[tuple[float, str]]:
    import dagster as dg

    lines, worker, started = [], {}, {}
    for entry in instance.all_logs(run_id):
        event, key, t = entry.dagster_event, entry.step_key, entry.timestamp - since
        if event is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.RUN_START:
            lines.append((t, "run worker started"))
        elif kind == dg.DagsterEventType.STEP_WORKER_STARTING:
            worker[key] = t
        elif kind == dg.DagsterEventType.STEP_START:
            started[key] = t
            startup = f" (its process started in {t - worker[key]:.1f} s)" if key in worker else ""
            lines.append((t, f"step {key} starts{startup}"))
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE):
            lines.append((t, f"step {key} {'done' if event.is_step_success else 'FAILED'} in {t - started[key]:.1f} s"))
        elif kind == dg.DagsterEventType.RUN_SUCCESS:
            lines.append((t, "run succeeded"))
    return lines


def sensor_ticks(instance, name: str, since: float) -> dict:
    """The sensor's ticks after ``since``: how far apart they started (the daemon's loop looks at
    each sensor every 5 s at most, whatever its interval) and how long each took to evaluate."""
    states = [s for s in instance.all_instigator_state() if s.name == name]
    ticks = sorted(
        (t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=since)),
        key=lambda t: t.timestamp,
    )
    gaps = sorted(b.timestamp - a.timestamp for a, b in zip(ticks, ticks[1:]))
    took = sorted(t.end_timestamp - t.timestamp for t in ticks if t.end_timestamp)

    def spread(values: list[float]) -> str:
        return f"median {values[len(values) // 2]:.1f} s, max {values[-1]:.1f} s" if values else "-"

    return {"ticks": len(ticks), "apart": spread(gaps), "evaluation": spread(took)}


def settle(instance, timeout: float = 300) -> None:
    """Until no run is in flight, once the automation sensor had a tick (every 10 s) to launch one."""
    import dagster as dg

    time.sleep(11)
    in_flight = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    deadline = time.time() + timeout
    while instance.get_run_ids(dg.RunsFilter(statuses=in_flight), limit=1) and time.time() < deadline:
        time.sleep(1)


def drop_one(instance, folder: Path, video: Path, name: str, timeout: float, base: Path) -> tuple[float, list]:
    """One video appears whole in ``folder``: seconds until groups and outliers that include it are
    published, and its timeline (runs, steps) from the instance."""
    import dagster as dg

    tmp = folder / f".{name}.part"
    shutil.copy(video, tmp)
    dropped = time.time()
    os.replace(tmp, folder / name)  # appears whole, as an upload that completes

    def materialized(asset: str) -> float | None:
        record = instance.get_latest_materialization_event(dg.AssetKey(asset))
        return record.timestamp - dropped if record and record.timestamp > dropped else None

    while time.time() - dropped < timeout:
        done = {a: materialized(a) for a in ("duplicate_groups", "outliers")}
        if all(v is not None for v in done.values()):
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"not published after {timeout} s; see {base / 'dagster-dev.log'}")
    time.sleep(1)  # the batch run's last events
    timeline = []
    for record in sorted(instance.get_run_records(), key=lambda r: r.create_timestamp.timestamp()):
        run = record.dagster_run
        created = record.create_timestamp.timestamp() - dropped
        if created < 0:
            continue
        what = run.tags.get("dagster/partition") or run.tags.get(CURATES_BATCH_TAG, "")[:8] or run.job_name
        timeline.append(
            (created, f"run {run.job_name} [{what}] created by {run.tags.get('dagster/sensor_name', 'a sensor')}")
        )
        timeline += step_lines(instance, run.run_id, dropped)
    timeline += [(t, f"{a} published") for a, t in done.items()]
    return max(done.values()), timeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--drops", type=int, default=1, help="videos dropped one after another, each once published")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ui-path-"))
    landing, home = base / "landing", base / "home"
    landing.mkdir()
    home.mkdir()
    shutil.copy(ROOT / "dagster_home/dagster.yaml", home / "dagster.yaml")
    video = base / "aisle.mp4"
    write_video(video, film(_open(PHOTOS[15]), (768, 576), args.frames / 2, 2, seed=7), fps=2)
    env = {**os.environ, "DAGSTER_HOME": str(home), "CURATION_STORAGE_URI": str(base / "root"),
           "CURATION_LANDING_URI": str(landing), "CURATION_QDRANT_PATH": str(base / "qdrant")}  # fmt: skip
    port = free_port()
    log = open(base / "dagster-dev.log", "w")  # noqa: SIM115 - closed below
    began = time.time()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() - began > 180:
                    raise SystemExit((base / "dagster-dev.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        up_s = time.time() - began
        time.sleep(15)  # the daemon's first sensor ticks have run on an empty landing zone
        os.environ["DAGSTER_HOME"] = str(home)
        import dagster as dg

        instance = dg.DagsterInstance.get()
        print(f"machine: {describe()}")
        executor = os.environ.get("CURATION_EXECUTOR", "in_process")
        interval = os.environ.get("CURATION_SENSOR_INTERVAL_S") or SensorSettings().interval_s
        print(f"dagster dev answered {up_s:.1f} s after start; new_video_sensor every {interval} s; {executor}")
        (landing / "cam-a").mkdir()
        pause = random.Random(0)
        latencies = []
        for drop in range(args.drops):
            if drop:  # on a settled instance (the map the automation sensor draws after a curation included),
                settle(instance)  # at another moment of the sensor's loop
                time.sleep(pause.uniform(0, 5))
            latency, timeline = drop_one(instance, landing / "cam-a", video, f"aisle-{drop}.mp4", args.timeout, base)
            latencies.append(latency)
            print(f"\ndrop {drop + 1}: one {args.frames}-frame 768x576 video dropped at t=0")
            for t, line in sorted(timeline):
                print(f"  t={t:6.1f} s  {line}")
            print(f"new video -> duplicate groups and outliers published: {latency:.1f} s")
        ticks = sensor_ticks(instance, "new_video_sensor", began)
        print(f"\nnew_video_sensor: {ticks['ticks']} ticks, apart {ticks['apart']}; each {ticks['evaluation']}")
        ordered = sorted(latencies)
        print(f"{len(latencies)} drops: latency median {ordered[len(ordered) // 2]:.1f} s, "
              f"min {ordered[0]:.1f}, max {ordered[-1]:.1f} ({', '.join(f'{x:.1f}' for x in latencies)})")  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
