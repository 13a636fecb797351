"""Every job of the code location, in one place; ``jobs_for`` names them for one fleet."""

import os
import socket

import dagster as dg
from pydantic import Field

from curation_assets.defs.curation import BATCH_TAG  # on each source's run a batch started
from curation_assets.defs.fleet import Fleet, op_copy, partitions
from curation_assets.defs.partitions import labeling_rounds, videos
from curation_assets.defs.search import search_frames
from curation_assets.deploy.connections import hold_connections

# name -> (assets, partitions, description[, run config by step name])
ASSET_JOBS = {
    "ingest_video": (
        ["raw_frames", "source_labels", "frame_embeddings"],
        videos,
        "Frames (and a labeled dataset's own labels) and embeddings for one landing source.",
    ),
    "curate": (
        ["duplicate_groups", "outliers", "dataset_audit"],
        None,
        "Duplicates, outliers and labeled-dataset audits over all sources.",
    ),
    "rebuild_curation": (
        ["duplicate_groups", "outliers"],
        None,
        "Every duplicate group and outlier flag from scratch: after a model or threshold change, and to "
        "refresh stored frames' isolation (curate adds new sources alone).",
        {"duplicate_groups": {"incremental": False}, "outliers": {"incremental": False}},
    ),
    "draw_map": (
        ["embedding_map"],
        None,
        "The 2-D embedding map (UMAP), coloured by camera, group size, outlier reason and round.",
    ),
    "merge_datasets": (
        ["merged_dataset"],
        None,
        "Labeled sources as one COCO dataset (config: sources, category_map, name).",
    ),
    "curate_objects": (
        ["object_embeddings", "object_outliers"],
        None,
        "Every labeled or predicted box cropped and embedded; box outliers and duplicates (config: predictions).",
    ),
    "labeling_round": (
        ["selected_batch"],
        labeling_rounds,
        "Select and export one labeling round (config: budget, strategy, seed).",
    ),
    "import_labels": (["labeled_set"], None, "Import annotations, split, version."),
}


ingest_video_job = dg.define_asset_job(
    "ingest_video",
    selection=dg.AssetSelection.assets("raw_frames", "source_labels", "frame_embeddings"),
    partitions_def=videos,
    description="Frames (and a labeled dataset's own labels) and embeddings for one landing source.",
)
CURATES_BATCH_TAG = "curation/curates-batch"  # on the curate run a batch starts once its sources are in
INGESTED_TAG = "curation/sources-ingested"  # on a batch run whose sources are all through
OWNER_TAG = "curation/owner"  # host:pid of the process executing a run in process (a batch's worker, the command)


class SourceToIngest(dg.Config):
    partition_key: str
    tags: dict[str, str] = Field(description="The source's run tags: its landing key and content.")


class IngestBatchConfig(dg.Config):
    sources: list[SourceToIngest]


def _batch_jobs(context: dg.OpExecutionContext) -> tuple[dg.JobDefinition, dg.JobDefinition]:
    """ingest_video and curate with this run's resources, from the same assets as the code location."""
    from curation_assets.definitions import ASSETS  # here: that module imports this one

    assets, _, description = ASSET_JOBS["curate"]
    curate = dg.define_asset_job("curate", selection=dg.AssetSelection.assets(*assets), description=description)
    defs = dg.Definitions(assets=ASSETS, jobs=[ingest_video_job, curate], resources=context.job_def.resource_defs)
    return defs.resolve_job_def(ingest_video_job.name), defs.resolve_job_def(curate.name)


def _in_process(job: dg.JobDefinition, context: dg.OpExecutionContext, tags: dict, **kwargs):
    return job.execute_in_process(
        instance=context.instance,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},  # the event log has it all
        tags={**tags, OWNER_TAG: f"{socket.gethostname()}:{os.getpid()}"},
        raise_on_error=False,
        **kwargs,
    )


def _batches_still_ingesting(context: dg.OpExecutionContext) -> list[str]:
    """Batch runs in flight whose sources are not all through: the last batch to get there curates
    for all (each marks itself first, so of two that finish together both curate, never neither)."""
    context.instance.add_run_tags(context.run_id, {INGESTED_TAG: "true"})
    # the sensor's in-flight statuses less CANCELING: a batch being cancelled will not curate for us
    statuses = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED]  # fmt: skip
    runs = context.instance.get_run_records(dg.RunsFilter(job_name=context.job_def.name, statuses=statuses))
    return [r.dagster_run.run_id for r in runs if r.dagster_run.run_id != context.run_id
            and INGESTED_TAG not in r.dagster_run.tags]  # fmt: skip


@dg.op(
    required_resource_keys={"object_store", "vector_store", "embedder", "expectations"},  # ingest_video's
    description="Ingest each source of the batch as its own ingest_video run, one after another, in this "
    "process; then curate them (duplicate groups, outliers, audits) in a curate run, also in this process.",
)
def ingest_sources(context: dg.OpExecutionContext, config: IngestBatchConfig) -> None:
    """A burst of new sources costs one run worker, one model process and one validation process
    instead of one of each per source, while each source keeps its own run: its partition, its
    materializations and checks, and its failure (a bad file fails its own run, never the batch).
    Dagster 1.13 cannot fail one partition of a partition-range run (dagster-io/dagster#17836),
    so a single-run backfill over the batch would turn one bad file into a failed batch.
    Once its sources are in, the batch curates them in a curate run of its own, in this warm
    process: no wait for the automation sensor's tick and a fresh run worker. The sources' runs
    carry ``BATCH_TAG``, so the automation sensor leaves their updates to the batch."""
    # The whole batch holds the embedded store: loaded once for every source's frame_embeddings and the
    # curation steps, not once a step (seconds each at a million points). Another run's step that needs
    # it meanwhile gets it between two of the batch's steps (VectorStoreResource.held), not after the batch.
    with context.resources.vector_store.held():
        _ingest_and_curate(context, config)


def _ingest_and_curate(context: dg.OpExecutionContext, config: IngestBatchConfig) -> None:
    context.resources.embedder.warm_up()  # the model loads while the first source is read
    # the sources' and curation's events: one connection, not one each (docker/dagster.yaml's storage
    # holds them in every process already; this serves instances set up the standard way, the Helm chart's)
    hold_connections(context.instance)
    ingest, curate = _batch_jobs(context)
    batch_tags = {k: v for k, v in context.run.tags.items() if k in ("dagster/sensor_name",)}
    failed = []
    for source in config.sources:
        tags = {**batch_tags, **source.tags, BATCH_TAG: context.run_id}
        result = _in_process(ingest, context, tags, partition_key=source.partition_key)
        outcome = "ingested" if result.success else "failed"
        if not result.success:
            failed.append(source.partition_key)
        context.log.info(f"{source.tags.get('curation/landing_key', source.partition_key)}: {outcome} "
                         f"(run {result.run_id})")  # fmt: skip
    context.log.info(f"{len(config.sources) - len(failed)} of {len(config.sources)} sources ingested")
    still_ingesting = _batches_still_ingesting(context)  # marks this batch through first
    if len(failed) == len(config.sources):
        # nothing of its own to curate (on a fresh layout curation would fail); a batch that left its
        # curation to this one leaves its sources to the next curation (a new source's batch, or curate)
        return
    if still_ingesting:
        context.log.info(f"curation left to batch run {still_ingesting[0][:8]}, still ingesting: it curates ours too")
        return
    result = _in_process(curate, context, {**batch_tags, CURATES_BATCH_TAG: context.run_id})
    if not result.success:
        raise dg.Failure(
            f"the batch's sources are ingested, but curating them failed (run {result.run_id}); the next "
            "curation (a new source's batch, or the curate job) takes them up",
            allow_retries=False,
        )
    context.log.info(f"curated (run {result.run_id})")


@dg.job(
    name="ingest_batch",
    description="Several landing sources, each ingested as its own ingest_video run inside this one, then "
    "curated in a curate run inside it too (the sensor's way with new sources; config: sources).",
    executor_def=dg.in_process_executor,
)
def ingest_batch_job():
    ingest_sources()


def jobs_for(fleet: Fleet, executor: dg.ExecutorDefinition | None = None) -> list:
    """The fleet's jobs: its assets only, its partitions, its executor (None: the location's).
    The batch ingest job (``ingest_batch``) serves the plain-named fleet only: a prefixed
    fleet's sensor requests one ingest_video run per source."""
    plain = not fleet.prefix and executor is None
    jobs = [
        ingest_video_job
        if plain and name == ingest_video_job.name
        else dg.define_asset_job(
            fleet.name(name),
            selection=dg.AssetSelection.assets(*(fleet.key(asset) for asset in assets)),
            partitions_def=partitions(fleet, partitions_def),
            description=description,
            config={"ops": {fleet.name(step): {"config": values} for step, values in config[0].items()}}
            if config
            else None,
            executor_def=executor,
        )
        for name, (assets, partitions_def, description, *config) in ASSET_JOBS.items()
    ]
    search = search_frames
    if fleet.prefix or fleet.pools or fleet.step_defaults.get("similarity_search") or executor:
        op = op_copy(search_frames.graph.node_defs[0], fleet)
        search = dg.GraphDefinition(name=fleet.name(search_frames.name), node_defs=[op]).to_job(
            description=search_frames.description, executor_def=executor
        )
    batch = [] if fleet.prefix else [ingest_batch_job]
    return [jobs[0], *batch, *jobs[1:], search]


JOBS = jobs_for(Fleet())
