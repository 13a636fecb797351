"""Faults injected for real: storage that disappears, killed runs, hostile keys, secrets."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import dagster as dg
import pytest

from curation_assets.cli import headless
from curation_assets.core import layout
from curation_assets.core.ids import source_id_for
from curation_assets.definitions import build_defs
from curation_assets.defs.curation import read_groups
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.partitions import videos
from curation_assets.defs.settings import resources_from_env
from curation_assets.demo.scenes import Scene, default_events, write_video
from curation_assets.deploy.topology import free_port
from resources import ExpectationsResource, ObjectStoreResource
from tests.conftest import SCENE_A, encoded, make_resources, photo
from tests.helpers import once_a_retry_waits

ROOT = Path(__file__).resolve().parents[1]


def test_a_video_truncated_in_the_middle_keeps_the_frames_before_the_damage(local_defs, instance, tmp_path):
    scene = Scene("cam-t/cut.mkv", seed=4, duration_s=10.0, events=default_events(10.0), width=160, height=120, fps=10)
    whole = tmp_path / "whole.mkv"
    write_video(scene, whole)
    data = whole.read_bytes()
    local_defs.resources["object_store"].landing_store().put_bytes(scene.name, data[: len(data) // 2])

    (outcome,) = headless.ingest_landing(local_defs, instance, log=lambda _: None)

    assert outcome.success, outcome.error
    frames = outcome.metadata["raw_frames"]["frames"]
    assert 5 <= frames < 20  # 2 fps: the first half survives, the rest is gone
    assert outcome.checks["raw_frames_source_complete"] == "WARN"
    assert "decoding stopped at" in outcome.metadata["raw_frames"]["damage"]
    assert outcome.checks["frame_embeddings_qdrant_count"] == "passed"


class RestartableS3:
    """moto's S3 server on a fixed loopback port that a test can take down and bring back."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self._server_class = ThreadedMotoServer
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self):
        self.server = self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self):
        self.server.stop()


@pytest.fixture
def flaky_s3(s3_endpoint):  # s3_endpoint: the session's credentials are set
    s3 = RestartableS3()
    s3.start()
    s3.bucket = f"flaky-{uuid.uuid4().hex[:8]}"  # moto keeps buckets across servers in one process
    boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1").create_bucket(Bucket=s3.bucket)
    yield s3
    s3.stop()


def _materialize_frames(object_store, instance, video_id):
    return dg.materialize(
        [raw_frames],
        partition_key=video_id,
        instance=instance,
        resources={"object_store": object_store, "expectations": ExpectationsResource()},
        raise_on_error=False,
    )


def _landed_on(flaky_s3, instance, video_dir):
    object_store = ObjectStoreResource(root=f"s3://{flaky_s3.bucket}/curation", endpoint_url=flaky_s3.endpoint)
    object_store.landing_store().put_bytes(SCENE_A.name, (video_dir / SCENE_A.name).read_bytes())
    video_id = source_id_for(SCENE_A.name)
    instance.add_dynamic_partitions(videos.name, [video_id])
    return object_store, video_id


def test_storage_that_disappears_and_returns_is_retried_until_it_succeeds(flaky_s3, instance, video_dir):
    object_store, video_id = _landed_on(flaky_s3, instance, video_dir)

    flaky_s3.stop()
    once_a_retry_waits(instance, flaky_s3.start)  # back once the first attempt has failed
    result = _materialize_frames(object_store, instance, video_id)

    assert result.success
    retries = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retries, "the step should have failed once and been retried"
    assert object_store.store().exists(layout.table_key("raw_frames", video_id))


def test_storage_that_stays_away_fails_naming_the_bucket_and_leaves_nothing_complete(flaky_s3, instance, video_dir):
    object_store, video_id = _landed_on(flaky_s3, instance, video_dir)
    flaky_s3.stop()
    try:
        result = _materialize_frames(object_store, instance, video_id)
    finally:
        flaky_s3.start()
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    assert f"s3://{flaky_s3.bucket}/curation/landing" in str(failure.message) + str(failure.cause)
    assert list(object_store.store().list("tables")) == []  # nothing that looks complete


def test_secrets_never_reach_the_event_log_or_the_output(s3_endpoint, s3_bucket, tmp_path, instance, video_dir, capfd):
    canaries = {
        "AWS_ACCESS_KEY_ID": "AKIACANARY0000000001",
        "AWS_SECRET_ACCESS_KEY": "canary-secret-do-not-log-2",
        "QDRANT_API_KEY": "canary-qdrant-key-3",
    }
    env = {
        **os.environ,
        **canaries,
        "CURATION_STORAGE_URI": f"s3://{s3_bucket}/curation",
        "CURATION_S3_ENDPOINT_URL": s3_endpoint,
        "CURATION_QDRANT_PATH": str(tmp_path / "qdrant"),
    }
    os.environ.update(canaries)  # boto3 and dg.EnvVar read the process environment
    try:
        defs = build_defs(resources_from_env(env))
        defs.resources["object_store"].landing_store().put_bytes(SCENE_A.name, (video_dir / SCENE_A.name).read_bytes())
        ingested = headless.ingest_landing(defs, instance)
        curate = headless.outcome("curate", headless.run_job(defs, instance, "curate"))
    finally:
        for key in canaries:
            os.environ[key] = "testing-" + key.lower()
    assert all(o.success for o in [*ingested, curate])
    logs = "\n".join(
        str(record.dagster_event) + str(record.user_message)
        for run in instance.get_runs()
        for record in instance.all_logs(run.run_id)
    )
    captured = capfd.readouterr()
    everything = logs + captured.out + captured.err + repr(instance.get_runs())
    assert "frame_embeddings" in logs  # the log really was searched
    for secret in canaries.values():
        assert secret not in everything


@pytest.mark.parametrize(
    "key",
    ["../../escape.mp4", "/leading-slash.mp4", "cam a/ünï códe.mp4", "cam-b/" + "x" * 900 + ".mp4"],
    ids=["parent traversal", "absolute", "spaces and unicode", "900-character name"],
)
def test_hostile_landing_keys_get_safe_partitions_and_write_only_under_the_root(
    s3_endpoint, s3_bucket, tmp_path, instance, video_dir, key
):
    defs = build_defs(make_resources(f"s3://{s3_bucket}/curation", tmp_path / "qdrant", s3_endpoint))
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    client.put_object(Bucket=s3_bucket, Key=f"curation/landing/{key}", Body=(video_dir / SCENE_A.name).read_bytes())

    (outcome,) = headless.ingest_landing(defs, instance, log=lambda _: None)

    assert outcome.success, outcome.error
    assert "/" not in outcome.name and len(outcome.name) <= 120
    written = [
        o["Key"]
        for p in client.get_paginator("list_objects_v2").paginate(Bucket=s3_bucket)
        for o in p.get("Contents", [])
    ]
    assert all(k.startswith("curation/") for k in written)
    assert all(".." not in k.split("/") for k in written if not k.startswith("curation/landing/"))
    assert any(k.startswith(f"curation/frames/{outcome.name}/") for k in written)


def test_a_run_killed_halfway_is_re_run_to_the_same_result(tmp_path):
    landing = tmp_path / "landing"
    scene = Scene("cam-k/long.mp4", seed=8, duration_s=40.0, events=default_events(40.0), width=320, height=240)
    write_video(scene, landing / scene.name)
    env = dict(os.environ)
    env.pop("DAGSTER_HOME", None)

    def command(root: Path) -> list[str]:
        return [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root)]

    def run(root: Path) -> None:
        proc = subprocess.run(command(root), cwd=ROOT, env={**env, "CURATION_QDRANT_PATH": str(root / "qdrant")},
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    killed_root = tmp_path / "killed"
    victim = subprocess.Popen(
        command(killed_root),
        cwd=ROOT,
        env={**env, "CURATION_QDRANT_PATH": str(killed_root / "qdrant")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    frames_dir = killed_root / "frames" / source_id_for(scene.name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(frames_dir.glob("*.jpg"))) < 20:
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)  # halfway through the video's frames
    victim.wait()
    assert 0 < len(list(frames_dir.glob("*.jpg"))) < 80
    assert not (killed_root / layout.table_key("raw_frames", source_id_for(scene.name))).exists()
    # Whatever the kill caught mid-write, plus a frame from a run with a higher sampling rate.
    (frames_dir / ".tmp-cut-short.part").write_bytes(b"\xff\xd8 half a jpeg")
    (frames_dir / "999999.jpg").write_bytes(b"\xff\xd8 a stale frame")

    run(killed_root)
    clean_root = tmp_path / "clean"
    run(clean_root)

    video_id = source_id_for(scene.name)
    stores = {
        name: ObjectStoreResource(root=str(r)).store() for name, r in (("killed", killed_root), ("clean", clean_root))
    }
    tables = {
        name: s.read_table(layout.table_key("raw_frames", video_id)).drop(columns="uri") for name, s in stores.items()
    }
    assert tables["killed"].equals(tables["clean"])
    published = stores["killed"].read_table(layout.table_key("raw_frames", video_id))["uri"]
    assert sorted(p.name for p in frames_dir.iterdir()) == sorted(Path(uri).name for uri in published)  # no orphans
    from curation_assets.core.embedder import Embedder
    from resources import VectorStoreResource

    name = Embedder().vector_name
    for root in (killed_root, clean_root):
        vector_store = VectorStoreResource(path=str(root / "qdrant"))
        with vector_store.open() as vs:
            assert vs.count(vector_store.collection_for(name)) == len(tables["clean"])


def test_an_unreachable_qdrant_server_is_a_clear_error_naming_the_url():
    from resources import VectorStoreResource
    from resources.vector_store import VectorStoreError

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    resource = VectorStoreResource(url=url, api_key="canary-key-never-shown")
    with resource.open() as store, pytest.raises(VectorStoreError) as failure:
        store.ensure_collection("frames", "m", 8)
    assert str(failure.value).startswith(f"Qdrant at {url}: collection_exists failed")
    assert "canary-key-never-shown" not in str(failure.value)


def test_many_videos_at_once_are_all_registered_ingested_and_counted_exactly(local_defs, instance):
    landing = local_defs.resources["object_store"].landing_store()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(24):
            scene = Scene(f"cam-{i % 3}/v{i:03d}.mp4", seed=i, duration_s=2.0, width=64, height=48, fps=5)
            write_video(scene, Path(tmp) / scene.name)
            landing.put_bytes(scene.name, (Path(tmp) / scene.name).read_bytes())

    # 8 a tick: several ticks, as with 200 videos and the sensor's 50
    outcomes = headless.ingest_landing(local_defs, instance, log=lambda _: None, max_runs_per_tick=8)

    assert len(outcomes) == 24 and all(o.success for o in outcomes)
    assert len(instance.get_dynamic_partitions(videos.name)) == 24
    frames = local_defs.resources["object_store"].store().read_tables(layout.table_prefix("raw_frames"))
    assert len(frames) == 24 * 4 and frames["frame_id"].is_unique  # 2 s at 2 fps each: none lost, none twice
    vector_store, embedder = local_defs.resources["vector_store"], local_defs.resources["embedder"].embedder()
    with vector_store.open() as vs:
        assert vs.count(vector_store.collection_for(embedder.vector_name)) == len(frames)


def _headless(landing: Path, root: Path, **env) -> tuple[subprocess.CompletedProcess, dict]:
    summary = root.parent / f"{root.name}-summary.json"
    environment = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "CURATION_QDRANT_PATH")}
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root),
               "--summary-json", str(summary)]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, env={**environment, **env}, capture_output=True, text=True, timeout=300)
    return proc, json.loads(summary.read_text())


def _photos(folder: Path, *seeds: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        (folder / f"p{seed}.jpg").write_bytes(encoded(photo(seed)))


def test_a_model_that_cannot_be_loaded_fails_once_naming_the_setting(tmp_path):
    _photos(tmp_path / "landing" / "cam", 1, 2)
    missing = tmp_path / "no-such-weights.pth"
    settings = {"CURATION_EMBEDDER_MODEL": "timm:tf_efficientnet_lite0", "CURATION_EMBEDDER_PRETRAINED": str(missing)}
    proc, summary = _headless(tmp_path / "landing", tmp_path / "root", **settings)
    assert proc.returncode == 1
    [video] = summary["videos"]
    assert not video["success"]
    assert f"checkpoint {missing} does not exist (CURATION_EMBEDDER_PRETRAINED)" in video["error"]
    assert "unset CURATION_EMBEDDER_MODEL" in video["error"]
    assert "RETRY" not in proc.stdout + proc.stderr  # not retried as if the fault were transient


def test_each_storage_root_has_its_own_embedded_vector_store(tmp_path):
    stores = {
        root: resources_from_env({"CURATION_STORAGE_URI": root})["vector_store"].path
        for root in (str(tmp_path / "x"), str(tmp_path / "y"), "s3://bucket/a", "s3://bucket/b")
    }
    assert stores[str(tmp_path / "x")] == str(tmp_path / "x" / "qdrant")
    assert len(set(stores.values())) == 4  # never shared, whatever the working directory
    explicit = resources_from_env({"CURATION_STORAGE_URI": "s3://bucket/a", "CURATION_QDRANT_PATH": str(tmp_path)})
    assert explicit["vector_store"].path == str(tmp_path)


def test_an_environment_error_fails_once_and_keeps_its_cause(local_defs, instance, tmp_path):
    # the tables folder cannot be created (a file is in the way): waiting will not fix that
    root = Path(local_defs.resources["object_store"].store().root)
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "raw_frames").write_text("in the way")
    landing = local_defs.resources["object_store"].landing_store()
    landing.put_bytes("cam/p1.jpg", encoded(photo(1)))
    [outcome] = headless.ingest_landing(local_defs, instance, log=lambda _: None)
    assert not outcome.success
    assert "File exists" in outcome.error and "tables/raw_frames" in outcome.error  # the cause and the path
    assert "max_retries" not in outcome.error
    retried = [
        e
        for run in instance.get_runs()
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
    ]
    assert retried == []


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster_home" / "dagster.yaml").read_text())  # pools of 1
    return home


def test_a_partition_that_failed_is_ingested_once_the_fault_is_fixed(tmp_path):
    _photos(tmp_path / "landing" / "cam", 1, 2, 3)
    root, home = tmp_path / "root", _dagster_home(tmp_path)
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "raw_frames").write_text("in the way")  # an environment fault
    proc, summary = _headless(tmp_path / "landing", root, DAGSTER_HOME=str(home))
    assert proc.returncode == 1 and not summary["videos"][0]["success"]
    (root / "tables" / "raw_frames").unlink()  # fixed
    proc, summary = _headless(tmp_path / "landing", root, DAGSTER_HOME=str(home))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert [(v["success"], v["frames"]) for v in summary["videos"]] == [(True, 3)]
    assert summary["figures"]["frames"] == 3


def _three_clips_being_ingested(tmp_path: Path, **popen) -> tuple[subprocess.Popen, Path, Path, list[str]]:
    """A headless command on three short videos with a persistent instance, left running
    until the first video's embeddings are published. Returns (process, landing, root, names)."""
    landing, root, home = tmp_path / "landing", tmp_path / "root", _dagster_home(tmp_path)
    names = [f"cam-k/clip{i}.mp4" for i in range(3)]
    for i, name in enumerate(names):
        write_video(Scene(name, seed=20 + i, duration_s=10.0, width=320, height=240, fps=5), landing / name)
    environment = {k: v for k, v in os.environ.items() if k != "CURATION_QDRANT_PATH"}
    command = [sys.executable, "-m", "curation_assets", "run", "--landing", str(landing), "--root", str(root)]
    process = subprocess.Popen(command, cwd=ROOT, env={**environment, "DAGSTER_HOME": str(home)}, **popen)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not list((root / "tables" / "frame_embeddings").glob("*.parquet")):
        time.sleep(0.05)
    return process, landing, root, names


def _frames_per_video(root: Path) -> dict[str, int]:
    groups = read_groups(ObjectStoreResource(root=str(root)).store())
    return groups["frame_id"].str.rsplit("/", n=1).str[0].value_counts().to_dict()


def _videos_in_progress(root: Path) -> list[str]:
    """Videos whose frames are on disk but whose embeddings are not published: a run is on them."""
    done = {p.name.removesuffix(".parquet") for p in (root / "tables" / "frame_embeddings").glob("*.parquet")}
    frames = sorted((root / "frames").iterdir()) if (root / "frames").is_dir() else []
    return [d.name for d in frames if d.name not in done and any(d.glob("*.jpg"))]


def test_a_killed_command_with_a_persistent_instance_neither_wedges_nor_loses_videos(tmp_path):
    victim, landing, root, names = _three_clips_being_ingested(
        tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _videos_in_progress(root):
        time.sleep(0.02)  # until the next video's run is under way
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    assert _videos_in_progress(root), "the kill should land inside a video's run"
    home = tmp_path / "dagster_home"
    proc, _ = _headless(landing, root, DAGSTER_HOME=str(home))  # must not wait on the dead run's pool slot
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _frames_per_video(root) == {source_id_for(n): 20 for n in names}  # every video, every frame, once


def test_sigterm_stops_the_command_after_the_run_in_progress_and_a_re_run_resumes(tmp_path):
    victim, landing, root, names = _three_clips_being_ingested(
        tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    victim.send_signal(signal.SIGTERM)  # what timeout, cron and Kubernetes send
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 143 and "stopped by SIGTERM" in err
    assert len(list((root / "tables" / "frame_embeddings").glob("*.parquet"))) < 3  # it stopped before the end
    proc, _ = _headless(landing, root, DAGSTER_HOME=str(tmp_path / "dagster_home"))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _frames_per_video(root) == {source_id_for(n): 20 for n in names}
