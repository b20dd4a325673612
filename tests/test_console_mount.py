"""The mounted console under a path prefix, and the live engine's connected clients
(specs/console.md CN18, CN19).

A live engine serves its agents and its console on one port; pages and controls are
requested with urllib in a worker thread. Real sockets need the real clock
(``realtime``); no assertion depends on how long anything takes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

import eventwf
from eventwf.apps.serving import serve
from tests.test_console_controls import app, call, control

pytestmark = pytest.mark.realtime


async def test_a_prefixed_console_links_and_answers_under_its_prefix_only(
        tmp_path: Path) -> None:
    async with app(str(tmp_path / "app.db"), console_prefix="/ops/console",
                   console_controls=True) as (alice, base):
        status, page = await call(base + "/ops/console/")
        assert status == 200 and 'href="/ops/console/workflows/a-1"' in page
        assert 'src="/ops/console/static/console.js"' in page
        assert 'data-prefix="/ops/console"' in page and 'href="/workflows/' not in page
        assert (await call(base + "/ops/console"))[0] == 200
        status, page = await call(base + "/ops/console/workflows/a-1")
        assert status == 200 and 'href="/ops/console/agents/TestAgent/alice"' in page
        status, js = await call(base + "/ops/console/static/console.js")
        assert status == 200 and "dataset.prefix" in js
        data = json.loads((await call(base + "/ops/console/api/?limit=1"))[1])
        assert [w["workflow_id"] for w in data["workflows"]] == ["w-1"]
        for outside in ("/", "/api/", "/workflows/a-1", "/ops", "/ops/consoleX/"):
            assert (await call(base + outside))[0] == 404, outside
        status, answer = await control(base + "/ops/console", "a-1", "pause")
        assert status == 200 and answer["ok"] is True
        assert (await alice.get_workflow_status("Approval", "a-1")).status in (
            "paused", "waitingForPause")
        status, _ = await call(base + "/api/workflows/a-2/pause", {}, "POST")
        assert status == 404  # a control outside the prefix is no control
        assert (await alice.get_workflow_status("Approval", "a-2")).status == "waiting"


@pytest.mark.parametrize("prefix", ["console", "/console/", "/a b", "/..", "/x/./y", "/q?x"])
async def test_a_prefix_that_is_not_a_plain_path_is_refused(tmp_path: Path,
                                                            prefix: str) -> None:
    async with eventwf.open_engine(str(tmp_path / "app.db")) as engine:
        with pytest.raises(ValueError, match="console_prefix"):
            await serve(engine, "127.0.0.1", 0, console=True, console_prefix=prefix)
        with pytest.raises(ValueError, match="needs console=True"):
            await serve(engine, "127.0.0.1", 0, console_prefix="/console")


async def test_the_agent_page_lists_the_clients_connected_now(tmp_path: Path) -> None:
    async with app(str(tmp_path / "app.db")) as (alice, base):
        url = base.replace("http://", "ws://")

        async def clients() -> list[dict[str, object]]:
            records = json.loads((await call(base + "/api/agents/TestAgent/alice"))[1])
            found = next(r for r in records if r["record"] == "clients")
            assert found["available"] is True
            return found["clients"]  # type: ignore[no-any-return]

        assert await clients() == []
        async with eventwf.connect_agent(url, "TestAgent", "alice"):
            with trio.fail_after(10):
                while not (seen := await clients()):
                    await trio.sleep(0.05)
            assert len(seen) == 1 and seen[0]["path"] == "/agents/TestAgent/alice"
            assert seen[0]["remote"] is None or str(seen[0]["remote"]).startswith("127.0.0.1")
            status, page = await call(base + "/agents/TestAgent/alice")
            assert status == 200 and "1 connected now" in page
            assert "authorization" not in page.lower()
        with trio.fail_after(10):
            while await clients():
                await trio.sleep(0.05)
