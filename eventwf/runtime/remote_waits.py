"""Waits for workflows other engines run: one read of the database per interval for all.

``Engine.wait_workflow`` on a workflow this engine owns wakes at the commit that changes
it. On PostgreSQL a workflow whose agent another engine owns changes in that engine's
commits, which this one sees only in the shared projections. Each such wait registers
the workflow's (status, run) as its caller saw them; one task reads the status and run of
every waited workflow in one statement every :data:`INTERVAL` seconds of real time
(other engines commit in real time, PG3a) and wakes the waits whose workflow changed.
A thousand waits cost one statement per interval, not a thousand (specs/postgres.md PG15).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import trio

from eventwf.errors import StorageError
from eventwf.runtime.notifications import wait_real

__all__ = ["INTERVAL", "RemoteWaits", "Statuses"]

logger = logging.getLogger("eventwf")

INTERVAL = 0.1  # seconds between two reads of the waited workflows
_CHUNK = 1000  # workflow ids per statement

Seen = tuple[str, int] | None  # (status, run) as the waiter saw it; None: no row


class Statuses(Protocol):
    """``LogStore.workflow_statuses``: (status, run) of each workflow that has a row."""

    def __call__(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]: ...


class RemoteWaits:
    """The waits for other engines' workflows and the task that reads them (:meth:`serve`)."""

    def __init__(self, statuses: Statuses, *, interval: float = INTERVAL) -> None:
        self._statuses = statuses
        self._interval = interval
        self._waits: dict[str, list[tuple[Seen, trio.Event]]] = {}
        self._wake = trio.Event()
        self.reads = 0  # statements run

    async def changed(self, workflow_id: str, seen: Seen, longest: float) -> None:
        """Return once a read finds the workflow's (status, run) other than ``seen``, or
        after ``longest`` seconds of real time (the caller looks again, e.g. at who owns
        the workflow now)."""
        event = trio.Event()
        entry = (seen, event)
        self._waits.setdefault(workflow_id, []).append(entry)
        self._wake.set()
        try:
            await wait_real(event.wait, longest)
        finally:
            waits = self._waits.get(workflow_id)
            if waits is not None:
                waits.remove(entry)
                if not waits:
                    del self._waits[workflow_id]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Read every ``interval`` while anyone waits, until cancelled. A failed read is
        logged; the waits go on (each also ends after its ``longest``)."""
        task_status.started()
        while True:
            if not self._waits:
                await self._wake.wait()
                self._wake = trio.Event()
            await wait_real(trio.sleep_forever, self._interval)
            self.read_once()

    def read_once(self) -> None:
        """One read of every waited workflow; wakes the waits whose workflow changed."""
        ids = list(self._waits)
        found: dict[str, tuple[str, int]] = {}
        try:
            for start in range(0, len(ids), _CHUNK):
                found.update(self._statuses(ids[start:start + _CHUNK]))
                self.reads += 1
        except StorageError as exc:
            logger.warning("%s; waits for other engines' workflows read again later", exc)
            return
        for workflow_id in ids:
            now = found.get(workflow_id)
            for seen, event in self._waits.get(workflow_id, ()):
                if now != seen:
                    event.set()
