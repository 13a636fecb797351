"""The production topology of ``docker/`` on one machine, as plain processes.

PostgreSQL (``initdb`` + ``pg_ctl`` into a folder, a loopback port), the user-code gRPC
server (the Dockerfile's command), the daemon and the webserver, with the instance settings
of ``docker/dagster.yaml`` itself (Postgres storage, the queued run coordinator and its
limits, run monitoring) and the workspace of ``docker/workspace.yaml`` pointed at loopback.
The one setting that differs is said where it is made: without a Qdrant server the
embedded store admits one process at a time, so its pool's limit is 1.

    python -m curation_assets.deploy.topology [--base .curation/prod-local] [--port 3000]

starts it (``make prod-local``), prints where the UI is, and stops everything on Ctrl-C or
SIGTERM. Storage and models come from the same environment variables as everywhere else
(``CURATION_STORAGE_URI``, ``QDRANT_URL``, ...). The tests drive the same class.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
POSTGRES_USER = "dagster"
POSTGRES_DB = "dagster"
EMBEDDED_STORE_POOL_LIMIT = 1  # the embedded Qdrant store admits one process at a time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instance_config(qdrant_server: bool, lost_after_seconds: float | None = None) -> dict:
    """``docker/dagster.yaml`` as it is, but for the pool limit when there is no Qdrant server
    (and, for tests that kill a code server, how soon its lost runs are failed)."""
    config = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    if not qdrant_server:
        config.setdefault("concurrency", {}).setdefault("pools", {})["default_limit"] = EMBEDDED_STORE_POOL_LIMIT
    if lost_after_seconds is not None:
        config["run_launcher"].setdefault("config", {})["lost_after_seconds"] = lost_after_seconds
    return config


def workspace_config(port: int) -> dict:
    """``docker/workspace.yaml`` with its gRPC server on loopback."""
    config = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
    for entry in config["load_from"]:
        entry["grpc_server"].update(host="127.0.0.1", port=port)
    return config


class Postgres:
    """A PostgreSQL server of our own in ``data``, on a loopback port. Postgres refuses to run
    as root: as root, its commands run as the ``postgres`` user the Debian package creates."""

    def __init__(self, folder: Path, port: int, password: str):
        self.folder, self.port, self.password = folder, port, password
        self.data, self.log = folder / "data", folder / "postgres.log"
        self._as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]

    @staticmethod
    def binary(name: str) -> str | None:
        found = shutil.which(name)
        if found:
            return found
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))  # Debian keeps them here
        return str(versions[-1]) if versions else None

    def _run(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        binary = self.binary(command[0])
        if binary is None:
            raise RuntimeError(f"{command[0]} not found: apt-get install -y postgresql")
        done = subprocess.run([*self._as, binary, *command[1:]], capture_output=True, text=True, **kwargs)
        if done.returncode:
            raise RuntimeError(f"{' '.join(command[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def _own(self, path: Path) -> None:
        if self._as:
            user = pwd.getpwnam("postgres")
            os.chown(path, user.pw_uid, user.pw_gid)

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._own(self.folder)
        secret = self.folder / ".pwfile"  # read once by initdb, then removed
        secret.write_text(self.password)
        secret.chmod(0o600)
        self._own(secret)
        try:
            self._run("initdb", "-D", str(self.data), "-U", POSTGRES_USER, "--auth=scram-sha-256",
                      f"--pwfile={secret}", "--no-sync", "-E", "UTF8", timeout=120)  # fmt: skip
        finally:
            secret.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start",
                  timeout=90)  # fmt: skip
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'")
        if "1" not in exists.split():
            self._psql(f"CREATE DATABASE {POSTGRES_DB}")

    def _psql(self, sql: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        command = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", POSTGRES_USER, "-d", "postgres", "-tAc", sql]
        return self._run(*command, env=env, timeout=30).stdout

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", timeout=90)


class Topology:
    """Postgres, the code server, the daemon and the webserver under ``base``, on loopback."""

    def __init__(
        self,
        base: Path,
        env: Mapping[str, str] | None = None,
        webserver_port: int | None = None,
        postgres_folder: Path | None = None,
        lost_after_seconds: float | None = None,  # None: docker/dagster.yaml's
    ):
        self.lost_after_seconds = lost_after_seconds
        self.base = Path(base).resolve()
        self.home = self.base / "dagster_home"
        self.logs = self.base / "logs"
        self.grpc_port = free_port()
        self.webserver_port = webserver_port or free_port()
        self.url = f"http://127.0.0.1:{self.webserver_port}"
        password_file = self.base / ".postgres-password"
        self.base.mkdir(parents=True, exist_ok=True)
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(24))
            password_file.chmod(0o600)
        # the postgres user must reach its folder: tests put it outside their root-only temp folders
        self.postgres = Postgres(postgres_folder or self.base / "postgres", free_port(), password_file.read_text())
        environment = dict(os.environ if env is None else env)
        self.env = {
            **environment,
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_POSTGRES_HOST": "127.0.0.1",
            "DAGSTER_POSTGRES_PORT": str(self.postgres.port),
            "DAGSTER_POSTGRES_USER": POSTGRES_USER,
            "DAGSTER_POSTGRES_PASSWORD": self.postgres.password,  # dagster.yaml names the variable, never the value
            "DAGSTER_POSTGRES_DB": POSTGRES_DB,
            "GX_ANALYTICS_ENABLED": "false",
        }
        self.processes: dict[str, subprocess.Popen] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Topology:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        qdrant_server = bool(self.env.get("QDRANT_URL"))
        instance = instance_config(qdrant_server, self.lost_after_seconds)
        (self.home / "dagster.yaml").write_text(yaml.safe_dump(instance, sort_keys=False))
        (self.home / "workspace.yaml").write_text(yaml.safe_dump(workspace_config(self.grpc_port), sort_keys=False))
        self.postgres.init()
        self.postgres.start()
        self.start_code_server()
        self.start_daemon()
        self.start_webserver()
        return self

    def stop(self) -> None:
        for name in ("webserver", "daemon", "code_server"):
            self.stop_process(name)
        self.postgres.stop()

    def __enter__(self) -> Topology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the Dagster processes -------------------------------------------------------------
    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip  # its own group: stopped with its children
        log.close()
        self.processes[name] = process
        return process

    def start_code_server(self) -> None:
        command = [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(self.grpc_port),
                   "-m", "curation_assets.definitions"]  # fmt: skip  # docker/Dockerfile's CMD
        self._spawn("code_server", command)
        self._wait(lambda: _accepts(self.grpc_port), "code_server", 180)

    def start_daemon(self) -> None:
        self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(self.home / "workspace.yaml")])

    def start_webserver(self) -> None:
        command = [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.webserver_port),
                   "-w", str(self.home / "workspace.yaml")]  # fmt: skip
        self._spawn("webserver", command)
        self._wait(self._serving, "webserver", 180)

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the process's group, wait for its leader, then end whatever of the group is
        left (a code server's gRPC child or run processes): nothing outlives ``stop``."""
        process = self.processes.pop(name, None)
        if process is None:
            return None
        _signal_group(process.pid, sig)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process.pid, signal.SIGKILL)
            code = process.wait(10)
        _signal_group(process.pid, signal.SIGKILL)
        return code

    def _serving(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                return True
        except OSError:
            return False

    def _wait(self, ready, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            process = self.processes[name]
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; its log: {self.logs / f'{name}.log'}\n{self.log_tail(name)}")
            time.sleep(0.5)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        if answer.get("errors"):
            raise RuntimeError(f"GraphQL: {answer['errors']}")
        return answer["data"]


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):  # the whole group is gone already
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=".curation/prod-local", help="Postgres data, DAGSTER_HOME and logs.")
    parser.add_argument("--port", type=int, default=3000, help="The webserver's port on 127.0.0.1.")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # also where a background start left SIGINT ignored
        signal.signal(sig, _interrupt)
    topology = Topology(Path(args.base), webserver_port=args.port)
    print(f"starting Postgres, the code server, the daemon and the webserver under {topology.base} ...", flush=True)
    try:
        topology.start()
        print(f"the UI: {topology.url}   (logs: {topology.logs}; Ctrl-C stops everything)", flush=True)
        while all(p.poll() is None for p in topology.processes.values()):
            time.sleep(1)
        dead = [name for name, p in topology.processes.items() if p.poll() is not None]
        print(f"{', '.join(dead)} stopped; stopping the rest. Its last lines:\n{topology.log_tail(dead[0])}")
        return 1
    except KeyboardInterrupt:
        print("stopping ...", flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C does not leave processes behind
            signal.signal(sig, signal.SIG_IGN)
        topology.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
