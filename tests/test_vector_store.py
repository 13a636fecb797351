import json
import multiprocessing
import os
import time
import uuid
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from qdrant_client import QdrantClient

from curation_assets.core.ids import point_id_for
from resources.vector_store import (
    KNOCK_DEAD_S,
    KNOCK_PREFIX,
    EdgeVectorStore,
    QdrantClientVectorStore,
    VectorStoreError,
    VectorStoreResource,
    Where,
)


@pytest.fixture(params=["embedded", "embedded-int8", "embedded-binary", "qdrant-client", "server", "server-int8"])
def store(request, tmp_path):
    """Congruence: the embedded engine (full precision, and int8 or binary codes in RAM with the
    originals on disk), qdrant-client's in-memory mode and, when QDRANT_URL is set, a real Qdrant
    server run the same tests and must agree."""
    quantization = request.param.split("-")[1] if "-" in request.param else "none"
    if request.param.startswith("embedded"):
        s = EdgeVectorStore(tmp_path / "qdrant", lock_timeout_s=2, quantization=quantization)
    elif request.param == "qdrant-client":
        s = QdrantClientVectorStore(QdrantClient(location=":memory:"), ":memory:")
    else:
        url = os.environ.get("QDRANT_URL")
        if not url:
            pytest.skip("set QDRANT_URL (and QDRANT_API_KEY) to run against a Qdrant server")
        client = QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"))
        s = QdrantClientVectorStore(client, url, quantization)
        request.addfinalizer(lambda: s.client.delete_collection(COLLECTION))
    yield s
    s.close()


COLLECTION = f"test-{uuid.uuid4().hex[:8]}"  # never collides with a real collection on a server


def _points(video, n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [point_id_for(f"{video}/{i:06d}") for i in range(n)]
    payloads = [{"frame_id": f"{video}/{i:06d}", "video_id": video, "camera_id": "cam"} for i in range(n)]
    return ids, v, payloads


def test_replacing_a_video_twice_keeps_one_point_per_frame(store):
    store.ensure_collection(COLLECTION, "m", 8)
    store.replace_video(COLLECTION, "m", "v1", *_points("v1", 10))
    store.replace_video(COLLECTION, "m", "v2", *_points("v2", 4))
    store.replace_video(COLLECTION, "m", "v1", *_points("v1", 10))
    assert store.count(COLLECTION, "v1") == 10
    assert store.count(COLLECTION) == 14


def test_a_shorter_re_ingest_removes_stale_points(store):
    store.ensure_collection(COLLECTION, "m", 8)
    store.replace_video(COLLECTION, "m", "v1", *_points("v1", 10))
    store.replace_video(COLLECTION, "m", "v1", *_points("v1", 6))
    assert store.count(COLLECTION, "v1") == 6


def test_nearest_returns_the_same_point_with_its_payload(store):
    ids, vectors, payloads = _points("v1", 20)
    store.ensure_collection(COLLECTION, "m", 8)
    store.replace_video(COLLECTION, "m", "v1", ids, vectors, payloads)
    hits = store.nearest(COLLECTION, "m", vectors[7], limit=3)
    assert hits[0][0] == ids[7]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
    assert hits[0][2]["frame_id"] == "v1/000007"
    assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)


def test_batched_search_can_leave_videos_out_and_points_come_back_with_their_vectors(store):
    ids, vectors, payloads = _points("v1", 20)
    store.ensure_collection(COLLECTION, "m", 8)
    store.replace_video(COLLECTION, "m", "v1", ids, vectors, payloads)
    store.replace_video(COLLECTION, "m", "v2", *_points("v2", 20))  # the same vectors again, another video
    store.build_index(COLLECTION)
    both = store.nearest_many(COLLECTION, "m", vectors[:3], limit=2)
    assert [{h[2]["video_id"] for h in hits} for hits in both] == [{"v1", "v2"}] * 3
    old_only = store.nearest_many(COLLECTION, "m", vectors[:3], limit=2, where=Where(exclude_videos=["v2"]))
    assert [hits[0][0] for hits in old_only] == ids[:3] and all(h[2]["video_id"] == "v1" for r in old_only for h in r)
    got, got_payloads = store.retrieve(COLLECTION, "m", [ids[5], ids[2]])
    assert np.allclose(got, vectors[[5, 2]], atol=1e-5) and [p["frame_id"] for p in got_payloads] == [
        "v1/000005",
        "v1/000002",
    ]
    with pytest.raises(VectorStoreError, match="missing"):
        store.retrieve(COLLECTION, "m", [point_id_for("nowhere/000000")])


def _filmed(video, camera, n, dim=8, seed=0):
    """Points of one video with its camera and a timestamp per frame (0.5 s apart)."""
    ids, v, payloads = _points(video, n, dim, seed)
    return ids, v, [{**p, "camera_id": camera, "timestamp_s": i * 0.5} for i, p in enumerate(payloads)]


def test_where_admits_only_the_points_every_condition_allows(store):
    store.ensure_collection(COLLECTION, "m", 8)
    ids, vectors, _ = _filmed("v1", "cam-a", 10)
    store.replace_video(COLLECTION, "m", "v1", *_filmed("v1", "cam-a", 10))
    store.replace_video(COLLECTION, "m", "v2", *_filmed("v2", "cam-b", 10))  # the same vectors, another camera
    store.replace_video(COLLECTION, "m", "v3", *_filmed("v3", "cam-b", 10, seed=1))

    def found(where):
        return {h[2]["frame_id"] for h in store.nearest(COLLECTION, "m", vectors[4], 30, where)}

    assert len(found(None)) == len(found(Where())) == 30
    assert found(Where(cameras=["cam-a"])) == {f"v1/{i:06d}" for i in range(10)}
    assert {f.split("/")[0] for f in found(Where(cameras=["cam-b"], videos=["v2", "v1"]))} == {"v2"}
    assert found(Where(videos=["v1"], time_from_s=1.0, time_to_s=2.0)) == {f"v1/{i:06d}" for i in (2, 3, 4)}
    assert found(Where(only_frames=["v1/000004", "v3/000000"])) == {"v1/000004", "v3/000000"}
    assert found(Where(only_frames=[])) == set()
    top = store.nearest(COLLECTION, "m", vectors[4], 2, Where(exclude_frames=["v1/000004", "v2/000004"]))
    assert {h[2]["frame_id"] for h in top} & {"v1/000004", "v2/000004"} == set()
    assert COLLECTION in store.collections()


def test_embedded_data_survives_reopening(tmp_path):
    store = EdgeVectorStore(tmp_path)
    store.ensure_collection(COLLECTION, "m", 8)
    store.replace_video(COLLECTION, "m", "v1", *_points("v1", 5))
    store.close()
    reopened = EdgeVectorStore(tmp_path)
    assert reopened.count(COLLECTION, "v1") == 5
    reopened.close()


def _hold_lock(path, ready, release):
    store = EdgeVectorStore(path)
    store.ensure_collection("locked", "m", 8)
    ready.set()
    release.wait(30)
    store.close()


def test_a_store_held_by_another_process_gives_a_clear_error(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(VectorStoreError, match="open in another process.*QDRANT_URL"):
            EdgeVectorStore(tmp_path, lock_timeout_s=1).count("locked")
    finally:
        release.set()
        holder.join(30)
    assert EdgeVectorStore(tmp_path, lock_timeout_s=5).count("locked") == 0  # free again


@pytest.mark.parametrize("quantization", ["int8", "binary"])
def test_a_quantized_store_keeps_full_precision_vectors_on_disk_and_refuses_unknown_settings(tmp_path, quantization):
    store = EdgeVectorStore(tmp_path / "qdrant", quantization=quantization)
    ids, vectors, payloads = _points("v1", 300, dim=64)
    store.ensure_collection(COLLECTION, "m", 64)
    store.replace_video(COLLECTION, "m", "v1", ids, vectors, payloads)
    store.close()
    config = (tmp_path / "qdrant" / COLLECTION / "edge_config.json").read_text()
    assert '"on_disk":true' in config.replace(" ", "") and quantization in config.lower()
    reopened = EdgeVectorStore(tmp_path / "qdrant")  # the collection keeps the settings it was made with
    got, _ = reopened.retrieve(COLLECTION, "m", ids[:5])
    assert np.allclose(got, vectors[:5], atol=1e-6)  # the originals, not their codes
    assert [h[0] for h in reopened.nearest(COLLECTION, "m", vectors[42], 1)] == [ids[42]]
    reopened.close()
    with pytest.raises(VectorStoreError, match="unknown quantization 'int4'"):
        VectorStoreResource(path=str(tmp_path / "other"), quantization="int4").open().__enter__()


def test_the_resource_never_describes_itself_with_the_api_key():
    resource = VectorStoreResource(url="http://127.0.0.1:6333", api_key="s3cr3t-key")
    assert "s3cr3t" not in resource.describe()


# -- the embedded store held open across a process's steps (VectorStoreResource.held) --------------------


def _count_elsewhere(path, collection, lock_timeout_s, answer):
    try:
        answer.put(EdgeVectorStore(path, lock_timeout_s=lock_timeout_s).count(collection))
    except VectorStoreError as exc:
        answer.put(str(exc))


def count_in_another_process(path, lock_timeout_s: float):
    """What another process reads of the store: its point count, or why it could not open it
    (lock_timeout_s 0: it asks once and does not wait)."""
    ctx = multiprocessing.get_context("spawn")
    answer = ctx.Queue()
    process = ctx.Process(target=_count_elsewhere, args=(path, COLLECTION, lock_timeout_s, answer))
    process.start()
    try:
        return answer.get(timeout=90)
    finally:
        process.join(30)


def _a_step(resource, video="v1", n=5):
    with resource.open() as store:
        store.ensure_collection(COLLECTION, "m", 8)
        store.replace_video(COLLECTION, "m", video, *_points(video, n))


def test_inside_a_held_block_every_step_uses_the_store_loaded_once(tmp_path):
    resource = VectorStoreResource(path=str(tmp_path / "qdrant"), lock_timeout_s=5)
    loaded = EdgeVectorStore.loads
    with resource.held():
        _a_step(resource, "v1")
        _a_step(resource, "v2")
        with resource.open() as store:
            assert store.count(COLLECTION) == 10
    assert EdgeVectorStore.loads - loaded == 1


def test_a_held_store_stays_locked_between_steps_and_is_released_at_the_block_s_end(tmp_path):
    resource = VectorStoreResource(path=str(tmp_path / "qdrant"), lock_timeout_s=5)
    with resource.held():
        _a_step(resource)
        assert "open in another process" in count_in_another_process(resource.path, 0)  # asks once, no wait
    assert count_in_another_process(resource.path, 0) == 5


def test_a_process_that_waits_for_a_held_store_gets_it_between_two_steps(tmp_path):
    resource = VectorStoreResource(path=str(tmp_path / "qdrant"), lock_timeout_s=30)
    loaded = EdgeVectorStore.loads
    with resource.held():
        _a_step(resource, "v1")
        assert count_in_another_process(resource.path, 30) == 5  # not after the block: now
        _a_step(resource, "v2")  # loaded again
        with resource.open() as store:
            assert store.count(COLLECTION) == 10
    assert EdgeVectorStore.loads - loaded == 2


def test_loading_the_store_removes_the_knock_of_a_waiter_that_died_and_keeps_a_live_one(tmp_path):
    resource = VectorStoreResource(path=str(tmp_path / "qdrant"), lock_timeout_s=5)
    _a_step(resource)
    dead, live = Path(resource.path) / f"{KNOCK_PREFIX}1-dead", Path(resource.path) / f"{KNOCK_PREFIX}2-live"
    dead.touch()
    live.touch()
    os.utime(dead, (time.time() - 2 * KNOCK_DEAD_S,) * 2)
    _a_step(resource, "v2")
    assert not dead.exists() and live.exists()


def test_a_batch_loads_the_embedded_store_once_for_its_sources_and_their_curation(local_defs, instance, video_dir):
    from curation_assets.defs.sensors import build_new_video_sensor
    from tests.conftest import SCENE_A, SCENE_B, drop
    from tests.test_sensor import run_batch, tick

    object_store = local_defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_A.name, SCENE_B.name)
    requests = tick(instance, object_store, sensor=build_new_video_sensor(sources_per_run=2)).run_requests
    loaded = EdgeVectorStore.loads
    assert run_batch(local_defs, instance, requests).success  # 2 x frame_embeddings, duplicate_groups, outliers
    assert len(instance.get_runs(filters=dg.RunsFilter(job_name="curate"))) == 1
    assert EdgeVectorStore.loads - loaded == 1


def test_the_headless_command_loads_the_embedded_store_once(tmp_path, video_dir, monkeypatch):
    import curation_assets.__main__ as command
    from curation_assets.core.progress import show_progress
    from tests.conftest import SCENE_B

    landing = tmp_path / "landing"
    (landing / "cam-b").mkdir(parents=True)
    (landing / SCENE_B.name).write_bytes((video_dir / SCENE_B.name).read_bytes())
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    args = command.parse_args(["run", "--landing", str(landing), "--root", str(tmp_path / "root")])
    loaded = EdgeVectorStore.loads
    try:
        assert command.run(args, command.environment(args)) == 0  # ingest (frame_embeddings), then curate
    finally:
        show_progress(None)
    assert EdgeVectorStore.loads - loaded == 1


# -- quantized codes in RAM or in a memory-mapped file (vector_store.codes_in_ram) --------------------------


@pytest.fixture(params=["embedded", "server"])
def int8_resource(request, tmp_path):
    """Makes a resource whose new collections are int8, on the embedded engine or (QDRANT_URL) a Qdrant server."""
    if request.param == "embedded":
        return lambda **settings: VectorStoreResource(path=str(tmp_path / "qdrant"), quantization="int8", **settings)
    url = os.environ.get("QDRANT_URL") or pytest.skip("set QDRANT_URL to run against a Qdrant server")
    key = os.environ.get("QDRANT_API_KEY")
    return lambda **settings: VectorStoreResource(url=url, api_key=key, quantization="int8", **settings)


def _always_ram(store) -> bool:
    if isinstance(store, EdgeVectorStore):  # the engine's own record of how the collection was made
        config = json.loads((store.path / COLLECTION / "edge_config.json").read_text())
        return config["quantization_config"]["scalar"]["always_ram"]
    return store.client.get_collection(COLLECTION).config.quantization_config.scalar.always_ram


@pytest.mark.parametrize("codes_in_ram", [True, False], ids=["codes in RAM", "codes in a mapped file"])
def test_a_quantized_collection_is_made_with_its_codes_where_the_setting_says_and_searches_alike(
    int8_resource, codes_in_ram
):
    resource = int8_resource(codes_in_ram=codes_in_ram)
    ids, vectors, payloads = _points("v1", 300, dim=64)
    with resource.open() as store:
        store.ensure_collection(COLLECTION, "m", 64)
        store.replace_video(COLLECTION, "m", "v1", ids, vectors, payloads)
        store.build_index(COLLECTION)
        try:
            assert _always_ram(store) is codes_in_ram
            assert [h[0] for h in store.nearest(COLLECTION, "m", vectors[42], 1)] == [ids[42]]
        finally:
            if not isinstance(store, EdgeVectorStore):
                store.client.delete_collection(COLLECTION)


def test_only_payloads_that_differ_from_the_stored_ones_are_written(store):
    store.ensure_collection(COLLECTION, "m", 8)
    ids, vectors, payloads = _points("v1", 3)
    store.replace_video(COLLECTION, "m", "v1", ids, vectors, payloads)
    rep, member = {"group_role": "representative", "group_size": 2, "isolation": 0.123456789}, {"group_size": None}
    given = {"v1/000000": rep, "v1/000001": {"group_role": "member", **member}}
    assert store.set_changed_payloads(COLLECTION, given) == 2
    assert store.set_changed_payloads(COLLECTION, given) == 0  # all stored as given: nothing written
    demoted = {"v1/000000": {"group_role": "member", **member}}  # no longer a representative: no isolation
    assert store.set_changed_payloads(COLLECTION, demoted, drop=("isolation",)) == 2  # its role; its isolation
    assert store.payloads(COLLECTION, ["v1/000000"])["v1/000000"].get("isolation") is None
    assert store.set_changed_payloads(COLLECTION, demoted, drop=("isolation",)) == 0
