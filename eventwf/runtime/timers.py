"""The wake-up timers of hibernated workflows: one task, one heap of wall times.

Entries are hints, not truth: a wake-up finds the workflow's current summary and starts a
runner only if it is still waiting and has none, so stale entries cost a lookup.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import trio

from eventwf.runtime.clock import Clock

__all__ = ["Wakeups"]


class Wakeups:
    def __init__(self, clock: Clock, wake: Callable[[str], None]) -> None:
        self._clock = clock
        self._wake = wake
        self._heap: list[tuple[int, str]] = []  # (wall time in µs, workflow id)
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, workflow_id: str, wall_us: int) -> None:
        heapq.heappush(self._heap, (wall_us, workflow_id))
        if self._heap[0][0] == wall_us:
            self._changed.set()  # earlier than what the loop sleeps for

    async def run(self) -> None:
        """Wake every due workflow, then sleep until the next one is due (or sooner)."""
        while True:
            now = self._clock.now_us() + 1  # a microsecond of float rounding is due, too
            while self._heap and self._heap[0][0] <= now:
                _, workflow_id = heapq.heappop(self._heap)
                self._wake(workflow_id)
            self._changed = trio.Event()
            deadline = self._clock.trio_time(self._heap[0][0]) if self._heap else float("inf")
            with trio.move_on_at(deadline):
                await self._changed.wait()
