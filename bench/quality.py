"""Duplicate and outlier quality against fastdup, imagededup and cleanvision, on the same images.

    bench/peers/setup.sh                                     # once: the peers' own environment
    bench/peers/.venv/bin/python bench/quality_data.py bench/.quality
    bench/peers/.venv/bin/python bench/peers/run_peers.py bench/.quality/images bench/.quality/peers.json
    .venv/bin/python bench/quality.py bench/.quality [--model ViT-B-32 --pretrained none] [--sweep]

(``make bench-quality`` does all four.) Ours runs the real thing: the headless command
ingests the folder as one image source and materializes raw_frames, frame_embeddings,
duplicate_groups and outliers with their checks, at the default thresholds. Scores, per
tool: recall of each near-copy category (the copy lands in its original's group), pair
precision over originals and the five near-copy categories (every pair inside a predicted
group counts; pairs with a bad image are left out), the same with flips and views, and
for bad images how many of each kind were flagged (any reason) and how many good images
were flagged too. ``--sweep`` re-groups our stored tables over a grid of thresholds
(calibration; see DuplicateParams).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402
from bench.quality_data import BAD, HARD_COPIES, NEAR_COPIES  # noqa: E402


def score(truth: dict[str, dict], groups: list[list[str]], flagged: dict[str, list[str]]) -> dict:
    group_of = {name: i for i, g in enumerate(groups) for name in g}
    original = {t["base"]: name for name, t in truth.items() if t["category"] == "original"}
    row: dict[str, float | str] = {}
    for category in NEAR_COPIES + HARD_COPIES:
        copies = [n for n, t in truth.items() if t["category"] == category]
        found = [n for n in copies if n in group_of and group_of[n] == group_of.get(original[truth[n]["base"]])]
        row[category] = len(found) / len(copies)
    row["near_recall"] = float(np.mean([row[c] for c in NEAR_COPIES]))

    def precision(categories: tuple[str, ...]) -> float:
        keep = {n for n, t in truth.items() if t["category"] in ("original", *categories)}
        pairs = [p for g in groups for p in itertools.combinations(sorted(set(g) & keep), 2)]
        true = sum(truth[a]["base"] == truth[b]["base"] for a, b in pairs)
        return true / len(pairs) if pairs else 1.0

    row["precision"] = precision(NEAR_COPIES)
    row["precision_all"] = precision(NEAR_COPIES + HARD_COPIES)
    for category in BAD:
        bad = [n for n, t in truth.items() if t["category"] == category]
        row[category] = f"{sum(n in flagged for n in bad)}/{len(bad)}"
    good = [n for n, t in truth.items() if t["category"] not in BAD]
    row["false_flags"] = f"{sum(n in flagged for n in good)}/{len(good)}"
    return row


def run_ours(data: Path, work: Path, env_overrides: dict[str, str]) -> tuple[dict, float]:
    """The headless command on the folder; returns our tables joined by file name, and wall seconds."""
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    shutil.copytree(data / "images", landing / "photos")
    root = work / "root"
    env = {**os.environ, "CURATION_QDRANT_PATH": str(root / "qdrant"), **env_overrides}
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root)]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):  # 1: a blocking check failed somewhere; the tables are still there
        raise SystemExit(f"our pipeline failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return tables(root), seconds


def tables(root: Path) -> dict:
    import pandas as pd

    frames = pd.concat(pd.read_parquet(p) for p in (root / "tables" / "raw_frames").glob("*.parquet"))
    vectors = pd.concat(pd.read_parquet(p) for p in (root / "tables" / "frame_embeddings").glob("*.parquet"))
    groups = pd.read_parquet(root / "tables" / "duplicate_groups" / "all.parquet")
    outliers = pd.read_parquet(root / "tables" / "outliers" / "all.parquet")
    return {"frames": frames, "vectors": vectors, "groups": groups, "outliers": outliers}


def our_findings(t: dict, groups=None) -> tuple[list[list[str]], dict[str, list[str]]]:
    name_of = dict(zip(t["frames"]["frame_id"], t["frames"]["source_name"].map(lambda s: Path(s).name)))
    groups = t["groups"] if groups is None else groups
    found = [[name_of[f] for f in g] for g in groups.groupby("group_id")["frame_id"].agg(list) if len(g) > 1]
    out = t["outliers"]
    flagged = {name_of[f]: r.split(",") for f, r in zip(out["frame_id"], out["reasons"]) if r}
    return found, flagged


def sweep(truth: dict, t: dict) -> None:
    """Re-group our stored frames and vectors over a grid of thresholds."""
    from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups

    frames = t["frames"][~t["frames"]["corrupt"]].merge(t["vectors"][["frame_id", "vector"]], on="frame_id")
    vectors = np.stack(frames.pop("vector").to_numpy()).astype(np.float32)
    print("\nsweep: near_cosine | near_phash_distance | identical_phash_distance | near recall | precision | all")
    for cosine, ham, identical in itertools.product((0.85, 0.9, 0.93, 0.95, 0.97), (8, 10, 12, 16, 20), (0, 2, 4)):
        groups = find_duplicate_groups(frames, vectors, DuplicateParams(cosine, ham, identical))
        row = score(truth, our_findings(t, groups)[0], {})
        print(f"{cosine} | {ham} | {identical} | {row['near_recall']:.3f} | {row['precision']:.3f} | "
              f"{row['precision_all']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", default=ROOT / "bench" / ".quality")
    parser.add_argument("--model", default=os.environ.get("CURATION_EMBEDDER_MODEL", "ViT-B-32"))
    parser.add_argument("--pretrained", default=os.environ.get("CURATION_EMBEDDER_PRETRAINED", "none"))
    parser.add_argument("--sweep", action="store_true", help="also print a threshold sweep of our grouping")
    args = parser.parse_args()
    truth = json.loads((args.data / "truth.json").read_text())

    env = {"CURATION_EMBEDDER_MODEL": args.model, "CURATION_EMBEDDER_PRETRAINED": args.pretrained}
    ours, seconds = run_ours(args.data, args.data / "ours", env)
    groups, flagged = our_findings(ours)
    results = {f"ours ({args.model}, {args.pretrained})": {"seconds": seconds, "groups": groups, "flagged": flagged}}
    peers_file = args.data / "peers.json"
    if peers_file.exists():
        results.update(json.loads(peers_file.read_text()))
    else:
        print(f"({peers_file} missing: run bench/peers/run_peers.py to compare with the peers)")

    print(f"machine: {describe()}")
    print(f"{len(truth)} images; {sum(t['category'] in NEAR_COPIES for t in truth.values())} near copies "
          f"({', '.join(NEAR_COPIES)}), {sum(t['category'] in HARD_COPIES for t in truth.values())} flips/views, "
          f"{sum(t['category'] in BAD for t in truth.values())} bad images")  # fmt: skip
    columns = ["near_recall", "precision", *NEAR_COPIES, *HARD_COPIES, "precision_all", *BAD, "false_flags", "seconds"]
    print("tool | " + " | ".join(columns))
    for name, found in results.items():
        row = {**score(truth, found["groups"], found["flagged"]), "seconds": found.get("seconds")}
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print(f"{name} | " + " | ".join(cells) + (f"  [{found['error']}]" if found.get("error") else ""))
    if args.sweep:
        sweep(truth, ours)


if __name__ == "__main__":
    main()
