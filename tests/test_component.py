"""The VideoCuration component: scaffolded and loaded the way dg does, twice in one project."""

import os
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from curation_assets import VideoCuration
from curation_assets.core.ids import video_id_for
from curation_assets.defs.curation import read_groups
from tests.conftest import SCENE_A, SCENE_B, drop

FLEETS = ("cameras_east", "cameras_west")


def fleet_yaml(name: str, root: Path, **attributes) -> dict:
    return {
        "type": "curation_assets.VideoCuration",
        "attributes": {
            "key_prefix": name,
            "storage_root": str(root / name),
            "vector_store": {"lock_timeout_s": 5},
            "embedder": {"batch_size": 16},
            **attributes,
        },
    }


@pytest.fixture
def two_fleets(tmp_path):
    """A project whose defs folder holds two fleets, each in its own defs.yaml."""
    with create_defs_folder_sandbox() as sandbox:
        for name in FLEETS:
            sandbox.scaffold_component(VideoCuration, name, defs_yaml_contents=fleet_yaml(name, tmp_path))
        with sandbox.build_all_defs() as defs:
            yield defs


def names_of(defs: dg.Definitions, fleet: str) -> dict[str, set]:
    repo = defs.get_repository_def()
    assets = {key for key in repo.asset_graph.get_all_asset_keys() if key.path[0] == fleet}
    return {
        "assets": assets,
        "jobs": {job.name for job in repo.get_all_jobs() if job.name.startswith(f"{fleet}__")},
        "sensors": {sensor.name for sensor in repo.sensor_defs if sensor.name.startswith(f"{fleet}__")},
        "pools": {repo.assets_defs_by_key[key].op.pool for key in assets} - {None},
        "resources": {key for key in repo.get_top_level_resources() if key.startswith(f"{fleet}__")},
        "partitions": {
            repo.assets_defs_by_key[key].partitions_def.name
            for key in assets
            if isinstance(repo.assets_defs_by_key[key].partitions_def, dg.DynamicPartitionsDefinition)
        },
    }


def test_two_fleets_load_side_by_side_each_with_its_own_keys_jobs_sensors_pools_and_partitions(two_fleets):
    east, west = (names_of(two_fleets, fleet) for fleet in FLEETS)
    assert dg.AssetKey(["cameras_east", "raw_frames"]) in east["assets"]
    assert "cameras_east__ingest_video" in east["jobs"] and "cameras_east__new_video_sensor" in east["sensors"]
    assert east["pools"] == {"cameras_east__qdrant"}
    assert east["partitions"] == {"cameras_east__videos", "cameras_east__labeling_rounds"}
    assert east["resources"] == {
        f"cameras_east__{r}" for r in ("object_store", "vector_store", "embedder", "expectations")
    }
    for kind, east_names in east.items():
        assert east_names and len(east_names) == len(west[kind]) and not east_names & west[kind], kind


def test_each_fleet_s_vector_store_is_its_own_collection_under_its_own_root(two_fleets, tmp_path):
    stores = {fleet: two_fleets.resources[f"{fleet}__vector_store"] for fleet in FLEETS}
    assert stores["cameras_east"].collection_for("m") != stores["cameras_west"].collection_for("m")
    assert Path(stores["cameras_east"].path) == tmp_path / "cameras_east" / "qdrant"


def test_a_fleet_s_step_settings_are_its_runs_defaults(tmp_path):
    fleet = VideoCuration(
        key_prefix="east", storage_root=str(tmp_path), frame_sampling={"sample_fps": 0.5},
        steps={"duplicate_groups": {"near_cosine": 0.91}},
    )  # fmt: skip
    defs = fleet.build_defs()
    ingest = defs.resolve_job_def("east__ingest_video").run_config_schema.config_type
    curate = defs.resolve_job_def("east__curate").run_config_schema.config_type
    raw_frames = ingest.fields["ops"].config_type.fields["east__raw_frames"].config_type.fields["config"]
    groups = curate.fields["ops"].config_type.fields["east__duplicate_groups"].config_type.fields["config"]
    assert raw_frames.config_type.fields["sample_fps"].default_value == 0.5
    assert groups.config_type.fields["near_cosine"].default_value == 0.91


def test_a_step_setting_that_does_not_exist_fails_naming_the_step_and_the_setting(tmp_path):
    with pytest.raises(ValueError, match=r"steps\.outliers: no setting \['near_cosine'\]"):
        VideoCuration(storage_root=str(tmp_path), steps={"outliers": {"near_cosine": 0.9}}).build_defs()


def test_an_unset_environment_variable_leaves_the_default(tmp_path):
    with create_defs_folder_sandbox() as sandbox:
        yaml_body = fleet_yaml("east", tmp_path)
        yaml_body["attributes"]["vector_store"]["url"] = "{{ env.CURATION_TEST_UNSET_QDRANT_URL }}"
        yaml_body["attributes"]["embedder"]["name"] = "{{ env.CURATION_TEST_UNSET_MODEL }}"
        path = sandbox.scaffold_component(VideoCuration, "east", defs_yaml_contents=yaml_body)
        with sandbox.load_component_and_build_defs(path) as (component, _):
            assert component.vector_store.url is None and component.embedder.name == VideoCuration().embedder.name


def test_the_qdrant_api_key_is_bound_by_variable_name_and_never_appears_in_the_definitions(tmp_path, monkeypatch):
    monkeypatch.setenv("EAST_QDRANT_KEY", "s3cr3t-value")
    fleet = VideoCuration(
        key_prefix="east", storage_root=str(tmp_path),
        vector_store={"url": "http://qdrant:6333", "api_key_env_var": "EAST_QDRANT_KEY"},
    )  # fmt: skip
    store = fleet.resources()["east__vector_store"]
    assert store.api_key == dg.EnvVar("EAST_QDRANT_KEY")
    assert "s3cr3t-value" not in repr(fleet.model_dump()) + repr(store)


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def run(defs: dg.Definitions, instance, job: str, partition: str | None = None) -> None:
    result = defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=partition)
    assert result.success, job


def test_a_run_of_one_fleet_never_reads_or_writes_the_other_s_data(two_fleets, tmp_path, video_dir, instance):
    """West has ingested its video; east then ingests and curates its own: west's files are
    untouched and east's groups hold east's video only."""
    for fleet, scene in (("cameras_west", SCENE_B), ("cameras_east", SCENE_A)):
        drop(two_fleets.resources[f"{fleet}__object_store"].landing_store(), video_dir, scene.name)
        instance.add_dynamic_partitions(f"{fleet}__videos", [video_id_for(scene.name)])
    run(two_fleets, instance, "cameras_west__ingest_video", video_id_for(SCENE_B.name))
    west_before = file_states(tmp_path / "cameras_west")

    run(two_fleets, instance, "cameras_east__ingest_video", video_id_for(SCENE_A.name))
    run(two_fleets, instance, "cameras_east__curate")

    assert file_states(tmp_path / "cameras_west") == west_before
    east = two_fleets.resources["cameras_east__object_store"].store()
    groups = read_groups(east)
    assert {frame_id.rsplit("/", 1)[0] for frame_id in groups["frame_id"]} == {video_id_for(SCENE_A.name)}


def test_this_repository_s_location_is_one_fleet_of_the_component_configured_by_the_environment():
    location = yaml.safe_load((Path(__file__).parents[1] / "curation_assets/location/defs.yaml").read_text())
    assert location["type"] == "curation_assets.VideoCuration"
    from curation_assets.location import component

    fleet = component({"CURATION_STORAGE_URI": "s3://bucket/prefix", "CURATION_EMBEDDER_DEVICE": "cpu"})
    assert (fleet.key_prefix, fleet.storage_root, fleet.embedder.device) == ("", "s3://bucket/prefix", "cpu")
    assert component({}) == VideoCuration()  # nothing set: every default


def test_the_scaffolded_defs_yaml_loads_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(VideoCuration, "fleet")
        with sandbox.load_component_and_build_defs(path) as (component, defs):
            assert component.key_prefix == "fleet" and component.storage_root == ".curation/fleet"
            assert dg.AssetKey(["fleet", "raw_frames"]) in defs.resolve_all_asset_keys()
    assert os.path.isdir(tmp_path) and not (tmp_path / ".curation").exists()  # loading writes nothing


def tick(defs: dg.Definitions, instance, fleet: str) -> dg.SensorResult:
    sensor = defs.resolve_sensor_def(f"{fleet}__new_video_sensor")
    store = {f"{fleet}__object_store": defs.resources[f"{fleet}__object_store"]}
    with dg.build_sensor_context(instance=instance, resources=store) as context:
        return sensor(context)


def test_a_fleet_s_sensor_finds_its_landing_store_when_evaluated_the_way_the_daemon_does(two_fleets, instance):
    sensor = two_fleets.resolve_sensor_def("cameras_east__new_video_sensor")
    store = {"cameras_east__object_store": two_fleets.resources["cameras_east__object_store"]}
    with dg.build_sensor_context(instance=instance, resources=store) as context:
        tick = sensor.evaluate_tick(context)  # the daemon's path binds only named resource parameters
    assert tick.run_requests == [] and tick.cursor


def test_one_fleet_s_ingest_of_a_video_does_not_mark_the_same_video_done_in_another_fleet(
    two_fleets, video_dir, instance, tmp_path
):
    for fleet in FLEETS:  # the same file, same size and time, lands in both fleets
        drop(two_fleets.resources[f"{fleet}__object_store"].landing_store(), video_dir, SCENE_A.name)
        os.utime(tmp_path / fleet / "landing" / SCENE_A.name, ns=(1_700_000_000 * 10**9,) * 2)
    (east_request,) = tick(two_fleets, instance, "cameras_east").run_requests
    instance.add_dynamic_partitions("cameras_east__videos", [east_request.partition_key])
    job = two_fleets.resolve_job_def("cameras_east__ingest_video")
    assert job.execute_in_process(instance=instance, partition_key=east_request.partition_key,
                                  tags=east_request.tags).success  # fmt: skip

    (west_request,) = tick(two_fleets, instance, "cameras_west").run_requests
    assert west_request.partition_key == east_request.partition_key


def selected_keys(condition) -> set[dg.AssetKey]:
    """Every asset key an automation condition's dependency operators allow or ignore."""
    keys = set()
    for name in getattr(condition, "_fields", ()):
        value = getattr(condition, name)
        if name in ("allow_selection", "ignore_selection") and value is not None:
            keys |= set(value.selected_keys)
    for child in condition.children:
        keys |= selected_keys(child)
    return keys


def test_a_fleet_s_automation_ignores_its_own_upstream_tables_never_the_other_fleet_s(two_fleets):
    """outliers follows duplicate_groups and ignores updates of the raw tables it also reads: in a
    fleet, those are the fleet's own tables (unprefixed keys would match no asset of the fleet)."""
    graph = two_fleets.get_repository_def().asset_graph
    condition = graph.get(dg.AssetKey(["cameras_east", "outliers"])).automation_condition
    ignored = selected_keys(condition)
    assert ignored and all(key.path[0] == "cameras_east" for key in ignored)


def test_codes_in_ram_is_set_by_its_environment_variable():
    from curation_assets.location import component

    assert component({}).resources({})["vector_store"].codes_in_ram is False  # the default: a mapped file
    resource = component({"CURATION_QDRANT_CODES_IN_RAM": "true"}).resources({})["vector_store"]
    assert resource.codes_in_ram is True
