"""A workflow's history as a step timeline, rebuilt from its stream alone (V8).

Per run and per durable command number (``seq``): its kind and name, its attempts with
their errors, when it began and ended, its outcome; sleeps with their wake times; waits
with their event type and the event they took (or their timeout); and the run-level
status changes and outside events in between. The status after each event comes from the
engine's own fold (``apply_workflow``), so it is exactly what the engine would say.

Start times that the log does not hold (a ``step.do`` logs only its outcome) are taken
from the event before it in the run, and marked as inferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eventwf.errors import TransitionError
from eventwf.model.codec import event_type
from eventwf.model.events import (
    BindingMigrated,
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
    WorkflowBlocked,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowRunning,
    WorkflowStarted,
    WorkflowWaiting,
)
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow

from .render import compact, error_text
from .rowview import RowView
from .source import LogSource, NotFound

__all__ = ["Attempt", "Change", "Command", "Received", "Run", "Timeline", "build"]

_STEP_EVENTS = (StepSucceeded, StepAttemptFailed, StepRetrying, StepFailed, SleepStarted,
                SleepCompleted, WaitStarted, EventConsumed, WaitTimedOut)


@dataclass
class Attempt:
    number: int
    started_us: int | None
    inferred: bool
    ended_us: int | None = None
    error: ErrorInfo | None = None
    retry_at_us: int | None = None


@dataclass
class Received:
    position: int
    stream_position: int
    time_us: int
    event_type: str
    payload: Any
    consumed_by: int | None = None  # seq of the wait that took it
    consumed_at: int | None = None  # log position of that event.consumed


@dataclass
class Command:
    seq: int
    kind: str
    name: str | None
    started_us: int | None
    inferred: bool  # the start is the time of the event before it, not a logged start
    positions: list[int] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    ended_us: int | None = None
    outcome: str = "in progress"
    value: Any = None
    error: ErrorInfo | None = None
    wake_at_us: int | None = None
    event_type: str | None = None
    timeout_at_us: int | None = None
    consumed: Received | None = None
    paused_us: int = 0  # time paused while it was pending: added to its timer (R5)

    @property
    def duration_us(self) -> int | None:
        if self.started_us is None or self.ended_us is None:
            return None
        return self.ended_us - self.started_us


@dataclass
class Change:
    """A run-level event (started, running, paused, …) and the status after it."""

    position: int
    time_us: int
    type: str
    status: str
    detail: str = ""


@dataclass
class Run:
    number: int
    start_position: int
    start_us: int
    commands: dict[int, Command] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    received: dict[int, Received] = field(default_factory=dict)  # by stream position
    ended: str | None = None  # why it ended: restarted, complete, errored, terminated


@dataclass
class Timeline:
    workflow_id: str
    stream: str
    started: WorkflowStarted | None = None
    summary: WorkflowSummary | None = None
    runs: list[Run] = field(default_factory=list)
    events: int = 0
    first_position: int | None = None
    last_position: int | None = None
    problem: tuple[int, str] | None = None  # the first row the timeline could not use
    unread: int = 0  # rows after that problem
    stored_status: str | None = None  # what the projection table says
    _mark_us: int | None = None  # time of the last event the run itself caused
    _paused_at: int | None = None

    def feed(self, rec: Recorded) -> None:
        """Apply one event; ``TransitionError`` if the engine's fold refuses it."""
        self.summary = apply_workflow(self.summary, rec)
        event = rec.event
        if isinstance(event, WorkflowStarted | WorkflowRestarted):
            if isinstance(event, WorkflowStarted):
                self.started = event
            if self.runs and self.runs[-1].ended is None:
                self.runs[-1].ended = "restarted"
            self.runs.append(Run(self.summary.run, rec.position, rec.time_us))
        run = self.runs[-1]
        if self.summary.finished:
            run.ended = self.summary.status
        if isinstance(event, EventReceived):
            run.received[rec.stream_position] = Received(
                rec.position, rec.stream_position, rec.time_us, event.event_type, event.payload)
        elif isinstance(event, _STEP_EVENTS):
            _step(run, rec, self._mark_us)
            self._mark_us = rec.time_us
        else:
            run.changes.append(Change(rec.position, rec.time_us, event_type(event),
                                      self.summary.status, _change_detail(event)))
            if isinstance(event, WorkflowRunning | WorkflowStarted | WorkflowRestarted):
                self._mark_us = rec.time_us
            self._pauses(run, rec)

    def _pauses(self, run: Run, rec: Recorded) -> None:
        """Time spent paused is added to the timers in progress (specs/replay.md R5)."""
        if self.summary is None or self.summary.status != "paused":
            if self._paused_at is not None and isinstance(rec.event, WorkflowResumed):
                for command in run.commands.values():
                    if command.ended_us is None:
                        command.paused_us += rec.time_us - self._paused_at
            self._paused_at = None
        elif self._paused_at is None:
            self._paused_at = rec.time_us


def _change_detail(event: Event) -> str:
    match event:
        case WorkflowStarted():
            return f"by agent {event.agent_class}/{event.agent_name}"
        case WorkflowCompleted(output=output):
            return f"output {compact(output)}"
        case WorkflowErrored(error=error):
            return error_text(error)
        case WorkflowBlocked(error=error):
            return error.message  # it names the command (the event's seq is the one before)
        case WorkflowRestarted(reset_tracking=reset):
            return "tracking reset" if reset else "tracking kept"
        case BindingMigrated(old_name=old, new_name=new):
            return f"binding {old} -> {new}"
        case WorkflowWaiting(seq=seq):
            return f"the replayed run waits again on command #{seq}"
    return ""


def _kind(event: Event) -> tuple[str, str | None]:
    match event:
        case StepSucceeded(kind=kind, name=name) | StepFailed(kind=kind, name=name):
            return kind, name
        case SleepStarted(until=until, name=name):
            return ("sleep_until" if until else "sleep"), name
        case StepAttemptFailed(name=name) | StepRetrying(name=name):
            return "do", name
        case WaitStarted(name=name) | EventConsumed(name=name) | WaitTimedOut(name=name):
            return "wait", name
    return "sleep", None  # SleepCompleted before its start: only a damaged log does that


def _step(run: Run, rec: Recorded, mark_us: int | None) -> None:
    event = rec.event
    seq = getattr(event, "seq", -1)
    command = run.commands.get(seq)
    if command is None:
        kind, name = _kind(event)
        logged = isinstance(event, SleepStarted | WaitStarted)
        start = rec.time_us if logged else mark_us
        command = run.commands[seq] = Command(seq, kind, name, start, not logged)
    command.positions.append(rec.position)
    _apply_step(command, run, rec)


def _attempt(command: Command, number: int, time_us: int | None, inferred: bool) -> Attempt:
    for attempt in command.attempts:
        if attempt.number == number:
            return attempt
    attempt = Attempt(number, time_us, inferred)
    command.attempts.append(attempt)
    return attempt


def _apply_step(command: Command, run: Run, rec: Recorded) -> None:
    event, at = rec.event, rec.time_us
    match event:
        case StepSucceeded(attempt=number, value=value):
            _close_attempt(command, number, at, None)
            command.ended_us, command.outcome, command.value = at, "succeeded", value
        case StepFailed(attempt=number, error=error):
            _close_attempt(command, number, at, error)
            command.ended_us, command.outcome, command.error = at, "failed", error
        case StepAttemptFailed(attempt=number, error=error, retry_at_us=retry_at):
            _close_attempt(command, number, at, error).retry_at_us = retry_at
        case StepRetrying(attempt=number):
            attempt = _attempt(command, number, at, False)
            attempt.started_us, attempt.inferred, attempt.ended_us = at, False, None
        case SleepStarted(wake_at_us=wake_at):
            command.wake_at_us = wake_at
        case SleepCompleted():
            command.ended_us, command.outcome = at, "completed"
        case WaitStarted(event_type=event_type, timeout_at_us=timeout_at):
            command.event_type, command.timeout_at_us = event_type, timeout_at
        case EventConsumed(event_type=event_type, received=received):
            command.event_type, command.ended_us, command.outcome = event_type, at, "consumed"
            command.consumed = run.received.get(received)
            if command.consumed is not None:
                command.consumed.consumed_by = command.seq
                command.consumed.consumed_at = rec.position
        case WaitTimedOut(event_type=event_type):
            command.event_type, command.ended_us, command.outcome = event_type, at, "timed out"


def _close_attempt(command: Command, number: int, at: int, error: ErrorInfo | None) -> Attempt:
    first = number == 1 or not command.attempts
    attempt = _attempt(command, number, command.started_us if first else None,
                       command.inferred if first else True)
    attempt.ended_us, attempt.error = at, error
    return attempt


def build(log: LogSource, workflow_id: str) -> Timeline:
    """The timeline of ``wf:<workflow_id>``, read in batches and folded as the engine does."""
    workflow_id = workflow_id.removeprefix("wf:")
    timeline = Timeline(workflow_id, "wf:" + workflow_id)
    for item in log.stream_views(timeline.stream):
        if timeline.first_position is None:
            timeline.first_position = item.row.position
        timeline.last_position = item.row.position
        if timeline.problem is not None:
            timeline.unread += 1
        else:
            timeline.problem = _use(timeline, item)
        timeline.events += 1
    if timeline.events == 0:
        raise NotFound(f"no workflow {workflow_id!r} in {log.path} (no stream "
                        f"{timeline.stream!r}); `streams --kind wf` lists them")
    timeline.stored_status = log.workflow_status(workflow_id)
    return timeline


def _use(timeline: Timeline, item: RowView) -> tuple[int, str] | None:
    """Fold one checked row; the problem that stops the timeline, if any."""
    rec = item.recorded()
    if item.problem is not None or rec is None:
        return item.row.position, item.problem or "does not decode"
    try:
        timeline.feed(rec)
    except TransitionError as exc:
        return item.row.position, f"the engine's fold refuses it: {exc}"
    return None
