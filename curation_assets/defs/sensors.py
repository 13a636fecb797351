"""The sensors: new_video_sensor (each new or changed landing object becomes a partition and
a run; bad input is refused once) and the automation sensor (global assets follow new embeddings)."""

import hashlib
import json

import dagster as dg

from curation_assets.component import SensorSettings
from curation_assets.core.ids import source_id_for
from curation_assets.defs.curation import BATCH_TAG
from curation_assets.defs.fleet import Fleet, partitions
from curation_assets.defs.ingestion import BAD_INPUT, FAILURE_TAG, landing_sources
from curation_assets.defs.jobs import ingest_batch_job, ingest_video_job
from curation_assets.defs.partitions import videos

SOURCE_TAG = "curation/source"  # "<video_id>@<fingerprint>": which content a run ingested
MAX_RUNS_PER_TICK = 50
LIST_PAGE_SIZE = 1000
BATCH_SOURCE_TAG_PREFIX = "curation/batch-source/"
MAX_FAILED_ATTEMPTS = 3  # the sensor gives up on content that failed this often, until it changes
LEDGER_SHARDS = 64  # at 100 k landing objects a shard holds ~1 600 entries (~150 KB)
IN_FLIGHT = {
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


class Ledger:
    """What became of each landing source's content: ``done`` (ingested) or ``refused`` (bad
    input), with the fingerprint it applies to.

    It lives in the instance's key-value store, not in the sensor's cursor: Dagster stores the
    cursor with every tick, so a cursor that maps every landing key grows with the landing zone
    and is written every 10 s. Entries are split into shards by key hash; a tick reads them only
    when the landing zone changed and writes only the shards it changed. One ledger per landing
    root, shared by the sensor and the headless command (both record facts about content). It
    only caches what the run records say: an entry lost to a concurrent write costs a query on a
    later tick, never a wrong answer.
    """

    def __init__(self, instance: dg.DagsterInstance, landing_root: str):
        self._instance = instance
        self._prefix = f"curation/ledger/{hashlib.sha256(landing_root.encode()).hexdigest()[:12]}/"
        self._shards: dict[str, dict[str, str]] | None = None
        self._dirty: set[str] = set()

    def _loaded(self) -> dict[str, dict[str, str]]:
        if self._shards is None:
            names = {f"{self._prefix}{i}" for i in range(LEDGER_SHARDS)}
            stored = self._instance.run_storage.get_cursor_values(names)
            self._shards = {name: json.loads(stored[name]) if stored.get(name) else {} for name in names}
        return self._shards

    def _shard_name(self, key: str) -> str:
        digest = hashlib.blake2b(key.encode(), digest_size=4).digest()
        return f"{self._prefix}{int.from_bytes(digest, 'big') % LEDGER_SHARDS}"

    def state(self, key: str, fingerprint: str) -> str | None:
        """ "done" or "refused" when that is what became of this content, else None."""
        state, _, recorded = self._loaded()[self._shard_name(key)].get(key, "").partition(":")
        return state if recorded == fingerprint else None

    def record(self, key: str, fingerprint: str, state: str) -> None:
        name = self._shard_name(key)
        shard = self._loaded()[name]
        if shard.get(key) != f"{state}:{fingerprint}":
            shard[key] = f"{state}:{fingerprint}"
            self._dirty.add(name)

    def entries(self, state: str) -> dict[str, str]:
        """Source key -> fingerprint of every entry in ``state``."""
        found = {}
        for shard in self._loaded().values():
            for key, value in shard.items():
                recorded_state, _, fingerprint = value.partition(":")
                if recorded_state == state:
                    found[key] = fingerprint
        return found

    def forget_all_but(self, keys: set[str]) -> None:
        """Drop the entries of objects no longer in the landing zone."""
        for name, shard in self._loaded().items():
            for gone in set(shard) - keys:
                del shard[gone]
                self._dirty.add(name)

    def save(self) -> None:
        if self._dirty:
            self._instance.run_storage.set_cursor_values(
                {name: json.dumps(self._shards[name], sort_keys=True) for name in self._dirty}
            )
            self._dirty.clear()


def load_cursor(text: str | None) -> dict:
    """The sensor's cursor: ``requested`` (source key -> run key of a request not yet settled) and
    ``listing`` (a digest of the last listing in which every source was settled). Older cursors
    that mapped every key to its fingerprint carry it as ``done``, moved into the ledger once."""
    cursor = json.loads(text) if text else {}
    if cursor and not ({"done", "requested", "listing"} & set(cursor)):  # the first format: key -> fingerprint
        cursor = {"done": cursor}
    return {"requested": cursor.get("requested", {}), "listing": cursor.get("listing"), "done": cursor.get("done", {}),
            "planned": cursor.get("planned")}  # fmt: skip


def batch_source_tag(source_id: str) -> str:
    """On a batch's run, one per source it is to ingest (value: the content), so a batch that
    died before starting a source's own run counts as that content's failed attempt."""
    return f"{BATCH_SOURCE_TAG_PREFIX}{source_id}"


def attempts_at(
    instance: dg.DagsterInstance, source_id: str, content: str, job_name: str = ingest_video_job.name
) -> tuple[list[dg.DagsterRun], int, bool]:
    """The attempts at one content: (its own runs, batches that ended without starting one,
    whether a batch that has not started one yet is in flight). A source's run still in flight
    after its batch ended (its process went with the batch's) is reported failed here, as run
    monitoring does for launched runs. Only ``job_name``'s runs count: another fleet may hold
    the same content in its own landing zone."""
    own = [
        r.dagster_run
        for r in instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, tags={SOURCE_TAG: content}))
    ]
    batches = [
        r.dagster_run
        for r in instance.get_run_records(filters=dg.RunsFilter(tags={batch_source_tag(source_id): content}))
    ]
    ended = {b.run_id for b in batches if b.status not in IN_FLIGHT}
    for i, run in enumerate(own):
        if run.status in IN_FLIGHT and run.tags.get(BATCH_TAG) in ended:
            instance.report_run_failed(run, "its batch run ended before it did: its process is gone")
            own[i] = instance.get_run_by_id(run.run_id)
    started = {run.tags.get(BATCH_TAG) for run in own}
    waiting = [b for b in batches if b.run_id not in started]
    return own, sum(b.run_id in ended for b in waiting), any(b.run_id not in ended for b in waiting)


def batch_requests(requests: list[dg.RunRequest], sources_per_run: int) -> list[dg.RunRequest]:
    """Per-source requests grouped into ingest_batch runs of at most ``sources_per_run`` sources;
    a lone source too, so that its batch curates it at once. ``sources_per_run`` 1: a plain
    ingest_video run per source, curated by the automation sensor."""
    if sources_per_run <= 1:
        return requests
    batched = []
    count = -(-len(requests) // sources_per_run)  # batches, of even sizes: 12 at 8 a run are 6 + 6, not 8 + 4
    for i in range(count):
        group = requests[i * len(requests) // count : (i + 1) * len(requests) // count]
        sources = [{"partition_key": r.partition_key, "tags": r.tags} for r in group]
        batched.append(
            dg.RunRequest(
                run_key="batch:" + hashlib.sha256("\n".join(r.run_key for r in group).encode()).hexdigest()[:24],
                job_name=ingest_batch_job.name,
                run_config={"ops": {"ingest_sources": {"config": {"sources": sources}}}},
                tags={batch_source_tag(r.partition_key): r.tags[SOURCE_TAG] for r in group},
            )
        )
    return batched


def _batch_in_flight(instance: dg.DagsterInstance) -> bool:
    runs = dg.RunsFilter(job_name=ingest_batch_job.name, statuses=list(IN_FLIGHT))
    return bool(instance.get_run_ids(filters=runs, limit=1))


def listing_digest(sources) -> str:
    return hashlib.sha256("\n".join(f"{s.key}\t{s.fingerprint}" for s in sources).encode()).hexdigest()[:32]


def plan_ingest(
    instance: dg.DagsterInstance,
    landing,
    cursor: dict,
    max_failed: int | None = MAX_FAILED_ATTEMPTS,
    skip: set[str] = frozenset(),
    log=None,
    max_runs: int = MAX_RUNS_PER_TICK,
    page_size: int = LIST_PAGE_SIZE,
    partitions_name: str = videos.name,
    job_name: str = ingest_video_job.name,
    wait_for_batches: bool = False,
) -> tuple[list[dg.RunRequest], list[str], dict]:
    """What to ingest now: (run requests, new partition keys, the updated cursor).

    Every tick re-lists the landing zone page by page (S3's 1-second LastModified makes a
    "newer than" cursor miss same-second uploads; fingerprints cannot). A listing identical to
    the last settled one costs nothing more. Otherwise each source whose content (fingerprint:
    ETag, or size + mtime; for a folder a hash over its files) the ledger holds as done or
    refused is skipped; for the rest the run records tagged with that content decide: a success
    (say, by the headless command) or a bad-input refusal goes to the ledger; a run in flight is
    left alone; content whose runs failed otherwise (a transient fault, a killed run) is
    requested again with a new run key, up to ``max_failed`` failures (None: always), skipping
    the contents in ``skip``. ``requested`` keeps a request not yet turned into a run from
    being repeated. ``wait_for_batches`` (the sensor): while an ingest_batch run is in flight and
    nothing changed in the landing zone since the last plan, plan nothing (a failed source's retry
    waits for the batches to end).
    """
    sources = landing_sources(landing, page_size=page_size)
    listing = listing_digest(sources)
    requested = dict(cursor["requested"])
    if listing == cursor.get("listing") and not requested and not skip:
        return [], [], {"requested": requested, "listing": listing}
    if wait_for_batches and listing == cursor.get("planned") and _batch_in_flight(instance):
        # nothing landed since the last plan, and what it requested is being ingested: planning
        # again would query each source's runs to learn only that (its batch ends, then we look)
        return [], [], {"requested": requested, "listing": None, "planned": listing}
    ledger = Ledger(instance, landing.root)
    for key, fingerprint in cursor.get("done", {}).items():
        ledger.record(key, fingerprint, "done")
    requests, new_keys, settled = [], [], True
    for source in sources:
        if ledger.state(source.key, source.fingerprint):
            requested.pop(source.key, None)
            continue
        source_id = source_id_for(source.key)
        content = f"{source_id}@{source.fingerprint}"
        runs, lost_in_batches, batch_in_flight = attempts_at(instance, source_id, content, job_name)
        statuses = {run.status for run in runs}
        if dg.DagsterRunStatus.SUCCESS in statuses:  # e.g. by the headless command, or a run the cursor missed
            ledger.record(source.key, source.fingerprint, "done")
            requested.pop(source.key, None)
            continue
        if any(run.tags.get(FAILURE_TAG) == BAD_INPUT for run in runs):
            ledger.record(source.key, source.fingerprint, "refused")
            requested.pop(source.key, None)
            continue
        if IN_FLIGHT & statuses or batch_in_flight:
            settled = False
            continue
        failures = len(runs) + lost_in_batches
        run_key = content if not failures else f"{content}#retry{failures}"
        if max_failed is not None and failures >= max_failed:
            requested.pop(source.key, None)
            continue  # given up until the content changes
        settled = False
        if content in skip or requested.get(source.key) == run_key:
            continue
        if len(requests) >= max_runs:
            break  # the rest on the next tick
        if source_id not in new_keys and not instance.has_dynamic_partition(partitions_name, source_id):
            new_keys.append(source_id)
        if failures and log:
            log(f"{source.key}: retrying after {failures} failed run(s)")
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                job_name=job_name,
                partition_key=source_id,
                tags={"curation/landing_key": source.key[:255], SOURCE_TAG: content},
            )
        )
        requested[source.key] = run_key
    listed = {s.key for s in sources}
    ledger.forget_all_but(listed)
    ledger.save()
    requested = {k: v for k, v in requested.items() if k in listed}
    return requests, new_keys, {"requested": requested, "listing": listing if settled else None, "planned": listing}


def build_new_video_sensor(
    max_runs_per_tick: int = MAX_RUNS_PER_TICK,
    page_size: int = LIST_PAGE_SIZE,
    sources_per_run: int = SensorSettings().sources_per_run,
    fleet: Fleet = Fleet(),
    job=ingest_video_job,
    interval_s: int = SensorSettings().interval_s,
    running: bool = True,
) -> dg.SensorDefinition:
    """The landing-zone sensor of ``fleet`` (its landing zone, partitions and ingest ``job``),
    planning at most ``max_runs_per_tick`` sources a tick, in runs of at most ``sources_per_run``
    sources, and listing ``page_size`` objects a page (tests make them small). Batch runs
    (``ingest_batch``) serve the plain-named fleet; a prefixed fleet requests a run per source."""
    source_partitions = partitions(fleet, videos)
    store_key = fleet.name("object_store")
    if fleet.prefix:
        sources_per_run = 1

    @dg.sensor(
        name=fleet.name("new_video_sensor"),
        jobs=[job, ingest_batch_job] if not fleet.prefix else [job],
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={store_key},
        description="Registers a partition for every new, changed or failed landing source and requests "
        f"its run; new sources go {sources_per_run} to a batch run, each still ingested in a run of its own, "
        "and curated by the batch once they are in."
        if sources_per_run > 1
        else "Registers a partition for every new, changed or failed landing source and requests its run.",
    )
    def new_video_sensor(context: dg.SensorEvaluationContext, **_):  # a direct call also passes them as keywords
        # the daemon's evaluation binds only named resource parameters: read the fleet's from the context
        landing = getattr(context.resources, store_key).landing_store()
        requests, new_keys, cursor = plan_ingest(context.instance, landing, load_cursor(context.cursor),
                                                 log=context.log.info, max_runs=max_runs_per_tick,
                                                 page_size=page_size, partitions_name=source_partitions.name,
                                                 job_name=job.name, wait_for_batches=sources_per_run > 1)  # fmt: skip
        if requests:
            context.log.info(f"{len(requests)} landing objects to ingest ({len(new_keys)} new partitions)")
        return dg.SensorResult(
            run_requests=batch_requests(requests, sources_per_run),
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
