"""What every browser test shares: Debian's Chromium launched headless through Playwright, the marks that make
those tests slow and skip them without Chromium, the two viewports #18 asks for, and where screenshots go
($DECODELAB_ARTIFACTS, else artifacts/ in the repository, which git ignores)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("DECODELAB_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
ARTIFACTS = Path(os.environ.get("DECODELAB_ARTIFACTS", Path(__file__).parents[1] / "artifacts"))

BROWSER_MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}: `make` installs Debian's chromium package"
    ),
]


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium for a module's tests, closed at the end."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    """A full-page screenshot under ARTIFACTS/screenshots, for a human to look at."""
    path = ARTIFACTS / "screenshots" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True)
    return path


def give_back_session(page) -> None:
    """Delete the explorer session the page holds, if any, as closing its tab should: a server's session store
    (--max-sessions) is shared by every page a test module opens on it."""
    from playwright.sync_api import Error

    try:
        page.evaluate(
            """async () => {
              const held = window.decodelab && window.decodelab.page;
              if (!held || !held.state || !held.secret) return;
              const headers = {"X-Session-Secret": held.secret};
              const key = localStorage.getItem("decodelab-api-key");
              if (key) headers.Authorization = `Bearer ${key}`;
              await fetch(`/api/sessions/${held.state.id}`, {method: "DELETE", headers});
            }"""
        )
    except Error:
        pass  # a page that is already closed or broken: its own test says so
