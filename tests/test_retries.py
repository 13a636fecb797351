"""Only what waiting can fix is retried: a bad setting, a refused credential or a missing bucket
fails its step at once naming what to fix; a store that is briefly away is retried."""

import functools
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from curation_assets.core import layout
from curation_assets.core.ids import video_id_for
from curation_assets.defs.embedding import frame_embeddings
from curation_assets.defs.ingestion import raw_frames
from curation_assets.defs.partitions import videos
from curation_assets.defs.retries import is_transient
from resources import ExpectationsResource, ObjectStoreResource, VectorStoreResource
from resources.object_store import StorageError, classify_s3_error
from tests.conftest import SCENE_B, drop, make_resources
from tests.helpers import once_a_retry_waits


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, video_dir):
    """One short video's published frames (and the resources that made them)."""
    tmp = tmp_path_factory.mktemp("retries")
    resources = make_resources(str(tmp / "root"), tmp / "qdrant")
    drop(resources["object_store"].landing_store(), video_dir, SCENE_B.name)
    video_id = video_id_for(SCENE_B.name)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(videos.name, [video_id])
        done = dg.materialize([raw_frames], partition_key=video_id, instance=instance, resources=resources)
        assert done.success
        yield resources, instance, video_id


def _embed(resources, instance, video_id, **vector_store):
    vs = VectorStoreResource(**{"path": resources["vector_store"].path, "lock_timeout_s": 5, **vector_store})
    return dg.materialize(
        [frame_embeddings],
        partition_key=video_id,
        instance=instance,
        resources={**resources, "vector_store": vs},
        raise_on_error=False,
    )


def _failure(result, instance) -> tuple[str, float]:
    """The step's failure message (with its cause) and how long the step ran."""
    logged = [e for e in instance.all_logs(result.run_id) if e.dagster_event]
    start = next(e for e in logged if e.dagster_event.event_type == dg.DagsterEventType.STEP_START).timestamp
    failed = next(e for e in logged if e.dagster_event.is_step_failure)
    error = failed.dagster_event.step_failure_data.error
    text = str(error.message) + str(error.cause.message if error.cause else "")
    return text, failed.timestamp - start


def _retried(result) -> bool:
    return any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def test_a_wrong_quantization_setting_fails_its_step_at_once_naming_the_setting(ingested):
    result = _embed(*ingested, quantization="int4")
    message, seconds = _failure(result, ingested[1])
    assert "CURATION_QDRANT_QUANTIZATION" in message and "'int4'" in message
    assert not _retried(result) and seconds < 5


class _Refusing(BaseHTTPRequestHandler):
    """A server that answers every request as a Qdrant server does a missing or wrong API key."""

    def _refuse(self):
        body = b'{"status":{"error":"Must provide an API key or an Authorization bearer token"}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_qdrant():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_qdrant_server_that_refuses_the_key_fails_the_step_at_once_naming_the_setting(ingested, refusing_qdrant):
    result = _embed(*ingested, url=refusing_qdrant, api_key="canary-key-never-shown")
    message, seconds = _failure(result, ingested[1])
    assert "401" in message and "QDRANT_API_KEY" in message and refusing_qdrant in message
    assert "canary-key-never-shown" not in message
    assert not _retried(result) and seconds < 5


def test_a_bucket_that_does_not_exist_fails_the_step_at_once_naming_the_bucket_and_the_setting(s3_endpoint, ingested):
    _, instance, video_id = ingested
    store = ObjectStoreResource(root="s3://no-such-bucket-here/curation", endpoint_url=s3_endpoint)
    result = dg.materialize(
        [raw_frames],
        partition_key=video_id,
        instance=instance,
        resources={"object_store": store, "expectations": ExpectationsResource()},
        raise_on_error=False,
    )
    message, seconds = _failure(result, instance)
    assert "s3://no-such-bucket-here/curation/landing" in message and "CURATION_STORAGE_URI" in message
    assert not _retried(result) and seconds < 5


HOLD_THE_STORE = """
import sys
from resources.vector_store import EdgeVectorStore
store = EdgeVectorStore(sys.argv[1])
store.ensure_collection(sys.argv[2], sys.argv[3], int(sys.argv[4]))  # opens the shard: its lock is held
print("held", flush=True)
sys.stdin.readline()  # until told to let go
store.close()
"""


def test_an_embedded_store_held_by_another_process_briefly_is_retried_and_recovers(ingested):
    resources, instance, video_id = ingested
    model = resources["embedder"].embedder()
    collection = resources["vector_store"].collection_for(model.vector_name)
    args = [resources["vector_store"].path, collection, model.vector_name, str(model.dim)]
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_STORE, *args], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    once_a_retry_waits(instance, functools.partial(_let_go, holder))
    try:
        assert holder.stdout.readline().strip() == "held", holder.stderr.read()
        result = _embed(resources, instance, video_id, lock_timeout_s=1)
    finally:
        holder.kill()
        holder.wait()
    assert result.success and _retried(result)
    assert resources["object_store"].store().exists(layout.table_key("frame_embeddings", video_id))


def _let_go(holder: subprocess.Popen) -> None:
    holder.stdin.write("go\n")
    holder.stdin.flush()


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


@pytest.mark.parametrize(
    "error, transient",
    [
        (_client_error("SlowDown", 503), True),
        (_client_error("InternalError", 500), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
        (_client_error("AccessDenied", 403), False),
        (_client_error("InvalidAccessKeyId", 403), False),
        (_client_error("NoSuchBucket", 404), False),
        (_client_error("NoSuchKey", 404), False),
        (NoCredentialsError(), False),
    ],
    ids=[
        "throttled",
        "server error",
        "unreachable",
        "access denied",
        "unknown key",
        "no bucket",
        "no object",
        "no credentials",
    ],  # fmt: skip
)
def test_s3_faults_are_retried_only_when_waiting_can_fix_them(error, transient):
    assert classify_s3_error(error)[0] is transient
    assert is_transient(StorageError("s3://b/k: get failed", transient=classify_s3_error(error)[0])) is transient


def test_a_refused_credential_names_the_settings_that_fix_it():
    _, hint = classify_s3_error(_client_error("InvalidAccessKeyId", 403))
    assert "AWS_ACCESS_KEY_ID" in hint and "AWS_SECRET_ACCESS_KEY" in hint


def test_every_asset_has_the_same_retry_policy():
    from curation_assets.definitions import ASSETS
    from curation_assets.defs.retries import TRANSIENT

    policies = {asset.node_def.name: asset.node_def.retry_policy for asset in ASSETS}
    assert policies == dict.fromkeys(policies, TRANSIENT)
