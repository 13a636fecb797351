"""The sensors: new_video_sensor (each new or changed landing object becomes a partition and
a run) and the automation sensor (global assets follow new embeddings)."""

import json

import dagster as dg

from curation_assets.core.ids import source_id_for
from curation_assets.defs.fleet import Fleet, partitions
from curation_assets.defs.ingestion import landing_sources
from curation_assets.defs.jobs import ingest_video_job
from curation_assets.defs.partitions import videos

SOURCE_TAG = "curation/source"  # "<video_id>@<fingerprint>": which content a run ingested
MAX_RUNS_PER_TICK = 50
LIST_PAGE_SIZE = 1000
MAX_FAILED_ATTEMPTS = 3  # the sensor gives up on content that failed this often, until it changes
IN_FLIGHT = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


def load_cursor(text: str | None) -> dict[str, dict[str, str]]:
    cursor = json.loads(text) if text else {}
    if cursor and "done" not in cursor:  # the first format: source key -> fingerprint ingested
        cursor = {"done": cursor}
    return {"done": cursor.get("done", {}), "requested": cursor.get("requested", {})}


def plan_ingest(
    instance: dg.DagsterInstance,
    landing,
    cursor: dict[str, dict[str, str]],
    max_failed: int | None = MAX_FAILED_ATTEMPTS,
    skip: set[str] = frozenset(),
    log=None,
    max_runs: int = MAX_RUNS_PER_TICK,
    page_size: int = LIST_PAGE_SIZE,
    partitions_name: str = videos.name,
    job_name: str = ingest_video_job.name,
) -> tuple[list[dg.RunRequest], list[str], dict[str, dict[str, str]]]:
    """What to ingest now: (run requests, new partition keys, the updated cursor).

    The cursor's ``done`` maps source key -> fingerprint (ETag, or size + mtime; for an image
    folder a hash over its files) of content whose ingest *succeeded*, so unchanged content
    is never ingested twice and changed content is re-ingested; ``requested`` holds the run
    key last requested for a source, so a request not yet turned into a run is not repeated.
    Content whose run is in flight is left alone; content whose runs failed or died is
    requested again (with a new run key), up to ``max_failed`` failures (None: always),
    skipping the contents in ``skip``.
    Every tick re-lists the landing zone page by page; S3's 1-second LastModified makes a
    "newer than" cursor miss same-second uploads, a fingerprint map cannot.
    """
    done, requested = dict(cursor["done"]), dict(cursor["requested"])
    known = set(instance.get_dynamic_partitions(partitions_name))
    requests, new_keys = [], []
    for source in landing_sources(landing, page_size=page_size):
        if done.get(source.key) == source.fingerprint:
            continue
        source_id = source_id_for(source.key)
        content = f"{source_id}@{source.fingerprint}"
        statuses = [
            r.dagster_run.status
            # this fleet's runs only: another fleet may hold the same content in its own landing zone
            for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags={SOURCE_TAG: content}))
        ]
        if dg.DagsterRunStatus.SUCCESS in statuses:  # e.g. by the headless command, or a run the cursor missed
            done[source.key] = source.fingerprint
            requested.pop(source.key, None)
            continue
        if IN_FLIGHT & set(statuses):
            continue
        failures = len(statuses)
        run_key = content if not failures else f"{content}#retry{failures}"
        if (
            (max_failed is not None and failures >= max_failed)
            or content in skip
            or requested.get(source.key) == run_key
        ):
            continue
        if len(requests) >= max_runs:
            break  # the rest on the next tick
        if source_id not in known and source_id not in new_keys:
            new_keys.append(source_id)
        if failures and log:
            log(f"{source.key}: retrying after {failures} failed run(s)")
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=source_id,
                tags={"curation/landing_key": source.key[:255], SOURCE_TAG: content},
            )
        )
        requested[source.key] = run_key
    return requests, new_keys, {"done": done, "requested": requested}


def build_new_video_sensor(
    max_runs_per_tick: int = MAX_RUNS_PER_TICK,
    page_size: int = LIST_PAGE_SIZE,
    fleet: Fleet = Fleet(),
    job=ingest_video_job,
    interval_s: int = 10,
    running: bool = True,
) -> dg.SensorDefinition:
    """The landing-zone sensor of ``fleet`` (its landing zone, partitions and ``job``),
    requesting at most ``max_runs_per_tick`` runs a tick and listing ``page_size`` objects
    a page (tests make both small)."""
    source_partitions = partitions(fleet, videos)
    store_key = fleet.name("object_store")

    @dg.sensor(
        name=fleet.name("new_video_sensor"),
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={store_key},
        description="Registers a partition and requests a run for every new, changed or failed landing source.",
    )
    def new_video_sensor(context: dg.SensorEvaluationContext, **_):  # a direct call also passes them as keywords
        landing = getattr(context.resources, store_key).landing_store()
        requests, new_keys, cursor = plan_ingest(context.instance, landing, load_cursor(context.cursor),
                                                 log=context.log.info, max_runs=max_runs_per_tick,
                                                 page_size=page_size,
                                                 partitions_name=source_partitions.name,
                                                 job_name=job.name)  # fmt: skip
        if requests:
            context.log.info(f"{len(requests)} landing objects to ingest ({len(new_keys)} new partitions)")
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[source_partitions.build_add_request(new_keys)] if new_keys else [],
            cursor=json.dumps(cursor, sort_keys=True),
        )

    return new_video_sensor


# the global assets that follow new embeddings
AUTOMATED = ("duplicate_groups", "outliers", "embedding_map", "dataset_audit")


def build_automation_sensor(fleet: Fleet = Fleet(), interval_s: int = 10, running: bool = True):
    return dg.AutomationConditionSensorDefinition(
        fleet.name("curation_automation"),
        target=dg.AssetSelection.assets(*(fleet.key(asset) for asset in AUTOMATED)),
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=interval_s,  # a new video's groups follow its embeddings within seconds
    )


new_video_sensor = build_new_video_sensor()
automation_sensor = build_automation_sensor()

SENSORS = [new_video_sensor, automation_sensor]
