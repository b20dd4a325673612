"""The console in a real browser: Debian's Chromium driven by Playwright (specs/console.md).

``eventwf console`` runs in a subprocess on the log tool's reference log (Playwright's
sync API cannot run inside trio). The test opens the listing, clicks into a workflow and
sees its step timeline; the screenshots go to ``docs/`` (the README shows one). A second
test drives an application with the console mounted and its controls enabled
(``tests/console_app.py``): it approves a waiting workflow by clicking (its screenshot,
with real times in it, is written only when ``EVENTWF_SCREENSHOTS`` is set). Skipped,
saying why, when ``/usr/bin/chromium`` or the ``playwright`` package is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser_kit import (
    CHROMIUM,
    FLAGS,
    ROOT,
    SKIP_WITHOUT_BROWSER,
    expect,
    serving,
    sync_playwright,
)
from tests.eventlog_kit import build

pytestmark = SKIP_WITHOUT_BROWSER
DOCS = ROOT / "docs"


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    """``python -m eventwf console`` on the reference log and a free port."""
    log = build(tmp_path / "ref.db")
    yield from serving([sys.executable, "-m", "eventwf", "console", log, "--port", "0"],
                       "console")


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    """A live engine serving its console with controls (``wf-approve`` waits)."""
    yield from serving([sys.executable, "-m", "tests.console_app", str(tmp_path / "app.db")],
                       "application")


def test_list_then_a_workflow_timeline_in_chromium(console_url: str) -> None:
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(console_url)
            expect(page.locator("a.wf")).to_have_count(4)
            expect(page.locator(".counts")).to_contain_text("complete 1")
            page.screenshot(path=str(DOCS / "console-list.png"), animations="disabled")
            page.click("a.wf >> text=job-1")
            expect(page.locator("h1")).to_have_text("Workflow job-1")
            timeline = page.locator("table.timeline")
            expect(timeline).to_contain_text("fetch")
            expect(timeline).to_contain_text("upstream timed out (attempt 2)")
            expect(timeline.locator("tbody tr")).to_have_count(5)
            page.screenshot(path=str(DOCS / "console.png"), full_page=True,
                            animations="disabled")
            assert errors == []  # no CSP refusal, no script error
        finally:
            browser.close()


def test_approve_a_waiting_workflow_by_clicking(app_url: str) -> None:
    """CN13: the approve button acts on the live engine; the page shows it complete."""
    assert sync_playwright is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(app_url + "workflows/wf-approve")
            status = page.locator("main > p span.status")
            expect(status).to_have_text("waiting")
            page.fill("form.controls input[name=reason]", "looks right")
            page.click("form.controls button[data-action=approve]")
            expect(page.locator("output.control-result")).to_contain_text("approve: accepted")
            expect(status).to_have_text("complete")
            if os.environ.get("EVENTWF_SCREENSHOTS"):  # its times differ every run
                page.screenshot(path=str(DOCS / "console-controls.png"), full_page=True,
                                animations="disabled")
            page.click("form.controls button[data-action=approve]")
            expect(page.locator("output.control-result")).to_contain_text("refused (409)")
            assert all("409" in e for e in errors), errors  # only the refused approve
        finally:
            browser.close()
