"""The sans-I/O replay core: decides, for each durable command ``run`` issues, what to do.

Theory of operation: a run's history is the list of commands it logged, numbered in the
order they began; each names the run's task that issued it (``()`` is ``run`` itself,
``(k,)`` the k-th task it started, ``(k, j)`` the j-th task that one started). Feed the
machine the events of the current run (from the log, then live as they commit); then,
each time a task of the workflow code calls a durable step, ask
:meth:`ReplayMachine.next`. Commands are matched per task, in that task's order, so
concurrent tasks may reach their logged commands in any interleaving (replay.md R14). The
answer is a value, never an action: serve a logged outcome, resume a timer/back-off/wait
that was in progress, or execute a new command. A command whose kind or name differs from
the log at the same place of its task raises :class:`NonDeterminismError` and nothing is
executed. This module does no I/O: no trio, no sqlite, no clock.
"""

from __future__ import annotations

from typing import Any, Literal, assert_never

from eventwf.errors import CorruptLogError, NonDeterminismError
from eventwf.model.decisions import (
    EXECUTE,
    NOT_PATCHED,
    PATCHED,
    Decision,
    Execute,
    Raise,
    Replayed,
    ResumeAttempt,
    ResumeBackoff,
    ResumeSleep,
    ResumeWait,
    describe_command,
    describe_task,
)
from eventwf.model.events import (
    ErrorInfo,
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
    WorkflowPaused,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowStarted,
)
from eventwf.model.mailbox import Mailbox

__all__ = [
    "EXECUTE",
    "Decision",
    "Execute",
    "Raise",
    "ReplayMachine",
    "Replayed",
    "ResumeAttempt",
    "ResumeBackoff",
    "ResumeSleep",
    "ResumeWait",
    "NOT_PATCHED",
    "PATCHED",
    "describe_command",
    "describe_task",
]


# How far a logged command got: done or failed (its outcome is logged), timed out (a wait),
# or still in progress (a sleep, a back-off, an attempt, a wait).
CommandState = Literal["done", "failed", "timed_out", "sleeping", "backoff", "attempting",
                       "waiting"]


class _Command:
    """One command of the history and how far it got."""

    __slots__ = ("attempt", "deadline_us", "duration_us", "error", "event_type", "index",
                 "kind", "name", "seq", "started_us", "state", "task", "value")

    def __init__(self, kind: str, name: str | None, seq: int, task: tuple[int, ...],
                 index: int) -> None:
        self.kind = kind
        self.name = name
        self.seq = seq
        self.task = task
        self.index = index  # its place among its task's commands
        self.state: CommandState = "attempting"  # set at once by the event that logged it
        self.value: Any = None
        self.error: ErrorInfo | None = None
        self.attempt = 0
        self.started_us = 0
        self.deadline_us = 0
        self.duration_us = 0
        self.event_type = ""


# The states in which a command may take each kind of event (a new command takes any).
_ATTEMPTING: frozenset[CommandState] = frozenset({"attempting"})
_UNFINISHED: frozenset[CommandState] = frozenset({"attempting", "sleeping", "backoff",
                                                  "waiting"})
_WAITING: frozenset[CommandState] = frozenset({"waiting"})


class ReplayMachine:
    """Feeds on one workflow's events; answers what each durable command should do."""

    def __init__(self, workflow_id: str, workflow_name: str) -> None:
        self.workflow_id = workflow_id
        self.workflow_name = workflow_name
        self.start: WorkflowStarted | None = None
        self.start_time_us = 0
        self._reset()

    def _reset(self) -> None:
        self._through = -1  # the last stream position fed (-1: none yet)
        self._history: list[_Command] = []
        self._by_task: dict[tuple[int, ...], list[_Command]] = {}
        self._cursors: dict[tuple[int, ...], int] = {}  # commands each task has issued
        self._issued = 0  # commands issued by the code so far
        self._unissued = 0  # logged commands the code has not issued yet
        self._mailbox = Mailbox()
        self._pauses: list[tuple[int, int]] = []
        self._paused_at: int | None = None
        self.complete_reported = False
        self.error_reported = False

    # -- feeding -------------------------------------------------------------------------

    def feed(self, rec: Recorded) -> None:
        """Apply one committed event of this workflow's stream, in log order.

        A record already fed is ignored: a runner built from the log while a batch was
        being published meets that batch's records again (replay.md R11). A record that
        skips a stream position, or that the log rules refuse, raises ``CorruptLogError``.
        """
        through = self._through
        if rec.stream_position <= through:
            return
        if through >= 0 and rec.stream_position != through + 1:
            raise CorruptLogError(
                f"event at log position {rec.position} is stream position "
                f"{rec.stream_position} of {rec.stream!r}, but the replay of its run is at "
                f"{through}: stream positions were skipped", position=rec.position)
        event = rec.event
        match event:
            case WorkflowStarted():
                self._reset()
                self.start, self.start_time_us = event, rec.time_us
            case WorkflowRestarted():
                self._reset()
            case EventReceived(event_type=event_type, payload=payload):
                self._mailbox.receive(rec.stream_position, event_type, payload, rec.time_us)
            case WorkflowPaused() | WorkflowBlocked():
                self._paused_at = rec.time_us
            case WorkflowResumed():
                if self._paused_at is not None:
                    self._pauses.append((self._paused_at, rec.time_us))
                self._paused_at = None
            case _:
                self._feed_command(rec)
        self._through = rec.stream_position

    def _command(self, seq: int, kind: str, name: str | None, rec: Recorded,
                 *, states: frozenset[CommandState] = frozenset(),
                 task: tuple[int, ...] = ()) -> _Command:
        """Command ``seq`` of the run: a new one (the next number, in ``task``, whose
        previous command has ended), or one in ``states``.

        Anything else (a number skipped, a second outcome, two pending in one task) is a
        log the engine never writes: ``CorruptLogError``, exactly where the fold refuses
        it (R12). A command's kind, name and task are those of its first event."""
        history = self._history
        if seq == len(history):
            mine = self._by_task.get(task)
            if mine and mine[-1].state in _UNFINISHED:
                last = mine[-1]
                problem = (f"command #{last.seq} ({describe_command(last.kind, last.name)}) "
                           f"of {describe_task(task)} is still {last.state}")
            else:
                if mine is None:
                    mine = self._by_task[task] = []
                cmd = _Command(kind, name, seq, task, len(mine))
                mine.append(cmd)
                history.append(cmd)
                if cmd.index >= self._cursors.get(task, 0):
                    self._unissued += 1  # logged before this replay reached it
                return cmd
        elif 0 <= seq < len(history):
            cmd = history[seq]
            if cmd.state in states:
                return cmd
            problem = (f"command #{seq} is {describe_command(cmd.kind, cmd.name)} in state "
                       f"{cmd.state}")
        else:
            problem = f"only {len(history)} commands precede it"
        raise CorruptLogError(
            f"event at log position {rec.position} ({type(rec.event).__name__} of "
            f"{describe_command(kind, name)} as command #{seq} of {rec.stream!r}) does not "
            f"fit its run: {problem}", position=rec.position)

    def _feed_command(self, rec: Recorded) -> None:
        event = rec.event
        match event:
            case StepSucceeded(seq=seq, kind=kind, name=name, value=value, attempt=attempt):
                cmd = self._command(seq, kind, name, rec, states=_ATTEMPTING, task=event.task)
                cmd.state, cmd.value, cmd.attempt = "done", value, attempt
                if kind == "report_complete":
                    self.complete_reported = True
                elif kind == "report_error":
                    self.error_reported = True
            case StepFailed(seq=seq, kind=kind, name=name, error=error, attempt=attempt):
                cmd = self._command(seq, kind, name, rec, states=_ATTEMPTING, task=event.task)
                cmd.state, cmd.error, cmd.attempt = "failed", error, attempt
            case StepAttemptFailed(seq=seq, name=name, attempt=attempt):
                cmd = self._command(seq, "do", name, rec, states=_ATTEMPTING, task=event.task)
                cmd.state, cmd.attempt, cmd.error = "backoff", attempt, event.error
                cmd.started_us, cmd.deadline_us = rec.time_us, event.retry_at_us
                cmd.duration_us = event.delay_us
            case StepRetrying(seq=seq, name=name, attempt=attempt):
                cmd = self._existing(seq, "do", name, "backoff", rec)
                cmd.state, cmd.attempt = "attempting", attempt
            case SleepStarted(seq=seq, name=name):
                cmd = self._command(seq, "sleep_until" if event.until else "sleep", name, rec,
                                    task=event.task)
                cmd.state, cmd.started_us = "sleeping", rec.time_us
                cmd.deadline_us, cmd.duration_us = event.wake_at_us, event.duration_us
            case SleepCompleted(seq=seq):
                if not 0 <= seq < len(self._history) or self._history[seq].state != "sleeping":
                    raise CorruptLogError(
                        f"event at log position {rec.position} completes command #{seq} of "
                        f"{rec.stream!r}, which is not a sleep in progress", position=rec.position)
                self._history[seq].state = "done"
            case WaitStarted() | EventConsumed() | WaitTimedOut():
                self._feed_wait(rec)
            case _:
                pass  # run-level events (status, tracking) carry no command

    def _feed_wait(self, rec: Recorded) -> None:
        event = rec.event
        match event:
            case WaitStarted(seq=seq, name=name, event_type=event_type):
                cmd = self._command(seq, "wait", name, rec, task=event.task)
                cmd.state, cmd.started_us, cmd.event_type = "waiting", rec.time_us, event_type
                cmd.deadline_us, cmd.duration_us = event.timeout_at_us, event.timeout_us
            case EventConsumed(seq=seq, name=name, received=received):
                if not self._mailbox.holds(received, event.event_type):
                    raise CorruptLogError(
                        f"event at log position {rec.position} consumes stream position "
                        f"{received} of {rec.stream!r} as a {event.event_type!r} event, but "
                        "the run holds no such unconsumed event", position=rec.position)
                cmd = self._command(seq, "wait", name, rec, states=_WAITING, task=event.task)
                cmd.state, cmd.value = "done", self._mailbox.take(received)
            case WaitTimedOut(seq=seq, name=name):
                self._existing(seq, "wait", name, "waiting", rec).state = "timed_out"

    def _existing(self, seq: int, kind: str, name: str, state: CommandState,
                  rec: Recorded) -> _Command:
        """Command ``seq``, which must already be in ``state`` (a timer it ends)."""
        if seq < len(self._history):
            return self._command(seq, kind, name, rec, states=frozenset({state}))
        raise CorruptLogError(
            f"event at log position {rec.position} ({type(rec.event).__name__}) ends command "
            f"#{seq} of {rec.stream!r}, which has not begun", position=rec.position)

    # -- deciding ------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """How many commands the code has issued so far in this replay."""
        return self._issued

    @property
    def commands(self) -> int:
        """How many commands the current run has logged (the next one's number)."""
        return len(self._history)

    def next(self, kind: str, name: str | None, task: tuple[int, ...] = ()) -> Decision:
        """What the next command of ``task`` (``kind``, ``name``) must do."""
        return self.issue(kind, name, task)[0]

    def issue(self, kind: str, name: str | None, task: tuple[int, ...] = ()
              ) -> tuple[Decision, int | None, int]:
        """The next command of ``task`` (``kind``, ``name``) is issued: the decision, the
        logged command's number (None for a new one) and its place in the task.

        A patch marker (``patched``, R15) the log holds where the code asks for something
        else is skipped (the call was removed after every old run ended); ``patched`` where
        the log holds something else is ``NOT_PATCHED`` and issues nothing (the history was
        recorded before the patch)."""
        index = self._cursors.get(task, 0)
        mine = self._by_task.get(task, ())
        if kind != PATCHED:
            while index < len(mine) and mine[index].kind == PATCHED:
                index += 1
                self._unissued -= 1
        if index >= len(mine):
            self._cursors[task] = index + 1
            self._issued += 1
            return EXECUTE, None, index
        cmd = mine[index]
        if kind == PATCHED and (cmd.kind, cmd.name) != (kind, name):
            self._cursors[task] = index
            return NOT_PATCHED, None, index
        if cmd.kind != kind or cmd.name != name:
            self._cursors[task] = index
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} ({self.workflow_name}) diverged from its log at "
                f"command #{cmd.seq}: the log has {self._label(cmd)} but the code asked for "
                f"{describe_command(kind, name)}{self._in(task)}. Check that run() issues the "
                "same steps in the same order on every run (in each of its tasks), or put "
                "changed code behind step.patched(); fix the code and resume, or "
                "restart/terminate it."
            )
        self._cursors[task] = index + 1
        self._issued += 1
        self._unissued -= 1
        return self._decide(cmd), cmd.seq, index

    @staticmethod
    def _in(task: tuple[int, ...]) -> str:
        return f" in {describe_task(task)}" if task else ""

    def _decide(self, cmd: _Command) -> Decision:
        offset = self._paused_since(cmd.started_us)  # timers in progress move on by pauses
        match cmd.state:
            case "done":
                return Replayed(cmd.value)
            case "failed":
                return Raise(cmd.error)
            case "timed_out":
                return Raise(None, timeout=True)
            case "sleeping":
                return ResumeSleep(cmd.deadline_us + offset, cmd.duration_us)
            case "backoff":
                return ResumeBackoff(cmd.attempt, cmd.deadline_us + offset, cmd.duration_us)
            case "attempting":
                return ResumeAttempt(cmd.attempt)
            case "waiting":
                return ResumeWait(cmd.event_type, cmd.deadline_us + offset, cmd.duration_us)
            case unreachable:
                assert_never(unreachable)

    def _paused_since(self, started_us: int) -> int:
        return sum(resumed - paused for paused, resumed in self._pauses if paused >= started_us)

    def _label(self, cmd: _Command) -> str:
        mine = self._by_task[cmd.task][:cmd.index]
        same = sum(1 for c in mine if (c.kind, c.name) == (cmd.kind, cmd.name))
        label = describe_command(cmd.kind, cmd.name)
        label = f"{label} (occurrence {same + 1})" if same else label
        return label + self._in(cmd.task)

    def finish(self) -> None:
        """``run`` returned: the log must not hold commands the code did not issue."""
        left = [c for c in self._history
                if c.index >= self._cursors.get(c.task, 0) and c.kind != PATCHED]
        if left:
            cmd = left[0]
            raise NonDeterminismError(
                f"workflow {self.workflow_id!r} ({self.workflow_name}) diverged from its log at "
                f"command #{cmd.seq}: run() returned, but the log has {self._label(cmd)} "
                "there, which the code did not issue. Check that run() is deterministic; fix "
                "the code and resume, or restart/terminate it."
            )

    @property
    def replaying(self) -> bool:
        """True while the code has not yet caught up with the logged history."""
        return self._unissued > 0

    def buffered(self, event_type: str, received_by_us: int | None = None
                 ) -> tuple[int, Any, int] | None:
        """The oldest unconsumed event of ``event_type``: :meth:`Mailbox.buffered`."""
        return self._mailbox.buffered(event_type, received_by_us)

    def reserve(self, position: int) -> None:
        """A wait is consuming the event at ``position``: :meth:`Mailbox.reserve`."""
        self._mailbox.reserve(position)

    def release(self, position: int) -> None:
        """The consumption of ``position`` was not logged: :meth:`Mailbox.release`."""
        self._mailbox.release(position)
