"""new_video_sensor against a real landing folder and a real (moto) S3 prefix."""

import dagster as dg
import pytest

from curation_assets.core.ids import video_id_for
from curation_assets.defs import sensors
from curation_assets.defs.partitions import videos
from resources import ObjectStoreResource
from tests.conftest import SCENE_A, SCENE_B, drop


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path):
    if request.param == "local":
        return ObjectStoreResource(root=str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return ObjectStoreResource(root=f"s3://{bucket}/curation", endpoint_url=endpoint, region_name="us-east-1")


def tick(instance, object_store, cursor=None, sensor=sensors.new_video_sensor):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"object_store": object_store}) as ctx:
        result = sensor(ctx)
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
    sensor = sensors.build_new_video_sensor(max_runs_per_tick=4, page_size=3)  # several listing pages per tick
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
    from curation_assets import headless

    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    [ingested] = headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert ingested.success
    fresh_cursor_tick = tick(instance, object_store, cursor=None)
    assert fresh_cursor_tick.run_requests == []
    assert SCENE_B.name in fresh_cursor_tick.cursor


def test_a_failed_object_is_requested_again_a_bounded_number_of_times(local_defs, instance, video_dir):
    from curation_assets import headless

    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, "cam-a/notes.txt")
    [first] = headless.ingest_landing(local_defs, instance, log=lambda _: None)  # each command tries once
    assert not first.success and "not a readable video" in first.error
    retry = tick(instance, object_store, cursor=None)
    [request] = retry.run_requests
    assert request.run_key.endswith("#retry1")
    for _ in range(sensors.MAX_FAILED_ATTEMPTS - 1):
        headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert tick(instance, object_store, cursor=None).run_requests == []  # given up until the content changes
