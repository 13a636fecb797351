"""End to end against fastdup on the same frames: wall time, CPU time, peak memory, and where ours goes.

    bench/peers/setup.sh   # once, for fastdup
    .venv/bin/python bench/end_to_end.py [--runs 3] [--frames 1065] [--model efficientnet-lite0]

Input: two real-looking camera scenes filmed from real photographs (Debian wallpapers; slow
pan, jitter, lighting drift, sensor noise, people walking through; see bench/quality_data.py),
768x576 and 720x528 at 2 fps, 2/3 and 1/3 of ``--frames``, as two MPEG-4 videos and as
the same frames in a folder of JPEGs (q90, decoded from the videos).

(a) frames folder: ours is the headless command with the folder as its landing zone
    (ingest -> embeddings -> duplicate groups -> outliers, every check, every write, process
    start included); fastdup 2.54 runs with its defaults on the same folder.
(b) videos: ours reads the videos; fastdup needs the frames extracted first, which is timed
    (PyAV decode + JPEG encode, as a user's extraction script would) and added to its run.

Each pair alternates ``--runs`` times (ours on a fresh root each time); medians are printed
with the ratio ours / fastdup (< 1: we are faster), CPU time, and the peak resident memory
of the largest process (each process's own high-water mark, the model process included).
Then where our time goes: the command's own stage timings (``--summary-json``), median
per stage over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe, peak_rss_mb  # noqa: E402
from bench.quality_data import PHOTOS, _open, film, write_video  # noqa: E402
from curation_assets.core.frames import encode_jpeg, sample_frames  # noqa: E402

PEERS = ROOT / "bench" / "peers" / ".venv" / "bin" / "python"
TIME = "/usr/bin/time"
SCENES = ((PHOTOS[15], (768, 576), 2 / 3), (PHOTOS[9], (720, 528), 1 / 3))  # photograph, size, share of frames


def make_videos(folder: Path, frames: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i, (photo, size, share) in enumerate(SCENES):
        scene = _open(photo)
        if scene is None:
            raise SystemExit(f"{photo} is missing: apt-get install -y mate-backgrounds plasma-workspace-wallpapers")
        seconds = round(frames * share) / 2
        path = folder / f"scene{i}.mp4"
        write_video(path, film(scene, size, seconds, 2, seed=40 + i), fps=2)
        paths.append(path)
    return paths


def extract(videos: list[Path], folder: Path) -> tuple[float, int]:
    """The frames as JPEGs, the way a user would prepare them for fastdup (timed)."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    n = 0
    for video in videos:
        for frame in sample_frames(video, name=video.name, every_n=1):
            n += 1
            (folder / f"{video.stem}_{frame.index:06d}.jpg").write_bytes(encode_jpeg(frame.rgb, 90))
    return time.perf_counter() - started, n


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return found


def timed(command: list[str], **kwargs) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s, peak RSS MB of the largest process in the tree) of ``command``: CPU
    from GNU time (the process and every child it waited for), peak memory from each
    process's own high-water mark (VmHWM), sampled every 50 ms."""
    report = Path(tempfile.mktemp(suffix=".time"))
    started = time.perf_counter()
    proc = subprocess.Popen([TIME, "-o", str(report), "-f", "%U %S", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)  # fmt: skip
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        for pid in _descendants(proc.pid):
            if (mb := peak_rss_mb(pid)) is not None:
                peaks[pid] = max(peaks.get(pid, 0), mb)
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    user, system = report.read_text().split()[-2:]
    report.unlink()
    done = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    return wall, float(user) + float(system), max(peaks.values(), default=0), done


def ours(landing: Path, work: Path, model: str) -> dict:
    root = work / "root"
    shutil.rmtree(root, ignore_errors=True)
    env = {**os.environ, "CURATION_EMBEDDER_MODEL": model}
    env.pop("DAGSTER_HOME", None)
    summary = work / "summary.json"
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root),
               "--summary-json", str(summary)]  # fmt: skip
    wall, cpu, rss, proc = timed(command, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"our pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    data = json.loads(summary.read_text())
    return {"wall": wall, "cpu": cpu, "rss": rss, "figures": data["figures"], "timings": data["timings"]}


def fastdup(folder: Path) -> dict:
    wall, cpu, rss, proc = timed([str(PEERS), str(ROOT / "bench/peers/run_peers.py"), str(folder), "/dev/null",
                                  "fastdup"])  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"fastdup failed:\n{proc.stderr[-3000:]}")
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall": wall, "cpu": cpu, "rss": rss, "groups": len(found["groups"]), "flagged": len(found["flagged"])}


def stage_medians(runs: list[dict]) -> list[tuple[str, float]]:
    """Median seconds per (run, step, stage) over our runs, in the order they ran."""
    samples: dict[str, list[float]] = {}
    for r in runs:
        t = r["timings"]
        samples.setdefault("start-up (imports, definitions, instance)", []).append(t["startup_s"])
        for i, run in enumerate(t["runs"]):
            label = "run curate" if run["run"] == "curate" else f"run {i + 1} (one source)"
            samples.setdefault(label, []).append(run["wall_s"])
            samples.setdefault(f"  {label}: Dagster itself", []).append(run["dagster_s"])
            for step, stages in run["steps"].items():
                for stage, seconds in stages.items():
                    name = f"  {label}: {step}" + ("" if stage == "wall_s" else f" / {stage}")
                    samples.setdefault(name, []).append(seconds)
    return [(name, statistics.median(values)) for name, values in samples.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--frames", type=int, default=1065)
    parser.add_argument("--model", default="efficientnet-lite0")
    args = parser.parse_args()
    if not PEERS.exists():
        raise SystemExit("fastdup's environment is missing: run bench/peers/setup.sh")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = make_videos(work / "landing-videos" / "cam-store", args.frames)
        folder = work / "landing-frames" / "cam-store" / "frames"
        extract_s, n = extract(videos, folder)
        results: dict[str, list[dict]] = {"ours-folder": [], "fastdup-folder": [], "ours-videos": [], "extract": []}
        for i in range(args.runs):  # alternate, so drift on a noisy machine hits both alike
            results["fastdup-folder"].append(fastdup(folder))
            results["ours-folder"].append(ours(work / "landing-frames", work / "ours", args.model))
            extract_again = extract(videos, work / f"extract{i}")[0]
            results["extract"].append(extract_again)
            results["ours-videos"].append(ours(work / "landing-videos", work / "ours", args.model))
            shutil.rmtree(work / f"extract{i}")

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in results[key])

    fd_wall, extract_med = med("fastdup-folder", "wall"), statistics.median(results["extract"])
    print(f"machine: {describe()}")
    print(
        f"input: {n} frames of two real-looking scenes (768x576, 720x528), as 2 MPEG-4 videos and as a JPEG "
        f"folder; {args.runs} alternating runs each, medians; ours with {args.model} (CPU), fastdup 2.54 defaults"
    )
    print("\n| | wall s | CPU s | peak RSS MB (largest process) | frames through the model | groups | flagged |")
    print("|---|---|---|---|---|---|---|")
    for key, label in (("ours-folder", "ours, frames folder"), ("ours-videos", "ours, videos")):
        fig = results[key][-1]["figures"]
        model = f"{fig['frames through model']} of {fig['frames']}"
        cells = [f"{med(key, 'wall'):.1f}", f"{med(key, 'cpu'):.1f}", f"{med(key, 'rss'):.0f}", model,
                 str(fig["duplicate groups"]), str(fig["outliers"])]  # fmt: skip
        print(f"| {label} | " + " | ".join(cells) + " |")
    last = results["fastdup-folder"][-1]
    cells = [f"{fd_wall:.1f}", f"{med('fastdup-folder', 'cpu'):.1f}", f"{med('fastdup-folder', 'rss'):.0f}",
             f"{n} of {n}", f"{last['groups']} components", str(last["flagged"])]  # fmt: skip
    print("| fastdup, frames folder | " + " | ".join(cells) + " |")
    print(f"| fastdup + frame extraction ({extract_med:.1f} s), from the videos | {fd_wall + extract_med:.1f} |||||")
    folder_ratio = med("ours-folder", "wall") / fd_wall
    video_ratio = med("ours-videos", "wall") / (fd_wall + extract_med)
    memory_ratio = med("ours-folder", "rss") / med("fastdup-folder", "rss")
    print(f"\nratio ours / fastdup (wall, < 1 = we are faster): frames folder {folder_ratio:.2f}, "
          f"videos {video_ratio:.2f}; peak memory {memory_ratio:.1f}x")  # fmt: skip
    for key, label in (("ours-folder", "frames folder"), ("ours-videos", "videos")):
        print(f"\nwhere our time goes, {label} (median s over {args.runs} runs; stages inside a step run on worker "
              "threads, so they add up to more than its wall time):")  # fmt: skip
        for name, seconds in stage_medians(results[key]):
            print(f"  {name:72s} {seconds:7.2f}")


if __name__ == "__main__":
    main()
