"""The production topology of docker/, run for real as plain processes on loopback.

PostgreSQL run storage, the queued run coordinator, the user-code gRPC server, the daemon
and the webserver, with docker/dagster.yaml's own settings (curation_assets/deploy/topology.py,
the code behind `make prod-local`), S3 on moto's server. Videos are uploaded to the S3
landing prefix; the daemon's sensor launches their batch runs, which curate the global
assets. Needs Debian's postgresql (`.ci/run` installs it); skipped without it unless
CURATION_REQUIRE_POSTGRES is set, as it is in CI.
"""

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.error
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef
from helpers import browser_page, require_chromium

from curation_assets.core import layout
from curation_assets.core.frames import sample_frames
from curation_assets.core.ids import video_id_for
from curation_assets.defs.curation import read_groups
from curation_assets.defs.sensors import SOURCE_TAG, Ledger, batch_source_tag, load_cursor
from curation_assets.defs.settings import resources_from_env
from curation_assets.demo.scenes import Scene, write_video
from curation_assets.deploy.topology import POSTGRES_USER, ROOT, Postgres, Topology

ARTIFACTS = ROOT / "test-artifacts"
BUCKET = "topology"
IN_FLIGHT = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}
RUNS = """query ($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) {
  ... on Runs { results { runId status jobName startTime endTime tags { key value } } } } }"""
SENSOR_CURSOR = """query { sensorOrError(sensorSelector: {repositoryName: "__repository__",
  repositoryLocationName: "curation_assets", sensorName: "new_video_sensor"}) {
  ... on Sensor { sensorState { typeSpecificData { ... on SensorData { lastCursor } } } } } }"""


@pytest.fixture(scope="module")
def topology(s3_endpoint, tmp_path_factory):
    if Postgres.binary("initdb") is None:
        if os.environ.get("CURATION_REQUIRE_POSTGRES"):
            pytest.fail("initdb not found: apt-get install -y postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql); CI installs it")
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    base = tmp_path_factory.mktemp("topology")
    postgres_folder = Path(tempfile.mkdtemp(prefix="curation-postgres-"))  # the postgres user must reach it
    env = {
        **os.environ,
        "CURATION_STORAGE_URI": f"s3://{BUCKET}/curation",
        "CURATION_S3_ENDPOINT_URL": s3_endpoint,
        "CURATION_QDRANT_PATH": str(base / "qdrant"),
    }
    try:
        # a run lost with its code server is failed after 15 s of silence, not production's 60
        with Topology(base, env=env, postgres_folder=postgres_folder, lost_after_seconds=15) as running:
            yield running
    finally:
        shutil.rmtree(postgres_folder, ignore_errors=True)


def upload(topology: Topology, tmp_path: Path, names: list[str], seed: int = 0, seconds: float = 2.0) -> dict[str, int]:
    """Encode small videos, upload them to the S3 landing prefix; their expected frame counts."""
    s3 = boto3.client("s3", endpoint_url=topology.env["CURATION_S3_ENDPOINT_URL"], region_name="us-east-1")
    expected = {}
    for i, name in enumerate(names):
        path = tmp_path / name
        write_video(Scene(name, seed=seed + i, duration_s=seconds, width=64, height=48, fps=5), path)
        expected[name] = sum(1 for _ in sample_frames(path, name=name))  # the default 2 frames a second
        s3.upload_file(str(path), BUCKET, f"curation/landing/{name}")
    return expected


def runs(topology: Topology, **tags: str) -> list[dict]:
    variables = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
    return topology.graphql(RUNS, variables)["runsOrError"]["results"]


def ingest_runs(topology: Topology, name: str) -> list[dict]:
    return runs(topology, **{"dagster/partition": video_id_for(name)})


def batch_runs(topology: Topology, name: str) -> list[dict]:
    """The batch runs the sensor launched to ingest a video, newest first."""
    key = batch_source_tag(video_id_for(name))
    return [r for r in runs(topology) if any(t["key"] == key for t in r["tags"])]


def attempts(topology: Topology, name: str) -> list[dict]:
    """A video's own runs, newest first; before its first, the batch runs meant to start it."""
    return ingest_runs(topology, name) or batch_runs(topology, name)


def wait_for(what: str, check, topology: Topology, timeout: float = 420, every: float = 2.0):
    """Poll ``check`` until it holds (and return what it returned)."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}\n{topology.log_tail(n, 1500)}" for n in ("daemon", "code_server"))
            pytest.fail(f"timed out waiting for {what}\n{logs}")
        time.sleep(every)
    return result


def all_ingested(topology: Topology, names) -> bool:
    return all(any(r["status"] == "SUCCESS" for r in ingest_runs(topology, n)) for n in names)


def assert_counted_exactly(topology: Topology, expected: dict[str, int]) -> None:
    resources = resources_from_env(topology.env)
    store = resources["object_store"].store()
    for name, frames in expected.items():
        table = store.read_table(layout.table_key("raw_frames", video_id_for(name)))
        assert len(table) == frames and table["frame_id"].is_unique, name
    vector_name = resources["embedder"].embedder().vector_name
    vector_store = resources["vector_store"].model_copy(update={"lock_timeout_s": 120})
    with vector_store.open() as vectors:
        collection = vector_store.collection_for(vector_name)
        for name, frames in expected.items():
            assert vectors.count(collection, video_id_for(name)) == frames, name


def one_successful_run_each(topology: Topology, names, launches_may_fail: bool = False) -> None:
    """Each video ingested by exactly one successful sensor run. Where a fault may have hit a
    launch in flight, a run that then failed is allowed beside it (it ingested nothing: the
    exact counts say so), never a second success."""
    for name in names:
        found = ingest_runs(topology, name)
        statuses = sorted(r["status"] for r in found)
        if launches_may_fail:
            statuses = [s for s in statuses if s != "FAILURE"]
        assert statuses == ["SUCCESS"], f"{name}: {[r['status'] for r in found]}"
        for run in found:
            tags = {t["key"]: t["value"] for t in run["tags"]}
            assert tags["dagster/sensor_name"] == "new_video_sensor" and tags[SOURCE_TAG].startswith(video_id_for(name))


def curated_after(topology: Topology, moment: float) -> bool:
    """duplicate_groups and outliers materialized by a run that started after ``moment``: a batch's
    curate run (or the automation sensor's, for plain runs)."""
    done = [r for r in runs(topology) if r["status"] == "SUCCESS" and r["jobName"] in ("curate", "__ASSET_JOB")]
    return any(r["startTime"] > moment for r in done)


def sensor_cursor(topology: Topology) -> dict:
    state = topology.graphql(SENSOR_CURSOR)["sensorOrError"]["sensorState"]
    return load_cursor(state["typeSpecificData"]["lastCursor"])


def ingested_per_ledger(topology: Topology) -> dict[str, str]:
    """Landing key -> fingerprint of the content the instance's ledger holds as ingested."""
    landing_root = resources_from_env(topology.env)["object_store"].landing_store().root
    saved = dict(os.environ)
    os.environ.update(topology.env)  # dagster.yaml names the Postgres variables
    try:
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(topology.home))) as instance:
            return Ledger(instance, landing_root).entries("done")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def run_messages(topology: Topology, run_id: str) -> str:
    query = """query ($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
      events { ... on MessageEvent { message } } } } }"""
    events = topology.graphql(query, {"runId": run_id})["logsForRun"]["events"]
    return "\n".join(e.get("message") or "" for e in events)


def test_uploaded_videos_are_ingested_once_each_then_curated(topology, tmp_path):
    expected = upload(topology, tmp_path, ["cam-a/dock.mp4", "cam-b/gate.mp4"])

    wait_for("the sensor's runs", lambda: all_ingested(topology, expected), topology)
    one_successful_run_each(topology, expected)
    last_ingest = max(r["endTime"] for n in expected for r in ingest_runs(topology, n))
    wait_for("a curate run to refresh duplicate_groups and outliers", lambda: curated_after(topology, last_ingest),
             topology)  # fmt: skip
    assert_counted_exactly(topology, expected)
    store = resources_from_env(topology.env)["object_store"].store()
    tables = [store.read_table(layout.table_key("raw_frames", video_id_for(n))) for n in expected]
    grouped = set(read_groups(store)["frame_id"])
    assert {f for table in tables for f in table["frame_id"]} <= grouped


def test_the_postgres_backed_ui_shows_the_graph_a_sensor_run_a_check_and_a_contact_sheet(topology):
    require_chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    # the run the sensor launched: the batch that ingested the video (two arrived in one tick), else its own run
    [run] = batch_runs(topology, "cam-a/dock.mp4") or ingest_runs(topology, "cam-a/dock.mp4")
    topology.graphql("mutation { setNuxSeen }")  # no "join the community" dialog
    with browser_page() as page:
        page.goto(f"{topology.url}/assets/duplicate_groups?view=lineage&lineageScope=upstream&lineageDepth=3")
        try:
            for asset in ("raw_frames", "frame_embeddings", "duplicate_groups"):
                page.get_by_text(asset, exact=True).first.wait_for()
        finally:
            page.screenshot(path=ARTIFACTS / "topology-01-lineage.png")

        page.goto(f"{topology.url}/runs/{run['runId']}")
        page.get_by_text("new_video_sensor").first.wait_for()
        page.get_by_text("Success").first.wait_for()
        page.screenshot(path=ARTIFACTS / "topology-02-sensor-run.png")

        page.goto(f"{topology.url}/assets/raw_frames?view=checks")
        page.get_by_text("raw_frames_table_valid").first.wait_for()
        page.get_by_text("Passed").first.wait_for()
        page.screenshot(path=ARTIFACTS / "topology-03-checks.png")

        page.goto(f"{topology.url}/assets/duplicate_groups")
        page.get_by_text("[Show Markdown]").first.click()
        picture = page.locator('img[src^="data:image/png"]').first
        picture.wait_for(state="visible")
        assert picture.evaluate("img => img.naturalWidth") > 200  # a real, decoded picture
        page.screenshot(path=ARTIFACTS / "topology-04-contact-sheet.png")


def test_a_daemon_killed_while_runs_are_queued_or_running_loses_and_duplicates_nothing(topology, tmp_path):
    names = ["cam-c/yard-1.mp4", "cam-c/yard-2.mp4", "cam-d/ramp.mp4"]
    expected = upload(topology, tmp_path, names, seed=10)
    before = ingested_per_ledger(topology)

    def runs_waiting_or_running(wanted: set[str]):
        """Statuses of the three videos' newest runs once each is in ``wanted``. A kill that lands
        while the daemon is launching a run (it read QUEUED a moment before) leaves that run
        STARTING until run monitoring fails it (start timeout 120 s) and the sensor asks again:
        older runs are then failed launches, and nothing else."""
        statuses = []
        for name in names:
            found = attempts(topology, name)  # newest first
            if not found or found[0]["status"] not in wanted or any(r["status"] != "FAILURE" for r in found[1:]):
                return False
            statuses.append(found[0]["status"])
        return statuses

    seen = []
    for wanted in ({"QUEUED", "STARTED"}, {"STARTED", "SUCCESS"}):  # queued (or running), then running
        seen += wait_for(f"runs {wanted}", lambda w=wanted: runs_waiting_or_running(w), topology, every=0.3)
        assert topology.stop_process("daemon", signal.SIGKILL) == -signal.SIGKILL
        time.sleep(2)  # runs in flight go on in the code server's run processes; the queue waits
        topology.start_daemon()
    assert set(seen) & IN_FLIGHT, seen

    wait_for("every video ingested after the restart", lambda: all_ingested(topology, names), topology)
    one_successful_run_each(topology, names, launches_may_fail=True)  # none lost, none ingested twice
    wait_for("the sensor to record them", lambda: set(names) <= set(ingested_per_ledger(topology)), topology, 120)
    after = ingested_per_ledger(topology)
    assert {k: after[k] for k in before} == before  # the ledger kept what it knew
    wait_for("no run in flight", lambda: not any(r["status"] in IN_FLIGHT for r in runs(topology)), topology)
    assert_counted_exactly(topology, expected)


def test_postgres_restarted_the_webserver_and_daemon_recover(topology, tmp_path):
    [earlier] = ingest_runs(topology, "cam-a/dock.mp4")
    topology.postgres.stop()
    topology.postgres.start()

    # the webserver keeps one pooled connection per storage (runs, events, sensor state): the
    # first query on each meets a connection Postgres closed, answers HTTP 500 and reconnects
    stale = 0
    for _ in range(10):
        try:
            runs(topology), run_messages(topology, earlier["runId"]), sensor_cursor(topology)
            break
        except urllib.error.HTTPError as exc:
            assert exc.code == 500
            stale += 1
    assert stale <= 6  # one per stale pooled connection at most
    for _ in range(3):  # and from then on every query is answered
        runs(topology), run_messages(topology, earlier["runId"]), sensor_cursor(topology)

    expected = upload(topology, tmp_path, ["cam-e/after-restart.mp4"], seed=30)
    wait_for("a run after Postgres came back", lambda: all_ingested(topology, expected), topology)
    one_successful_run_each(topology, expected)
    assert topology.processes["daemon"].poll() is None and topology.processes["webserver"].poll() is None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="ignore")
    except FileNotFoundError:  # a vector store segment a run in flight (a map, a curation) replaced meanwhile
        return ""


def test_no_secret_reaches_the_files_or_logs(topology):
    password = topology.postgres.password
    written = [p for p in topology.base.rglob("*") if p.is_file() and p.name != ".postgres-password"]
    assert written and not any(password in _text(p) for p in written)
    assert json.dumps(topology.graphql("{ instance { info } }")).find(password) == -1


def test_a_code_server_killed_mid_run_fails_that_run_clearly_and_the_video_is_ingested_again(topology, tmp_path):
    [name] = upload(topology, tmp_path, ["cam-f/restart-mid-run.mp4"], seed=40, seconds=30.0)

    def runs_of_it(*statuses: str) -> list[dict]:
        return [r for r in ingest_runs(topology, name) if r["status"] in statuses]

    [run] = wait_for("its run to start", lambda: runs_of_it("STARTED"), topology, every=0.3)
    embedding = 'Started execution of step "frame_embeddings"'  # it holds the qdrant pool's one slot
    wait_for("its embedding step", lambda: embedding in run_messages(topology, run["runId"]), topology, every=0.3)

    topology.stop_process("code_server", signal.SIGKILL)  # a crashed container: its run processes go with it
    topology.start_code_server()

    [interrupted] = wait_for("the run to end", lambda: runs_of_it("SUCCESS", "FAILURE", "CANCELED"), topology, 180)
    assert interrupted["runId"] == run["runId"]
    assert interrupted["status"] == "FAILURE"
    # the lone video went to a batch run (which would curate it): run monitoring fails the batch,
    # whose process the code server took along, and the sensor fails the video's run inside it
    batch = {t["key"]: t["value"] for t in run["tags"]}["curation/batch"]
    cause = "its process was lost (the code server was restarted or killed mid-run)"
    assert cause in run_messages(topology, batch)
    assert "its batch run ended before it did" in run_messages(topology, run["runId"])
    wait_for("the sensor's retry", lambda: all_ingested(topology, [name]), topology)


def sessions(topology: Topology, database: str) -> int:
    """Every session opened on ``database`` so far (ended ones counted, open ones too)."""
    sql = f"SELECT sessions + numbackends FROM pg_stat_database WHERE datname = '{database}'"
    return int(topology.postgres._psql(sql))


def test_a_batch_run_holds_its_postgres_connections_instead_of_opening_one_per_write(topology, tmp_path, video_dir):
    """A batch's source and curate runs write their events and run records through the batch's
    process: against Postgres, Dagster opened a connection (a server process, a password
    exchange) for each of those writes until the batch held them open: 301 sessions for a lone
    source's batch before, 29 since (the batch run's own start, before its op, opens most)."""
    from curation_assets.definitions import build_defs
    from curation_assets.defs.sensors import build_new_video_sensor
    from tests.conftest import SCENE_B, drop, make_resources

    database = "batch_connections"  # a database of its own: the topology's processes connect to theirs
    topology.postgres._psql(f"CREATE DATABASE {database}")
    postgres_db = {"hostname": "127.0.0.1", "port": topology.postgres.port, "username": POSTGRES_USER,
                   "password": topology.postgres.password, "db_name": database,
                   "scheme": "postgresql+psycopg2"}  # as docker/dagster.yaml  # fmt: skip

    defs = build_defs(make_resources(str(tmp_path / "root"), tmp_path / "qdrant"))
    object_store = defs.resources["object_store"]
    drop(object_store.landing_store(), video_dir, SCENE_B.name)
    with dg.instance_for_test(overrides={"storage": {"postgres": {"postgres_db": postgres_db}}}) as instance:
        with dg.build_sensor_context(instance=instance, resources={"object_store": object_store}) as context:
            result = build_new_video_sensor()(context)
        instance.add_dynamic_partitions("videos", list(result.dynamic_partitions_requests[0].partition_keys))
        [batch] = result.run_requests
        before = sessions(topology, database)
        job = defs.resolve_job_def("ingest_batch")
        ran = job.execute_in_process(instance=instance, run_config=batch.run_config, tags=batch.tags)
        assert ran.success
        assert len(instance.get_runs()) == 3  # the batch, its source's run, its curate run
        assert sessions(topology, database) - before <= 60


def test_the_production_storage_holds_its_connections_across_writes(topology):
    """docker/dagster.yaml's storage: a process that loads the instance (the daemon, the code
    server's sensor ticks, a run worker) reads and writes through connections it keeps, where
    dagster-postgres's own opens one per read or write (50 writes: 50 sessions)."""
    from curation_assets.deploy.topology import DOCKER

    database = "held_connections"  # a database of its own: the topology's processes connect to theirs
    topology.postgres._psql(f"CREATE DATABASE {database}")
    storage = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["storage"]
    storage["custom"]["config"]["postgres_db"].update(
        hostname="127.0.0.1", port=topology.postgres.port, username=POSTGRES_USER,
        password=topology.postgres.password, db_name=database,
    )  # fmt: skip
    with dg.instance_for_test(overrides={"storage": storage}) as instance:
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        before = sessions(topology, database)
        for i in range(50):
            instance.report_engine_event(f"step {i}", run)
        assert len(instance.all_logs(run.run_id)) >= 50
        assert sessions(topology, database) - before <= 5
