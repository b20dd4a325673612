"""What the browser tests share: Debian's Chromium driven by Playwright (:func:`chromium`),
the skip that says why when either is missing, and a server run in a subprocess
(Playwright's sync API cannot run inside trio's event loop) that prints its URL first and
stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says so
    Page: Any = None  # type: ignore[no-redef]
    expect: Any = None  # type: ignore[no-redef]
    sync_playwright: Any = None  # type: ignore[no-redef]

__all__ = ["CHROMIUM", "FLAGS", "ROOT", "SKIP_WITHOUT_BROWSER", "Page", "chromium", "expect",
           "serving"]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync"]

SKIP_WITHOUT_BROWSER = [
    pytest.mark.skipif(sync_playwright is None,
                       reason="playwright is not installed (pip install -e '.[dev]')"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless Chromium launched by Playwright (a ``Browser``), closed on exit.
    Use it in tests marked ``SKIP_WITHOUT_BROWSER``."""
    assert sync_playwright is not None, "mark the test SKIP_WITHOUT_BROWSER"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def serving(command: list[str], what: str) -> Generator[str, None, str]:
    """Run ``command`` (it prints its URL first), yield the URL, stop it with SIGINT; its
    output is the generator's value (``out = yield from serving(...)``)."""
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, f"the {what} printed nothing within 20 s"
        match = re.search(r"(http://\S+/)", proc.stdout.readline())
        assert match is not None
        yield match.group(1)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
