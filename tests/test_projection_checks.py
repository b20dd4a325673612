"""The projection tables are a cache of the log (specs/log.md L7a-L7d): a row changed or
damaged outside eventwf is found by its check value and rebuilt from the log on open, and
refused (``CorruptLogError`` naming the table and row) if it changes under a running engine;
a state the log does not hold is never served."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
import trio

import eventwf
from eventwf.store.sqlite import SQLiteStore
from tests.eventlog_kit import raw
from tests.wfkit import TestAgent, virtual_wall


class Hold(eventwf.AgentWorkflow[TestAgent]):
    """One step, then (payload "hold") a wait for an event that the test may send."""

    runs: list[str] = []

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("one", lambda: Hold.runs.append(self.workflow_id) or 1)
        if event.payload == "hold":
            await step.wait_for_event("go", type="go", timeout="30 days")
        return "done"


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Hold],
                               wall_clock=virtual_wall)


async def _log(db: str) -> None:
    """'done' complete, 'held' waiting, agent a with state {"count": 7}; closed cleanly."""
    Hold.runs = []
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.set_state({"count": 7})
        await agent.run_workflow("Hold", id="done", metadata={"team": "x"})
        await agent.run_workflow("Hold", "hold", id="held")
        await engine.wait_workflow("done")
        while (info := await agent.get_workflow("held")) is None or info.status != "waiting":
            await trio.sleep(0.01)


def _rows(db: str) -> tuple[list[Any], list[Any]]:
    conn = sqlite3.connect(db)
    conn.text_factory = lambda value: ("text", value)  # whatever the rows hold, as held
    try:
        return (conn.execute("SELECT * FROM workflows ORDER BY workflow_id").fetchall(),
                conn.execute("SELECT * FROM agents ORDER BY agent_class, agent_name")
                .fetchall())
    finally:
        conn.close()


# (what is changed, the SQL that changes it): each a projection the log does not hold.
EDITS = {
    "a finished workflow's status": "UPDATE workflows SET status = 'running' "
                                    "WHERE workflow_id = 'done'",
    "a waiting workflow's status": "UPDATE workflows SET status = 'complete' "
                                   "WHERE workflow_id = 'held'",
    "metadata that is not JSON": "UPDATE workflows SET metadata = '{\"team\": ' "
                                 "WHERE workflow_id = 'done'",
    "metadata with another value": "UPDATE workflows SET metadata = '{\"team\":\"y\"}' "
                                   "WHERE workflow_id = 'done'",
    "a replaced agent state": "UPDATE agents SET state = x'81a5636f756e74cd0400'",
    "a state that does not decode": "UPDATE agents SET state = x'c1'",
    "a status stored as a blob": "UPDATE workflows SET status = CAST(status AS BLOB) "
                                 "WHERE workflow_id = 'held'",
    "a status that is not UTF-8": "UPDATE workflows SET status = CAST(x'77616974ff' AS TEXT) "
                                  "WHERE workflow_id = 'held'",
    "a deleted check value": "UPDATE workflows SET row_check = NULL WHERE workflow_id = 'held'",
}


@pytest.mark.parametrize("edit", sorted(EDITS))
async def test_l7c_a_projection_row_changed_outside_eventwf_is_rebuilt_from_the_log_on_open(
        db: str, edit: str, caplog: pytest.LogCaptureFixture) -> None:
    await _log(db)
    before = _rows(db)
    with raw(db) as conn:
        conn.execute(EDITS[edit])
    assert _rows(db) != before
    caplog.set_level(logging.WARNING, logger="eventwf")
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert agent.state == {"count": 7}
        done, held = await agent.get_workflow("done"), await agent.get_workflow("held")
        assert done is not None and done.status == "complete" and done.metadata == {"team": "x"}
        assert held is not None and held.status == "waiting"
        page = await agent.get_workflows(status="complete")
        assert [info.workflow_id for info in page.workflows] == ["done"]
        await agent.send_workflow_event("Hold", "held", {"type": "go", "payload": 1})
        assert (await engine.wait_workflow("held")).status == "complete"
    assert Hold.runs == ["done", "held"]  # no logged step ran again
    assert any("do not match their check value" in r.getMessage() and "rebuilding" in
               r.getMessage() for r in caplog.records)


async def test_l7d_a_row_changed_under_a_running_engine_is_refused_naming_it(db: str) -> None:
    await _log(db)
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with raw(db) as conn:
            conn.execute("UPDATE workflows SET status = 'errored' WHERE workflow_id = 'done'")
        with pytest.raises(eventwf.CorruptLogError,
                           match="the workflows row of workflow 'done' does not match its "
                                 "check value"):
            await agent.get_workflows()
    async with _open(db) as engine:  # reopening rebuilds it from the log
        page = await (await engine.get_agent(TestAgent, "a")).get_workflows(status="complete")
        assert [info.workflow_id for info in page.workflows] == ["done"]


def test_l7c_every_row_written_has_its_check_and_a_rebuild_writes_the_same(db: str) -> None:
    trio.run(_log, db, clock=trio.testing.MockClock(autojump_threshold=0))
    live = _rows(db)
    assert all(row[-1] is not None for table in live for row in table)
    store = SQLiteStore(db)
    try:
        store.rebuild_projections()
    finally:
        store.close()
    assert _rows(db) == live


async def test_l16_tables_from_before_row_checks_are_made_anew_and_rebuilt(db: str) -> None:
    await _log(db)
    with raw(db) as conn:  # as an eventwf before row checks left them (no projection version)
        conn.execute("ALTER TABLE workflows DROP COLUMN row_check")
        conn.execute("ALTER TABLE agents DROP COLUMN row_check")
        conn.execute("DELETE FROM meta WHERE key = 'projection_version'")
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert agent.state == {"count": 7}
        held = await agent.get_workflow("held")
        assert held is not None and held.status == "waiting"
    assert all(row[-1] is not None for table in _rows(db) for row in table)
