"""Stereo pairs against other poses of repetitive patterns: the geometric checks, with margins.

    .venv/bin/python bench/rig_data.py bench/.rig/mixed [--boards]             # calibration parts (thresholds chosen)
    .venv/bin/python bench/rig_data.py bench/.rig/mixed-held-out --held-out [--boards]
    .venv/bin/python bench/rig.py bench/.rig/mixed [bench/.rig/mixed-held-out ...]     # make bench-rig: all four

Per pair (``bench/rig_data.py``: two cameras of a rig at one instant, or one camera and two
poses of the pattern): the packaged model's embedding cosine, the perceptual hashes' distance,
ORB's agreeing matches (``geometry.matched``), the dense check's score (``geometry.alignment``)
and the verdict (``geometry.inliers``); then the pipeline's grouping (``find_duplicate_groups``
with the same verification, one image folder): stereo pairs joined, pose pairs joined. The
margins: the deciding score's distance to its threshold for the nearest stereo and pose pair.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402


def folder_frames(pictures: list[Image.Image], folder: str) -> pd.DataFrame:
    """The frame table of pictures landed as one image folder, in this order (real stats and hashes)."""
    from curation_assets.core.image_stats import image_stats

    return pd.DataFrame(
        [
            {
                "frame_id": f"{folder}/{i:06d}",
                "video_id": folder,
                "frame_index": i,
                "timestamp_s": 0.0,
                **image_stats(np.asarray(p)).__dict__,
            }
            for i, p in enumerate(pictures)
        ]  # fmt: skip
    )


def evaluate(data: Path) -> dict:
    from curation_assets.core import geometry
    from curation_assets.core.duplicates import DuplicateParams, find_duplicate_groups
    from curation_assets.core.embedder import Embedder
    from curation_assets.core.image_stats import hamming_distance

    truth = json.loads((data / "truth.json").read_text())["images"]
    names = sorted(truth)
    blobs = [(data / "images" / n).read_bytes() for n in names]
    pictures = [Image.open(data / "images" / n).convert("RGB") for n in names]
    frames = folder_frames(pictures, "rig")
    model = Embedder()
    vectors = model.embed([lambda p=p: p for p in pictures])
    params = DuplicateParams.for_model(model.calibration)
    points = [geometry.keypoints(b) for b in blobs]
    index = {n: i for i, n in enumerate(names)}
    rows, seconds = [], []
    for name in names:
        if not name.endswith("_a.jpg"):
            continue
        a, b = index[name], index[name.replace("_a.jpg", "_b.jpg")]
        started = time.perf_counter()
        verdict = geometry.inliers(points[a], points[b])
        seconds.append(time.perf_counter() - started)
        rows.append({
            "pair": name[: -len("_a.jpg")],
            "stereo": truth[name]["base"] == truth[names[b]]["base"],
            "cosine": float(vectors[a] @ vectors[b]),
            "bits": int(hamming_distance(frames["phash"][a], frames["phash"][b])),
            "orb": geometry.matched(points[a], points[b]),
            "dense": geometry.alignment(points[a].grey, points[b].grey),
            "covered": geometry.found_share(points[a], points[b], *geometry._matches(points[a], points[b]))
            if hasattr(geometry, "found_share") else np.nan,
            "verdict": verdict,
        })  # fmt: skip
    groups = find_duplicate_groups(frames, vectors, params, verify=lambda i, j: geometry.inliers(points[i], points[j]))
    group = dict(zip(names, groups["group_id"]))
    for row in rows:
        row["joined"] = group[f"{row['pair']}_a.jpg"] == group[f"{row['pair']}_b.jpg"]
    table = pd.DataFrame(rows)
    return {"table": table, "seconds": seconds, "params": params}


def report(data: Path, result: dict) -> None:
    from curation_assets.core import geometry

    table = result["table"]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(f"\n{data}:\n{table.to_string(index=False, float_format=lambda v: f'{v:.3f}')}")
    stereo, pose = table[table["stereo"]], table[~table["stereo"]]
    confirm = result["params"].verify_inliers
    print(f"stereo pairs joined {int(stereo['joined'].sum())}/{len(stereo)}, "
          f"pose pairs joined (false) {int(pose['joined'].sum())}/{len(pose)}; confirmed by the geometric check: "
          f"stereo {int((stereo['verdict'] >= confirm).sum())}/{len(stereo)}, "
          f"pose {int((pose['verdict'] >= confirm).sum())}/{len(pose)}")  # fmt: skip
    if "covered" in table and table["covered"].notna().any():
        high, low, judged = geometry.COVERED, geometry.PARTLY_COVERED, geometry.JUDGED_BY_MATCHES
        agreed_stereo, agreed_pose = stereo[stereo["orb"] >= judged], pose[pose["orb"] >= judged]
        print(f"confirmation (share found >= {high}): stereo {int((stereo['covered'] >= high).sum())}/{len(stereo)}, "
              f"pose {int((pose['covered'] >= high).sum())}/{len(pose)}; nearest pose {pose['covered'].max():.3f} "
              f"({high - pose['covered'].max():+.3f})")  # fmt: skip
        vetoed_pose, vetoed_stereo = (int((part["covered"] < low).sum()) for part in (agreed_pose, agreed_stereo))
        nearest = agreed_stereo["covered"].min()
        print(
            f"veto (>= {judged} keypoints agree, share found < {low}): pose {vetoed_pose}/{len(agreed_pose)}, "
            f"stereo {vetoed_stereo}/{len(agreed_stereo)}; nearest stereo {nearest:.3f} ({nearest - low:+.3f})"
        )
    print(f"median {np.median(result['seconds']) * 1e3:.0f} ms a pair, slowest {max(result['seconds']) * 1e3:.0f} ms")


def main() -> None:
    print(f"machine: {describe()}")
    for data in [Path(a) for a in sys.argv[1:]] or [ROOT / "bench" / ".rig" / "mixed"]:
        report(data, evaluate(data))


if __name__ == "__main__":
    main()
