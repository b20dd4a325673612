"""Verification on open: the chain since the last verification, and the external anchor."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from typing import Any

import pytest
import trio

import eventwf
from eventwf.store.sqlite.anchor import read_anchor
from tests.eventlog_kit import CLASS_CHANGES, change_class, cli, position_of
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


def _empty(db: str, how: str) -> None:
    if how == "file truncated to 0 bytes":
        with open(db, "r+b") as handle:
            handle.truncate(0)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
    elif how == "events table dropped":
        _sql(db, ("DROP TABLE events", ()))
    else:  # every row deleted
        _sql(db, ("DROP TRIGGER events_no_delete", ()), ("DELETE FROM events", ()))


EMPTIED = ["file truncated to 0 bytes", "events table dropped", "events table emptied"]


@pytest.mark.parametrize("how", EMPTIED)
async def test_l13_an_emptied_log_is_refused_until_its_anchor_is_deleted(
        db: str, how: str) -> None:
    await _two(db)
    anchored = read_anchor(db)
    assert anchored is not None and anchored.position > 0
    _empty(db, how)
    before = _file(db)
    home = re.escape(os.path.realpath(db))  # the log's home (log.md L11a)
    for _ in range(2):  # refused every time, and the refusal released the log
        with pytest.raises(eventwf.CorruptLogError, match=(
                rf"holds no events .*anchor {home}\.anchor says the log reached "
                rf"position {anchored.position}.* delete {home}\.anchor")) as error:
            async with _open(db):
                pass  # pragma: no cover
        assert error.value.position == 1
    assert _file(db) == before and read_anchor(db) == anchored  # nothing started over
    result = cli(db, "verify", "--json")
    assert result.code == 1 and any(
        r.get("kind") == "position gap" and r.get("position") == 1 for r in result.records())
    rebuilt = cli(db, "rebuild-projections", "--force")  # one line, no traceback
    assert rebuilt.code in (1, 2) and rebuilt.err.startswith("eventlog: ")
    assert rebuilt.err.count("\n") == 1 and _file(db) == before
    os.remove(db + ".anchor")  # the forcing knob: start a new, empty log here
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert (await engine.wait_workflow(await agent.run_workflow("Quick"))).status == \
            "complete"


def _file(db: str) -> tuple[bytes, str | None]:
    """The database bytes and (when there is one) its meta.genesis."""
    data = open(db, "rb").read()  # noqa: SIM115
    if not data:
        return data, None
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
    finally:
        conn.close()
    return data, None if row is None else str(row[0])


async def test_l13_events_without_their_genesis_are_refused(db: str) -> None:
    await _two(db)
    _sql(db, ("DROP TABLE meta", ()))
    with pytest.raises(eventwf.CorruptLogError, match="holds events but no genesis"):
        async with _open(db):
            pass  # pragma: no cover
    conn = sqlite3.connect(db)
    try:  # no new genesis was made up for the old events
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'meta'").fetchone() \
            is None
    finally:
        conn.close()


@pytest.mark.parametrize(("key", "value"), [("schema_version", "1x"),
                                            ("schema_version", "-1"),
                                            ("genesis", "not hex \x1b[31m")])
async def test_l14_a_damaged_meta_value_the_log_cannot_do_without_is_refused_naming_it(
        db: str, key: str, value: str) -> None:
    await _two(db)
    _sql(db, ("UPDATE meta SET value = ? WHERE key = ?", (value, key)))
    for _ in range(2):  # the same both times: the refusal released the log
        with pytest.raises(eventwf.CorruptLogError,
                           match=rf"meta\.{key} is {re.escape(repr(value))}"):
            async with _open(db):
                pass  # pragma: no cover


@pytest.mark.parametrize("key", ["projected_through", "verified_through"])
async def test_l14_a_damaged_meta_position_is_redone_not_trusted(
        db: str, key: str, caplog: pytest.LogCaptureFixture) -> None:
    await _two(db)
    _sql(db, ("UPDATE meta SET value = 'lots' WHERE key = ?", (key,)))
    caplog.set_level(logging.WARNING, logger="eventwf")
    async with _open(db) as engine:
        held = await (await engine.get_agent(TestAgent, "a")).get_workflow("held")
        assert held is not None and held.status == "waiting"
    assert any(f"meta.{key} is 'lots', not a log position" in r.getMessage()
               for r in caplog.records)
    conn = sqlite3.connect(db)
    try:
        value = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]
        head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    finally:
        conn.close()
    assert value == str(head)  # redone: rebuilt or verified through the head


async def test_l14_a_head_row_whose_hash_is_stored_as_text_opens_and_the_chain_goes_on(
        db: str) -> None:
    await _two(db)
    conn = sqlite3.connect(db)
    head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    conn.close()
    _sql(db, ("DROP TRIGGER events_no_update", ()),
         ("UPDATE events SET hash = CAST(hash AS TEXT) WHERE position = ?", (head,)))
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        assert (await engine.wait_workflow(await agent.run_workflow("Quick"))).status == \
            "complete"
    problems = [r for r in cli(db, "verify", "--json").records() if r["record"] == "problem"]
    rows = [(p["kind"], p["position"]) for p in problems if p["kind"] != "projection mismatch"]
    assert rows == [("undecodable", head)]  # that row only: the rows after it chain from it
