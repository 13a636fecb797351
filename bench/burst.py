"""A burst of new videos: the production topology's sensor path against the headless command.

    python bench/burst.py [--clips 50] [--seconds 10] [--rounds 1] [--sources-per-run 8,1]

N real-looking clips (PyAV-encoded scenes, 320x240 at 10 fps) are uploaded at once to the S3
landing prefix (moto's server) of the production topology (curation_assets/deploy/topology.py:
Postgres, the gRPC code server, the daemon and its sensor, the run queue), once for each
``--sources-per-run`` setting; and the same clips go through the headless command
(``python -m curation_assets run``, ingest and curate) against their own S3 prefix.
Topology and headless alternate, ``--rounds`` times. Each prints: wall time (upload to
curated groups published after the last ingest; the command's start to its exit), runs
launched through the queue, seconds per video, what a launched run paid before its first
step (queue, run worker, imports), peak RSS per kind of process, and videos, frames and
Qdrant points lost and duplicated.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.reliability import _partition, _process_kind  # noqa: E402

RUNS = """query { runsOrError { ... on Runs { results { runId status jobName creationTime startTime endTime
  tags { key value } } } } }"""
SENSOR_INTERVAL_S = 10  # new_video_sensor's minimum_interval_seconds


class Peaks:
    """Every process on the machine of a kind we start: its resident-memory high-water mark."""

    def __init__(self, named: dict[int, str] | None = None) -> None:
        from bench.machine import peak_rss_mb

        self.mb: dict[str, int] = {}
        self._done = threading.Event()

        def sample() -> None:
            while not self._done.wait(0.5):
                for entry in os.listdir("/proc"):
                    pid = int(entry) if entry.isdigit() else None
                    if pid and (kind := (named or {}).get(pid) or _process_kind(pid)):
                        self.mb[kind] = max(self.mb.get(kind, 0), peak_rss_mb(pid) or 0)

        threading.Thread(target=sample, daemon=True).start()

    def stop(self) -> dict[str, int]:
        self._done.set()
        return self.mb


def counted(env: dict, expected: dict[str, int]) -> dict:
    """Frames and points lost and duplicated, against what each clip's sampling yields."""
    from curation_assets.core import layout
    from curation_assets.core.ids import video_id_for
    from curation_assets.defs.settings import resources_from_env

    resources = resources_from_env(env)
    store = resources["object_store"].store()
    frames = {}
    for name in expected:
        key = layout.table_key("raw_frames", video_id_for(name))
        frames[name] = len(store.read_table(key)) if store.exists(key) else 0
    with resources["vector_store"].open() as vectors:
        collection = resources["vector_store"].collection_for(resources["embedder"].embedder().vector_name)
        points = {name: vectors.count(collection, video_id_for(name)) for name in expected}
    return {
        "videos_lost": sum(frames[n] == 0 for n in expected),
        "frames_lost": sum(max(expected[n] - frames[n], 0) for n in expected),
        "frames_duplicated": sum(max(frames[n] - expected[n], 0) for n in expected),
        "points_lost": sum(max(expected[n] - points[n], 0) for n in expected),
        "points_duplicated": sum(max(points[n] - expected[n], 0) for n in expected),
    }


def through_topology(base: Path, clips: Path, expected: dict[str, int], env: dict, s3, prefix: str) -> dict:
    from curation_assets.deploy.topology import Topology

    base.mkdir(parents=True, exist_ok=True)
    env = {**env, "CURATION_STORAGE_URI": f"s3://bench/{prefix}", "CURATION_QDRANT_PATH": str(base / "qdrant")}
    with tempfile.TemporaryDirectory(prefix="bench-postgres-") as pg:
        os.chmod(pg, 0o755)  # the postgres user must reach it
        with Topology(base / "topology", env=env, postgres_folder=Path(pg) / "postgres") as topology:
            peaks = Peaks()
            started = time.time()
            for name in expected:
                s3.upload_file(str(clips / name), "bench", f"{prefix}/landing/{name}")
            ingested_at = curated_at = None
            while time.time() < started + 3600:
                time.sleep(1)
                results = topology.graphql(RUNS)["runsOrError"]["results"]
                ingest = [r for r in results if r["jobName"] == "ingest_video"]
                ok = {_partition(r) for r in ingest if r["status"] == "SUCCESS"}
                if ingested_at is None and len(ok) == len(expected):
                    ingested_at = max(r["endTime"] for r in ingest if r["status"] == "SUCCESS")
                curations = [r for r in results if r["jobName"] == "__ASSET_JOB" and r["status"] == "SUCCESS"]
                if ingested_at is not None and any(r["endTime"] > ingested_at for r in curations):
                    curated_at = min(r["endTime"] for r in curations if r["endTime"] > ingested_at)
                    break
            rss = peaks.stop()
        launched = [
            r
            for r in results
            if r["jobName"] == "ingest_batch"
            or (r["jobName"] == "ingest_video" and not any(t["key"] == "curation/batch" for t in r["tags"]))
        ]
        before_first_step = sorted(r["startTime"] - r["creationTime"] for r in launched if r["startTime"])
        figures = counted(env, expected)
    wall = (curated_at - started) if curated_at else None
    return {
        "wall_s": round(wall, 1) if wall else None,
        "ingested_s": round(ingested_at - started, 1) if ingested_at else None,
        "runs_launched": len(launched),
        "ingest_runs": len(ingest),
        "s_per_video": round(wall / len(expected), 2) if wall else None,
        "launched_run_start_s": {
            "median": before_first_step[len(before_first_step) // 2] if before_first_step else None,
            "max": before_first_step[-1] if before_first_step else None,
        },
        "peak_rss_mb": rss,
        **figures,
    }


def through_headless(base: Path, clips: Path, expected: dict[str, int], env: dict, s3, prefix: str) -> dict:
    base.mkdir(parents=True, exist_ok=True)
    env = {**env, "CURATION_STORAGE_URI": f"s3://bench/{prefix}", "CURATION_QDRANT_PATH": str(base / "qdrant")}
    for name in expected:
        s3.upload_file(str(clips / name), "bench", f"{prefix}/landing/{name}")
    started = time.perf_counter()
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", f"s3://bench/{prefix}/landing",
               "--root", f"s3://bench/{prefix}"]  # fmt: skip
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peaks = Peaks({proc.pid: "headless command"})
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
        **counted(env, expected),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sources-per-run", default="8,1", help="topology settings to try, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

    import boto3
    from moto.server import ThreadedMotoServer

    from bench.machine import describe
    from curation_assets.core.frames import sample_frames
    from curation_assets.demo.scenes import Event, Scene, write_video
    from curation_assets.deploy.topology import free_port

    print(f"machine: {describe()} (shared with other work: read the trend)")
    print(f"sensor interval: {SENSOR_INTERVAL_S} s; clips: {args.clips} of {args.seconds} s")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # not a line per moto request
    credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(credentials)
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
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
            print(f"frames expected: {sum(expected.values())}")
            run = 0
            for round_ in range(args.rounds):
                for setting in [int(s) for s in args.sources_per_run.split(",")]:
                    run += 1
                    row = through_headless(Path(tmp) / f"h{run}", clips, expected, env, s3, f"headless-{run}")
                    print(f"round {round_ + 1} headless:", json.dumps(row), flush=True)
                    topology_env = {**env, "CURATION_SOURCES_PER_RUN": str(setting)}
                    row = through_topology(Path(tmp) / f"t{run}", clips, expected, topology_env, s3, f"topo-{run}")
                    print(f"round {round_ + 1} topology, {setting} sources per run:", json.dumps(row), flush=True)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
