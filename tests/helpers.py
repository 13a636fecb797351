"""Helpers shared by test modules (fixtures live in conftest.py)."""

import ast
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip without Debian's chromium, or fail where CI asks for the browser tests."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CURATION_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} not found: apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI installs it")


@contextmanager
def browser_page(width: int = 1600, height: int = 1000):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def frame_table(n, video="v1", videos=None, sha=None, phash=None, sharpness=None, brightness=None):
    """The frame columns duplicate grouping reads: ``n`` frames of ``video``, or one frame of
    each of ``videos``; unrelated by default (distinct pixels, hashes about 32 bits apart)."""
    import numpy as np
    import pandas as pd

    video_ids = list(videos) if videos is not None else [video] * n
    index = [0] * n if videos is not None else list(range(n))
    return pd.DataFrame(
        {
            "frame_id": [f"{v}/{i:06d}" for v, i in zip(video_ids, index)],
            "video_id": video_ids,
            "frame_index": index,
            "sha256": sha if sha is not None else [f"{v}-{i}-{k}" for k, (v, i) in enumerate(zip(video_ids, index))],
            "phash": phash if phash is not None else np.random.default_rng(len(video) + n).integers(0, 2**62, n),
            "sharpness": sharpness if sharpness is not None else np.full(n, 0.01),
            "brightness": brightness if brightness is not None else np.full(n, 0.5),
        }
    )


def modules_loaded_by(code: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has imported once it has run ``code``."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {candidates!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def running(pid: int) -> bool:
    """Is process ``pid`` alive (a zombie waiting for its parent's wait counts as gone)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not running(pid)


def once_a_retry_waits(instance, action, timeout_s: float = 120) -> None:
    """In a background thread: call ``action`` as soon as the instance's latest run has a step
    that failed and waits for its retry (so a fault is lifted after it was seen, not by a timer)."""
    import threading

    import dagster as dg

    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for run in instance.get_runs(limit=1):
                if instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY):
                    action()
                    return
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()


def tar_with(path: Path, name: str, data: bytes, specials: tuple[tuple[str, bytes, str], ...]) -> None:
    """A tar archive at ``path`` holding one regular member ``name`` (``data``) and, after it,
    members of other kinds: (name, tarfile type such as SYMTYPE or FIFOTYPE, link target or "")."""
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        for member_name, kind, target in specials:
            member = tarfile.TarInfo(member_name)
            member.type, member.linkname = kind, target
            archive.addfile(member)
