"""Reliability figures: load, memory on long videos, and the fault-injection tests' tally.

    python bench/reliability.py [--videos 200] [--long-minutes 5]

1. Load: N small videos dropped into the landing zone at once; the sensor registers them
   over several ticks (50 runs per tick), every run executes, and the counts must match
   exactly: records lost and duplicated (frame table rows, Qdrant points) must be 0.
2. Memory: peak RSS of raw_frames (every frame kept) on a 1-minute and a long video, each
   in its own process: streaming keeps it flat.
3. Faults: runs tests/test_reliability.py and the vector-store fault tests and prints
   how many injected faults and hostile inputs were survived.
4. Headless faults against a real instance (its own DAGSTER_HOME, pools of 1), each on three
   short videos: SIGKILL mid-run, SIGTERM mid-run, an environment fault (the tables folder
   blocked) fixed before the re-run. After the re-run: frames per video in duplicate_groups
   against an unfaulted count, records lost and duplicated, whether the re-run hung.

    python bench/reliability.py --topology 50

5. (alone) The production topology (curation_assets/deploy/topology.py: Postgres, the gRPC code
   server, the daemon, the webserver; S3 on moto's server): N videos uploaded to the S3
   landing prefix at once, ingested by the daemon's sensor through the run queue, then
   curated by automation. Wall time to the last ingest and to curated groups, runs per
   video, records lost and duplicated, peak memory of every kind of process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSS_SCRIPT = """
import json, resource, sys
import dagster as dg
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.partitions import videos
from resources import ExpectationsResource, ObjectStoreResource
root, video_id = sys.argv[1], sys.argv[2]
with dg.instance_for_test() as instance:
    instance.add_dynamic_partitions(videos.name, [video_id])
    result = dg.materialize([raw_frames], partition_key=video_id, instance=instance,
        resources={"object_store": ObjectStoreResource(root=root), "expectations": ExpectationsResource()},
        run_config={"ops": {"raw_frames": {"config": {"every_n": 1}}}})
meta = result.get_asset_materialization_events()[0].step_materialization_data.materialization.metadata
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": meta["frames"].value, "peak_rss_mb": round(peak_mb)}))
"""


def load(n_videos: int) -> dict:
    import dagster as dg

    from curation_assets.cli import headless
    from curation_assets.core import layout
    from curation_assets.definitions import build_defs
    from curation_assets.demo.scenes import Scene, write_video
    from tests.conftest import make_resources

    with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
        defs = build_defs(make_resources(str(Path(tmp) / "root"), Path(tmp) / "qdrant"))
        landing = Path(tmp) / "root/landing"
        for i in range(n_videos):
            scene = Scene(f"cam-{i % 4}/v{i:04d}.mp4", seed=i, duration_s=2.0, width=64, height=48, fps=5)
            write_video(scene, landing / scene.name)
        start = time.perf_counter()
        outcomes = headless.ingest_landing(defs, instance, log=lambda _: None)
        wall = time.perf_counter() - start
        store = defs.resources["object_store"].store()
        frames = store.read_tables(layout.table_prefix("raw_frames"))
        resources = defs.resources
        name = resources["embedder"].embedder().vector_name
        with resources["vector_store"].open() as vs:
            points = vs.count(resources["vector_store"].collection_for(name))
        expected = n_videos * 4  # 2 s at 2 fps
        return {
            "videos": n_videos,
            "runs": len(outcomes),
            "runs_succeeded": sum(o.success for o in outcomes),
            "frames": len(frames),
            "qdrant_points": points,
            "records_lost": max(expected - len(frames), 0) + max(len(frames) - points, 0),
            "records_duplicated": int(frames["frame_id"].duplicated().sum()) + max(points - len(frames), 0),
            "wall_s": round(wall, 1),
        }


def peak_rss(minutes: float) -> dict:
    from curation_assets.core.ids import source_id_for
    from curation_assets.demo.scenes import Scene, default_events, write_video

    with tempfile.TemporaryDirectory() as tmp:
        name = "cam-long/long.mp4"
        seconds = minutes * 60
        write_video(Scene(name, 2, seconds, default_events(seconds), 320, 240, fps=25), Path(tmp) / "landing" / name)
        proc = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, tmp, source_id_for(name)], cwd=ROOT, capture_output=True, text=True
        )
        return {"minutes": minutes, **json.loads(proc.stdout.strip().splitlines()[-1])}


def fault_tests() -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_reliability.py",
         "tests/test_vector_store.py", "-k", "reliability or held or api_key", "--junitxml", "/tmp/reliability.xml"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    import xml.etree.ElementTree as ET

    cases = ET.parse("/tmp/reliability.xml").getroot().iter("testcase")
    results = [(c.get("name"), c.find("failure") is None and c.find("error") is None) for c in cases]
    hostile = [ok for name, ok in results if "hostile" in name or "truncated" in name]
    faults = [ok for name, ok in results if "hostile" not in name and "truncated" not in name]
    return {
        "faults_injected": len(faults),
        "faults_survived": sum(faults),
        "hostile_inputs_tried": len(hostile),
        "hostile_inputs_handled": sum(hostile),
        "pytest_exit": proc.returncode,
    }


def headless_faults() -> list[dict]:
    import signal

    import pandas as pd

    from curation_assets.core.ids import source_id_for
    from curation_assets.demo.scenes import Scene, write_video

    rows = []
    for fault in ("sigkill", "sigterm", "blocked_tables"):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            landing, root, home = tmp / "landing", tmp / "root", tmp / "home"
            home.mkdir()
            (home / "dagster.yaml").write_text((ROOT / "dagster_home" / "dagster.yaml").read_text())
            names = [f"cam-r/clip{i}.mp4" for i in range(3)]
            for i, name in enumerate(names):
                write_video(Scene(name, seed=40 + i, duration_s=20.0, width=320, height=240, fps=5), landing / name)
            env = {k: v for k, v in os.environ.items() if k != "CURATION_QDRANT_PATH"} | {"DAGSTER_HOME": str(home)}
            command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root)]
            if fault == "blocked_tables":
                (root / "tables").mkdir(parents=True)
                (root / "tables" / "raw_frames").write_text("in the way")
                first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True).returncode
                (root / "tables" / "raw_frames").unlink()
            else:
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
                deadline = time.monotonic() + 180
                while time.monotonic() < deadline and not list((root / "tables/frame_embeddings").glob("*.parquet")):
                    time.sleep(0.05)
                time.sleep(0.5)
                os.killpg(proc.pid, signal.SIGKILL if fault == "sigkill" else signal.SIGTERM)
                first = proc.wait()
            started = time.perf_counter()
            try:
                rerun = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
                hung, code = False, rerun.returncode
            except subprocess.TimeoutExpired:
                hung, code = True, None
            groups = root / "tables/duplicate_groups/all.parquet"
            counts = (
                pd.read_parquet(groups)["frame_id"].str.rsplit("/", n=1).str[0].value_counts().to_dict()
                if groups.exists() else {}
            )  # fmt: skip
            expected = 40  # 20 s at the default 2 frames per second
            got = [counts.get(source_id_for(n), 0) for n in names]
            rows.append({"fault": fault, "first_exit": first, "rerun_exit": code, "rerun_hung": hung,
                         "rerun_s": round(time.perf_counter() - started, 1),
                         "videos_lost": sum(g == 0 for g in got),
                         "frames_lost": sum(max(expected - g, 0) for g in got),
                         "frames_duplicated": sum(max(g - expected, 0) for g in got)})  # fmt: skip
    return rows


TOPOLOGY_RUNS = """query { runsOrError { ... on Runs { results { status jobName endTime
  tags { key value } } } } }"""


def _process_kind(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    kinds = (
        ("execute_run", "run worker"),
        ("multiprocessing", "run or model process"),  # both are multiprocessing children: same command line
        ("code-server", "code server (proxy)"),
        ("api grpc", "code server"),
        ("dagster-daemon", "daemon"),
        ("dagster-webserver", "webserver"),
        ("postgres", "postgres"),
    )
    return next((kind for needle, kind in kinds if needle in command), None)


def _partition(run: dict) -> str | None:
    return next((t["value"] for t in run["tags"] if t["key"] == "dagster/partition"), None)


def moto_bucket(bucket: str):
    """moto's S3 server on a free loopback port with ``bucket`` made, and the fake credentials
    in this process's environment (the topology's processes inherit them): (server, endpoint, client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    from curation_assets.deploy.topology import free_port

    os.environ.update(
        {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)
    return moto, endpoint, s3


def topology_load(n_videos: int) -> dict:
    """N videos through the production topology at once (part 5)."""
    import threading

    from bench.machine import peak_rss_mb
    from curation_assets.core import layout
    from curation_assets.core.frames import sample_frames
    from curation_assets.core.ids import video_id_for
    from curation_assets.defs.settings import resources_from_env
    from curation_assets.demo.scenes import Scene, write_video
    from curation_assets.deploy.topology import Topology

    moto, endpoint, s3 = moto_bucket("bench")
    peaks: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:  # every process on the machine of a kind we start, its high-water mark
        while not done.wait(0.5):
            for entry in os.listdir("/proc"):
                if entry.isdigit() and (kind := _process_kind(int(entry))):
                    peaks[kind] = max(peaks.get(kind, 0), peak_rss_mb(int(entry)) or 0)

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(prefix="bench-postgres-") as pg:
        os.chmod(pg, 0o755)
        videos, expected = Path(tmp) / "videos", {}
        for i in range(n_videos):
            name = f"cam-{i % 5}/v{i:03d}.mp4"
            write_video(Scene(name, seed=i, duration_s=4.0, width=160, height=120, fps=5), videos / name)
            expected[name] = sum(1 for _ in sample_frames(videos / name, name=name))
        env = {**os.environ, "CURATION_STORAGE_URI": "s3://bench/curation", "CURATION_S3_ENDPOINT_URL": endpoint,
               "CURATION_QDRANT_PATH": str(Path(tmp) / "qdrant")}  # fmt: skip
        with Topology(Path(tmp) / "topology", env=env, postgres_folder=Path(pg) / "postgres") as topology:
            threading.Thread(target=sample, daemon=True).start()
            started = time.perf_counter()
            for name in expected:
                s3.upload_file(str(videos / name), "bench", f"curation/landing/{name}")
            ingested_s = curated_s = None
            deadline = started + 3600
            while time.perf_counter() < deadline:
                time.sleep(2)
                results = topology.graphql(TOPOLOGY_RUNS)["runsOrError"]["results"]
                ingest = [r for r in results if r["jobName"] == "ingest_video"]
                ok = {
                    t["value"]
                    for r in ingest
                    if r["status"] == "SUCCESS"
                    for t in r["tags"]
                    if t["key"] == "dagster/partition"
                }
                if ingested_s is None and len(ok) == n_videos:
                    ingested_s = time.perf_counter() - started
                    last_ingest = max(r["endTime"] for r in ingest if r["status"] == "SUCCESS")
                curations = [r for r in results if r["jobName"] == "__ASSET_JOB" and r["status"] == "SUCCESS"]
                if ingested_s is not None and any(r["endTime"] > last_ingest for r in curations):
                    curated_s = time.perf_counter() - started
                    break
            done.set()
            runs_per_video = [sum(_partition(r) == video_id_for(name) for r in ingest) for name in expected]
            resources = resources_from_env(env)
            store = resources["object_store"].store()
            frames = {name: len(store.read_table(layout.table_key("raw_frames", video_id_for(name))))
                      if store.exists(layout.table_key("raw_frames", video_id_for(name))) else 0
                      for name in expected}  # fmt: skip
            with resources["vector_store"].open() as vectors:
                collection = resources["vector_store"].collection_for(resources["embedder"].embedder().vector_name)
                points = {name: vectors.count(collection, video_id_for(name)) for name in expected}
    moto.stop()
    return {
        "videos": n_videos,
        "ingested_s": round(ingested_s, 1) if ingested_s else None,
        "curated_s": round(curated_s, 1) if curated_s else None,
        "runs_per_video": {"min": min(runs_per_video), "max": max(runs_per_video)},
        "videos_lost": sum(frames[n] == 0 for n in expected),
        "frames_lost": sum(max(expected[n] - frames[n], 0) for n in expected),
        "frames_duplicated": sum(max(frames[n] - expected[n], 0) for n in expected),
        "points_lost": sum(max(expected[n] - points[n], 0) for n in expected),
        "points_duplicated": sum(max(points[n] - expected[n], 0) for n in expected),
        "peak_rss_mb": peaks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--long-minutes", type=float, default=5.0)
    parser.add_argument("--only-headless-faults", action="store_true", help="just part 4")
    parser.add_argument("--topology", type=int, metavar="N", help="just part 5, with N videos")
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from bench.machine import describe

    print(f"machine: {describe()}")
    if args.topology:
        print("topology:", json.dumps(topology_load(args.topology)))
        return
    if args.only_headless_faults:
        for row in headless_faults():
            print("headless fault:", json.dumps(row))
        return
    print("load:", json.dumps(load(args.videos)))
    for minutes in (1.0, args.long_minutes):
        print("memory:", json.dumps(peak_rss(minutes)))
    print("faults:", json.dumps(fault_tests()))
    for row in headless_faults():
        print("headless fault:", json.dumps(row))


if __name__ == "__main__":
    main()
