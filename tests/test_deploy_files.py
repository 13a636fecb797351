"""The deployment files parse and hold together (no Docker engine runs here)."""

import shutil
from pathlib import Path

import dagster as dg
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_runs_the_whole_stack_without_committed_secrets():
    compose = yaml.safe_load((ROOT / "docker/docker-compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "qdrant", "minio", "create_bucket", "user_code", "webserver", "daemon"} <= set(services)
    env = services["user_code"]["environment"]
    for secret in ("DAGSTER_POSTGRES_PASSWORD", "AWS_SECRET_ACCESS_KEY", "QDRANT_API_KEY"):
        assert env[secret].startswith("${"), f"{secret} must come from docker/.env"
    assert env["QDRANT_URL"].startswith("http://qdrant")
    assert not (ROOT / "docker/.env").exists()


def test_docker_workspace_points_at_the_user_code_server():
    workspace = yaml.safe_load((ROOT / "docker/workspace.yaml").read_text())
    server = workspace["load_from"][0]["grpc_server"]
    assert server["host"] == "user_code" and server["port"] == 4000


def test_local_instance_config_loads_with_the_qdrant_pool_limit(tmp_path):
    shutil.copy(ROOT / "dagster_home/dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.get_settings("concurrency")["pools"]["default_limit"] == 1
    finally:
        instance.dispose()
