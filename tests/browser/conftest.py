"""A headless Chromium driven by Playwright, for the report and the plan explorer.

Both need the ``browser`` extra (Playwright's Python package) and a Chromium binary: the
one ``AUTOPAR_CHROMIUM`` names, else Debian's ``chromium`` on the PATH (Playwright's own
browser download is not used: ``executable_path`` points at the system one). Without
them the tests are skipped with the reason; ``.ci/run`` installs both and runs
``pytest -m browser``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest


def _chromium() -> str | None:
    return os.environ.get("AUTOPAR_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser tests need the browser extra (Playwright)"
    )
    executable = _chromium()
    if executable is None:
        pytest.skip("no Chromium: apt-get install chromium, or set AUTOPAR_CHROMIUM")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page whose console errors and page errors are collected in ``page.errors``."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on(
        "console", lambda message: errors.append(message.text) if message.type == "error" else None
    )
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.errors = errors
    yield opened
    context.close()
