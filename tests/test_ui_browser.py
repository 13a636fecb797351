"""The Dagster UI in a real browser: `dagster dev` on a freshly demoed root, driven by Chromium.

Screenshots land in test-artifacts/. Needs Debian's chromium (`.ci/run` installs it); the
test is skipped without it unless CURATION_REQUIRE_BROWSER is set, as it is in CI.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import browser_page, require_chromium
from playwright.sync_api import expect

from curation_assets.core.ids import video_id_for
from curation_assets.demo.scenes import Scene, default_events, write_video
from curation_assets.deploy.topology import free_port

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

NEW_VIDEO = "cam-c/dropped-while-running.mp4"


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    require_chromium()
    base = tmp_path_factory.mktemp("ui")
    env = {
        **os.environ,
        "CURATION_STORAGE_URI": str(base / "root"),
        "CURATION_QDRANT_PATH": str(base / "qdrant"),
        "DAGSTER_HOME": str(base / "home"),
    }
    (base / "home").mkdir()
    shutil.copy(ROOT / "dagster_home/dagster.yaml", base / "home/dagster.yaml")
    demo = subprocess.run(
        [sys.executable, "-m", "curation_assets.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(base / "dagster-dev.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so the whole tree can be stopped
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=5)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (base / "dagster-dev.log").read_text()
                time.sleep(1)
        graphql(url, "mutation { setNuxSeen }")  # no "join the community" dialog
        yield url, base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


@pytest.fixture(scope="module")
def page(dagster_ui):
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page() as page:
        yield page


REPOSITORIES = """{ workspaceOrError { ... on Workspace { locationEntries { name
  locationOrLoadError { ... on RepositoryLocation { repositories { name } } } } } } }"""


def test_every_asset_of_the_definitions_shows_in_its_group_s_graph(dagster_ui, page):
    from curation_assets.definitions import ASSETS

    url, _ = dagster_ui
    [entry] = graphql(url, REPOSITORIES)["workspaceOrError"]["locationEntries"]
    [repository] = entry["locationOrLoadError"]["repositories"]
    address = f"{repository['name']}@{entry['name']}"
    groups: dict[str, list[str]] = {}
    for asset in ASSETS:
        for key in asset.keys:
            groups.setdefault(asset.specs_by_key[key].group_name, []).append(key.to_user_string())
    assert sum(map(len, groups.values())) >= 12
    for group, names in sorted(groups.items()):
        page.goto(f"{url}/locations/{address}/asset-groups/{group}/lineage")
        for name in names:
            expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=ARTIFACTS / f"01-lineage-{group}.png")


def test_raw_frames_shows_its_partitions_and_check_results(dagster_ui, page):
    url, _ = dagster_ui
    page.goto(f"{url}/assets/raw_frames?view=partitions")
    expect(page.get_by_text(video_id_for("cam-a/aisle-3-morning.mp4")).first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "02-raw-frames-partitions.png")
    page.goto(f"{url}/assets/raw_frames?view=checks")
    for check in ("raw_frames_table_valid", "raw_frames_images_exist"):
        expect(page.get_by_text(check).first).to_be_visible(timeout=30_000)
    # the latest evaluation may be the corrupt video's failed run; the history holds the passes
    page.get_by_text("Execution history").first.click()
    expect(page.get_by_text("Passed").first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "03-raw-frames-checks.png")


def test_raw_frames_explains_that_its_failed_partition_is_a_refused_input(dagster_ui, page):
    url, _ = dagster_ui
    page.goto(f"{url}/assets/raw_frames")
    expect(page.get_by_text("a bad input was refused", exact=False).first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "03b-raw-frames-description.png")


def test_duplicate_groups_shows_its_contact_sheet(dagster_ui, page):
    url, _ = dagster_ui
    page.goto(f"{url}/assets/duplicate_groups")
    expect(page.get_by_text("largest_groups_preview").first).to_be_visible(timeout=30_000)
    page.get_by_text("[Show Markdown]").first.click()
    picture = page.locator('img[src^="data:image/png"]').first
    expect(picture).to_be_visible(timeout=30_000)
    assert picture.evaluate("img => img.naturalWidth") > 200  # a real, decoded picture
    page.screenshot(path=ARTIFACTS / "04-duplicate-groups-picture.png")


def test_a_video_dropped_while_running_is_ingested_by_the_sensor(dagster_ui, page, tmp_path):
    url, base = dagster_ui
    scene = Scene(NEW_VIDEO, seed=21, duration_s=6.0, events=default_events(6.0), width=160, height=120, fps=5)
    staged = tmp_path / "new.mp4"
    write_video(scene, staged)
    target = base / "root/landing" / NEW_VIDEO
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(staged, target.with_name("." + target.name))
    os.replace(target.with_name("." + target.name), target)  # an atomic arrival

    partition = video_id_for(NEW_VIDEO)
    deadline, status = time.monotonic() + 300, None
    while time.monotonic() < deadline and status not in ("SUCCESS", "FAILURE", "CANCELED"):
        time.sleep(3)
        runs = graphql(
            url,
            "query ($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) "
            "{ ... on Runs { results { runId status tags { key value } } } } }",
            {"tags": [{"key": "dagster/partition", "value": partition}]},
        )["runsOrError"]["results"]
        status = runs[0]["status"] if runs else None
    assert status == "SUCCESS", f"sensor run for {partition}: {status}"
    assert {t["key"]: t["value"] for t in runs[0]["tags"]}["dagster/sensor_name"] == "new_video_sensor"
    page.goto(f"{url}/runs/{runs[0]['runId']}")
    expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
    page.screenshot(path=ARTIFACTS / "05-sensor-run.png")
