"""Waits, events and wake-ups under concurrency (issue 13): events sent at once to a
hibernated waiter, an event racing a wait that expired while the engine was closed."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventwf
from eventwf.model.codec import decode_event, encode_event, event_type
from eventwf.model.events import Event, EventConsumed, EventReceived
from tests.eventlog_kit import append_forged, query
from tests.wfkit import TestAgent, event_data, event_types, virtual_wall


@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db


class ThreePings(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return [(await step.wait_for_event(f"w{i}", type="ping")).payload for i in range(3)]


class Expiring(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        try:
            got = await step.wait_for_event("w", type="ping", timeout="1 hour")
        except eventwf.WorkflowTimeoutError:
            return "timed out"
        return got.payload


def append_raw(db: str, stream: str, event: Event) -> int:
    """Append ``event`` to ``stream`` by hand, chain intact (a log the engine never writes)."""
    (last,) = query(db, "SELECT max(stream_position) FROM events WHERE stream = ?", stream)[0]
    return append_forged(db, stream, last + 1, event_type(event), encode_event(event))


def _open(db: str, **kw: Any) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[ThreePings, Expiring],
                               wall_clock=virtual_wall, **kw)


async def test_two_events_sent_at_once_to_a_hibernated_waiter_are_each_taken_once(
        db: str) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("ThreePings")
        await trio.sleep(0.2)
        assert engine.statistics().hibernations == 1
        async with trio.open_nursery() as nursery:
            for payload in (1, 2):
                nursery.start_soon(agent.send_workflow_event, "ThreePings", wid,
                                   {"type": "ping", "payload": payload})
        await agent.send_workflow_event("ThreePings", wid, {"type": "ping", "payload": 3})
        info = await engine.wait_workflow(wid)
        status = await agent.get_workflow_status("ThreePings", wid)
    assert info.status == "complete", status
    # FIFO: the waits took the events in the order the log received them (the two sent
    # at once in either order), each exactly once
    received = [decode_event("event.received", data).payload
                for _, data in event_data(db, "event.received")]
    assert status.output == received and sorted(received[:2]) == [1, 2] and received[2] == 3


async def test_an_event_sent_on_reopen_after_its_wait_expired_meanwhile_is_not_taken_twice(
        db: str) -> None:
    for _ in range(5):  # the race had several interleavings; each open tries one
        async with _open(db) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            wid = await agent.run_workflow("Expiring")
            await trio.sleep(1)
        await trio.sleep(2 * 3600)  # closed for two hours: the wait expired meanwhile
        async with _open(db) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            try:
                await agent.send_workflow_event("Expiring", wid, {"type": "ping", "payload": 1})
            except eventwf.EventwfError:
                pass  # refused: the workflow finished first (a correct outcome too)
            info = await engine.wait_workflow(wid)
            status = await agent.get_workflow_status("Expiring", wid)
            assert info.status == "complete", info
            assert status.output in ("timed out", 1), status
        async with _open(db) as engine:  # and the log opens again
            assert (await engine.wait_workflow(wid)).status == "complete"


# -- each contributing cause of defect 2, on its own -------------------------------------


async def test_a_caller_cancelled_after_its_append_was_queued_learns_that_it_committed(
        db: str) -> None:
    # W3: once queued, an append is answered and its caller learns the answer; it never
    # raises Cancelled for something that then commits (and so never appends it twice)
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        with trio.CancelScope() as scope:
            scope.cancel()
            await agent.set_state({"n": 1})
        logged = "agent.state_set" in event_types(db)
        assert logged and not scope.cancelled_caught
        assert agent.state == {"n": 1}


async def test_the_writer_refuses_a_second_consumption_of_one_event_in_one_batch(
        db: str) -> None:
    async with _open(db, hibernate_after=None) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Expiring")
        await trio.sleep(1)  # it waits (command #0) for a "ping"
        await agent.send_workflow_event("Expiring", wid, {"type": "other", "payload": 0})
        core = engine.runtime
        stream = f"wf:{wid}"
        received = core.store.stream_head(stream)
        outcomes: list[Any] = []

        async def consume(seq: int) -> None:
            try:
                outcomes.append(await core.append(
                    [(stream, EventConsumed(seq, "x", "other", received))]))
            except eventwf.EventwfError as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:  # both in one group commit
            nursery.start_soon(consume, 0)
            nursery.start_soon(consume, 0)
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert len(errors) == 1 and "no such unconsumed event" in str(errors[0]), outcomes
        assert event_types(db, stream).count("event.consumed") == 1


class _Boom(Exception):
    pass


async def test_a_replay_error_while_publishing_quarantines_only_that_workflow(
        db: str, monkeypatch: Any) -> None:
    from eventwf.model import replay as _replay

    feed = _replay.ReplayMachine.feed

    def failing(self: _replay.ReplayMachine, rec: Any) -> None:
        if self.workflow_id == victim and isinstance(rec.event, EventReceived):
            raise _Boom("injected replay failure")
        feed(self, rec)

    async with _open(db, hibernate_after=None) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        victim = await agent.run_workflow("Expiring")
        other = await agent.run_workflow("Expiring")
        await trio.sleep(1)
        monkeypatch.setattr(_replay.ReplayMachine, "feed", failing)
        await agent.send_workflow_event("Expiring", victim, {"type": "ping", "payload": 1})
        await agent.send_workflow_event("Expiring", other, {"type": "ping", "payload": 2})
        assert (await engine.wait_workflow(other)).status == "complete"  # the engine lives
        bad = await agent.get_workflow(victim)
        assert bad is not None and bad.status == "unknown", bad
        assert bad.error_name == "CorruptLogError" and "_Boom: injected" in str(
            bad.error_message)
    monkeypatch.undo()
    async with _open(db) as engine:  # and the log opens again
        assert (await engine.wait_workflow(other)).status == "complete"


async def test_a_runner_that_fails_while_it_is_built_on_open_is_quarantined_alone(
        db: str, monkeypatch: Any) -> None:
    from eventwf.model import replay as _replay

    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        victim = await agent.run_workflow("ThreePings")
        other = await agent.run_workflow("Expiring")
        await trio.sleep(1)
    feed = _replay.ReplayMachine.feed

    def failing(self: _replay.ReplayMachine, rec: Any) -> None:
        if self.workflow_id == victim:
            raise eventwf.CorruptLogError("injected: this history breaks the log rules",
                                          position=rec.position)
        feed(self, rec)

    monkeypatch.setattr(_replay.ReplayMachine, "feed", failing)
    async with _open(db, hibernate_after=None) as engine:  # every runner is built on open
        agent = await engine.get_agent(TestAgent, "a")
        await agent.send_workflow_event("Expiring", other, {"type": "ping", "payload": 2})
        assert (await engine.wait_workflow(other)).status == "complete"
        bad = await agent.get_workflow(victim)
        assert bad is not None and bad.status == "unknown", bad
        assert "injected" in str(bad.error_message)
