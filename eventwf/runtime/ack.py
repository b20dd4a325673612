"""``Ack``: the answer one task waits for, uncancellably, from the writer.

A group commit answers every append it took (writer.py, spec W3): the caller must learn
the answer even if it is cancelled meanwhile, so its wait ignores cancellation (it meets
it at its next checkpoint). A shielded ``trio.CancelScope`` around a ``trio.Event`` does
that too, but costs a cancel scope and an event per append, several per durable step;
this is one small object and a direct reschedule.
"""

from __future__ import annotations

import trio

__all__ = ["Ack"]


def _refuse_abort(_: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED  # cancellation waits for the answer (shielded)


class Ack:
    """Set once; ``wait`` returns after that, whatever cancellation meanwhile. At most one
    task waits (the one that queued the append)."""

    __slots__ = ("_task", "is_set")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self.is_set = False

    def set(self) -> None:
        """Answer; wake the waiting task, if any (setting twice changes nothing)."""
        if self.is_set:
            return
        self.is_set = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        """Wait until ``set``, not interrupted by cancellation (a checkpoint that cannot
        raise ``Cancelled`` if it is set already)."""
        if self.is_set:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        if self._task is not None:
            raise RuntimeError("Ack.wait: another task already waits for this answer")
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(_refuse_abort)
