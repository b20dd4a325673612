"""A pure model of the engine's public behaviour, for the stateful test (tests/test_model.py).

Workflows run small programs (``PROGRAMS`` in the test): a list of commands, each one of

- ``("wait", type, timeout)``: ``step.wait_for_event``; its payload, or ``"timeout"``;
- ``("approval", timeout)``: ``wait_for_approval``; its metadata, or the run errors
  (``WorkflowRejectedError`` on a rejection, ``WorkflowTimeoutError`` on a timeout);
- ``("sleep", seconds)``: ``step.sleep``; ``"slept"``;
- ``("flaky", fails, limit, delay)``: ``step.do`` whose first ``fails`` attempts raise,
  retried ``limit`` times ``delay`` seconds apart; the attempt that succeeded, or the run
  errors (``RuntimeError``);
- ``("fail",)``: the run raises ``ValueError``;
- ``("par", [branch, ...])``: each branch (a ``sleep`` or a ``flaky``) in its own task of
  ``run`` at once (replay.md R14); the list of their values once the last one ends, or the
  run errors when a branch fails (its siblings are cancelled). Every branch only waits on
  durable timers, so the group is one block ending at its last branch's end.

A run's output is the list of its commands' values. The model keeps time in integer
microseconds of the engine's clock and predicts, at every quiet moment (every task of the
engine blocked), each workflow's status, output and error, and the outcome of every
operation (done, or the error class it raises). It has no trio, no sqlite and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Model", "ModelWorkflow", "Refused", "program_seconds"]

US = 1_000_000
TERMINAL = frozenset({"complete", "errored", "terminated"})


class Refused(Exception):
    """The operation must raise ``kind`` (an eventwf error class name)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass
class ModelWorkflow:
    program: list[tuple[Any, ...]]
    status: str = "running"
    pc: int = 0
    out: list[Any] = field(default_factory=list)
    mailbox: list[tuple[str, Any]] = field(default_factory=list)  # arrival order
    # what the run waits for: ("sleep" | "wait" | "backoff", deadline_us, event type or
    # the next attempt number)
    block: tuple[str, int, Any] | None = None
    attempt: int = 1
    paused_at: int | None = None
    error_name: str | None = None
    par: list[_Branch] | None = None  # the branches of a ``par`` command in progress

    @property
    def output(self) -> Any:
        return self.out if self.status == "complete" else None

    def take(self, event_type: str) -> Any:
        for index, (kind, payload) in enumerate(self.mailbox):
            if kind == event_type:
                del self.mailbox[index]
                return payload
        return _NONE


_NONE: Any = object()


def program_seconds(program: list[tuple[Any, ...]]) -> list[float]:
    """Every duration a program uses (the test keeps jumps off these boundaries)."""
    out: list[float] = []
    for cmd in program:
        if cmd[0] == "wait":
            out.append(cmd[2])
        elif cmd[0] in ("approval", "sleep"):
            out.append(cmd[1])
        elif cmd[0] == "flaky":
            out.append(cmd[3])
        elif cmd[0] == "par":
            out.extend(program_seconds(cmd[1]))
    return out


class _Branch:
    """One branch of a ``par`` command: a sleep or a retried step, and where it is."""

    def __init__(self, cmd: tuple[Any, ...]) -> None:
        self.kind, self.params = cmd[0], cmd[1:]
        self.deadline: int | None = None  # when it next does something
        self.attempt, self.done, self.failed, self.value = 1, False, False, None

    def attempt_now(self, now: int) -> None:
        fails, limit, delay = self.params
        if self.attempt > fails:
            self.done, self.value, self.deadline = True, self.attempt, None
        elif self.attempt > limit:
            self.failed, self.deadline = True, None
        else:
            self.deadline, self.attempt = now + round(delay * US), self.attempt + 1


class Model:
    """Every workflow of one log, and the engine's clock."""

    def __init__(self) -> None:
        self.now = 0  # µs of the engine's clock
        self.workflows: dict[str, ModelWorkflow] = {}

    # -- operations (each either changes the model or raises Refused) --------------------

    def start(self, wid: str, program: list[tuple[Any, ...]]) -> None:
        self.workflows[wid] = wf = ModelWorkflow(list(program))
        self._advance(wf)

    def send(self, wid: str, events: list[tuple[str, Any]]) -> None:
        """Events sent at once (``events`` in the order the log took them): each is checked
        against the status before any of them, then all are buffered, then the run goes on."""
        wf = self.workflows[wid]
        if wf.status in TERMINAL:
            raise Refused("EventwfError")
        wf.mailbox.extend(events)
        if wf.status == "waiting" and wf.block is not None and wf.block[0] == "wait" \
                and any(event_type == wf.block[2] for event_type, _ in events):
            self._advance(wf)

    def pause(self, wid: str) -> None:
        wf = self.workflows[wid]
        if wf.status == "paused":
            return
        if wf.status in TERMINAL:
            raise Refused("EventwfError")
        wf.status, wf.paused_at = "paused", self.now

    def resume(self, wid: str) -> None:
        wf = self.workflows[wid]
        if wf.status in ("running", "waiting"):
            return
        if wf.status != "paused":
            raise Refused("EventwfError")
        assert wf.paused_at is not None
        if wf.block is not None:  # time spent paused is added to the pending timer (R5)
            kind, deadline, extra = wf.block
            wf.block = (kind, deadline + self.now - wf.paused_at, extra)
            for branch in wf.par or ():  # every timer of a concurrent run moves on
                if not branch.done and branch.deadline is not None:
                    branch.deadline += self.now - wf.paused_at
        wf.status, wf.paused_at = "running", None
        self._advance(wf)

    def terminate(self, wid: str) -> None:
        wf = self.workflows[wid]
        if wf.status in TERMINAL:
            raise Refused("EventwfError")
        wf.status, wf.block, wf.paused_at, wf.par = "terminated", None, None, None

    def restart(self, wid: str) -> None:
        self.workflows[wid] = wf = ModelWorkflow(self.workflows[wid].program)
        self._advance(wf)

    def jump(self, seconds: float) -> None:
        """The clock moves on (the engine open or closed): due timers fire, at the new time."""
        self.now += round(seconds * US)
        for wf in self.workflows.values():
            if wf.status == "waiting" and wf.block is not None and wf.block[1] <= self.now:
                self._advance(wf)

    def deadlines(self) -> list[int]:
        """Pending deadlines (µs), paused ones included (they move on resume)."""
        found = [wf.block[1] for wf in self.workflows.values()
                 if wf.block is not None and wf.status in ("waiting", "paused")]
        for wf in self.workflows.values():
            if wf.status in ("waiting", "paused"):
                found.extend(b.deadline for b in wf.par or () if b.deadline is not None
                             and not b.done)
        return found

    # -- running a program ---------------------------------------------------------------

    def _advance(self, wf: ModelWorkflow) -> None:
        """Run ``wf`` from where it is until it blocks or ends, at ``self.now``."""
        wf.status = "running"
        while wf.status == "running":
            if wf.pc == len(wf.program):
                wf.status = "complete"
                return
            cmd = wf.program[wf.pc]
            value = self._command(wf, cmd)
            if value is _NONE:
                return  # blocked (waiting) or ended (errored)
            wf.out.append(value)
            wf.pc, wf.block, wf.attempt = wf.pc + 1, None, 1

    def _command(self, wf: ModelWorkflow, cmd: tuple[Any, ...]) -> Any:
        kind = cmd[0]
        if kind in ("wait", "approval"):
            event_type, timeout = (cmd[1], cmd[2]) if kind == "wait" else ("approval", cmd[1])
            return self._wait(wf, kind, event_type, timeout)
        if kind == "sleep":
            if wf.block is None:
                return self._block(wf, ("sleep", self.now + round(cmd[1] * US), None))
            if wf.block[1] > self.now:
                return self._block(wf, wf.block)
            return "slept"
        if kind == "flaky":
            return self._flaky(wf, *cmd[1:])
        if kind == "par":
            return self._par(wf, cmd[1])
        assert kind == "fail", cmd
        return self._error(wf, "ValueError")

    def _wait(self, wf: ModelWorkflow, kind: str, event_type: str, timeout: float) -> Any:
        payload = wf.take(event_type)
        if payload is not _NONE:
            if kind == "wait":
                return payload
            if isinstance(payload, dict) and payload.get("approved"):
                return payload.get("metadata")
            return self._error(wf, "WorkflowRejectedError")
        if wf.block is None:
            return self._block(wf, ("wait", self.now + round(timeout * US), event_type))
        if wf.block[1] > self.now:
            return self._block(wf, wf.block)
        return "timeout" if kind == "wait" else self._error(wf, "WorkflowTimeoutError")

    def _flaky(self, wf: ModelWorkflow, fails: int, limit: int, delay: float) -> Any:
        if wf.block is not None:
            if wf.block[1] > self.now:
                return self._block(wf, wf.block)
            wf.attempt, wf.block = wf.block[2], None
        if wf.attempt > fails:
            return wf.attempt  # this attempt succeeds
        if wf.attempt > limit:
            return self._error(wf, "RuntimeError")  # it failed, and no retry is left
        return self._block(wf, ("backoff", self.now + round(delay * US), wf.attempt + 1))

    def _par(self, wf: ModelWorkflow, branches: list[Any]) -> Any:
        """Each branch on its own: a sleep ends at its deadline; a retried step makes its
        next attempt when the clock reaches it, and backs off from that attempt's time."""
        if wf.par is None:
            wf.par = [_Branch(b) for b in branches]
            for branch in wf.par:
                if branch.kind == "sleep":
                    branch.deadline = self.now + round(branch.params[0] * US)
                else:
                    branch.attempt_now(self.now)
        else:
            for branch in wf.par:
                if not branch.done and branch.deadline is not None \
                        and branch.deadline <= self.now:
                    if branch.kind == "sleep":
                        branch.done, branch.value = True, "slept"
                    else:
                        branch.attempt_now(self.now)
        if any(branch.failed for branch in wf.par):
            wf.par = None
            return self._error(wf, "RuntimeError")  # its siblings are cancelled
        pending = [b.deadline for b in wf.par if not b.done and b.deadline is not None]
        if pending:
            return self._block(wf, ("par", min(pending), None))
        values = [branch.value for branch in wf.par]
        wf.par = None
        return values

    @staticmethod
    def _block(wf: ModelWorkflow, block: tuple[str, int, Any]) -> Any:
        wf.block, wf.status = block, "waiting"
        return _NONE

    @staticmethod
    def _error(wf: ModelWorkflow, name: str) -> Any:
        wf.status, wf.error_name, wf.block = "errored", name, None
        return _NONE
