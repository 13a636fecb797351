"""raw_frames: one landing video -> sampled JPEG frames in object storage + a frame table."""

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import dagster as dg
import pandas as pd
from pydantic import Field

from curation_assets.core import layout
from curation_assets.core.frames import VideoDecodeError, encode_jpeg, sample_frames
from curation_assets.core.ids import camera_id_for, frame_id_for, video_id_for
from curation_assets.core.image_stats import image_stats
from curation_assets.core.progress import Progress
from curation_assets.defs import checks
from curation_assets.defs.partitions import videos
from curation_assets.quality import suites
from resources import ExpectationsResource, ObjectStoreResource
from resources.object_store import ObjectStore, StoredObject

ASSET = "raw_frames"


class RawFramesConfig(dg.Config):
    sample_fps: float = Field(default=2.0, description="Frames kept per second of video.")
    every_n: int = Field(default=0, description="Keep every n-th frame instead (0: use sample_fps).")
    max_frames: int = Field(default=0, description="Stop after this many frames (0: no limit).")
    jpeg_quality: int = 90
    max_pixels: int = Field(default=4096 * 4096, description="Reject videos larger than this.")
    min_frames: int = Field(default=1, description="Fewer sampled frames fail the table check.")


def find_landing_object(landing: ObjectStore, video_id: str) -> StoredObject:
    for obj in landing.list(""):
        if video_id_for(obj.key) == video_id:
            return obj
    raise dg.Failure(f"no landing object for partition {video_id!r} under {landing.root}")


@dg.asset(
    partitions_def=videos,
    group_name="ingestion",
    kinds={"pyav", "parquet"},
    check_specs=[
        checks.blocking("raw_frames_table_valid", ASSET, "≥1 frame, unique ids, metrics present and in range (GX)"),
        checks.blocking("raw_frames_images_exist", ASSET, "every frame's image URI exists in object storage"),
    ],
)
def raw_frames(
    context: dg.AssetExecutionContext,
    config: RawFramesConfig,
    object_store: ObjectStoreResource,
    expectations: ExpectationsResource,
):
    """Decode one landing video, sample frames, store them as JPEG and measure each one."""
    video_id = context.partition_key
    store, landing = object_store.store(), object_store.landing_store()
    source = find_landing_object(landing, video_id)
    camera_id = camera_id_for(source.key)
    started = time.perf_counter()
    rows, pending = [], []
    progress = Progress(f"{source.key} frames", None, context.log.info)
    with landing.local_path(source.key) as path, ThreadPoolExecutor(max_workers=4) as pool:
        try:
            for frame in sample_frames(
                path,
                name=f"landing/{source.key}",
                sample_fps=None if config.every_n else config.sample_fps,
                every_n=config.every_n or None,
                max_frames=config.max_frames or None,
                max_pixels=config.max_pixels,
            ):
                key = layout.frame_key(video_id, frame.index)
                height, width = frame.rgb.shape[:2]
                pending.append(pool.submit(_store_jpeg, store, key, frame.rgb, config.jpeg_quality))
                stats = image_stats(frame.rgb)
                rows.append(
                    {
                        "frame_id": frame_id_for(video_id, frame.index),
                        "video_id": video_id,
                        "camera_id": camera_id,
                        "frame_index": frame.index,
                        "timestamp_s": frame.timestamp_s,
                        "uri": store.uri(key),
                        "width": width,
                        "height": height,
                        **asdict(stats),
                    }
                )
                progress.advance()
        except VideoDecodeError as exc:
            raise dg.Failure(description=str(exc), metadata={"landing_key": source.key}) from exc
        for job in pending:
            job.result()
    table = pd.DataFrame(rows)
    elapsed = time.perf_counter() - started

    validation = expectations.validate(table, "raw_frames", suites.frame_table(config.min_frames))
    missing = [uri for uri in table["uri"] if not store.exists(store.key_for_uri(uri))]
    results = [
        checks.from_validation("raw_frames_table_valid", validation, rows=len(table)),
        checks.from_assertion(
            "raw_frames_images_exist",
            not missing,
            missing=len(missing),
            missing_examples=missing[:10] or "none",
        ),
    ]
    failed = checks.blocking_failures(results)
    key = layout.rejected_table_key(ASSET, video_id) if failed else layout.table_key(ASSET, video_id)
    store.write_table(key, table)
    if failed:
        context.log.error(f"{source.key}: blocking checks failed ({', '.join(failed)}); table kept at {key}")
    return dg.MaterializeResult(
        metadata={
            "landing_key": source.key,
            "camera_id": camera_id,
            "frames": len(table),
            "seconds": round(elapsed, 2),
            "frames_per_second": round(len(table) / elapsed, 1) if elapsed else None,
            "table": dg.MetadataValue.path(store.uri(key)),
            "published": not failed,
        },
        check_results=results,
    )


def _store_jpeg(store: ObjectStore, key: str, rgb, quality: int) -> None:
    store.put_bytes(key, encode_jpeg(rgb, quality))
