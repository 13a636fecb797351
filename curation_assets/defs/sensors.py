"""new_video_sensor: each new or changed landing object becomes a partition and a run."""

import json

import dagster as dg

from curation_assets.core.ids import source_id_for
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.ingestion import landing_sources, raw_frames
from curation_assets.defs.partitions import videos
from resources import ObjectStoreResource

ingest_video_job = dg.define_asset_job(
    "ingest_video",
    selection=dg.AssetSelection.assets(raw_frames, frame_embeddings),
    partitions_def=videos,
    description="Frames and embeddings for one landing video.",
)

SOURCE_TAG = "curation/source"  # "<video_id>@<fingerprint>": which content a run ingested
MAX_RUNS_PER_TICK = 50
LIST_PAGE_SIZE = 1000


@dg.sensor(
    job=ingest_video_job,
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Registers a partition and requests a run for every new or changed landing source.",
)
def new_video_sensor(context: dg.SensorEvaluationContext, object_store: ObjectStoreResource):
    # The cursor maps source key -> fingerprint (ETag, or size + mtime; for an image folder a
    # hash over its files) of what was ingested, so unchanged content is never ingested twice
    # and changed content is re-ingested.
    # Every tick re-lists the landing zone page by page; S3's 1-second LastModified makes a
    # "newer than" cursor miss same-second uploads, a fingerprint map cannot.
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    landing = object_store.landing_store()
    known = set(context.instance.get_dynamic_partitions(videos.name))
    requests, new_keys = [], []
    for source in landing_sources(landing, page_size=LIST_PAGE_SIZE):
        if seen.get(source.key) == source.fingerprint:
            continue
        source_id = source_id_for(source.key)
        content = f"{source_id}@{source.fingerprint}"
        if _already_run(context.instance, content):  # e.g. by the headless command
            seen[source.key] = source.fingerprint
            continue
        if len(requests) >= MAX_RUNS_PER_TICK:
            break  # the rest on the next tick
        if source_id not in known and source_id not in new_keys:
            new_keys.append(source_id)
        requests.append(
            dg.RunRequest(
                run_key=content,
                partition_key=source_id,
                tags={"curation/landing_key": source.key[:255], SOURCE_TAG: content},
            )
        )
        seen[source.key] = source.fingerprint
    if requests:
        context.log.info(f"{len(requests)} landing objects to ingest ({len(new_keys)} new partitions)")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[videos.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(seen, sort_keys=True),
    )


def _already_run(instance: dg.DagsterInstance, source: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={SOURCE_TAG: source}), limit=1))
