"""The read-only web console over HTTP (specs/console.md CN1-CN10).

The console runs in trio on port 0 against logs written by the real engine (the log
tool's reference log, tests/eventlog_factory.py, and a small hostile one made here);
pages are fetched with urllib in a worker thread. Real sockets and the handler's read
deadline need the real clock (``realtime``); no assertion depends on how long anything
takes.
"""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import eventwf
from eventwf.__main__ import main as eventwf_main
from eventwf.apps.console import serve_console
from tests.eventlog_factory import Job
from tests.eventlog_kit import build, digest
from tests.wfkit import TestAgent, virtual_wall

pytestmark = pytest.mark.realtime

HOSTILE_NAME = "<img src=x onerror=alert(1)>"  # a workflow binding name
HOSTILE_AGENT = "eve/<script>alert('a')</script>"  # an agent name, with a slash
HOSTILE_PARAM = "</code><script>alert('p')</script>"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("console") / "ref.db")


class Hostile(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("echo", lambda: event.payload)


async def _write_hostile(path: str) -> None:
    async with eventwf.open_engine(path, agents=[TestAgent],
                                   workflows={"Hostile": Hostile, HOSTILE_NAME: Hostile},
                                   wall_clock=virtual_wall) as engine:
        bob = await engine.get_agent(TestAgent, "bob")
        for n in range(3):
            await engine.wait_workflow(await bob.run_workflow("Hostile", {"n": n}, id=f"h-{n}"))
            await trio.sleep(1)
        eve = await engine.get_agent(TestAgent, HOSTILE_AGENT)
        await eve.set_state({"note": HOSTILE_PARAM})
        await engine.wait_workflow(
            await eve.run_workflow(HOSTILE_NAME, {"x": HOSTILE_PARAM}, id="evil"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = str(tmp_path_factory.mktemp("console") / "hostile.db")
    trio.run(_write_hostile, path, clock=trio.testing.MockClock(autojump_threshold=0))
    return path


@asynccontextmanager
async def console(path: str) -> AsyncIterator[str]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_console, path, "127.0.0.1", 0)
        yield server.url.rstrip("/")
        nursery.cancel_scope.cancel()


def _fetch(url: str | urllib.request.Request) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - http only
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


async def get(url: str) -> tuple[int, str]:
    status, _, body = await trio.to_thread.run_sync(_fetch, url)
    return status, body


async def api(url: str) -> Any:
    status, kind, body = await trio.to_thread.run_sync(_fetch, url)
    assert kind == "application/json", (status, body)
    return json.loads(body)


async def test_listing_counts_and_filters_by_status_name_and_agent(reference: str) -> None:
    """CN3: counts per status, newest first, filtered by the query parameters."""
    async with console(reference) as base:
        data = await api(base + "/api/")
        assert data["counts"]["complete"] == 1 and data["counts"]["errored"] == 1
        ids = [w["workflow_id"] for w in data["workflows"]]
        assert ids == ["job-live", "job-ctl", "job-fail", "job-1"]
        errored = await api(base + "/api/?status=errored")
        assert [w["workflow_id"] for w in errored["workflows"]] == ["job-fail"]
        assert (await api(base + "/api/?name=Nope"))["workflows"] == []
        by_agent = await api(base + "/api/?agent=TestAgent/alice")
        assert len(by_agent["workflows"]) == 4
        assert (await api(base + "/api/?agent=TestAgent/bob"))["workflows"] == []
        status, page = await get(base + "/?status=complete")
        assert status == 200 and 'href="/workflows/job-1"' in page and "job-fail" not in page


async def test_cursor_pages_are_bounded_and_continue_where_the_last_ended(hostile: str) -> None:
    """CN4: a page holds at most ``limit`` rows; its cursor gives the next, older ones."""
    async with console(hostile) as base:
        first = await api(base + "/api/?limit=3")
        assert len(first["workflows"]) == 3 and first["next_cursor"]
        second = await api(base + f"/api/?limit=3&cursor={first['next_cursor']}")
        seen = [w["workflow_id"] for w in first["workflows"] + second["workflows"]]
        assert seen == ["evil", "h-2", "h-1", "h-0"]
        assert second["next_cursor"] is None
        status, body = await get(base + "/api/?cursor=not-a-cursor")
        assert status == 400 and "not-a-cursor" in body
        status, _ = await get(base + "/api/?limit=1000")
        assert status == 400


async def test_workflow_page_shows_params_output_and_the_step_timeline(reference: str) -> None:
    """CN5: attempts with their errors and retry times, durations, sleeps and waits."""
    async with console(reference) as base:
        records = await api(base + "/api/workflows/job-1")
        assert records[0]["params"] == {"n": 1} and records[0]["summary"]["status"] == "complete"
        steps = {r["name"]: r for r in records if r["record"] == "step"}
        assert [a["error"]["message"] for a in steps["fetch"]["attempts"][:2]] == [
            "upstream timed out (attempt 1)", "upstream timed out (attempt 2)"]
        status, page = await get(base + "/workflows/job-1")
        assert status == 200
        for text in ("upstream timed out (attempt 2)", "retry at", "1h00m00s", "timed out",
                     "waits for &#x27;go&#x27;", "output:", "&quot;rows&quot;:3"):
            assert text in page, text
        status, page = await get(base + "/workflows/job-fail")
        assert "error: ValueError: bad input" in page


async def test_agent_time_travel_shows_the_state_as_of_a_position(reference: str) -> None:
    """CN6: the agent's state now, and before its last change."""
    async with console(reference) as base:
        now = await api(base + "/api/agents/TestAgent/alice")
        assert now[0]["state"] == {"count": 5}
        changes = [r for r in now if r["record"] == "change"]
        before_last = changes[-1]["position"] - 1
        then = await api(base + f"/api/agents/TestAgent/alice?at={before_last}")
        assert then[0]["state"] == {"count": 1} and then[0]["at"] == before_last
        status, page = await get(base + f"/agents/TestAgent/alice?at={before_last}")
        assert status == 200 and "&quot;count&quot;:1" in page
        assert f'value="{before_last}"' in page


async def test_tail_and_verify_verdict(reference: str) -> None:
    """CN7: the last N events, newest first, and verify's verdict."""
    async with console(reference) as base:
        *tail, meta = await api(base + "/api/log?n=5")
        head = (await api(base + "/api/"))["head"]
        assert [r["position"] for r in tail] == list(range(head - 4, head + 1))
        assert meta["record"] == "tail" and meta["next_after"] == head
        status, page = await get(base + "/log?n=5")
        assert status == 200 and page.index(f"<td>{head}</td>") < page.index(f"<td>{head - 4}</td>")
        verdict = (await api(base + "/api/log/verify"))[-1]
        assert verdict["record"] == "verdict" and verdict["intact"] is True
        status, page = await get(base + "/log/verify")
        assert status == 200 and 'class="verdict intact">INTACT' in page


async def test_every_logged_value_is_escaped_in_html(hostile: str) -> None:
    """CN8: a hostile workflow name, agent name, param and state appear as text, never
    as markup; the agent's link quotes its slash and leads to its page."""
    agent_path = "/agents/TestAgent/" + urllib.parse.quote(HOSTILE_AGENT, safe="")
    async with console(hostile) as base:
        status, page = await get(base + "/")
        assert status == 200 and "<img" not in page and "<script>alert" not in page
        assert "&lt;img src=x onerror=alert(1)&gt;" in page
        assert html.escape(agent_path) in page
        status, page = await get(base + "/workflows/evil")
        assert status == 200 and "<img" not in page and "<script>alert" not in page
        assert "&lt;/code&gt;&lt;script&gt;" in page
        status, page = await get(base + agent_path)
        assert status == 200 and "<script>alert" not in page
        assert "eve/&lt;script&gt;" in page and "&lt;/code&gt;&lt;script&gt;" in page


async def test_unknown_workflow_agent_or_page_is_a_404_naming_it(reference: str) -> None:
    async with console(reference) as base:
        for path, name in (("/workflows/nope", "nope"), ("/agents/TestAgent/zed", "zed"),
                           ("/api/workflows/nope", "nope"), ("/elsewhere", "elsewhere")):
            status, body = await get(base + path)
            assert status == 404 and name in body, path
        status, body = await get(base + "/agents/TestAgent/alice?at=soon")
        assert status == 400 and "soon" in body


async def test_the_console_is_read_only_beside_a_running_engine(reference: str,
                                                                tmp_path: Path) -> None:
    """CN1: the file's bytes do not change, and an engine holds the writer lock meanwhile."""
    path = str(tmp_path / "live.db")
    Path(path).write_bytes(Path(reference).read_bytes())
    before = digest(path)
    async with console(path) as base:
        for page in ("/", "/workflows/job-1", "/agents/TestAgent/alice", "/log", "/log/verify"):
            assert (await get(base + page))[0] == 200
        assert digest(path) == before
        async with eventwf.open_engine(path, agents=[TestAgent], workflows={"Job": Job},
                                       wall_clock=virtual_wall) as engine:
            carol = await engine.get_agent(TestAgent, "carol")
            await carol.set_state({"seen": True})
            data = await api(base + "/api/agents/TestAgent/carol")
            assert data[0]["state"] == {"seen": True}
            status, _ = await get(base + "/workflows/job-1")
            assert status == 200


async def test_post_is_refused(reference: str) -> None:
    async with console(reference) as base:
        request = urllib.request.Request(base + "/", data=b"x", method="POST")
        status, _, body = await trio.to_thread.run_sync(_fetch, request)
        assert status == 405 and "read-only" in body


def test_unusable_urls_and_missing_files_are_refused_with_status_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CN10, CN15: a file must exist, a URL must be a PostgreSQL database that opens
    (here: a port nothing listens on), and its password is never printed."""
    assert eventwf_main(["console", "mysql://db/x"]) == 2
    assert "mysql:// is not a log" in capsys.readouterr().err
    assert eventwf_main(["console", "postgresql://u:s3cret@127.0.0.1:9/x"]) == 2
    err = capsys.readouterr().err
    assert "127.0.0.1" in err and "s3cret" not in err
    assert eventwf_main(["console", str(tmp_path / "none.db")]) == 2
    assert "no such file" in capsys.readouterr().err
