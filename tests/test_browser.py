"""The demo end to end in a real browser: Debian's Chromium driven by Playwright.

The demo runs as ``python -m eventwf demo`` in a subprocess (Playwright's sync API cannot
run inside trio's event loop). Screenshots go to ``artifacts/`` at the repository root.
Skipped, saying why, when ``/usr/bin/chromium`` or the ``playwright`` package is missing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_kit import ROOT, SKIP_WITHOUT_BROWSER, Page, chromium, expect, serving

pytestmark = SKIP_WITHOUT_BROWSER
ARTIFACTS = ROOT / "artifacts"


@pytest.fixture
def demo_url(tmp_path: Path) -> Iterator[str]:
    """``python -m eventwf demo`` on a fresh log and a free port; stopped with Ctrl-C."""
    out = yield from serving(
        [sys.executable, "-m", "eventwf", "demo", "--db", str(tmp_path / "demo.db"),
         "--port", "0", "--step-seconds", "0.7"], "demo")
    assert "Goodbye" in out, out


def start(page: Page, title: str) -> Any:
    """Start a task from the form; its card."""
    page.fill("#title", title)
    page.click("#start")
    card = page.locator(".task", has_text=title)
    expect(card).to_have_count(1)
    return card


def progress(card: Any) -> int:
    return int(card.locator(".bar").get_attribute("aria-valuenow") or 0)


def wait_for_progress(card: Any, above: int) -> int:
    """Poll from Python: the page's CSP (rightly) forbids Playwright's eval'd predicates."""
    deadline = time.monotonic() + 15
    while (value := progress(card)) <= above:
        assert time.monotonic() < deadline, f"progress stayed at {value}"
        card.page.wait_for_timeout(50)
    return value


def test_the_demo_in_chromium(demo_url: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1000, "height": 900})
        tab = context.new_page()
        tab.goto(demo_url)
        expect(tab.locator("#conn")).to_have_text("Live")
        expect(tab.locator("#empty")).to_be_visible()

        report = start(tab, "Quarterly report for ACME")
        expect(report.locator(".badge")).to_have_text("Running")
        moved = wait_for_progress(report, 0)
        assert wait_for_progress(report, moved) > moved > 0  # the bar moves as it works

        other = context.new_page()  # a second tab sees the same state
        other.goto(demo_url)
        other_report = other.locator(".task", has_text="Quarterly report for ACME")
        expect(other_report).to_have_count(1)
        expect(report.locator(".badge")).to_have_text("Needs approval", timeout=15_000)
        expect(other_report.locator(".badge")).to_have_text("Needs approval")

        report.locator("button.approve").click()  # approved in one tab...
        expect(report.locator(".badge")).to_have_text("Done", timeout=15_000)
        expect(other_report.locator(".badge")).to_have_text("Done")  # ...done in both
        expect(report.locator(".pct")).to_have_text("100%")
        assert report.locator("button").count() == 0

        risky = start(other, "Delete last year's backups")
        expect(risky.locator(".badge")).to_have_text("Needs approval", timeout=15_000)
        risky.locator("button.reject").click()
        expect(tab.locator(".task", has_text="backups").locator(".badge")).to_have_text(
            "Rejected", timeout=15_000)

        waiting = start(tab, "Migrate billing to the new payments API")
        expect(waiting.locator(".badge")).to_have_text("Needs approval", timeout=15_000)
        running = start(tab, "Weekly metrics digest")
        wait_for_progress(running, 0)
        expect(running.locator(".badge")).to_have_text("Running")
        for page, name in ((tab, "demo.png"), (other, "demo-second-tab.png")):
            page.screenshot(path=str(ARTIFACTS / name), full_page=True, animations="disabled")
        expect(other.locator(".task")).to_have_count(4)
