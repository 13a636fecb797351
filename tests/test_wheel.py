"""Installed from a wheel into a new Dagster project outside this repository, the component
scaffolds, checks and runs with nothing but ``dg`` (offline: the packaged model, embedded Qdrant).

The project is made by ``create-dagster project --no-uv-sync`` (it runs offline). To stay fast,
the new environment is a bare venv that sees this environment's packages (torch, dagster, ...)
through a ``.pth`` line, and the wheel is installed into it without dependencies: the package
itself comes from the wheel, never from this checkout.
"""

import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"dg": "dagster_dg_cli.cli", "create-dagster": "create_dagster.cli"}


def sh(args: list, cwd: Path, env: dict, timeout: int = 300) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, args))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def new_environment(tmp_path_factory):
    """A venv holding the wheel, seeing this environment's other packages; its dg and create-dagster."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = tmp / "build"  # a copy of the sources: the build leaves nothing in the checkout
    for name in ("curation_assets", "resources"):
        shutil.copytree(ROOT / name, build / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, build / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    sh([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(build)], tmp, env)
    (wheel,) = (tmp / "dist").glob("curation_assets-*.whl")

    venv = tmp / "venv"
    sh([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin/python"
    purelib = Path(sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
                   .strip())  # fmt: skip
    (purelib / "shared.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    sh([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], tmp, env)
    for tool, module in TOOLS.items():  # console scripts bound to the new venv's python
        script = venv / "bin" / tool
        script.write_text(f"#!{python}\nimport sys\nfrom {module} import main\nif __name__ == '__main__':\n"
                          "    sys.exit(main())\n")  # fmt: skip
        script.chmod(0o755)
    env.update(PATH=f"{venv / 'bin'}:{env['PATH']}", VIRTUAL_ENV=str(venv), GX_ANALYTICS_ENABLED="false",
               DAGSTER_HOME=str(tmp / "dagster_home"), COLUMNS="200")  # fmt: skip
    (tmp / "dagster_home").mkdir()
    (tmp / "dagster_home/dagster.yaml").write_text("")
    return tmp, purelib, env


def test_a_new_project_scaffolds_checks_and_runs_the_component_from_the_wheel(new_environment):
    tmp, purelib, env = new_environment
    sh(["create-dagster", "project", "--no-uv-sync", "fleets"], tmp, env)
    project = tmp / "fleets"
    (purelib / "fleets.pth").write_text(str(project / "src") + "\n")  # the project, as `uv sync` would install it

    sh(["dg", "scaffold", "defs", "curation_assets.VideoCuration", "fleet"], project, env)
    defs_yaml = (project / "src/fleets/defs/fleet/defs.yaml").read_text()
    assert "type: curation_assets.VideoCuration" in defs_yaml and "key_prefix: fleet" in defs_yaml
    assert "All definitions loaded successfully" in sh(["dg", "check", "defs"], project, env)

    # one small real video lands; its partition is registered as the sensor would
    script = textwrap.dedent("""
        from pathlib import Path
        import dagster as dg, curation_assets
        from curation_assets.core.ids import source_id_for
        from curation_assets.demo.scenes import Scene, write_video
        assert "site-packages" in curation_assets.__file__, curation_assets.__file__
        scene = Scene("cam-a/shelf.mp4", seed=1, duration_s=4.0, width=160, height=120, fps=5)
        write_video(scene, Path(".curation/fleet/landing") / scene.name)
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("fleet__videos", [source_id_for(scene.name)])
        print(source_id_for(scene.name))
    """)
    partition = sh([str(tmp / "venv/bin/python"), "-c", script], project, env).strip().splitlines()[-1]

    sh(["dg", "launch", "--job", "fleet__ingest_video", "--partition", partition], project, env)
    sh(["dg", "launch", "--job", "fleet__curate"], project, env)
    tables = project / ".curation/fleet/tables"
    for asset in ("raw_frames", "frame_embeddings", "duplicate_groups", "outliers"):  # each a table per source
        assert (tables / asset / f"{partition}.parquet").is_file(), asset
