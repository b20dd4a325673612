"""One durable command of a run as the step API sees it (``async with
runner.command(kind, name) as cmd``): its replay decision, its number, its task."""

from __future__ import annotations

from typing import Protocol

from eventwf.model.replay import Decision
from eventwf.runtime.tasks import RunTask

__all__ = ["Command", "CommandScope", "Issuer"]


class Issuer(Protocol):
    """The run that issues commands (``WorkflowRunner``)."""

    async def begin(self, kind: str, name: str | None) -> Command: ...
    def end(self, cmd: Command) -> None: ...
    def allocate(self) -> int: ...
    def others_busy(self, node: RunTask) -> bool: ...


class Command:
    """One durable command a task of the run issued: its replay decision, its number (a
    new command gets the next one when its first event is queued: ``seq`` then, and only
    then, so numbers follow log order across concurrent tasks), its task and place there."""

    __slots__ = ("_runner", "_seq", "decision", "index", "kind", "name", "node")

    def __init__(self, runner: Issuer, node: RunTask, kind: str, name: str | None,
                 decision: Decision, seq: int | None, index: int) -> None:
        self._runner, self.node, self.kind, self.name = runner, node, kind, name
        self.decision, self._seq, self.index = decision, seq, index

    @property
    def seq(self) -> int:
        """The command's number; read it only to build the event appended at once."""
        seq = self._seq
        if seq is None:
            seq = self._seq = self._runner.allocate()
        return seq

    @property
    def task(self) -> tuple[int, ...]:
        return self.node.path

    @property
    def concurrent(self) -> bool:
        """Another task of the run is busy: a wait begun now leaves the status running."""
        return self._runner.others_busy(self.node)


class CommandScope:
    """``async with runner.command(kind, name) as cmd``: begin, then end whatever
    happens (a class, not a generator: it runs once per durable step)."""

    __slots__ = ("_cmd", "_kind", "_name", "_runner")

    def __init__(self, runner: Issuer, kind: str, name: str | None) -> None:
        self._runner, self._kind, self._name = runner, kind, name
        self._cmd: Command | None = None

    async def __aenter__(self) -> Command:
        self._cmd = await self._runner.begin(self._kind, self._name)
        return self._cmd

    async def __aexit__(self, *exc_info: object) -> None:
        if self._cmd is not None:
            self._runner.end(self._cmd)
