"""Verification on open: the chain since the last verification, and the external anchor."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest
import trio

import eventwf
from eventwf._store.anchor import read_anchor
from tests.eventlog_kit import CLASS_CHANGES, change_class, position_of
from tests.wfkit import TestAgent, virtual_wall


class Quick(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("one", lambda: 1)
        if event.payload == "hold":
            await step.wait_for_event("hold", type="never")
        return "done"


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[Quick], wall_clock=virtual_wall)


async def _two(db: str) -> tuple[str, str]:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        done = await agent.run_workflow("Quick", id="done")
        held = await agent.run_workflow("Quick", "hold", id="held")
        await engine.wait_workflow(done)
        await trio.sleep(1)
    return done, held


def _sql(db: str, *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for sql, args in statements:
            conn.execute(sql, args)
    conn.close()


async def test_clean_close_writes_the_anchor_and_the_verified_mark(db: str) -> None:
    await _two(db)
    conn = sqlite3.connect(db)
    head, digest = conn.execute(
        "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
    verified = conn.execute("SELECT value FROM meta WHERE key = 'verified_through'").fetchone()
    conn.close()
    assert read_anchor(db) == (head, digest)
    assert verified == (str(head),)


async def test_rows_written_since_the_last_verification_are_checked_on_open(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    await _two(db)
    conn = sqlite3.connect(db)
    position, data = conn.execute("SELECT position, data FROM events WHERE stream = 'wf:done' "
                                  "AND type = 'step.succeeded'").fetchone()
    conn.close()
    _sql(db, ("DROP TRIGGER events_no_update", ()),
         ("UPDATE events SET data = ? WHERE position = ?", (bytes(data[:-1]) + b"\x00", position)),
         ("UPDATE meta SET value = '0' WHERE key = 'verified_through'", ()))  # as after a crash
    caplog.set_level(logging.ERROR, logger="eventwf")
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        info = await agent.get_workflow("done")
        held = await agent.get_workflow("held")
    assert info is not None and info.status == "unknown"  # finished, but now quarantined
    assert f"log position {position}" in (info.error_message or "")
    assert held is not None and held.status == "waiting"  # the other workflow is served
    assert any("quarantined" in r.getMessage() for r in caplog.records)


async def test_a_cut_tail_is_reported_against_the_anchor(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    await _two(db)
    conn = sqlite3.connect(db)
    head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    conn.close()
    _sql(db, ("DROP TRIGGER events_no_delete", ()),
         ("DELETE FROM events WHERE position > ?", (head - 2,)))
    caplog.set_level(logging.ERROR, logger="eventwf")
    async with _open(db):
        pass
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"ends at position {head - 2}, but its anchor says {head}" in m for m in messages)
    with open(db + ".anchor.mismatch-1") as kept:  # the evidence is kept beside the new anchor
        assert f'"position": {head}' in kept.read()


async def test_a_rewritten_log_is_reported_against_the_anchor(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    await _two(db)
    conn = sqlite3.connect(db)
    head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    conn.close()
    _sql(db, ("DROP TRIGGER events_no_update", ()),
         ("UPDATE events SET hash = zeroblob(16) WHERE position = ?", (head,)))
    caplog.set_level(logging.ERROR, logger="eventwf")
    async with _open(db):
        pass
    assert any("the log was rewritten" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("column", "value", "kind"), CLASS_CHANGES)
@pytest.mark.parametrize("found_by", ["verification on open", "replay"])
async def test_a_row_in_another_storage_class_quarantines_only_its_workflow(
        db: str, column: str, value: str, kind: str, found_by: str) -> None:
    """One flipped bit in a row's record header (log.md L4a): its workflow is quarantined
    at that position, the engine opens and serves the others."""
    await _two(db)
    position = position_of(db, "wf:held", "step.succeeded")
    change_class(db, position, column, value)
    if found_by == "verification on open":
        _sql(db, ("UPDATE meta SET value = '0' WHERE key = 'verified_through'", ()))
    hibernate = None if found_by == "replay" else 60.0  # replay: the waiting run restarts
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Quick],
                                   wall_clock=virtual_wall, hibernate_after=hibernate) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with pytest.raises(eventwf.CorruptLogError) as error:
            await engine.wait_workflow("held")
        assert error.value.position == position
        assert f"{column} holds {kind}" in str(error.value)
        fresh = await agent.run_workflow("Quick", id="fresh")
        assert (await engine.wait_workflow(fresh)).status == "complete"
        done = await agent.get_workflow("done")
        assert done is not None and done.status == "complete"
