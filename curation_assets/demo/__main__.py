"""`python -m curation_assets.demo`: generate demo videos and run the whole graph headless.

Storage root and landing zone come from the environment (CURATION_STORAGE_URI,
CURATION_LANDING_URI), so the same command runs against a folder or an S3 bucket. The
embedder is the packaged pretrained EfficientNet-Lite0 unless CURATION_EMBEDDER_MODEL says
otherwise (no download either way).
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg  # noqa: E402

from curation_assets.cli import headless  # noqa: E402
from curation_assets.core.ids import video_id_for  # noqa: E402
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
    objects = headless.outcome("objects", headless.run_job(defs, instance, "curate_objects"))  # the labeled boxes
    mapped = headless.outcome("map", headless.run_job(defs, instance, "draw_map"))  # coloured by round too
    elapsed = time.perf_counter() - started

    summary = headless.summarize(videos, [curate, round_, labeled, objects, mapped], elapsed)
    print(headless.format_summary(summary))
    expected_failures = {video_id_for(CORRUPT_VIDEO), video_id_for(NOT_A_VIDEO)}
    bad = [v for v in videos if not v.success and v.name not in expected_failures]
    stages_ok = all(s["success"] for s in summary["stages"])
    ok = not bad and not summary["blocking_checks_failed"] and stages_ok
    print("\ndemo", "succeeded" if ok else "FAILED", f"in {elapsed:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
