"""Pure fold of a workflow's events into its summary (status machine, tracking fields).

Theory of operation: a workflow's status changes only through :data:`TRANSITIONS`, one
table mapping (event type, current status) to the next status. An event that the table
does not allow raises :class:`TransitionError` and changes nothing; the writer checks every
append against the fold before it commits, so the log never holds an illegal sequence.
No function here reads the clock, the database or a global: times come from the log rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Literal, TypeAlias

import msgspec

from eventwf.errors import TransitionError
from eventwf.model.commands import CHANGES as COMMAND_CHANGES
from eventwf.model.commands import CLEARED, Pending
from eventwf.model.events import (
    BindingMigrated,
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
    StreamClaimed,
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
    parse_stream,
)
from eventwf.model.status import ACTIVE, TERMINAL, WorkflowStatus

__all__ = [
    "HEAD_ONLY",
    "TRANSITIONS",
    "WorkflowSummary",
    "apply_workflow",
    "quarantine",
]

_SAME: Final = "="  # keep the current status
_Target: TypeAlias = WorkflowStatus | Literal["="]
_Table: TypeAlias = dict[WorkflowStatus, _Target]

# (event type) -> {current status -> next status}. Anything missing is illegal.
# A concurrent run (replay.md R14) may log a step's outcome or begin a wait while the
# status says ``waiting`` (a task resumed without a durable wake, e.g. on an agent call):
# an outcome makes it ``running``; the command rules still refuse every malformed history.
_RUN_STEP: _Table = {"running": "running", "waitingForPause": "waitingForPause",
                     "waiting": "running"}
_RUN_WAIT: _Table = {"running": "waiting", "waitingForPause": "waitingForPause",
                     "waiting": "waiting"}
_WAKE: _Table = {"waiting": "running", "running": "running",
                 "waitingForPause": "waitingForPause"}
TRANSITIONS: Final[dict[type[Event], _Table]] = {
    WorkflowRunning: {"queued": "running"},
    StepSucceeded: _RUN_STEP,
    StepFailed: _RUN_STEP,
    StepAttemptFailed: _RUN_WAIT,
    SleepStarted: _RUN_WAIT,
    WaitStarted: _RUN_WAIT,
    WorkflowWaiting: _RUN_WAIT,
    StepRetrying: _WAKE,
    SleepCompleted: _WAKE,
    EventConsumed: _WAKE,
    WaitTimedOut: _WAKE,
    EventReceived: {status: _SAME for status in ACTIVE},
    # ``waiting``: a concurrent run whose last tasks were cancelled while others waited
    # (a sibling failed, or a cancel scope of ``run`` ended) unwinds from there (R14)
    WorkflowCompleted: {"running": "complete", "waitingForPause": "complete",
                        "waiting": "complete"},
    WorkflowErrored: {"running": "errored", "waitingForPause": "errored",
                      "waiting": "errored"},
    PauseRequested: {"running": "waitingForPause"},
    WorkflowPaused: {"queued": "paused", "waiting": "paused", "waitingForPause": "paused"},
    WorkflowResumed: {"paused": "queued", "waitingForPause": "running"},
    WorkflowBlocked: {"running": "paused", "waiting": "paused", "waitingForPause": "paused"},
    WorkflowTerminated: {status: "terminated" for status in ACTIVE},
    WorkflowRestarted: {status: "queued" for status in ACTIVE | TERMINAL},
    TrackingDeleted: {status: _SAME for status in ACTIVE | TERMINAL},
    BindingMigrated: {status: _SAME for status in ACTIVE | TERMINAL},
}


class WorkflowSummary(msgspec.Struct, frozen=True, gc=False):
    """What the engine keeps per workflow: status, tracking fields, where its run starts."""

    workflow_id: str
    workflow_name: str
    agent_class: str
    agent_name: str
    status: WorkflowStatus
    created_us: int
    updated_us: int
    completed_us: int | None = None
    metadata: dict[str, Any] | None = None
    error_name: str | None = None
    error_message: str | None = None
    output: Any = None
    tracked: bool = True
    run: int = 1
    started_at: int = 0  # stream position of the last WorkflowStarted
    run_start: int = 0  # stream position where the current run begins
    head: int = 0  # last stream position
    # (stream position, event type) of each received, unconsumed event of the current run
    inbox: tuple[tuple[int, str], ...] = ()
    corrupt_position: int | None = None
    wake_at_us: int | None = None  # when the pending timer, back-off or wait timeout fires
    wake_span_us: int = 0  # that timer's full length (a restart never waits longer)
    wait_type: str | None = None  # the event type a pending wait consumes
    paused_us: int | None = None  # when the current pause began
    commands: int = 0  # how many durable commands the current run has begun
    # the commands pending now: ("sleep" | "backoff" | "wait" | "attempt", number, task)
    pending: tuple[Pending, ...] = ()

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def mailbox(self) -> int:
        """How many received events the current run has not consumed yet."""
        return len(self.inbox)


def _describe(summary: WorkflowSummary | None) -> str:
    if summary is None:
        return "does not exist"
    return f"is {summary.status}"


def apply_workflow(summary: WorkflowSummary | None, rec: Recorded) -> WorkflowSummary:
    """The summary after ``rec``; ``TransitionError`` if the event is not allowed now."""
    event = rec.event
    cls = event.__class__
    if summary is not None:
        if cls is StreamClaimed:  # another engine's fence (PG13): only the head moves
            return _replace(summary, head=rec.stream_position)
        move = _MOVES.get(cls, _NO_MOVES).get(summary.status)
        if move is not None:
            return move(summary, rec, event)  # the hot path: one precomputed transition
        if summary.status == "unknown":
            raise TransitionError(
                f"workflow {summary.workflow_id!r} is quarantined (corrupt event at log "
                f"position {summary.corrupt_position}); nothing more is appended to it"
            )
    if cls is WorkflowStarted:
        return _start(summary, rec, event)  # type: ignore[arg-type]
    if summary is None:
        raise TransitionError(
            f"{cls.__name__} for workflow stream {rec.stream!r}, which was never started"
        )
    if cls not in TRANSITIONS:
        raise TransitionError(f"{cls.__name__} does not belong on a workflow stream")
    raise TransitionError(
        f"{cls.__name__} is not allowed: workflow {summary.workflow_id!r} {_describe(summary)}"
    )


_replace = msgspec.structs.replace


def _start(
    summary: WorkflowSummary | None, rec: Recorded, event: WorkflowStarted
) -> WorkflowSummary:
    if summary is not None and (summary.tracked or not summary.finished):
        raise TransitionError(
            f"workflow {summary.workflow_id!r} {_describe(summary)} and "
            f"{'tracked' if summary.tracked else 'still active'}; it cannot be started again"
        )
    kind, workflow_id, _ = parse_stream(rec.stream)
    if kind != "wf":
        raise TransitionError(f"WorkflowStarted on {rec.stream!r}, which is not a workflow stream")
    return WorkflowSummary(
        workflow_id=workflow_id,
        workflow_name=event.workflow_name,
        agent_class=event.agent_class,
        agent_name=event.agent_name,
        status="queued",
        created_us=rec.time_us,
        updated_us=rec.time_us,
        metadata=event.metadata,
        run=1 if summary is None else summary.run + 1,
        started_at=rec.stream_position,
        run_start=rec.stream_position,
        head=rec.stream_position,
    )


# What each event changes besides the status and the head: one function per event class
# (a table, not a chain of ``match`` cases, because a whole-log rebuild runs it per event).
# The command events follow the run's command rules (``_commands``, replay.md R12); their
# timer fields say which timer or wait is pending, so idle workflows need no coroutine,
# and a pause shifts the timer on resume.
_Changes = dict[str, Any]
_NOTHING: Final[_Changes] = {}
_CLEARED: Final[_Changes] = CLEARED


def _cleared(s: WorkflowSummary, rec: Recorded, e: Event) -> _Changes:
    return _CLEARED


def _completed(s: WorkflowSummary, rec: Recorded, e: WorkflowCompleted) -> _Changes:
    return {"output": e.output, "error_name": None, "error_message": None, **_CLEARED}


def _errored(s: WorkflowSummary, rec: Recorded, e: WorkflowErrored) -> _Changes:
    return {"error_name": e.error.name, "error_message": e.error.message, **_CLEARED}


def _paused(s: WorkflowSummary, rec: Recorded, e: WorkflowPaused) -> _Changes:
    return {"paused_us": rec.time_us} if s.paused_us is None else _NOTHING


def _blocked(s: WorkflowSummary, rec: Recorded, e: WorkflowBlocked) -> _Changes:
    changes: _Changes = {"error_name": e.error.name, "error_message": e.error.message}
    if s.paused_us is None:
        changes["paused_us"] = rec.time_us
    return changes


def _resumed(s: WorkflowSummary, rec: Recorded, e: WorkflowResumed) -> _Changes:
    changes: _Changes = {"error_name": None, "error_message": None}
    if s.paused_us is not None:
        changes["paused_us"] = None
        if s.wake_at_us is not None:
            changes["wake_at_us"] = s.wake_at_us + rec.time_us - s.paused_us
    return changes


def _restarted(s: WorkflowSummary, rec: Recorded, e: WorkflowRestarted) -> _Changes:
    changes: _Changes = {
        "run": s.run + 1, "run_start": rec.stream_position, "inbox": (), "commands": 0,
        "completed_us": None, "output": None, "error_name": None, "error_message": None,
        "updated_us": rec.time_us, **_CLEARED,
    }
    if e.reset_tracking:
        changes["created_us"] = rec.time_us
    return changes


def _untracked(s: WorkflowSummary, rec: Recorded, e: TrackingDeleted) -> _Changes:
    if not s.tracked:
        raise TransitionError(f"workflow {s.workflow_id!r} is not tracked")
    return {"tracked": False, "updated_us": rec.time_us}


def _migrated(s: WorkflowSummary, rec: Recorded, e: BindingMigrated) -> _Changes:
    if s.workflow_name != e.old_name:
        raise TransitionError(
            f"workflow {s.workflow_id!r} has binding {s.workflow_name!r}, not {e.old_name!r}"
        )
    return {"workflow_name": e.new_name, "updated_us": rec.time_us}


_CHANGES: Final[dict[type[Event], Callable[[WorkflowSummary, Recorded, Any], _Changes]]] = {
    **COMMAND_CHANGES,
    WorkflowTerminated: _cleared,
    WorkflowCompleted: _completed,
    WorkflowErrored: _errored,
    WorkflowPaused: _paused,
    WorkflowBlocked: _blocked,
    WorkflowResumed: _resumed,
    WorkflowRestarted: _restarted,
    TrackingDeleted: _untracked,
    BindingMigrated: _migrated,
}

# Per event class, the statuses in which it is allowed and changes nothing but the head (most
# step events): a whole-log fold may leave the summary as it is until the stream's last event.
HEAD_ONLY: Final[dict[type[Event], frozenset[str]]] = {
    cls: frozenset(status for status, target in table.items()
                   if target in (_SAME, status))
    for cls, table in TRANSITIONS.items()
    if cls not in _CHANGES and cls is not WorkflowStarted
}


_Move = Callable[[WorkflowSummary, Recorded, Any], WorkflowSummary]


def _move(status: WorkflowStatus, target: _Target,
          changes: Callable[..., _Changes] | None) -> _Move:
    """The transition of an event from ``status`` to ``target``, built once: a rebuild
    applies one per event, so it looks nothing up in the tables."""
    if target in (_SAME, status):
        if changes is None:
            return lambda s, rec, e: _replace(s, head=rec.stream_position)
        return lambda s, rec, e: _replace(s, **changes(s, rec, e), head=rec.stream_position)
    if changes is None and target not in TERMINAL:
        return lambda s, rec, e: _replace(s, status=target, updated_us=rec.time_us,
                                          head=rec.stream_position)
    terminal = target in TERMINAL

    def change(s: WorkflowSummary, rec: Recorded, e: Any) -> WorkflowSummary:
        moved: _Changes = {"status": target, "updated_us": rec.time_us,
                           "head": rec.stream_position}
        if terminal:
            moved["completed_us"] = rec.time_us
        if changes is not None:
            moved.update(changes(s, rec, e))  # what the event sets wins
        return _replace(s, **moved)
    return change


# (event class) -> {current status -> its transition}; what is missing is not allowed.
_MOVES: Final[dict[type[Event], dict[str, _Move]]] = {
    cls: {status: _move(status, target, _CHANGES.get(cls)) for status, target in table.items()}
    for cls, table in TRANSITIONS.items() if cls is not WorkflowStarted
}
_NO_MOVES: Final[dict[str, _Move]] = {}


def quarantine(
    summary: WorkflowSummary | None, stream: str, position: int, message: str, time_us: int
) -> WorkflowSummary:
    """The summary of a workflow whose event at ``position`` cannot be read."""
    _, workflow_id, _ = parse_stream(stream)
    if summary is None:
        summary = WorkflowSummary(
            workflow_id=workflow_id,
            workflow_name="",
            agent_class="",
            agent_name="",
            status="queued",
            created_us=time_us,
            updated_us=time_us,
        )
    elif summary.status == "unknown":
        return summary
    return msgspec.structs.replace(
        summary,
        status="unknown",
        error_name="CorruptLogError",
        error_message=message,
        corrupt_position=position,
    )
