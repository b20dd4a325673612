"""L16: projections of another shape are dropped, made anew and rebuilt on open."""

from __future__ import annotations

import sqlite3
from typing import Any

import trio

import eventwf
from eventwf.store.sqlite.schema import PROJECTION_VERSION
from tests.wfkit import TestAgent, virtual_wall


class Waiter(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("first", lambda: 1)
        return (await step.wait_for_event("w", type="go", timeout="1 day")).payload


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Waiter],
                               wall_clock=virtual_wall)


async def test_projections_of_an_older_version_are_rebuilt_on_open(db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Waiter")
        await agent.send_workflow_event("Waiter", wid, {"type": "early", "payload": 0})
        await trio.sleep(1)
        await agent.set_state({"n": 1})
    conn = sqlite3.connect(db, isolation_level=None)  # as the version before L16 left it
    conn.execute("DELETE FROM meta WHERE key = 'projection_version'")
    for column in ("inbox", "commands", "pending", "row_check"):
        conn.execute(f"ALTER TABLE workflows DROP COLUMN {column}")
    conn.execute("UPDATE workflows SET status = 'complete'")  # stale rows are not trusted
    conn.close()
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        info = await agent.get_workflow(wid)
        assert info is not None and info.status == "waiting"
        assert agent.state == {"n": 1}
        await agent.send_workflow_event("Waiter", wid, {"type": "go", "payload": 7})
        assert (await engine.wait_workflow(wid)).status == "complete"
    conn = sqlite3.connect(db)
    (version,) = conn.execute("SELECT value FROM meta WHERE key = 'projection_version'"
                              ).fetchone()
    conn.close()
    assert version == str(PROJECTION_VERSION)
