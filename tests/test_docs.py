"""The documentation site builds strictly, and its reference cannot drift from the code."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docs_build_strictly_with_reference_generated_from_the_code(tmp_path):
    pytest.importorskip("mkdocs")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, check=True, capture_output=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    from curation_assets.defs.selected_batch import SelectionConfig

    config_page = (site / "reference" / "config" / "index.html").read_text()
    assert all(field in config_page for field in SelectionConfig.model_fields)


def test_every_environment_variable_the_code_reads_is_documented():
    read = set()
    for path in [*(ROOT / "curation_assets").rglob("*.py"), *(ROOT / "resources").rglob("*.py")]:
        read |= set(re.findall(r"""["']((?:CURATION|QDRANT|DAGSTER_POSTGRES)_[A-Z0-9_]+)["']""", path.read_text()))
    # the environment reference, and the location's defs.yaml from which the component reference names each
    # attribute's variable
    documented = (ROOT / "docs" / "reference" / "environment.md").read_text() + (
        ROOT / "curation_assets" / "location" / "defs.yaml"
    ).read_text()
    assert read, "no environment variable found: the pattern no longer matches the code"
    assert sorted(v for v in read if v not in documented) == []
