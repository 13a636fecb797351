"""Fleet scale: what one new video costs against 10 k, 100 k, 1 M stored frames.

    python bench/fleet.py [--sizes 10000,100000] [--frames 1000] [--burst 10] [--rebuild-up-to 100000]
                          [--quantization none|int8|binary] [--codes-in-ram] [--rebuild-limit-s 1800]

A seed root is made once (cached in bench/.fleet/): one real camera video (a real photograph
filmed with pan, jitter, lighting drift, noise and people walking; bench/quality_data.py),
``--frames`` frames at 2 fps, run through the headless command (ingest, curate). For each
size the corpus is grown from it in the real layout: the seed's tables cloned per source
(real frame metadata, its JPEGs hard-linked; new ids, hashes and cameras), vectors drawn
around a few hundred cluster centres following the seed's duplicate groups (a member sits
next to its representative), every point upserted with the payload curation keeps
(group, role, size, outlier flags), per-source duplicate_groups / outliers tables and the
curation state written as the incremental path would have left them. The store's HNSW
index is built once (a Qdrant server builds it in the background; timed apart): every point
is written first with indexing deferred, then one ``optimize``. ``--quantization`` is the
store's setting (the seed's collection is made with it; each setting has its own seed), and
``--codes-in-ram`` keeps its int8 / binary codes in RAM (``codes_in_ram`` true; the default is a mapped file).

Then, each a real headless command in its own process tree (wall, CPU, peak RSS of every
process, the command's stage timings):
  add one video   a different real video (another photograph) lands; ``run`` (ingest, curate)
  nothing new     ``run`` again: the cron tick with nothing landed
  burst           ``--burst`` more videos (``--burst-frames`` each) land at once; one ``run``
  rebuild         ``run --select rebuild`` (sizes up to ``--rebuild-up-to``); past
                  ``--rebuild-limit-s`` it is stopped and the sources each step had
                  rewritten by then are counted (their tables' times): a rate, not a finish
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.end_to_end import TIME, _descendants  # noqa: E402
from bench.machine import anon_rss_mb, describe, peak_rss_mb  # noqa: E402
from bench.quality_data import PHOTOS, _open, film, write_video  # noqa: E402
from curation_assets.core import layout  # noqa: E402
from curation_assets.core.ids import point_id_for  # noqa: E402
from curation_assets.core.incremental import RunningSummary  # noqa: E402
from curation_assets.defs.curation import MEMBER, REPRESENTATIVE, _embedding_inputs, read_state  # noqa: E402
from curation_assets.defs.embedding import PAYLOAD_COLUMNS  # noqa: E402
from resources.object_store import LocalObjectStore  # noqa: E402
from resources.vector_store import EdgeVectorStore  # noqa: E402

CACHE = ROOT / "bench" / ".fleet"
SIZE = (768, 576)
CENTRES = 300


def make_video(path: Path, frames: int, photo: int, seed: int) -> Path:
    if not path.exists():
        scene = _open(PHOTOS[photo])
        if scene is None:
            raise SystemExit(f"{PHOTOS[photo]} is missing: apt-get install -y mate-backgrounds")
        write_video(path, film(scene, SIZE, frames / 2, 2, seed=seed), fps=2)
    return path


def measured(command: list[str], env: dict, limit_s: float | None = None) -> dict:
    """Wall, CPU (GNU time: the process and its children) and each process's peak RSS; past
    ``limit_s`` the command's process group is stopped (``stopped``; CPU then unknown)."""
    report = Path(tempfile.mktemp(suffix=".time"))
    started = time.perf_counter()
    log = tempfile.TemporaryFile("w+")  # not a pipe: a long command's log would fill it while we sample
    proc = subprocess.Popen([TIME, "-o", str(report), "-f", "%U %S", *command], stdout=log, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env=env, start_new_session=True)  # fmt: skip
    # per process: (name, peak RSS, peak anonymous RSS): the embedded vector store maps its
    # segment files, whose resident pages count in RSS though the kernel drops them at will
    peaks: dict[int, tuple[str, int, int]] = {}
    while proc.poll() is None:
        for pid in _descendants(proc.pid)[1:]:  # past GNU time: the command and its helpers
            mb, anon = peak_rss_mb(pid), anon_rss_mb(pid)
            if mb is not None:
                name, high, high_anon = peaks.get(pid) or (_name(pid), 0, 0)
                peaks[pid] = (name, max(high, mb), max(high_anon, anon or 0))
        time.sleep(0.05 if time.perf_counter() - started < 120 else 0.5)
        if limit_s is not None and time.perf_counter() - started > limit_s:
            os.killpg(proc.pid, 9)
            proc.wait()
            wall = time.perf_counter() - started
            return {"wall_s": round(wall, 1), "cpu_s": None, "stopped": True, "exit": None,
                    "peak_rss_mb": sorted(peaks.values(), key=lambda p: -p[1])}  # fmt: skip
    proc.wait()
    wall = time.perf_counter() - started
    log.seek(0)
    output = log.read()
    user, system = report.read_text().split()[-2:]
    report.unlink()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed:\n{output[-6000:]}")
    return {"wall_s": round(wall, 1), "cpu_s": round(float(user) + float(system), 1),
            "peak_rss_mb": sorted(peaks.values(), key=lambda p: -p[1]), "exit": proc.returncode}  # fmt: skip


def _name(pid: int) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(a.decode(errors="replace") for a in args if a)
    for marker, name in (("multiprocessing.spawn", "helper (model or GX)"), ("multiprocessing.resource", "tracker"),
                         ("curation_assets run", "main")):  # fmt: skip
        if marker in text:
            return f"{name} [{pid}]"
    return text.rsplit("/", 1)[-1][:30] or "?"


def store_settings(quantization: str, codes_in_ram: bool) -> dict[str, str]:
    """The store's settings, as the command reads them from its environment."""
    in_ram = "true" if codes_in_ram else "false"
    return {"CURATION_QDRANT_QUANTIZATION": quantization, "CURATION_QDRANT_CODES_IN_RAM": in_ram}


def headless(root: Path, landing: Path, select: str, summary: Path, store: dict[str, str], limit_s=None) -> dict:
    """``store``: the store's settings (``store_settings``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAGSTER_HOME": str(root / "dagster"), **store}
    (root / "dagster").mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root / "store"),
               "--select", select, "--summary-json", str(summary)]  # fmt: skip
    started = time.time()
    result = measured(command, env, limit_s)
    if result.get("stopped"):  # how far each step got: the per-source tables it rewrote
        result.update(steps={}, runs={}, failed=[])
        for asset in ("duplicate_groups", "outliers"):
            written = [o for o in (root / "store" / "tables" / asset).glob("*") if o.stat().st_mtime > started]
            result["steps"][asset] = {"sources_rewritten": len(written),
                                      "last_at_s": round(max((o.stat().st_mtime for o in written), default=started)
                                                         - started, 1)}  # fmt: skip
        return result
    data = json.loads(summary.read_text())
    result["steps"] = data.get("steps", {})
    result["runs"] = {r["run"]: r["steps"] for r in data["timings"]["runs"]}
    result["failed"] = [s["name"] for s in data["stages"] if not s["success"]] + [
        v["partition"] for v in data["videos"] if not v["success"]
    ]
    return result


def seed(frames: int, store: dict[str, str]) -> Path:
    """A root with one real video ingested and curated (cached), its collection made with ``store``'s settings."""
    root = CACHE / f"seed-{frames}-{'-'.join(store.values())}"  # e.g. seed-1000-int8-false (codes in a mapped file)
    if (root / "store" / layout.state_key("outliers")).exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    landing = root / "landing"
    landing.mkdir(parents=True)
    shutil.copy(make_video(CACHE / f"seed-{frames}.mp4", frames, photo=15, seed=40), landing / "seed.mp4")
    run = headless(root, landing, "ingest,curate", root / "summary.json", store)
    print(f"seed: {frames} frames ingested and curated in {run['wall_s']} s")
    return root


def grow(seed_root: Path, size: int, work: Path) -> tuple[Path, dict]:
    """``size`` stored frames: the seed plus clones of its tables with synthetic vectors."""
    root = work / f"fleet-{size}"
    shutil.rmtree(root, ignore_errors=True)
    # JPEGs and tables hard-linked (every write replaces a file, never edits one); the vector
    # store and the Dagster instance copied: they are edited in place
    shutil.copytree(seed_root / "store", root / "store", copy_function=os.link, ignore=shutil.ignore_patterns("qdrant"))
    shutil.copytree(seed_root / "store" / "qdrant", root / "store" / "qdrant")
    shutil.copytree(seed_root / "dagster", root / "dagster")
    store = LocalObjectStore(root / "store")
    seed_store = LocalObjectStore(seed_root / "store")
    (seed_id,) = [layout.partition_of(o.key, "raw_frames") for o in seed_store.list("tables/raw_frames/")]
    raw = seed_store.read_table(layout.table_key("raw_frames", seed_id))
    seed_uri_root = str((seed_root / "store").resolve())
    raw["uri"] = raw["uri"].str.replace(seed_uri_root, str((root / "store").resolve()), regex=False)
    store.write_table(layout.table_key("raw_frames", seed_id), raw)  # its frames' addresses in this root
    embedded = seed_store.read_table(layout.table_key("frame_embeddings", seed_id))
    groups = seed_store.read_table(layout.table_key("duplicate_groups", seed_id))
    scored = seed_store.read_table(layout.table_key("outliers", seed_id))
    vector_name = embedded["vector_name"].iloc[0]
    dim = len(embedded["vector"].iloc[0])
    collection = f"frames__{vector_name}"
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CENTRES, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rep_of = groups.set_index("frame_id")["group_id"].reindex(embedded["frame_id"]).to_numpy()
    rep_index = pd.Index(embedded["frame_id"]).get_indexer(rep_of)
    isolation = RunningSummary()
    reps_scored = scored.set_index("frame_id").loc[groups.loc[groups["is_representative"], "frame_id"], "isolation"]
    clones = (size - len(embedded)) // len(embedded)
    vs = EdgeVectorStore(root / "store" / "qdrant")
    vs.ensure_payload_indexes(collection)  # a seed made before an index was added: not left to the first add
    started = time.perf_counter()
    for c in range(clones):
        source = f"fleet-{c:05d}"

        def renamed(table: pd.DataFrame, *columns: str, source=source) -> pd.DataFrame:
            table = table.copy()
            for column in columns:
                table[column] = table[column].str.replace(seed_id, source, n=1, regex=False)
            return table

        # its own hashes: one random mask over the seed's perceptual hashes keeps the distances
        # inside the source and puts other sources ~32 bits away (identical hashes are copies)
        mask = np.int64(rng.integers(0, 2**63 - 1))
        frames = renamed(raw, "frame_id", "video_id").assign(
            camera_id=f"cam-{c % 10}",
            sha256=raw["sha256"].str[:-6] + f"{c:06d}",
            phash=raw["phash"].to_numpy(dtype=np.int64) ^ mask,
        )
        # a representative near a cluster centre, its members next to it (their seed group's shape)
        reps = centres[rng.integers(0, CENTRES, len(embedded))] + 0.04 * rng.standard_normal(
            (len(embedded), dim), dtype=np.float32
        )
        vectors = reps[rep_index] + 0.004 * rng.standard_normal((len(embedded), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors_table = renamed(embedded, "frame_id").assign(vector=list(vectors.astype(np.float32)))
        if "point_id" in vectors_table:
            vectors_table["point_id"] = [point_id_for(f) for f in vectors_table["frame_id"]]
        grouped = renamed(groups, "frame_id", "group_id")
        flags = renamed(scored, "frame_id")
        store.write_table(layout.table_key("raw_frames", source), frames)
        store.write_table(layout.table_key("frame_embeddings", source), vectors_table)
        store.write_table(layout.table_key("duplicate_groups", source), grouped)
        store.write_table(layout.table_key("outliers", source), flags)
        embedded_frames = frames.set_index("frame_id").loc[vectors_table["frame_id"]].reset_index()
        curation = grouped.merge(flags, on="frame_id").set_index("frame_id").loc[embedded_frames["frame_id"]]
        payloads = [
            {**p, "group_id": g, "group_role": REPRESENTATIVE if r else MEMBER, "group_size": int(s) if r else None,
             "is_outlier": bool(o), "outlier_reasons": why, **({"isolation": float(d)} if r else {})}
            for p, g, r, s, o, why, d in zip(
                embedded_frames[PAYLOAD_COLUMNS].to_dict("records"), *(curation[k].to_numpy() for k in
                ("group_id", "is_representative", "group_size", "is_outlier", "reasons", "isolation")))
        ]  # fmt: skip
        ids = [point_id_for(f) for f in embedded_frames["frame_id"]]
        for start in range(0, len(ids), 1024):
            vs.upsert(collection, vector_name, ids[start : start + 1024], vectors[start : start + 1024],
                      payloads[start : start + 1024])  # fmt: skip
        isolation.add(reps_scored.to_numpy())
        if (c + 1) % 100 == 0:
            print(f"  grown {c + 1} of {clones} sources in {time.perf_counter() - started:.0f} s", flush=True)
    grow_s = time.perf_counter() - started
    started = time.perf_counter()
    vs.build_index(collection)
    vs.close()
    index_s = time.perf_counter() - started
    # the state the incremental path would have left
    grouped_state = read_state(store, "duplicate_groups")
    inputs = _embedding_inputs(store)
    n_frames = grouped_state["counts"]["frames"] * (clones + 1)
    n_groups = grouped_state["counts"]["groups"] * (clones + 1)
    grouped_state.update(inputs=inputs, counts={"frames": n_frames, "groups": n_groups,
                                                "duplicate_frames": n_frames - n_groups})  # fmt: skip
    store.put_bytes(layout.state_key("duplicate_groups"), json.dumps(grouped_state, sort_keys=True).encode())
    scored_state = read_state(store, "outliers")
    seed_summary = RunningSummary.from_json(scored_state["isolation"])
    isolation.counts += seed_summary.counts
    isolation.total += seed_summary.total
    isolation.squares += seed_summary.squares
    scored_state.update(sources=sorted(inputs), isolation=isolation.to_json(),
                        counts={k: v * (clones + 1) for k, v in scored_state["counts"].items()})  # fmt: skip
    store.put_bytes(layout.state_key("outliers"), json.dumps(scored_state, sort_keys=True).encode())
    return root, {"stored_frames": n_frames, "sources": clones + 1, "grow_s": round(grow_s, 1),
                  "index_build_once_s": round(index_s, 1)}  # fmt: skip


def show(label: str, run: dict) -> None:
    rss = ", ".join(f"{name} {mb} MB (anon {anon} MB)" for name, mb, anon in run["peak_rss_mb"][:4])
    print(f"  {label}: wall {run['wall_s']} s, CPU {run['cpu_s']} s, peak RSS {rss}"
          + (f", FAILED {run['failed']}" if run["failed"] else "")
          + (" -- STOPPED at the limit" if run.get("stopped") else ""), flush=True)  # fmt: skip
    if run.get("stopped"):
        print(f"    sources rewritten by then: {json.dumps(run['steps'])}", flush=True)
        return
    for asset, step in run["steps"].items():
        if asset in ("duplicate_groups", "outliers", "dataset_audit", "frame_embeddings", "raw_frames"):
            points = step.get("payload_points_written")
            written = "" if points is None else f", payload written on {points} points"
            print(f"    {asset}: {step.get('mode', '')} {json.dumps(step.get('timings', {}))}{written}")
    for name, steps in run["runs"].items():
        if name in ("curate", "rebuild"):
            print(f"    {name} steps: " + ", ".join(f"{s} {v['wall_s']} s" for s, v in steps.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--frames", type=int, default=1000, help="frames of each real video")
    parser.add_argument("--burst", type=int, default=0, help="then this many videos at once")
    parser.add_argument("--burst-frames", type=int, default=200, help="frames of each video of the burst")
    parser.add_argument("--rebuild-up-to", type=int, default=100_000)
    parser.add_argument("--quantization", default="none", choices=["none", "int8", "binary"])
    parser.add_argument("--codes-in-ram", action="store_true", help="int8 / binary codes in RAM, not a mapped file")
    parser.add_argument("--rebuild-limit-s", type=float, default=None, help="stop a rebuild past this and count")
    parser.add_argument("--work", type=Path, default=CACHE)
    parser.add_argument("--keep", action="store_true", help="keep each grown root")
    args = parser.parse_args()
    print(f"machine: {describe()}")
    CACHE.mkdir(parents=True, exist_ok=True)
    store = store_settings(args.quantization, args.codes_in_ram)
    print(f"store: {store}", flush=True)
    seed_root = seed(args.frames, store)
    videos = [make_video(CACHE / f"video-{i}-{n}.mp4", n, photo=i % 12, seed=100 + i)
              for i, n in enumerate([args.frames] + [args.burst_frames] * args.burst)]  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        root, grown = grow(seed_root, size, args.work)
        print(f"{grown['stored_frames']} stored frames in {grown['sources']} sources (grown in {grown['grow_s']} s; "
              f"HNSW index built once in {grown['index_build_once_s']} s)", flush=True)  # fmt: skip
        landing = root / "landing"
        landing.mkdir()
        (landing / "cam-new").mkdir()
        shutil.copy(videos[0], landing / "cam-new" / "one.mp4")
        show("add one video", headless(root, landing, "ingest,curate", root / "one.json", store))
        show("nothing new", headless(root, landing, "ingest,curate", root / "idle.json", store))
        if args.burst:
            for i, video in enumerate(videos[1:]):
                shutil.copy(video, landing / "cam-new" / f"burst-{i:02d}.mp4")
            burst = headless(root, landing, "ingest,curate", root / "burst.json", store)
            show(f"burst of {args.burst}", burst)
        if size <= args.rebuild_up_to:
            rebuilt = headless(root, landing, "rebuild", root / "rebuild.json", store, args.rebuild_limit_s)
            show("rebuild", rebuilt)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
