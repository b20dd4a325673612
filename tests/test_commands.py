"""One truth about a valid history (replay.md R12): replay never refuses what the fold took.

Random event sequences on one workflow stream are fed to the fold (the writer, rebuild and
``verify`` all use it) and to the replay machine. Whatever prefix the fold accepts, the
machine takes without an error; and the engine and ``verify`` agree about a log that holds
a history the fold refuses.
"""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import trio
from hypothesis import given, settings

import eventwf
from eventwf.errors import TransitionError
from eventwf.logtool.verify import verify
from eventwf.model.events import (
    ErrorInfo,
    Event,
    EventConsumed,
    EventReceived,
    Recorded,
    SleepCompleted,
    SleepStarted,
    StepAttemptFailed,
    StepFailed,
    StepRetrying,
    StepSucceeded,
    WaitStarted,
    WaitTimedOut,
    WorkflowRestarted,
    WorkflowRunning,
    WorkflowStarted,
    WorkflowWaiting,
)
from eventwf.model.replay import ReplayMachine
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow
from tests.test_waits import Expiring, ThreePings, append_raw
from tests.wfkit import TestAgent, virtual_wall

ERR = ErrorInfo("builtins.ValueError", "boom")
KINDS = ["succeeded", "failed", "attempt_failed", "retrying", "sleep", "slept", "wait",
         "timed_out", "received", "consumed", "waiting", "restarted"]


def _records(events: list[Event]) -> list[Recorded]:
    history: list[Event] = [WorkflowStarted("Flow", "A", "a"), WorkflowRunning(), *events]
    return [Recorded(100 + i, "wf:w", i, 1_000 + i, e) for i, e in enumerate(history)]


def _event(data: st.DataObject, summary: WorkflowSummary) -> Event:
    """An event of a random kind whose numbers are mostly what the run expects next (so
    histories get long) and sometimes not (so every refusal is tried)."""
    kind = data.draw(st.sampled_from(KINDS))
    # a concurrent run (replay.md R14) has several pending commands, one per task
    pending = data.draw(st.sampled_from(summary.pending)) if summary.pending else None
    expected = pending[1] if pending else summary.commands
    seq = data.draw(st.sampled_from([expected, expected, summary.commands, 0, expected + 1]))
    tasks = [pending[2]] if pending else []
    task = data.draw(st.sampled_from([*tasks, *tasks, (), (0,), (1,), (0, 1)]))
    concurrent = data.draw(st.booleans())
    name = data.draw(st.sampled_from(["x", "y"]))
    event_type = data.draw(st.sampled_from(["a", "b"]))
    if kind == "consumed":
        held = [position for position, _ in summary.inbox]
        received = data.draw(st.sampled_from([*held, *held, 0, summary.head]))
        if held and data.draw(st.booleans()):
            event_type = dict(summary.inbox).get(received, event_type)
        return EventConsumed(seq, "w", event_type, received, task=task)
    make = {
        "succeeded": lambda: StepSucceeded(seq, "do", name, 1, task=task),
        "failed": lambda: StepFailed(seq, "do", name, 1, ERR, task=task),
        "attempt_failed": lambda: StepAttemptFailed(seq, name, 1, ERR, 10, 10, task=task,
                                                    concurrent=concurrent),
        "retrying": lambda: StepRetrying(seq, name, 2),
        "sleep": lambda: SleepStarted(seq, "s", 10, 10, task=task, concurrent=concurrent),
        "slept": lambda: SleepCompleted(seq),
        "wait": lambda: WaitStarted(seq, "w", event_type, 10, 10, task=task,
                                    concurrent=concurrent),
        "timed_out": lambda: WaitTimedOut(seq, "w", event_type),
        "received": lambda: EventReceived(event_type, 1),
        "waiting": lambda: WorkflowWaiting(seq),
        "restarted": lambda: WorkflowRestarted(),
    }
    event: Event = make[kind]()
    return event


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_replay_takes_every_history_the_fold_takes(data: st.DataObject) -> None:
    # as the writer does: each append the fold refuses is refused, the others are logged
    machine = ReplayMachine("w", "Flow")
    summary: WorkflowSummary | None = None
    position = 0
    for step in range(40):
        if step < 2:
            event: Event = WorkflowStarted("Flow", "A", "a") if step == 0 else WorkflowRunning()
        else:
            assert summary is not None
            event = _event(data, summary)
        rec = Recorded(100 + position, "wf:w", position, 1_000 + position, event)
        try:
            summary = apply_workflow(summary, rec)
        except TransitionError:
            continue
        machine.feed(rec)  # never raises for a history the fold took
        position += 1


# -- a log holding what the fold refuses: the engine and verify agree --------------------


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[TestAgent], workflows=[ThreePings, Expiring],
                               wall_clock=virtual_wall)


async def _two_waiting(db: str) -> tuple[str, str]:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        victim = await agent.run_workflow("ThreePings")
        other = await agent.run_workflow("Expiring")
        await trio.sleep(1)
        await agent.send_workflow_event("ThreePings", victim, {"type": "ping", "payload": 1})
        await trio.sleep(1)
    return victim, other


async def _engine_and_verify_agree(db: str, victim: str, other: str, position: int) -> None:
    report = verify(db)
    assert not report.intact and report.first is not None
    assert report.first.position == position, report.first
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.send_workflow_event("Expiring", other, {"type": "ping", "payload": 2})
        assert (await engine.wait_workflow(other)).status == "complete"
        bad = await agent.get_workflow(victim)
        assert bad is not None and bad.status == "unknown", bad
        assert f"position {position}" in str(bad.error_message), bad.error_message


async def test_an_event_consumed_twice_is_damage_to_the_engine_and_to_verify(db: str) -> None:
    # the log defect 2 of issue 13 left behind: a second consumption of one received event
    victim, other = await _two_waiting(db)
    stream = f"wf:{victim}"
    received = next(rec.stream_position for rec in _stream(db, stream)
                    if isinstance(rec.event, EventReceived))
    position = append_raw(db, stream, EventConsumed(0, "w0", "ping", received))
    await _engine_and_verify_agree(db, victim, other, position)


async def test_a_second_outcome_of_one_step_is_damage_to_the_engine_and_to_verify(
        db: str) -> None:
    victim, other = await _two_waiting(db)
    position = append_raw(db, f"wf:{victim}", StepSucceeded(0, "wait", "w0", None))
    await _engine_and_verify_agree(db, victim, other, position)


def _stream(db: str, stream: str) -> list[Recorded]:
    from eventwf.store.sqlite import SQLiteStore

    store = SQLiteStore(db, readonly=True)
    try:
        return store.read_stream(stream)
    finally:
        store.close()


def test_the_sample_alphabet_reaches_every_rule() -> None:
    # the property above must not pass by refusing at once: a run of valid events exists
    events = [SleepStarted(0, "s", 10, 10), SleepCompleted(0),
              StepAttemptFailed(1, "x", 1, ERR, 10, 10), StepRetrying(1, "x", 2),
              StepSucceeded(1, "do", "x", 1), EventReceived("a", 1),
              EventConsumed(2, "w", "a", 7), WaitStarted(3, "w", "b", 10, 10),
              WaitTimedOut(3, "w", "b")]
    summary = None
    machine = ReplayMachine("w", "Flow")
    for rec in _records(events):
        summary = apply_workflow(summary, rec)
        machine.feed(rec)
    assert summary is not None and summary.commands == 4 and summary.pending == ()
    try:
        apply_workflow(summary, _records([*events, StepSucceeded(1, "do", "x", 1)])[-1])
    except TransitionError as exc:
        assert "next command is #4" in str(exc)
    else:
        raise AssertionError("a second outcome was taken")
