"""The command rules of a workflow run (replay.md R12): which command events may follow.

Theory of operation: a run issues durable commands numbered 0, 1, 2, ... in order (replay
matches them by number). A command begins with its first event (its outcome for a one-shot
command such as a step that succeeded at once; ``SleepStarted``, ``WaitStarted`` or a
failed first attempt for the others) and ends with its outcome. While one command is
*pending* (a sleep, a back-off, a wait, or an attempt resumed after a back-off) no other
begins, and only that command's events may follow. Events received from outside are kept
until a wait consumes them, each at most once, by its stream position and its type.

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

Pending = tuple[str, int]  # ("sleep" | "backoff" | "wait" | "attempt", command number)
Changes = dict[str, Any]

# What a run's end (or a pending command's end) clears: the timer fields and the pending
# command.
CLEARED: Final[Changes] = {"wake_at_us": None, "wake_span_us": 0, "wait_type": None,
                           "paused_us": None, "pending": None}


class RunState(Protocol):
    """The fields of a workflow's summary these rules read."""

    @property
    def workflow_id(self) -> str: ...
    @property
    def commands(self) -> int: ...
    @property
    def pending(self) -> Pending | None: ...
    @property
    def inbox(self) -> tuple[tuple[int, str], ...]: ...


def _refuse(s: RunState, rec: Recorded, what: str) -> TransitionError:
    return TransitionError(
        f"{type(rec.event).__name__} at stream position {rec.stream_position} of workflow "
        f"{s.workflow_id!r} {what}")


def _describe(pending: Pending | None) -> str:
    return "nothing" if pending is None else f"the {pending[0]} of command #{pending[1]}"


def _begin(s: RunState, rec: Recorded, seq: int) -> Changes:
    """Command ``seq`` begins: it must be the next number, with nothing pending."""
    if s.pending is not None:
        raise _refuse(s, rec, f"begins command #{seq} while {_describe(s.pending)} is pending")
    if seq != s.commands:
        raise _refuse(s, rec, f"begins command #{seq}, but the run's next command is "
                      f"#{s.commands}")
    return {"commands": seq + 1}


def _end(s: RunState, rec: Recorded, kind: str, seq: int) -> Changes:
    """The pending ``kind`` of command ``seq`` ends."""
    if s.pending != (kind, seq):
        raise _refuse(s, rec, f"ends the {kind} of command #{seq}, but "
                      f"{_describe(s.pending)} is pending")
    return CLEARED


def _outcome(s: RunState, rec: Recorded, e: StepSucceeded | StepFailed) -> Changes:
    if s.pending == ("attempt", e.seq):
        return {"pending": None}
    return _begin(s, rec, e.seq)


def _attempt_failed(s: RunState, rec: Recorded, e: StepAttemptFailed) -> Changes:
    changes = {} if s.pending == ("attempt", e.seq) else _begin(s, rec, e.seq)
    return {**changes, "wake_at_us": e.retry_at_us, "wake_span_us": e.delay_us,
            "wait_type": None, "pending": ("backoff", e.seq)}


def _retrying(s: RunState, rec: Recorded, e: StepRetrying) -> Changes:
    return {**_end(s, rec, "backoff", e.seq), "pending": ("attempt", e.seq)}


def _sleeping(s: RunState, rec: Recorded, e: SleepStarted) -> Changes:
    return {**_begin(s, rec, e.seq), "wake_at_us": e.wake_at_us,
            "wake_span_us": e.duration_us, "wait_type": None, "pending": ("sleep", e.seq)}


def _slept(s: RunState, rec: Recorded, e: SleepCompleted) -> Changes:
    return _end(s, rec, "sleep", e.seq)


def _waiting(s: RunState, rec: Recorded, e: WaitStarted) -> Changes:
    return {**_begin(s, rec, e.seq), "wake_at_us": e.timeout_at_us,
            "wake_span_us": e.timeout_us, "wait_type": e.event_type,
            "pending": ("wait", e.seq)}


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
    ended = _end(s, rec, "wait", e.seq) if s.pending is not None else _begin(s, rec, e.seq)
    return {**ended, **CLEARED, "inbox": tuple(item for item in s.inbox if item != entry)}


def _waiting_again(s: RunState, rec: Recorded, e: WorkflowWaiting) -> Changes:
    if s.pending is None or s.pending[0] == "attempt" or s.pending[1] != e.seq:
        raise _refuse(s, rec, f"waits again on command #{e.seq}, but "
                      f"{_describe(s.pending)} is pending")
    return {}


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
