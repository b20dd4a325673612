"""The console mounted in an engine opened on a PostgreSQL URL (specs/console.md CN11, CN15).

``eventwf.serve(pg_engine, console=True)`` reads the engine's database through its own
read-only session, opened with the full URL ``open_engine`` was given (the throwaway
cluster's URL carries a password: scram on TCP), and its controls act on the live
engine as on SQLite. Skips, with the fixture's reason, when no PostgreSQL server can be
had. Real sockets need the real clock (``realtime``); nothing asserts a duration.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import trio

import eventwf
from eventwf.apps.serving import serve
from tests.console_app import WORKFLOWS
from tests.test_console_controls import call, control, output_of
from tests.wfkit import TestAgent

pytestmark = pytest.mark.realtime


async def test_a_console_mounted_on_postgresql_lists_shows_and_approves(
        fresh_postgres_url: str) -> None:
    password = urlsplit(fresh_postgres_url).password
    async with eventwf.open_engine(fresh_postgres_url, agents=[TestAgent],
                                   workflows=WORKFLOWS) as engine:
        assert engine.runtime.location is not None
        assert password is None or password not in repr(engine.runtime.location)
        alice = await engine.get_agent(TestAgent, "alice")
        await alice.run_workflow("Approval", {"order": 1}, id="a-1")
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve(engine, "127.0.0.1", 0, console=True,
                                          console_controls=True, task_status=task_status))
            base = f"http://127.0.0.1:{server.port}"
            status, text = await call(base + "/api/")
            assert status == 200, text
            listing = json.loads(text)
            assert [w["workflow_id"] for w in listing["workflows"]] == ["a-1"]
            status, page = await call(base + "/workflows/a-1")
            assert status == 200 and 'data-action="approve"' in page and "Approval" in page
            for target in ("/", "/workflows/a-1", "/log", "/log/verify"):
                status, page = await call(base + target)
                assert status == 200, (target, page[:300])
                assert password is None or password not in page, target
            status, answer = await control(base, "a-1", "approve", {"metadata": {"by": "ops"}})
            assert status == 200 and answer["ok"] is True, answer
            assert await output_of(alice, "Approval", "a-1") == {"by": "ops"}
            status, text = await call(base + "/api/?status=complete")
            assert [w["workflow_id"] for w in json.loads(text)["workflows"]] == ["a-1"]
            nursery.cancel_scope.cancel()
