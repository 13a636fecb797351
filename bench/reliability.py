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

    from curation_assets import headless
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--long-minutes", type=float, default=5.0)
    parser.add_argument("--only-headless-faults", action="store_true", help="just part 4")
    args = parser.parse_args()
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    from bench.machine import describe

    print(f"machine: {describe()}")
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
