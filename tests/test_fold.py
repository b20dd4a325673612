"""Pure folds (eventwf/_fold.py): the workflow status machine (W1, W2) and agent state."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from eventwf.errors import TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.events import (
    AgentCreated,
    AgentStateMerged,
    AgentStateReset,
    AgentStateSet,
    BindingMigrated,
    CallbackScheduled,
    CallbacksDelivered,
    ErrorInfo,
    Event,
    EventConsumed,
    EventReceived,
    PauseRequested,
    Recorded,
    SleepCompleted,
    SleepStarted,
    StepAttemptFailed,
    StepFailed,
    StepRetrying,
    StepSucceeded,
    TrackingDeleted,
    WaitStarted,
    WaitTimedOut,
    WorkflowBlocked,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowPaused,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowRunning,
    WorkflowStarted,
    WorkflowTerminated,
    WorkflowWaiting,
)
from eventwf.model.status import ACTIVE, TERMINAL
from eventwf.model.workflow_fold import (
    TRANSITIONS,
    WorkflowSummary,
    apply_workflow,
    quarantine,
)

STATUSES = ["queued", "running", "waiting", "waitingForPause", "paused", "complete", "errored",
            "terminated", "unknown"]
ERR = ErrorInfo("builtins.ValueError", "boom")
SAMPLES: dict[type[Event], Event] = {
    WorkflowRunning: WorkflowRunning(),
    StepSucceeded: StepSucceeded(0, "do", "a", 1),
    StepFailed: StepFailed(0, "do", "a", 1, ERR),
    StepAttemptFailed: StepAttemptFailed(0, "a", 1, ERR, 2_000, 1_000),
    SleepStarted: SleepStarted(0, "nap", 5_000, 4_000),
    WaitStarted: WaitStarted(0, "w", "go", 9_000, 8_000),
    StepRetrying: StepRetrying(0, "a", 2),
    SleepCompleted: SleepCompleted(0),
    EventConsumed: EventConsumed(0, "w", "go", 3),
    WaitTimedOut: WaitTimedOut(0, "w", "go"),
    WorkflowWaiting: WorkflowWaiting(0),
    EventReceived: EventReceived("go", {"x": 1}),
    WorkflowCompleted: WorkflowCompleted({"result": 42}),
    WorkflowErrored: WorkflowErrored(ERR),
    PauseRequested: PauseRequested(),
    WorkflowPaused: WorkflowPaused(),
    WorkflowResumed: WorkflowResumed(),
    WorkflowBlocked: WorkflowBlocked(2, ErrorInfo("eventwf.errors.NonDeterminismError", "div")),
    WorkflowTerminated: WorkflowTerminated(),
    WorkflowRestarted: WorkflowRestarted(),
    TrackingDeleted: TrackingDeleted(),
    BindingMigrated: BindingMigrated("Flow", "Flow2"),
}
AGENT_EVENTS = [AgentCreated("A", "a"), AgentStateSet({}), AgentStateMerged({}),
                AgentStateReset(None), CallbackScheduled("complete", "Flow", "w1"),
                CallbacksDelivered(0)]


def summary(status: str = "running", **changes: Any) -> WorkflowSummary:
    """A summary; ``pending=(kind, seq)`` names the one command of ``run`` pending."""
    if "pending" in changes:
        one = changes["pending"]
        changes["pending"] = () if one is None else ((*one, ()),)
    base = WorkflowSummary(
        workflow_id="w1", workflow_name="Flow", agent_class="A", agent_name="a", status=status,
        created_us=100, updated_us=100, head=4, inbox=((3, "go"),),
        corrupt_position=3 if status == "unknown" else None,
    )
    return msgspec.structs.replace(base, **changes)


# The command each sample needs pending (replay.md R12): the one it ends or waits on again.
PENDING_FOR: dict[type[Event], tuple[str, int]] = {
    StepRetrying: ("backoff", 0), SleepCompleted: ("sleep", 0), WaitTimedOut: ("wait", 0),
    WorkflowWaiting: ("wait", 0), EventConsumed: ("wait", 0),
}


def pending(s: WorkflowSummary) -> tuple[str, int] | None:
    """The one pending command of ``run`` as (kind, seq), None when nothing is pending."""
    assert len(s.pending) <= 1 and all(task == () for _, _, task in s.pending), s.pending
    return s.pending[0][:2] if s.pending else None


def rec(event: Event, *, stream: str = "wf:w1", stream_position: int = 5, time_us: int = 1_000,
        position: int = 50) -> Recorded:
    return Recorded(position, stream, stream_position, time_us, event)


def started(time_us: int = 100) -> WorkflowSummary:
    return apply_workflow(None, rec(WorkflowStarted("Flow", "A", "a", {"p": 1}, {"m": 1}),
                                    stream_position=0, time_us=time_us))


def agent(**changes: Any) -> AgentSummary:
    return msgspec.structs.replace(AgentSummary("A", "a", head=2), **changes)


# -- the transition table (W2) --------------------------------------------------------------


def test_w2_table_covers_every_sample_and_names_only_real_statuses() -> None:
    assert set(SAMPLES) == set(TRANSITIONS)
    for table in TRANSITIONS.values():
        assert set(table) <= set(STATUSES) - {"unknown"}
        assert set(table.values()) <= (set(STATUSES) - {"unknown"}) | {"="}
    assert ACTIVE | TERMINAL | {"unknown"} == set(STATUSES)


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("cls", list(TRANSITIONS), ids=lambda c: c.__name__)
def test_w2_every_event_and_status_pair_follows_the_table(cls: type[Event], status: str) -> None:
    before = summary(status, pending=PENDING_FOR.get(cls))
    pristine = summary(status, pending=PENDING_FOR.get(cls))
    target = TRANSITIONS[cls].get(status)
    if target is None or status == "unknown":
        with pytest.raises(TransitionError):
            apply_workflow(before, rec(SAMPLES[cls]))
        assert before == pristine  # W2: changes nothing
        return
    after = apply_workflow(before, rec(SAMPLES[cls]))
    expected = status if target == "=" else target
    assert after.status == expected
    assert after.head == 5
    assert before == pristine
    if expected != status:
        assert after.updated_us == 1_000
    if expected in TERMINAL and status not in TERMINAL:
        assert after.completed_us == 1_000


@pytest.mark.parametrize("event", AGENT_EVENTS, ids=lambda e: type(e).__name__)
def test_agent_events_do_not_belong_on_a_workflow_stream(event: Event) -> None:
    with pytest.raises(TransitionError, match="does not belong on a workflow stream"):
        apply_workflow(summary("running"), rec(event))


@pytest.mark.parametrize("cls", list(TRANSITIONS), ids=lambda c: c.__name__)
def test_events_before_workflow_started_are_refused(cls: type[Event]) -> None:
    with pytest.raises(TransitionError, match="never started"):
        apply_workflow(None, rec(SAMPLES[cls]))


def test_a_happy_run_walks_queued_running_waiting_running_complete() -> None:
    s = started()
    assert (s.status, s.run, s.started_at, s.run_start, s.tracked) == ("queued", 1, 0, 0, True)
    assert (s.metadata, s.created_us, s.workflow_id) == ({"m": 1}, 100, "w1")
    trail = []
    for i, event in enumerate([WorkflowRunning(), SAMPLES[SleepStarted], SleepCompleted(0),
                               EventReceived("go"), WorkflowCompleted("done")], start=1):
        s = apply_workflow(s, rec(event, stream_position=i, time_us=100 + i))
        trail.append(s.status)
    assert trail == ["running", "waiting", "running", "running", "complete"]
    assert (s.output, s.completed_us, s.head, s.mailbox, s.finished) == ("done", 105, 5, 1, True)


# -- WorkflowStarted -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", sorted(ACTIVE | TERMINAL))
def test_workflow_started_twice_raises_while_tracked(status: str) -> None:
    with pytest.raises(TransitionError, match="cannot be started again"):
        apply_workflow(summary(status), rec(WorkflowStarted("Flow", "A", "a")))


@pytest.mark.parametrize("status", sorted(ACTIVE))
def test_workflow_started_again_raises_while_active_even_if_untracked(status: str) -> None:
    with pytest.raises(TransitionError, match="still active"):
        apply_workflow(summary(status, tracked=False), rec(WorkflowStarted("Flow", "A", "a")))


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_finished_untracked_workflow_can_be_started_again_as_a_new_run(status: str) -> None:
    old = summary(status, tracked=False, run=2, output=1, error_name="X", completed_us=9)
    new = apply_workflow(old, rec(WorkflowStarted("Other", "B", "b"), stream_position=7))
    assert (new.status, new.run, new.started_at, new.run_start, new.head) == ("queued", 3, 7, 7, 7)
    assert (new.workflow_name, new.agent_class, new.agent_name, new.tracked) == (
        "Other", "B", "b", True)
    assert (new.output, new.error_name, new.completed_us, new.mailbox) == (None, None, None, 0)


def test_workflow_started_on_an_agent_stream_raises() -> None:
    with pytest.raises(TransitionError, match="not a workflow stream"):
        apply_workflow(None, rec(WorkflowStarted("Flow", "A", "a"), stream="agent:A/a"))


# -- tracking fields -------------------------------------------------------------------------------


def test_tracking_deleted_twice_raises() -> None:
    once = apply_workflow(summary("complete"), rec(TrackingDeleted()))
    assert (once.tracked, once.status, once.updated_us) == (False, "complete", 1_000)
    with pytest.raises(TransitionError, match="not tracked"):
        apply_workflow(once, rec(TrackingDeleted()))


def test_binding_migrated_with_the_right_old_name_renames() -> None:
    after = apply_workflow(summary("paused"), rec(BindingMigrated("Flow", "Flow2")))
    assert (after.workflow_name, after.status, after.updated_us) == ("Flow2", "paused", 1_000)


def test_binding_migrated_with_a_wrong_old_name_raises() -> None:
    before = summary("paused")
    with pytest.raises(TransitionError, match="has binding 'Flow', not 'Nope'"):
        apply_workflow(before, rec(BindingMigrated("Nope", "Flow2")))
    assert before.workflow_name == "Flow"


@pytest.mark.parametrize("reset", [True, False])
def test_restart_clears_errors_output_completed_time_and_bumps_run(reset: bool) -> None:
    old = summary("errored", error_name="ValueError", error_message="boom", output=5,
                  completed_us=900, run=2, inbox=((2, "a"), (3, "b"), (4, "a")), run_start=1)
    new = apply_workflow(old, rec(WorkflowRestarted(reset_tracking=reset), stream_position=9))
    assert (new.status, new.run, new.run_start, new.head, new.mailbox) == ("queued", 3, 9, 9, 0)
    assert (new.error_name, new.error_message, new.output, new.completed_us) == (
        None, None, None, None)
    assert new.updated_us == 1_000
    assert new.created_us == (1_000 if reset else 100)
    assert new.started_at == old.started_at


def test_errored_and_blocked_record_the_error_and_resume_clears_it() -> None:
    errored = apply_workflow(summary("running"), rec(WorkflowErrored(ERR)))
    assert (errored.error_name, errored.error_message) == ("ValueError", "boom")
    blocked = apply_workflow(summary("waiting"), rec(SAMPLES[WorkflowBlocked]))
    assert (blocked.status, blocked.error_name) == ("paused", "NonDeterminismError")
    resumed = apply_workflow(blocked, rec(WorkflowResumed()))
    assert (resumed.status, resumed.error_name, resumed.error_message) == ("queued", None, None)


def test_mailbox_counts_received_minus_consumed() -> None:
    s = summary("waiting", inbox=(), pending=("wait", 0), commands=1)
    s = apply_workflow(s, rec(EventReceived("go"), stream_position=3))
    s = apply_workflow(s, rec(EventReceived("go"), stream_position=4))
    s = apply_workflow(s, rec(SAMPLES[EventConsumed], stream_position=5))
    assert (s.mailbox, s.inbox, s.status, pending(s)) == (1, ((4, "go"),), "running", None)


# -- the timer and inbox rules (replay.md R12: what replay refuses, the fold refuses) ----------


def test_an_event_is_consumed_once() -> None:
    once = apply_workflow(summary("waiting", pending=("wait", 0), commands=1),
                          rec(SAMPLES[EventConsumed]))
    assert once.inbox == ()
    with pytest.raises(TransitionError, match="holds no such unconsumed event"):
        apply_workflow(once, rec(EventConsumed(1, "w2", "go", 3)))


@pytest.mark.parametrize("consumed", [EventConsumed(0, "w", "go", 9),  # nothing received there
                                      EventConsumed(0, "w", "other", 3)],  # another type
                         ids=["nothing-received", "wrong-type"])
def test_a_consumption_must_name_a_received_event_of_its_type(consumed: EventConsumed) -> None:
    before = summary("waiting", pending=("wait", 0), commands=1)
    with pytest.raises(TransitionError, match="holds no such unconsumed event"):
        apply_workflow(before, rec(consumed))
    assert before.inbox == ((3, "go"),)


@pytest.mark.parametrize(("event", "pending"), [
    (SleepCompleted(0), None), (SleepCompleted(1), ("sleep", 0)),
    (SleepCompleted(0), ("wait", 0)), (StepRetrying(0, "a", 2), ("sleep", 0)),
    (StepRetrying(0, "a", 2), None), (WaitTimedOut(0, "w", "go"), ("backoff", 0)),
    (WaitTimedOut(0, "w", "go"), None), (WorkflowWaiting(1), ("sleep", 0)),
    (WorkflowWaiting(0), None), (EventConsumed(1, "w", "go", 3), ("sleep", 0)),
])
def test_a_timer_is_ended_only_by_its_own_command_while_pending(
        event: Event, pending: tuple[str, int] | None) -> None:
    status = "running" if isinstance(event, WorkflowWaiting) else "waiting"
    with pytest.raises(TransitionError, match="pending"):
        apply_workflow(summary(status, pending=pending, commands=2), rec(event))


@pytest.mark.parametrize("cls", [SleepStarted, StepAttemptFailed, WaitStarted])
def test_no_second_timer_starts_while_one_is_pending(cls: type[Event]) -> None:
    with pytest.raises(TransitionError, match="while the sleep of command #0 is pending"):
        apply_workflow(summary("running", pending=("sleep", 0), commands=1),
                       rec(SAMPLES[cls]))


def test_commands_walk_begin_pending_end_and_restart_clears_them() -> None:
    s = apply_workflow(summary("running"), rec(SAMPLES[SleepStarted]))
    assert (s.commands, pending(s)) == (1, ("sleep", 0))
    s = apply_workflow(s, rec(SleepCompleted(0), stream_position=6))
    assert (s.commands, pending(s)) == (1, None)
    s = apply_workflow(s, rec(StepAttemptFailed(1, "a", 1, ERR, 2_000, 1_000),
                              stream_position=7))
    assert (s.commands, pending(s), s.status) == (2, ("backoff", 1), "waiting")
    s = apply_workflow(s, rec(StepRetrying(1, "a", 2), stream_position=8))
    assert (s.commands, pending(s), s.status) == (2, ("attempt", 1), "running")
    s = apply_workflow(s, rec(StepSucceeded(1, "do", "a", 5, 2), stream_position=9))
    assert (s.commands, pending(s)) == (2, None)
    s = apply_workflow(s, rec(StepSucceeded(2, "now", None, 7), stream_position=10))
    assert (s.commands, pending(s)) == (3, None)
    restarted = apply_workflow(s, rec(WorkflowRestarted(), stream_position=11))
    assert (restarted.commands, pending(restarted), restarted.inbox) == (0, None, ())


@pytest.mark.parametrize(("event", "commands", "pending", "why"), [
    (StepSucceeded(2, "do", "a", 1), 0, None, "next command is #0"),  # a number skipped
    (StepSucceeded(0, "do", "a", 1), 1, None, "next command is #1"),  # a second outcome
    (StepFailed(0, "do", "a", 1, ERR), 1, None, "next command is #1"),
    (SleepStarted(0, "s", 5, 5), 1, None, "next command is #1"),  # a number used twice
    (StepSucceeded(1, "do", "b", 1), 1, ("attempt", 0), "while the attempt of command #0"),
    (StepRetrying(0, "a", 2), 1, ("attempt", 0), "but the attempt of command #0"),
    (WorkflowWaiting(0), 1, ("attempt", 0), "but the attempt of command #0"),
])
def test_commands_are_numbered_in_order_and_end_once(
        event: Event, commands: int, pending: tuple[str, int] | None, why: str) -> None:
    before = summary("running", commands=commands, pending=pending)
    with pytest.raises(TransitionError, match=why):
        apply_workflow(before, rec(event))


# -- quarantine (R7) ---------------------------------------------------------------------------


@pytest.mark.parametrize("event", [*SAMPLES.values(), WorkflowStarted("Flow", "A", "a")],
                         ids=lambda e: type(e).__name__)
def test_quarantined_summary_refuses_every_event(event: Event) -> None:
    q = quarantine(summary("running"), "wf:w1", 7, "bad row", 500)
    with pytest.raises(TransitionError, match="quarantined .* log position 7"):
        apply_workflow(q, rec(event))


def test_quarantine_records_the_first_position_and_keeps_fields() -> None:
    q = quarantine(summary("waiting", output=1), "wf:w1", 7, "bad row", 500)
    assert (q.status, q.error_name, q.error_message, q.corrupt_position) == (
        "unknown", "CorruptLogError", "bad row", 7)
    assert (q.workflow_name, q.output, q.updated_us) == ("Flow", 1, 100)
    assert quarantine(q, "wf:w1", 9, "later", 600) is q


def test_quarantine_of_a_workflow_without_summary_records_the_error() -> None:
    fresh = quarantine(None, "wf:w9", 1, "first row bad", 500)
    assert (fresh.workflow_id, fresh.status, fresh.created_us) == ("w9", "unknown", 500)
    assert (fresh.error_name, fresh.error_message, fresh.corrupt_position) == (
        "CorruptLogError", "first row bad", 1)


# -- agents -------------------------------------------------------------------------------------


def test_agent_created_starts_an_unset_agent_and_only_once() -> None:
    a = apply_agent(None, rec(AgentCreated("A", "a"), stream="agent:A/a", stream_position=0))
    assert a == AgentSummary("A", "a", head=0)
    with pytest.raises(TransitionError, match="already exists"):
        apply_agent(a, rec(AgentCreated("A", "a"), stream="agent:A/a"))


@pytest.mark.parametrize("event", AGENT_EVENTS[1:], ids=lambda e: type(e).__name__)
def test_agent_events_before_creation_raise(event: Event) -> None:
    with pytest.raises(TransitionError, match="before it exists"):
        apply_agent(None, rec(event, stream="agent:A/a"))


def test_agent_set_merge_and_reset() -> None:
    a = apply_agent(agent(), rec(AgentStateSet({"x": 1, "y": 2})))
    assert (a.state, a.has_state, a.head) == ({"x": 1, "y": 2}, True, 5)
    a = apply_agent(a, rec(AgentStateMerged({"y": 3, "z": 4}), stream_position=6))
    assert a.state == {"x": 1, "y": 3, "z": 4}
    a = apply_agent(a, rec(AgentStateReset({"count": 0}), stream_position=7))
    assert (a.state, a.has_state, a.head) == ({"count": 0}, True, 7)


@pytest.mark.parametrize("state", [[1], 5, "s", None])
def test_agent_merge_into_a_non_dict_state_raises(state: Any) -> None:
    a = agent(state=state, has_state=True)
    with pytest.raises(TransitionError, match="needs a dict state"):
        apply_agent(a, rec(AgentStateMerged({"k": 1})))


def test_agent_merge_into_an_unset_state_raises() -> None:
    with pytest.raises(TransitionError, match="it is unset"):
        apply_agent(agent(state={"k": 0}), rec(AgentStateMerged({"k": 1})))


def test_callbacks_scheduled_and_delivered_move_the_cursor() -> None:
    a = apply_agent(agent(), rec(CallbackScheduled("complete", "Flow", "w1"), position=10))
    assert (a.last_callback, a.callbacks_pending) == (10, True)
    a = apply_agent(a, rec(CallbacksDelivered(through=10), position=11))
    assert (a.delivered_through, a.callbacks_pending) == (10, False)
    same = apply_agent(a, rec(CallbacksDelivered(through=10), position=12))
    assert same.delivered_through == 10


def test_callbacks_delivered_cannot_move_backwards_or_past_its_own_position() -> None:
    a = agent(delivered_through=10, last_callback=10)
    with pytest.raises(TransitionError, match="cursor is at 10"):
        apply_agent(a, rec(CallbacksDelivered(through=9), position=20))
    with pytest.raises(TransitionError):
        apply_agent(a, rec(CallbacksDelivered(through=21), position=20))
    assert apply_agent(a, rec(CallbacksDelivered(through=20), position=20)).delivered_through == 20


@pytest.mark.parametrize("cls", list(TRANSITIONS), ids=lambda c: c.__name__)
def test_workflow_events_do_not_belong_on_an_agent_stream(cls: type[Event]) -> None:
    with pytest.raises(TransitionError, match="does not belong on an agent stream"):
        apply_agent(agent(), rec(SAMPLES[cls], stream="agent:A/a"))


@pytest.mark.parametrize("event", AGENT_EVENTS, ids=lambda e: type(e).__name__)
def test_quarantined_agent_refuses_everything(event: Event) -> None:
    q = quarantine_agent(agent(state={}, has_state=True), "A", "a", 8)
    assert q.corrupt_position == 8
    assert quarantine_agent(q, "A", "a", 9) is q
    with pytest.raises(TransitionError):
        apply_agent(q, rec(event, stream="agent:A/a"))
    assert quarantine_agent(None, "B", "b", 3) == AgentSummary("B", "b", corrupt_position=3)
