"""new_video_sensor against a real landing folder and a real (moto) S3 prefix."""

import json
from pathlib import Path

import dagster as dg
import pytest

from curation_assets.core.ids import video_id_for
from curation_assets.defs import sensors
from curation_assets.defs.curation import BATCH_TAG, read_groups
from curation_assets.defs.ingestion import BAD_INPUT, FAILURE_TAG, landing_sources
from curation_assets.defs.jobs import CURATES_BATCH_TAG
from curation_assets.defs.partitions import videos
from curation_assets.demo.scenes import write_video
from resources import ObjectStoreResource
from tests.conftest import SCENE_A, SCENE_B, drop, encoded, photo


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return ObjectStoreResource(root=str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return ObjectStoreResource(root=f"s3://{bucket}/curation", endpoint_url=endpoint, region_name="us-east-1")


ONE_PER_RUN = sensors.build_new_video_sensor(sources_per_run=1)  # a plain ingest_video run per source


def tick(instance, object_store, cursor=None, sensor=ONE_PER_RUN):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"object_store": object_store}) as ctx:
        result = sensor(ctx)
    targets = {target.job_name for target in sensor.targets}
    assert all(r.job_name in targets for r in result.run_requests)  # the daemon refuses a request naming none
    # build_sensor_context does not apply partition requests; the daemon would
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(videos.name, list(request.partition_keys))
    return result


def test_each_new_object_becomes_one_partition_and_one_run(instance, object_store, video_dir):
    drop(object_store.landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    result = tick(instance, object_store)
    expected = sorted(video_id_for(k) for k in (SCENE_A.name, SCENE_B.name))
    assert sorted(r.partition_key for r in result.run_requests) == expected
    assert sorted(instance.get_dynamic_partitions(videos.name)) == expected
    assert {r.tags["curation/landing_key"] for r in result.run_requests} == {SCENE_A.name, SCENE_B.name}


def test_an_object_seen_before_is_not_ingested_again(instance, object_store, video_dir):
    drop(object_store.landing_store(), video_dir, SCENE_A.name)
    first = tick(instance, object_store)
    second = tick(instance, object_store, first.cursor)
    assert len(first.run_requests) == 1
    assert second.run_requests == []
    assert second.dynamic_partitions_requests == []


def test_a_changed_object_is_ingested_again_into_the_same_partition(instance, object_store, video_dir):
    landing = object_store.landing_store()
    drop(landing, video_dir, SCENE_A.name)
    first = tick(instance, object_store)
    landing.put_bytes(SCENE_A.name, (video_dir / SCENE_B.name).read_bytes())  # new content, same key
    second = tick(instance, object_store, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [video_id_for(SCENE_A.name)]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert instance.get_dynamic_partitions(videos.name) == [video_id_for(SCENE_A.name)]


def test_many_objects_are_registered_across_ticks_without_loss(instance, object_store):
    # several listing pages per tick
    sensor = sensors.build_new_video_sensor(max_runs_per_tick=4, page_size=3, sources_per_run=1)
    landing = object_store.landing_store()
    for i in range(10):
        landing.put_bytes(f"cam-x/{i:03d}.mp4", b"video %d" % i)
    landing.put_bytes("cam-x/.hidden.mp4", b"x")
    landing.put_bytes("cam-x/uploading.mp4.part", b"x")
    cursor, seen = None, []
    for _ in range(5):
        result = tick(instance, object_store, cursor, sensor)
        assert len(result.run_requests) <= 4
        seen += [r.partition_key for r in result.run_requests]
        cursor = result.cursor
    assert sorted(seen) == sorted(video_id_for(f"cam-x/{i:03d}.mp4") for i in range(10))
    assert len(instance.get_dynamic_partitions(videos.name)) == 10


def test_objects_ingested_by_another_path_are_not_requested_again(local_defs, instance, video_dir):
    """A successful run for the same content (say, from the headless command) counts as done."""
    from curation_assets.cli import headless

    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    [ingested] = headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert ingested.success
    fresh_cursor_tick = tick(instance, object_store, cursor=None)
    assert fresh_cursor_tick.run_requests == []


def test_bad_input_fails_once_and_is_not_requested_again_until_it_changes(local_defs, instance, video_dir):
    from curation_assets.cli import headless

    object_store = local_defs.resources["object_store"]
    landing = object_store.landing_store()
    drop(landing, video_dir, "cam-a/notes.txt", "cam-b/broken.mp4")
    refused = headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert [o.success for o in refused] == [False, False]
    assert all(run.tags[FAILURE_TAG] == BAD_INPUT for run in instance.get_runs())  # the UI shows it on the run
    assert tick(instance, object_store, cursor=None).run_requests == []
    assert headless.ingest_landing(local_defs, instance, log=lambda _: None) == []  # the command neither
    landing.put_bytes("cam-b/broken.mp4", (video_dir / SCENE_B.name).read_bytes())  # replaced by a good video
    [request] = tick(instance, object_store, cursor=None).run_requests
    assert request.tags["curation/landing_key"] == "cam-b/broken.mp4"


def test_a_bad_input_failure_says_it_is_permanent_and_names_the_object(local_defs, instance, video_dir):
    from curation_assets.cli import headless

    drop(local_defs.resources["object_store"].landing_store(), video_dir, "cam-a/notes.txt")
    headless.ingest_landing(local_defs, instance, log=lambda _: None)
    [run] = instance.get_runs()
    [failure] = [
        e.dagster_event for e in instance.all_logs(run.run_id) if e.dagster_event and e.dagster_event.is_step_failure
    ]
    user_failure = failure.step_failure_data.user_failure_data
    assert "cam-a/notes.txt" in user_failure.description
    assert user_failure.metadata["failure"].value.startswith("permanent")
    assert user_failure.metadata["landing_key"].value == "cam-a/notes.txt"


def test_a_run_failed_by_its_environment_is_requested_again_a_bounded_number_of_times(local_defs, instance, tmp_path):
    from curation_assets.cli import headless

    object_store = local_defs.resources["object_store"]
    root = Path(object_store.store().root)
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "raw_frames").write_text("in the way")  # a fault of the environment, not of the input
    object_store.landing_store().put_bytes("cam/p1.jpg", encoded(photo(1)))
    [first] = headless.ingest_landing(local_defs, instance, log=lambda _: None)  # each command tries once
    assert not first.success
    [request] = tick(instance, object_store, cursor=None).run_requests
    assert request.run_key.endswith("#retry1")
    for _ in range(sensors.MAX_FAILED_ATTEMPTS - 1):
        headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert tick(instance, object_store, cursor=None).run_requests == []  # given up until the content changes


def test_the_demo_s_bad_files_get_no_new_run_once_the_demo_ran(local_defs, instance, tmp_path):
    """`make demo` then `make ui`: the real sensor's first tick on the demo's instance requests nothing."""
    from curation_assets.cli import headless
    from curation_assets.demo.scenes import CORRUPT_VIDEO, NOT_A_VIDEO, write_corrupt_video

    object_store = local_defs.resources["object_store"]
    landing = object_store.landing_store()
    write_video(SCENE_B, tmp_path / "valid.mp4")
    write_corrupt_video(tmp_path / "corrupt.mp4", tmp_path / "valid.mp4")
    landing.put_bytes(CORRUPT_VIDEO, (tmp_path / "corrupt.mp4").read_bytes())
    landing.put_bytes(NOT_A_VIDEO, b"camera cam-a: aisle 3, mounted 2.4 m high\n")
    headless.ingest_landing(local_defs, instance, log=lambda _: None)  # what the demo does
    sensor = local_defs.resolve_sensor_def("new_video_sensor")
    first = tick(instance, object_store, cursor=None, sensor=sensor)
    assert first.run_requests == []
    assert tick(instance, object_store, cursor=first.cursor, sensor=sensor).run_requests == []


def test_an_old_cursor_moves_into_the_ledger_and_the_cursor_stays_small(instance, tmp_path):
    object_store = ObjectStoreResource(root=str(tmp_path / "root"))
    landing = object_store.landing_store()
    for i in range(300):
        landing.put_bytes(f"cam-{i % 7}/clip-{i:04d}.mp4", b"video %d" % i)
    old = {s.key: s.fingerprint for s in landing_sources(landing)}  # the first format: every key -> fingerprint
    result = tick(instance, object_store, cursor=json.dumps(old))
    assert result.run_requests == []
    assert len(result.cursor) < 200
    assert tick(instance, object_store, cursor=None).run_requests == []  # the ledger remembers, not the cursor


def test_a_burst_seen_in_one_tick_is_requested_in_batches_of_the_setting(instance, tmp_path):
    object_store = ObjectStoreResource(root=str(tmp_path / "root"))
    for i in range(5):
        object_store.landing_store().put_bytes(f"cam-x/{i}.mp4", b"video %d" % i)
    sensor = sensors.build_new_video_sensor(sources_per_run=2)
    requests = tick(instance, object_store, sensor=sensor).run_requests
    assert [r.job_name for r in requests] == ["ingest_batch"] * 3
    assert [len(r.run_config["ops"]["ingest_sources"]["config"]["sources"]) for r in requests] == [1, 2, 2]
    batched = [s["partition_key"] for r in requests for s in r.run_config["ops"]["ingest_sources"]["config"]["sources"]]
    assert sorted(batched) == sorted(video_id_for(f"cam-x/{i}.mp4") for i in range(5))
    assert len(instance.get_dynamic_partitions(videos.name)) == 5  # each source keeps its own partition


def run_batch(defs, instance, requests):
    [batch] = [r for r in requests if r.job_name == "ingest_batch"]
    return defs.resolve_job_def("ingest_batch").execute_in_process(
        instance=instance, run_config=batch.run_config, tags=batch.tags, raise_on_error=False
    )


def test_a_batch_ingests_each_source_in_its_own_run_and_a_bad_file_fails_only_its_own(local_defs, instance, video_dir):
    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, "cam-b/broken.mp4", SCENE_B.name)
    sensor = sensors.build_new_video_sensor(sources_per_run=2)
    first = tick(instance, object_store, sensor=sensor)
    assert run_batch(local_defs, instance, first.run_requests).success
    runs = {r.tags["curation/landing_key"]: r for r in instance.get_runs() if r.job_name == "ingest_video"}
    assert runs[SCENE_B.name].status == dg.DagsterRunStatus.SUCCESS
    assert runs["cam-b/broken.mp4"].status == dg.DagsterRunStatus.FAILURE
    assert runs["cam-b/broken.mp4"].tags[FAILURE_TAG] == BAD_INPUT
    assert object_store.store().exists(f"tables/raw_frames/{video_id_for(SCENE_B.name)}.parquet")
    assert tick(instance, object_store, first.cursor, sensor=sensor).run_requests == []  # nothing to do again


def test_a_lone_new_source_is_curated_by_its_batch_run(local_defs, instance, video_dir):
    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    [request] = tick(instance, object_store, sensor=sensors.build_new_video_sensor()).run_requests
    batch = run_batch(local_defs, instance, [request])
    assert batch.success
    [curate] = instance.get_runs(filters=dg.RunsFilter(tags={CURATES_BATCH_TAG: batch.run_id}))
    assert curate.status == dg.DagsterRunStatus.SUCCESS
    store = object_store.store()
    frames = store.read_table(f"tables/raw_frames/{video_id_for(SCENE_B.name)}.parquet")
    assert set(frames.loc[~frames["corrupt"], "frame_id"]) <= set(read_groups(store)["frame_id"])


def test_a_batch_leaves_curation_to_a_batch_still_ingesting(local_defs, instance, video_dir):
    from dagster._core.test_utils import create_run_for_test

    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    [request] = tick(instance, object_store, sensor=sensors.build_new_video_sensor()).run_requests
    create_run_for_test(instance, job_name="ingest_batch", status=dg.DagsterRunStatus.STARTED)
    assert run_batch(local_defs, instance, [request]).success
    assert not instance.get_runs(filters=dg.RunsFilter(job_name="curate"))  # the other batch curates ours too


def test_the_automation_sensor_does_not_curate_again_what_a_batch_curated(local_defs, instance, video_dir):
    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    requests = tick(instance, object_store, sensor=sensors.build_new_video_sensor()).run_requests
    before = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)
    assert run_batch(local_defs, instance, requests).success
    after = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=before.cursor)
    requested = {r.key.to_user_string() for r in after.results if r.true_subset.size}
    assert requested == {"embedding_map"}  # the map follows the batch's outliers; nothing is curated twice


def test_a_tick_between_a_batch_s_sources_requests_no_curation(local_defs, instance, video_dir):
    drop(local_defs.resources["object_store"].landing_store(), video_dir, "cam-b/broken.mp4", SCENE_B.name)
    sources = [video_id_for(name) for name in ("cam-b/broken.mp4", SCENE_B.name)]
    instance.add_dynamic_partitions(videos.name, sources)
    ingest = local_defs.resolve_job_def("ingest_video")
    batch = {BATCH_TAG: "a-batch-still-running"}
    assert not ingest.execute_in_process(
        instance=instance, partition_key=sources[0], tags=batch, raise_on_error=False
    ).success
    before = dg.evaluate_automation_conditions(defs=local_defs, instance=instance)
    assert ingest.execute_in_process(instance=instance, partition_key=sources[1], tags=batch).success
    during = dg.evaluate_automation_conditions(defs=local_defs, instance=instance, cursor=before.cursor)
    assert during.total_requested == 0  # the batch curates its sources once they are all in


def test_a_source_whose_batch_ended_without_ingesting_it_is_requested_again(local_defs, instance, tmp_path):
    object_store = local_defs.resources["object_store"]
    for i in range(2):
        object_store.landing_store().put_bytes(f"cam-x/{i}.mp4", b"video %d" % i)
    sensor = sensors.build_new_video_sensor(sources_per_run=2)
    first = tick(instance, object_store, sensor=sensor)
    [batch] = first.run_requests
    config = {"ops": {"ingest_sources": {"config": {"sources": []}}}}  # a batch that died before either source
    local_defs.resolve_job_def("ingest_batch").execute_in_process(instance=instance, run_config=config, tags=batch.tags)
    [again] = tick(instance, object_store, first.cursor, sensor=sensor).run_requests
    assert again.tags == batch.tags and again.run_key != batch.run_key


def test_a_source_run_left_in_flight_by_its_ended_batch_is_failed_and_requested_again(instance, tmp_path):
    from dagster._core.test_utils import create_run_for_test

    object_store = ObjectStoreResource(root=str(tmp_path / "root"))
    for i in range(2):
        object_store.landing_store().put_bytes(f"cam-x/{i}.mp4", b"video %d" % i)
    sensor = sensors.build_new_video_sensor(sources_per_run=2)
    [request] = tick(instance, object_store, sensor=sensor).run_requests
    batch = create_run_for_test(
        instance, job_name="ingest_batch", status=dg.DagsterRunStatus.FAILURE, tags=request.tags
    )
    source = request.run_config["ops"]["ingest_sources"]["config"]["sources"][0]
    orphan = create_run_for_test(
        instance,
        job_name="ingest_video",
        status=dg.DagsterRunStatus.STARTED,  # its process went with the batch's
        tags={**source["tags"], "curation/batch": batch.run_id},
    )
    [retry] = tick(instance, object_store, sensor=sensor).run_requests
    assert instance.get_run_by_id(orphan.run_id).status == dg.DagsterRunStatus.FAILURE
    assert {s["tags"][sensors.SOURCE_TAG] for s in retry.run_config["ops"]["ingest_sources"]["config"]["sources"]} == {
        t for k, t in request.tags.items() if k.startswith(sensors.BATCH_SOURCE_TAG_PREFIX)
    }  # both sources again: the one whose run was lost, and the one never started


def test_a_source_that_failed_inside_a_batch_is_retried_once_the_batch_ended_not_while_it_runs(instance, tmp_path):
    from dagster._core.test_utils import create_run_for_test

    object_store = ObjectStoreResource(root=str(tmp_path / "root"))
    for i in range(2):
        object_store.landing_store().put_bytes(f"cam-x/{i}.mp4", b"video %d" % i)
    sensor = sensors.build_new_video_sensor(sources_per_run=2)
    first = tick(instance, object_store, sensor=sensor)
    [request] = first.run_requests
    started = dg.DagsterRunStatus.STARTED
    batch = create_run_for_test(instance, job_name="ingest_batch", status=started, tags=request.tags)
    source = request.run_config["ops"]["ingest_sources"]["config"]["sources"][0]
    create_run_for_test(instance, job_name="ingest_video", status=dg.DagsterRunStatus.FAILURE,
                        tags={**source["tags"], BATCH_TAG: batch.run_id})  # fmt: skip  # a transient fault
    during = tick(instance, object_store, first.cursor, sensor=sensor)
    assert during.run_requests == []  # nothing landed since, and the batch still runs: no per-source look
    instance.report_run_failed(batch, "killed")
    [retry] = tick(instance, object_store, during.cursor, sensor=sensor).run_requests
    assert source["tags"][sensors.SOURCE_TAG] in {
        s["tags"][sensors.SOURCE_TAG] for s in retry.run_config["ops"]["ingest_sources"]["config"]["sources"]
    }


def test_the_location_s_sensor_is_due_at_each_pass_of_the_daemon_s_sensor_loop(instance):
    """The daemon passes over its sensors every 5 s at most and evaluates those whose interval has
    elapsed since their last tick; a pass can come a hair under 5 s after that tick began (the tick
    starts a moment into its pass), so an interval of 5 s left some passes out: a new video then
    waited up to 10 s for its tick."""
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        InstigatorType,
        SensorInstigatorData,
    )
    from dagster._core.test_utils import in_process_test_workspace
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.sensor import MIN_INTERVAL_LOOP_TIME, is_under_min_interval
    from dagster._time import get_current_timestamp

    origin = LoadableTargetOrigin(module_name="curation_assets.definitions", working_directory=str(Path.cwd()))
    with in_process_test_workspace(instance, origin) as workspace:
        [location] = workspace.code_locations
        [repository] = location.get_repositories().values()
        sensor = repository.get_sensor("new_video_sensor")
    last_tick = get_current_timestamp() - (MIN_INTERVAL_LOOP_TIME - 0.05)  # one pass ago, the tick began late
    data = SensorInstigatorData(last_tick_timestamp=last_tick, last_tick_start_timestamp=last_tick,
                                min_interval=sensor.min_interval_seconds)  # fmt: skip
    state = InstigatorState(sensor.get_remote_origin(), InstigatorType.SENSOR, InstigatorStatus.RUNNING, data)
    assert not is_under_min_interval(state, sensor)
