"""Wall time read through trio's clock, anchored once when the engine opens.

Within one engine the wall time therefore never jumps: it advances exactly as trio's
clock does (so ``MockClock`` tests take no real time), and log times never go backwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["Clock"]


class Clock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._anchor_us = int(wall() * 1_000_000)
        self._anchor_trio = trio.current_time()
        self._last_us = 0

    def now_us(self) -> int:
        """Microseconds since the epoch, non-decreasing."""
        # round, not truncate: at trio_time(w) this must read w, not w - 1 (a timer loop
        # that reads "not yet due" at its own deadline would spin without sleeping)
        now = self._anchor_us + round((trio.current_time() - self._anchor_trio) * 1_000_000)
        if now < self._last_us:
            now = self._last_us
        self._last_us = now
        return now

    def trio_time(self, wall_us: int) -> float:
        """The trio clock reading at which wall time reaches ``wall_us``."""
        return self._anchor_trio + (wall_us - self._anchor_us) / 1_000_000

    async def sleep_until_wall(self, wall_us: int, *, at_most_us: int | None = None) -> None:
        """Sleep until ``wall_us``, but never longer than ``at_most_us`` from now.

        The cap keeps a restart after a backwards clock jump from stretching a timer.
        """
        now = self.now_us()
        target = wall_us
        if at_most_us is not None:
            target = min(target, now + max(at_most_us, 0))
        if target > now:
            await trio.sleep_until(self.trio_time(target))
