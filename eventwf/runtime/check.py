"""Read-only replay of unfinished workflows against the current code (the pre-deploy check).

A check runner replays a workflow's logged commands exactly as recovery would, but stops
at the first command the log does not hold: it never executes a step and appends
nothing. Each workflow gets one verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import trio

from eventwf.errors import NonDeterminismError
from eventwf.model.events import Event, Recorded
from eventwf.model.replay import Raise, Replayed
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.runner import Command, RunHost, Stopped, WorkflowRunner

__all__ = ["CheckRunner", "CheckRunners", "ReplayCheck"]


class ReplayCheck(msgspec.Struct, frozen=True):
    """The verdict for one workflow.

    ``verdict`` is ``ok`` (the code agrees with the whole log), ``diverged``
    (``NonDeterminismError``), ``corrupt`` (its log cannot be read), ``orphan`` (no code
    is registered for its binding or agent) or ``error`` (replaying raised something else).
    """

    workflow_id: str
    workflow_name: str
    status: str
    verdict: str
    commands: int
    message: str | None = None


class _ReachedEnd(Stopped):
    """The replay caught up with the log; nothing past it is run."""


class CheckRunner(WorkflowRunner):
    """A runner that serves the log and stops where live execution would begin."""

    result: ReplayCheck | None = None
    _parked = 0  # tasks that reached the end of their logged commands before the others

    def _verdict(self, verdict: str, message: str | None = None) -> None:
        if self.result is None:
            summary = self.summary
            self.result = ReplayCheck(self.workflow_id, summary.workflow_name, summary.status,
                                      verdict, self.machine.position, message)

    async def write(self, items: Sequence[tuple[str, Event]]) -> list[Recorded]:
        return []  # a check never writes

    def submit(self, items: Sequence[tuple[str, Event]]) -> None:
        return None  # a check never writes

    async def step_boundary(self) -> None:
        return None

    async def begin(self, kind: str, name: str | None) -> Command:
        """Serve the log; where a task reaches the end of its logged commands, stop there:
        the check is over (ok) once every logged command was reached, and until then the
        task waits while the run's other tasks replay theirs (replay.md R14)."""
        cmd = await super().begin(kind, name)
        if isinstance(cmd.decision, Replayed | Raise):
            return cmd
        self.end(cmd)
        if self.machine.replaying:
            self._parked += 1
            await trio.sleep_forever()
        self._verdict("ok")
        raise _ReachedEnd()

    def end(self, cmd: Command) -> None:
        super().end(cmd)
        if self._parked and not self.machine.replaying:
            self._verdict("ok")  # the last logged command was reached: nothing can diverge
            self.cancel_scope.cancel()

    async def main(self) -> None:
        try:
            await super().main()
        except _ReachedEnd:
            self._verdict("ok")
        except Exception as exc:  # the verdict for code that cannot even be replayed
            self._verdict("error", f"{type(exc).__name__}: {exc}")
        self._verdict("ok")

    async def report_progress(self, progress: Any) -> None:
        return None  # a check runs no hook

    async def agent_state_committed(self) -> None:
        return None

    async def broadcast(self, message: Any) -> None:
        return None

    def on_stalled(self, error: Exception) -> None:
        self._verdict("error", f"{type(error).__name__}: {error}")

    def on_crashed(self, error: Exception) -> None:
        self._verdict("error", f"{type(error).__name__}: {error}")

    async def on_diverged(self, error: NonDeterminismError) -> None:
        self._verdict("diverged", str(error))

    async def on_errored(self, exc: Exception) -> None:
        self._verdict("ok", f"replay ends with run() raising {type(exc).__name__}: {exc}")

    async def on_completed(self, output: Any) -> str:
        self._verdict("ok", "replay ends with run() returning")
        return "complete"


class CheckRunners:
    """The run factory of a replay-only check: makes ``CheckRunner``s and keeps them."""

    def __init__(self) -> None:
        self._runners: list[CheckRunner] = []

    def factory(self, host: RunHost, summary: WorkflowSummary, epoch: int,
                history: list[Recorded]) -> WorkflowRunner:
        runner = CheckRunner(host, summary, epoch, history)
        self._runners.append(runner)
        return runner

    def done(self) -> bool:
        return all(runner.result is not None for runner in self._runners)

    def verdicts(self) -> dict[str, ReplayCheck]:
        return {r.workflow_id: r.result for r in self._runners if r.result is not None}
