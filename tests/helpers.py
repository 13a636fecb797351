"""Helpers shared by test modules (fixtures live in conftest.py)."""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

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
