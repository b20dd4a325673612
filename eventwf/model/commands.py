"""The command rules of a workflow run (replay.md R12, R14): which command events may follow.

Theory of operation: a run issues durable commands numbered 0, 1, 2, ... in the order
their first event is logged. A command begins with its first event (its outcome for a
one-shot command such as a step that succeeded at once; ``SleepStarted``, ``WaitStarted``
or a failed first attempt for the others), which names the run's task that issued it
(``()`` for ``run`` itself, ``(k,)`` for the k-th task it started, and so on), and ends
with its outcome. A command still in progress is *pending* (a sleep, a back-off, a wait,
or an attempt resumed after a back-off); each task has at most one pending command, and
only a pending command's own events end it. Events received from outside are kept until a
wait consumes them, each at most once, by its stream position and its type.

The fold applies these rules to every append (the writer), every rebuild and ``verify``;
replay raises ``CorruptLogError`` for histories they refuse and never refuses one they
take. Each function takes a run's state and an event and returns the fields that change,
or raises ``TransitionError`` naming what is wrong. No I/O, no trio, no sqlite.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from eventwf.errors import TransitionError
from eventwf.model.events import (
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
    WorkflowWaiting,
)

__all__ = ["CHANGES", "CLEARED", "MAILBOX_LIMIT", "Pending", "RunState"]

# A run holds at most this many received, unconsumed events: the writer refuses more when it
# decides an append (a log written before may hold more; the fold takes it as it is).
MAILBOX_LIMIT: Final = 1000

# ("sleep" | "backoff" | "wait" | "attempt", command number, the task that issued it)
Pending = tuple[str, int, tuple[int, ...]]
Changes = dict[str, Any]

# What a run's end (or the end of its last pending command) clears: the timer fields and
# the pending commands.
CLEARED: Final[Changes] = {"wake_at_us": None, "wake_span_us": 0, "wait_type": None,
                           "paused_us": None, "pending": ()}
# The timer fields describe the run's one pending timer or wait; with several pending (a
# concurrent run) they are unset, and such a run neither hibernates nor sleeps through open.
_NO_TIMER: Final[Changes] = {"wake_at_us": None, "wake_span_us": 0, "wait_type": None}


class RunState(Protocol):
    """The fields of a workflow's summary these rules read."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def commands(self) -> int: ...
    @property
    def pending(self) -> tuple[Pending, ...]: ...
    @property
    def inbox(self) -> tuple[tuple[int, str], ...]: ...


def _refuse(s: RunState, rec: Recorded, what: str) -> TransitionError:
    return TransitionError(
        f"{type(rec.event).__name__} at stream position {rec.stream_position} of workflow "
        f"{s.workflow_id!r} {what}")


def _describe(pending: Pending | None) -> str:
    if pending is None:
        return "nothing"
    task = f" of task {'.'.join(map(str, pending[2]))}" if pending[2] else ""
    return f"the {pending[0]} of command #{pending[1]}{task}"


def _find(s: RunState, kind: str, seq: int) -> Pending | None:
    for pending in s.pending:
        if pending[0] == kind and pending[1] == seq:
            return pending
    return None


def _begin(s: RunState, rec: Recorded, seq: int, task: tuple[int, ...]) -> Changes:
    """Command ``seq`` begins in ``task``: the next number, nothing pending in that task."""
    for pending in s.pending:
        if pending[2] == task:
            raise _refuse(s, rec, f"begins command #{seq} while {_describe(pending)} is "
                          "pending")
    if seq != s.commands:
        raise _refuse(s, rec, f"begins command #{seq}, but the run's next command is "
                      f"#{s.commands}")
    return {"commands": seq + 1}


def _after(s: RunState, rest: tuple[Pending, ...], added: Pending | None = None,
           timer: Changes | None = None) -> Changes:
    """The pending commands ``rest`` (plus ``added``, whose timer is ``timer``)."""
    pending = rest if added is None else (*rest, added)
    if not pending:
        return CLEARED
    if len(pending) == 1 and timer is not None:
        return {**timer, "pending": pending}
    return {**_NO_TIMER, "pending": pending}


def _without(s: RunState, gone: Pending) -> tuple[Pending, ...]:
    return tuple(p for p in s.pending if p is not gone)


def _end(s: RunState, rec: Recorded, kind: str, seq: int) -> Changes:
    """The pending ``kind`` of command ``seq`` ends."""
    found = _find(s, kind, seq)
    if found is None:
        raise _refuse(s, rec, f"ends the {kind} of command #{seq}, but "
                      f"{_pending_text(s)} pending")
    return _after(s, _without(s, found))


def _pending_text(s: RunState) -> str:
    if not s.pending:
        return "nothing is"
    return ", ".join(_describe(p) for p in s.pending) + (" is" if len(s.pending) == 1
                                                         else " are")


def _stays(s: RunState, e: SleepStarted | WaitStarted | StepAttemptFailed) -> Changes:
    """A wait begun while other tasks of the run still run leaves the status as it is."""
    return {"status": s.status} if e.concurrent else {}


def _outcome(s: RunState, rec: Recorded, e: StepSucceeded | StepFailed) -> Changes:
    found = _find(s, "attempt", e.seq)
    if found is not None:
        return _after(s, _without(s, found))
    return _begin(s, rec, e.seq, e.task)


def _attempt_failed(s: RunState, rec: Recorded, e: StepAttemptFailed) -> Changes:
    found = _find(s, "attempt", e.seq)
    if found is not None:
        rest, task, changes = _without(s, found), found[2], {}
    else:
        rest, task, changes = s.pending, e.task, _begin(s, rec, e.seq, e.task)
    timer = {"wake_at_us": e.retry_at_us, "wake_span_us": e.delay_us, "wait_type": None}
    return {**changes, **_after(s, rest, ("backoff", e.seq, task), timer), **_stays(s, e)}


def _retrying(s: RunState, rec: Recorded, e: StepRetrying) -> Changes:
    found = _find(s, "backoff", e.seq)
    if found is None:
        raise _refuse(s, rec, f"ends the backoff of command #{e.seq}, but "
                      f"{_pending_text(s)} pending")
    return _after(s, _without(s, found), ("attempt", e.seq, found[2]), _NO_TIMER)


def _sleeping(s: RunState, rec: Recorded, e: SleepStarted) -> Changes:
    timer = {"wake_at_us": e.wake_at_us, "wake_span_us": e.duration_us, "wait_type": None}
    return {**_begin(s, rec, e.seq, e.task),
            **_after(s, s.pending, ("sleep", e.seq, e.task), timer), **_stays(s, e)}


def _slept(s: RunState, rec: Recorded, e: SleepCompleted) -> Changes:
    return _end(s, rec, "sleep", e.seq)


def _waiting(s: RunState, rec: Recorded, e: WaitStarted) -> Changes:
    timer = {"wake_at_us": e.timeout_at_us, "wake_span_us": e.timeout_us,
             "wait_type": e.event_type}
    return {**_begin(s, rec, e.seq, e.task),
            **_after(s, s.pending, ("wait", e.seq, e.task), timer), **_stays(s, e)}


def _timed_out(s: RunState, rec: Recorded, e: WaitTimedOut) -> Changes:
    return _end(s, rec, "wait", e.seq)


def _received(s: RunState, rec: Recorded, e: EventReceived) -> Changes:
    return {"inbox": (*s.inbox, (rec.stream_position, e.event_type))}


def _consumed(s: RunState, rec: Recorded, e: EventConsumed) -> Changes:
    entry = (e.received, e.event_type)
    if entry not in s.inbox:
        raise _refuse(s, rec, f"consumes stream position {e.received} as a {e.event_type!r} "
                      "event, but the run holds no such unconsumed event")
    # a pending wait ends; otherwise the wait begins and ends here (its event was buffered)
    found = _find(s, "wait", e.seq)
    if found is not None:
        changes = _after(s, _without(s, found))
    else:
        changes = {**_begin(s, rec, e.seq, e.task), **_after(s, s.pending)}
    return {**changes, "inbox": tuple(item for item in s.inbox if item != entry)}


def _waiting_again(s: RunState, rec: Recorded, e: WorkflowWaiting) -> Changes:
    for pending in s.pending:
        if pending[1] == e.seq and pending[0] != "attempt":
            return {}
    raise _refuse(s, rec, f"waits again on command #{e.seq}, but {_pending_text(s)} "
                  "pending")


# Event class -> its rule: the fields it changes (the fold adds status, head and times).
CHANGES: Final[dict[type[Event], Any]] = {
    StepSucceeded: _outcome,
    StepFailed: _outcome,
    StepAttemptFailed: _attempt_failed,
    StepRetrying: _retrying,
    SleepStarted: _sleeping,
    SleepCompleted: _slept,
    WaitStarted: _waiting,
    WaitTimedOut: _timed_out,
    EventReceived: _received,
    EventConsumed: _consumed,
    WorkflowWaiting: _waiting_again,
}
