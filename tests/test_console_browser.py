"""The console in a real browser: Debian's Chromium driven by Playwright (specs/console.md).

Two servers, one each for the module, run in subprocesses (Playwright's sync API cannot
run inside trio): ``eventwf console`` on the log tool's reference log (read-only: the
listing and its filters, a workflow's timeline, time travel with the slider), and an
application with the console mounted under ``/ops`` with its controls and an
``authenticate`` hook (``tests/console_app.py``: a timeline that grows while the page is
open, the followed log tail, every control clicked with its effect read back from the
engine's log, and the refusal without the token). Screenshots go to ``docs/`` only when
``EVENTWF_SCREENSHOTS`` is set (the README shows one); look at them after regenerating.
Skipped, saying why, when ``/usr/bin/chromium`` or the ``playwright`` package is missing.
Waits are Playwright's ``expect`` polls (the pages refresh every 2 s), never sleeps.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_kit import ROOT, SKIP_WITHOUT_BROWSER, Page, chromium, expect, serving
from tests.console_app import TOKEN
from tests.eventlog_kit import build

pytestmark = SKIP_WITHOUT_BROWSER
DOCS = ROOT / "docs"
LIVE = 10_000  # ms an expect waits for a page that refreshes every 2 s


@pytest.fixture(scope="module")
def console_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m eventwf console`` on the reference log and a free port."""
    log = build(tmp_path_factory.mktemp("browser") / "ref.db")
    yield from serving([sys.executable, "-m", "eventwf", "console", log, "--port", "0"],
                       "console")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A live engine serving its console under /ops, with controls, behind a token."""
    db = tmp_path_factory.mktemp("browser") / "app.db"
    yield from serving([sys.executable, "-m", "tests.console_app", str(db)], "application")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _page(browser: Any, *, token: str | None = None) -> tuple[Page, list[str]]:
    headers = {"x-console-token": token} if token else {}
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  extra_http_headers=headers)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors


def _shoot(page: Page, name: str) -> None:
    if os.environ.get("EVENTWF_SCREENSHOTS"):  # written on request: the tree stays clean
        page.screenshot(path=str(DOCS / name), full_page=True, animations="disabled")


def test_list_filter_then_a_workflow_timeline(browser: Any, console_url: str) -> None:
    page, errors = _page(browser)
    page.goto(console_url)
    expect(page.locator("a.wf")).to_have_count(4)
    expect(page.locator(".counts")).to_contain_text("complete 1")
    _shoot(page, "console-list.png")
    page.fill("form.filter input[name=meta]", "team=a")
    page.click("form.filter button")
    expect(page.locator("a.wf")).to_have_count(1)
    expect(page.locator("a.wf")).to_have_text("job-1")
    page.fill("form.filter input[name=meta]", "")
    page.select_option("form.filter select[name=status]", "errored")
    page.click("form.filter button")
    expect(page.locator("a.wf")).to_have_text(["job-fail"])
    page.goto(console_url)
    page.click("a.wf >> text=job-1")
    expect(page.locator("h1")).to_have_text("Workflow job-1")
    timeline = page.locator("table.timeline")
    expect(timeline).to_contain_text("upstream timed out (attempt 2)")
    expect(timeline.locator("tbody tr")).to_have_count(5)
    _shoot(page, "console.png")
    assert errors == []  # no CSP refusal, no script error


def test_time_travel_with_the_slider(browser: Any, console_url: str) -> None:
    page, errors = _page(browser)
    page.goto(console_url + "agents/TestAgent/alice")
    state = page.locator("p.state")
    expect(state).to_contain_text('"count":5')
    before_last = int(page.locator("table.changes tbody tr").last.locator("td").first
                      .inner_text()) - 1
    slider = page.locator("form.travel input[type=range]")
    slider.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); "
                    "el.dispatchEvent(new Event('change')); }", str(before_last))
    expect(page).to_have_url(f"{console_url}agents/TestAgent/alice?at={before_last}")
    expect(page.locator("b.at")).to_have_text(str(before_last))
    expect(state).to_contain_text('"count":1')
    expect(page.locator("p.cursor")).to_contain_text("delivered through")
    expect(page.locator("p.clients")).to_contain_text("not available: read from the log file")
    _shoot(page, "console-agent.png")
    page.click("form.travel a")  # "now"
    expect(state).to_contain_text('"count":5')
    assert errors == []


def _api(page: Page, base: str, path: str) -> Any:
    response = page.request.get(base + "api/" + path)
    assert response.ok, response.text()
    return response.json()


def _status(page: Page, base: str, workflow_id: str) -> str:
    return str(_api(page, base, f"workflows/{workflow_id}")[0]["summary"]["status"])


def test_a_timeline_and_the_tail_follow_the_running_workflow(browser: Any,
                                                             app_url: str) -> None:
    """CN9, CN16: a tick sent from elsewhere shows up on the open pages by themselves."""
    page, errors = _page(browser, token=TOKEN)
    page.goto(app_url + "workflows/wf-live")
    timeline = page.locator("table.timeline")
    expect(timeline).to_contain_text("tick-0")
    expect(timeline).not_to_contain_text("step-0")
    tail, _ = _page(browser, token=TOKEN)
    tail.goto(app_url + "log?workflow=wf-live")
    expect(tail.locator("table.tail tbody tr")).not_to_have_count(0)
    sent = page.request.post(app_url + "api/workflows/wf-live/event",
                             data={"type": "tick", "payload": 1})
    assert sent.ok, sent.text()
    expect(timeline).to_contain_text("step-0", timeout=LIVE)  # no reload: the page's poll
    expect(timeline).to_contain_text("tick-1", timeout=LIVE)
    expect(tail.locator("table.tail tr.new")).not_to_have_count(0, timeout=LIVE)
    expect(tail.locator("table.tail tbody tr").first).to_contain_text("wf:wf-live")
    _shoot(tail, "console-log.png")
    assert errors == []


def _click(page: Page, base: str, workflow_id: str, action: str, **fields: str) -> None:
    page.goto(base + f"workflows/{workflow_id}")
    for name, text in fields.items():
        page.fill(f"form.controls input[name={name}]", text)
    page.click(f"form.controls button[data-action={action}]")
    expect(page.locator("output.control-result")).to_contain_text(f"{action}: accepted")


def test_every_control_by_clicking(browser: Any, app_url: str) -> None:
    """CN13: each button acts on the live engine; its effect is read back from its log."""
    page, errors = _page(browser, token=TOKEN)
    _click(page, app_url, "wf-approve", "approve", reason="looks right")
    expect(page.locator("main > p span.status")).to_have_text("complete", timeout=LIVE)
    _shoot(page, "console-controls.png")
    _click(page, app_url, "wf-reject", "reject", reason="not this one")
    expect(page.locator("p.problem")).to_contain_text("not this one", timeout=LIVE)
    assert _status(page, app_url, "wf-reject") == "errored"
    _click(page, app_url, "wf-pause", "pause")
    expect(page.locator("main > p span.status")).to_have_text("paused", timeout=LIVE)
    _click(page, app_url, "wf-pause", "resume")
    expect(page.locator("main > p span.status")).to_have_text("waiting", timeout=LIVE)
    _click(page, app_url, "wf-pause", "event", event_type="go", payload='{"n": 7}')
    expect(page.locator("main > p span.status")).to_have_text("complete", timeout=LIVE)
    assert _api(page, app_url, "workflows/wf-pause")[0]["summary"]["output"] == {"n": 7}
    _click(page, app_url, "wf-term", "terminate")
    expect(page.locator("main > p span.status")).to_have_text("terminated", timeout=LIVE)
    _click(page, app_url, "wf-term", "restart")
    expect(page.locator("main > p span.status")).to_have_text("waiting", timeout=LIVE)
    assert max(r["run"] for r in _api(page, app_url, "workflows/wf-term")
               if r["record"] == "status") == 2
    page.click("form.controls button[data-action=restart]")
    expect(page.locator("output.control-result")).to_contain_text("accepted")
    page.goto(app_url + "workflows/wf-approve")
    page.click("form.controls button[data-action=approve]")
    expect(page.locator("output.control-result")).to_contain_text("refused (409)")
    assert all("409" in e for e in errors), errors  # only the refused approve


def test_without_the_token_the_console_shows_nothing(browser: Any, app_url: str) -> None:
    """CN12: the authenticate hook refuses: a 403 naming nothing of the log."""
    page, _ = _page(browser)
    response = page.goto(app_url)
    assert response is not None and response.status == 403
    expect(page.locator("body")).to_contain_text("authentication refused")
    text = page.content()
    assert "wf-" not in text and "Approval" not in text and "alice" not in text
    for path in ("api/", "workflows/wf-live", "static/console.js", "log"):
        assert page.request.get(app_url + path).status == 403, path
    refused = page.request.post(app_url + "api/workflows/wf-live/terminate", data={})
    assert refused.status == 403
    ok, _ = _page(browser, token=TOKEN)
    assert _status(ok, app_url, "wf-live") == "waiting"  # the refused POST changed nothing
