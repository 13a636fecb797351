"""`python -m curation_assets.demo`: generate demo videos and run the whole graph headless.

Storage root and landing zone come from the environment (CURATION_STORAGE_URI,
CURATION_LANDING_URI), so the same command runs against a folder or an S3 bucket. Without
CURATION_EMBEDDER_PRETRAINED the demo uses a seeded random-init CLIP (no download).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CURATION_EMBEDDER_PRETRAINED", "none")

import dagster as dg  # noqa: E402

from curation_assets import headless  # noqa: E402
from curation_assets.demo.labeler import annotate_round  # noqa: E402
from curation_assets.demo.scenes import CORRUPT_VIDEO, DEMO_SCENES, NOT_A_VIDEO, write_corrupt_video, write_video  # noqa: E402

ROUND = "round-0001"
BUDGET = 12


def drop_demo_videos(landing) -> int:
    """Put the demo's videos, a corrupt one and a non-video file in the landing zone (once)."""
    written = 0
    with tempfile.TemporaryDirectory() as tmp:
        for scene in DEMO_SCENES:
            if landing.exists(scene.name):
                continue
            path = Path(tmp) / Path(scene.name).name
            write_video(scene, path)
            landing.put_bytes(scene.name, path.read_bytes())
            written += 1
        if not landing.exists(CORRUPT_VIDEO):
            path = Path(tmp) / "valid.mp4"
            write_video(DEMO_SCENES[-1], path)
            write_corrupt_video(Path(tmp) / "corrupt.mp4", path)
            landing.put_bytes(CORRUPT_VIDEO, (Path(tmp) / "corrupt.mp4").read_bytes())
            written += 1
        if not landing.exists(NOT_A_VIDEO):
            landing.put_bytes(NOT_A_VIDEO, b"camera cam-a: aisle 3, mounted 2.4 m high\n")
            written += 1
    return written


def main() -> int:
    from curation_assets.definitions import defs

    started = time.perf_counter()
    object_store = defs.resources["object_store"]
    store, landing = object_store.store(), object_store.landing_store()
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    print(f"storage root: {store.root}\nlanding zone: {landing.root}")
    print(f"demo videos written: {drop_demo_videos(landing)}")

    videos = headless.ingest_landing(defs, instance)
    curate = headless.outcome("curate", headless.run_job(defs, instance, "curate"))
    round_ = headless.run_round(defs, instance, ROUND, BUDGET, "diversity")
    if round_.success and store.exists(f"exports/{ROUND}/coco_images.json"):
        annotate_round(store, ROUND)
    labeled = headless.outcome("import_labels", headless.run_job(defs, instance, "import_labels"))
    elapsed = time.perf_counter() - started

    print_summary(videos, [curate, round_, labeled], elapsed)
    expected_failures = {CORRUPT_VIDEO, NOT_A_VIDEO}
    from curation_assets.core.ids import video_id_for

    bad = [v for v in videos if not v.success and v.name not in {video_id_for(k) for k in expected_failures}]
    failed_checks = [c for o in [*videos, curate, round_, labeled] for c, v in o.checks.items() if v == "FAILED"]
    ok = not bad and not failed_checks and curate.success and round_.success and labeled.success
    print("\ndemo", "succeeded" if ok else "FAILED", f"in {elapsed:.1f} s")
    return 0 if ok else 1


def print_summary(videos: list[headless.RunOutcome], stages: list[headless.RunOutcome], elapsed: float) -> None:
    print("\n=== videos ===")
    for v in videos:
        if v.success:
            frames = v.metadata.get("raw_frames", {}).get("frames")
            print(f"  ok      {v.name}: {frames} frames")
        else:
            print(f"  FAILED  {v.name}: {v.error}")
    print(f"  {sum(v.success for v in videos)} ok, {sum(not v.success for v in videos)} failed")
    figures = {
        "frames": ("duplicate_groups", "frames"),
        "duplicate groups": ("duplicate_groups", "groups"),
        "duplicate frames": ("duplicate_groups", "duplicate_frames"),
        "outliers": ("outliers", "outliers"),
        "selected": ("selected_batch", "selected"),
        "labeled frames": ("labeled_set", "labeled_frames"),
        "annotations accepted": ("labeled_set", "annotations_accepted"),
        "annotations rejected": ("labeled_set", "annotations_rejected"),
        "label conflicts": ("labeled_set", "label_conflicts"),
        "dataset version": ("labeled_set", "dataset_version"),
    }
    metadata = {k: v for o in stages for k, v in o.metadata.items()}
    for o in videos:
        if "frame_embeddings" in o.metadata:
            metadata.setdefault("frame_embeddings", o.metadata["frame_embeddings"])
    print("\n=== pipeline ===")
    emb = metadata.get("frame_embeddings", {})
    model, weights = emb.get("embedder_model"), emb.get("embedder_weights")
    print(f"  embedder: {model} / {weights} (random init: {emb.get('embedder_random_init')})")
    for label, (asset, key) in figures.items():
        print(f"  {label:22s} {metadata.get(asset, {}).get(key, '-')}")
    for o in stages:
        if not o.success:
            print(f"  FAILED {o.name}: {o.error}")
    print("\n=== checks ===")
    verdicts: dict[str, dict[str, int]] = {}
    for o in [*videos, *stages]:
        for check, verdict in o.checks.items():
            verdicts.setdefault(check, {}).setdefault(verdict, 0)
            verdicts[check][verdict] += 1
    for check, counts in verdicts.items():
        print(f"  {check:40s} " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))


if __name__ == "__main__":
    sys.exit(main())
