"""Fixtures for the end-to-end tests: Debian's Chromium driven by Playwright (skipped cleanly
when either is missing) and a tiny checkpoint shared by the module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RLHF_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium browser, or a skip saying why there is none."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (install Debian's chromium: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    try:
        manager = sync_api.sync_playwright().start()
    except Exception as e:  # noqa: BLE001 - any failure to start means: skip
        pytest.skip(f"playwright cannot start: {e}")
    try:
        browser = manager.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=["--no-sandbox", "--disable-dev-shm-usage"])
    except Exception as e:  # noqa: BLE001
        manager.stop()
        pytest.skip(f"chromium cannot be launched by playwright: {e}")
    yield browser
    browser.close()
    manager.stop()
