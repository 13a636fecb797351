"""Duplicate and outlier quality on real data, against fastdup, imagededup and cleanvision.

    .venv/bin/python bench/quality_data.py bench/.quality              # the labelled set (real images, footage)
    bench/peers/setup.sh                                               # once: the peers' own environment
    bench/peers/.venv/bin/python bench/peers/run_peers.py bench/.quality/images bench/.quality/peers.json
    .venv/bin/python bench/quality.py bench/.quality [--random-init] [--sweep]

(``make bench-quality`` does all of it.) Ours runs the real thing: the headless command
ingests the image folder as one source (and, separately, the footage landing zone) and
materializes raw_frames, frame_embeddings, duplicate_groups and outliers with their checks,
at the default model's calibrated thresholds. Scores, per tool: recall of each near-copy
category (the copy lands in its original's group) and of real near duplicates (``view``),
pair precision over good images (every pair inside a predicted group counts; pairs with a
bad image are left out), bad images flagged per kind, good images flagged per kind (text
pages, logos, diagrams...). Footage (ours only; nothing in it is wrong): frames flagged per
source and the largest share of one source flagged. ``--random-init`` adds a run with a
seeded random-init model; ``--sweep`` re-groups our stored tables over a threshold grid.
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
from bench.quality_data import BAD, GOOD_KINDS, HARD_COPIES, NEAR_COPIES  # noqa: E402


def score(truth: dict[str, dict], groups: list[list[str]], flagged: dict[str, list[str]]) -> dict:
    group_of = {name: i for i, g in enumerate(groups) for name in g}
    original = {t["base"]: name for name, t in truth.items() if t["category"] == "original"}
    row: dict[str, float | str] = {}
    for category in NEAR_COPIES + HARD_COPIES:
        copies = [n for n, t in truth.items() if t["category"] == category]
        found = [n for n in copies if n in group_of and group_of[n] == group_of.get(original[truth[n]["base"]])]
        row[category] = len(found) / len(copies)
    row["near_recall"] = float(np.mean([row[c] for c in NEAR_COPIES]))
    good = {n for n, t in truth.items() if t["category"] not in BAD}
    pairs = [p for g in groups for p in itertools.combinations(sorted(set(g) & good), 2)]
    false_pairs = [(a, b) for a, b in pairs if truth[a]["base"] != truth[b]["base"]]
    row["precision"] = 1 - len(false_pairs) / len(pairs) if pairs else 1.0
    row["false_pairs"] = len(false_pairs)
    for category in BAD:
        bad = [n for n, t in truth.items() if t["category"] == category]
        row[category] = f"{sum(n in flagged for n in bad)}/{len(bad)}"
    bad_all = [n for n, t in truth.items() if t["category"] in BAD]
    hits = sum(n in flagged for n in bad_all)
    false_flags = [n for n in good if n in flagged]
    row["bad_recall"] = hits / len(bad_all)
    row["bad_precision"] = hits / (hits + len(false_flags)) if hits + len(false_flags) else 1.0
    row["good_flagged"] = f"{len(false_flags)}/{len(good)}"
    for kind in GOOD_KINDS:
        of_kind = [n for n in good if truth[n].get("kind") == kind and truth[n]["category"] not in NEAR_COPIES]
        row[f"flag_{kind}"] = f"{sum(n in flagged for n in of_kind)}/{len(of_kind)}"
    # groups that mix blank kinds: a black frame with a white one (issue 34)
    blank_kind = {n: t["category"] for n, t in truth.items() if t["category"] in ("black", "white")}
    kinds = [{blank_kind[n] for n in g if n in blank_kind} for g in groups]
    row["blank_mixed"] = sum(len(k) > 1 for k in kinds)
    row["_false_pairs"] = false_pairs
    row["_false_flags"] = {n: flagged[n] for n in false_flags}
    return row


def run_ours(landing_source: Path, work: Path, env_overrides: dict[str, str], folder: str | None) -> tuple[dict, float]:
    """The headless command on a landing zone; returns our tables, and wall seconds."""
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    shutil.copytree(landing_source, landing / folder if folder else landing)
    root = work / "root"
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", **env_overrides}
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
    from curation_assets.defs.curation import read_groups, read_outliers  # one table per source
    from resources.object_store import LocalObjectStore

    groups, outliers = read_groups(LocalObjectStore(root)), read_outliers(LocalObjectStore(root))
    return {"frames": frames, "vectors": vectors, "groups": groups, "outliers": outliers}


def our_findings(t: dict, groups=None) -> tuple[list[list[str]], dict[str, list[str]]]:
    name_of = dict(zip(t["frames"]["frame_id"], t["frames"]["source_name"].map(lambda s: Path(s).name)))
    groups = t["groups"] if groups is None else groups
    found = [[name_of[f] for f in g] for g in groups.groupby("group_id")["frame_id"].agg(list) if len(g) > 1]
    out = t["outliers"]
    flagged = {name_of[f]: r.split(",") for f, r in zip(out["frame_id"], out["reasons"]) if r}
    return found, flagged


def footage_report(t: dict) -> list[dict]:
    """Per source (video, or clip of the frame folder): frames, flagged, reasons."""
    frames = t["frames"][["frame_id", "video_id", "source_name"]].merge(t["outliers"], on="frame_id")
    clip = frames["source_name"].map(lambda s: Path(s).name.split("_")[0] if s.endswith(".jpg") else "")
    frames["clip"] = frames["video_id"] + np.where(clip != "", "/" + clip, "")
    rows = []
    for name, part in frames.groupby("clip"):
        reasons = part.loc[part["is_outlier"], "reasons"].str.split(",").explode().value_counts().to_dict()
        rows.append({"source": name, "frames": len(part), "flagged": int(part["is_outlier"].sum()), "reasons": reasons})
    return rows


def margins(truth: dict, t: dict) -> None:
    """Per absolute image rule: its threshold, the good image nearest to it and the bad image
    of its kind nearest to it (on the rule's own figure), so a reader sees how much room each
    side has on this set. A negative margin is an example on the wrong side."""
    from curation_assets.core.outliers import OutlierParams

    p = OutlierParams()
    frames = t["frames"][~t["frames"]["corrupt"]].copy()
    frames["name"] = frames["source_name"].map(lambda s: Path(s).name)
    frames["category"] = frames["name"].map(lambda n: truth.get(n, {}).get("category"))
    frames["detail_ratio"] = frames["coarse_detail"] / frames["broad_detail"].clip(lower=1e-12)
    good = frames[~frames["category"].isin(BAD) & frames["category"].notna()]
    # rule: (figure, threshold, flags below it?, bad kinds it must catch)
    rules = {
        "dark": ("luma_p99", p.dark_p99, True, ("dark", "black")),
        "bright": ("luma_p01", p.bright_p01, False, ("bright", "white")),
        "low_information": ("contrast", p.uniform_contrast, True, ("black", "white")),
        "noise": ("pixel_correlation", p.noise_correlation, True, ("noise",)),
        "blurry": ("detail_ratio", p.blurry_detail_ratio, True, ("blurred",)),
    }
    print("\nmargins: rule | figure | threshold | nearest good (margin) | nearest bad (margin)")
    for rule, (figure, threshold, below, kinds) in rules.items():
        sign = 1 if below else -1
        good_margin = sign * (good[figure] - threshold)
        bad = frames[frames["category"].isin(kinds)]
        bad_margin = sign * (threshold - bad[figure])
        g, b = good_margin.idxmin(), bad_margin.idxmin() if len(bad) else None
        bad_text = f"{bad.at[b, figure]:.4g} ({bad_margin[b]:+.3g}, {bad.at[b, 'name']})" if b is not None else "-"
        print(f"{rule} | {figure} | {threshold:.4g} | {good.at[g, figure]:.4g} ({good_margin[g]:+.3g}, "
              f"{good.at[g, 'name']}) | {bad_text}")  # fmt: skip


def sweep(truth: dict, t: dict) -> None:
    """Re-group our stored frames and vectors over a grid of thresholds."""
    from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups

    frames = t["frames"][~t["frames"]["corrupt"]].merge(t["vectors"][["frame_id", "vector"]], on="frame_id")
    vectors = np.stack(frames.pop("vector").to_numpy()).astype(np.float32)
    print("\nsweep: near_cosine | near_phash_distance | scene_cosine | near recall | view | false pairs")
    for cosine, ham, scene in itertools.product((0.8, 0.85, 0.9), (12, 16, 20), (0.8, 0.85, 0.88, 0.9, None)):
        params = DuplicateParams(near_cosine=cosine, near_phash_distance=ham, scene_cosine=scene)
        row = score(truth, our_findings(t, find_duplicate_groups(frames, vectors, params))[0], {})
        print(f"{cosine} | {ham} | {scene} | {row['near_recall']:.3f} | {row['view']:.3f} | {row['false_pairs']}")


COLUMNS = ["near_recall", "precision", "false_pairs", "blank_mixed", *NEAR_COPIES, *HARD_COPIES, "bad_recall",
           "bad_precision", *BAD, "good_flagged", *(f"flag_{k}" for k in GOOD_KINDS), "seconds"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", default=ROOT / "bench" / ".quality")
    parser.add_argument("--random-init", action="store_true", help="also run a seeded random-init model")
    parser.add_argument(
        "--pretrained",
        default="",
        help="also run the packaged model with these weights "
        "(e.g. embedder_adaptation's checkpoint: a new model, thresholds uncalibrated)",
    )
    parser.add_argument("--sweep", action="store_true", help="also print a threshold sweep of our grouping")
    parser.add_argument("--details", action="store_true", help="list our false pairs and false flags")
    args = parser.parse_args()
    truth_all = json.loads((args.data / "truth.json").read_text())
    truth = truth_all["images"]

    models = {"ours (efficientnet-lite0, packaged)": {}}
    if args.random_init:
        models["ours (efficientnet-lite0, random init)"] = {"CURATION_EMBEDDER_PRETRAINED": "none"}
    if args.pretrained:
        label = f"ours (efficientnet-lite0, {Path(args.pretrained).name})"
        models[label] = {"CURATION_EMBEDDER_PRETRAINED": args.pretrained}
    results, footage, ours_tables = {}, {}, None
    for label, env in models.items():
        t, seconds = run_ours(args.data / "images", args.data / "ours", env, folder="photos")
        ours_tables = ours_tables or t
        groups, flagged = our_findings(t)
        results[label] = {"seconds": seconds, "groups": groups, "flagged": flagged}
        ft, fseconds = run_ours(args.data / "footage", args.data / "ours-footage", env, folder=None)
        footage[label] = (footage_report(ft), fseconds)
    peers_file = args.data / "peers.json"
    if peers_file.exists():
        results.update(json.loads(peers_file.read_text()))
    else:
        print(f"({peers_file} missing: run bench/peers/run_peers.py to compare with the peers)")

    print(f"machine: {describe()}")
    counts = {c: sum(t["category"] == c for t in truth.values()) for c in ("original", *NEAR_COPIES, *HARD_COPIES)}
    print(f"{len(truth)} images: {counts}, {sum(t['category'] in BAD for t in truth.values())} bad")
    print("tool | " + " | ".join(COLUMNS))
    details = {}
    for name, found in results.items():
        row = {**score(truth, found["groups"], found["flagged"]), "seconds": found.get("seconds")}
        details[name] = row
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS]
        print(f"{name} | " + " | ".join(cells) + (f"  [{found['error']}]" if found.get("error") else ""))
    for label, (rows, seconds) in footage.items():
        total, flagged = sum(r["frames"] for r in rows), sum(r["flagged"] for r in rows)
        worst = max(r["flagged"] / r["frames"] for r in rows)
        print(f"\nfootage, {label}: {flagged}/{total} frames flagged ({flagged / total:.1%}), "
              f"largest share of one source {worst:.1%}, {seconds:.1f} s")  # fmt: skip
        for r in rows:
            print(f"  {r['source']}: {r['flagged']}/{r['frames']} {r['reasons'] or ''}")
    if args.details:
        for name, row in details.items():
            if name.startswith("ours"):
                print(f"\n{name} false pairs: {row['_false_pairs']}\nfalse flags: {row['_false_flags']}")
    margins(truth, ours_tables)
    if args.sweep:
        sweep(truth, ours_tables)


if __name__ == "__main__":
    main()
