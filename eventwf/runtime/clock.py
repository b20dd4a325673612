"""Wall time read through trio's clock, anchored once when the engine opens.

Within one engine the wall time therefore never jumps: it advances exactly as trio's
clock does (so ``MockClock`` tests take no real time), and log times never go backwards.
Under a ``MockClock`` with no ``wall`` given, every engine of one ``trio.run`` shares the
anchor of the first: an engine closed and reopened in a test follows the mock clock, so a
timer resumed after a mocked restart waits only what is left (API.md "Engine").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

__all__ = ["Clock", "mocked"]


_RUN_ANCHOR: trio.lowlevel.RunVar[tuple[int, float]] = trio.lowlevel.RunVar("eventwf_wall")


def mocked() -> bool:
    """Whether this trio run's clock is a test's ``MockClock``. Then the engine waits on
    no thread where it can help it: with ``autojump_threshold=0`` the mock clock jumps
    whenever every task waits, and a wait on a thread (a commit on a server, a real-time
    poll) would let mocked time pass during work the test means to take no time."""
    from trio.testing import MockClock

    return isinstance(trio.lowlevel.current_clock(), MockClock)


def _anchor(wall: Callable[[], float] | None) -> tuple[int, float]:
    """(wall µs, trio time) read at once: given ``wall``'s, else this run's shared one
    under a ``MockClock``, else ``time.time``'s now."""
    if wall is not None:
        return int(wall() * 1_000_000), trio.current_time()
    if not mocked():
        return int(time.time() * 1_000_000), trio.current_time()
    try:
        return _RUN_ANCHOR.get()
    except LookupError:
        anchor = int(time.time() * 1_000_000), trio.current_time()
        _RUN_ANCHOR.set(anchor)
        return anchor


class Clock:
    def __init__(self, wall: Callable[[], float] | None = None) -> None:
        self._anchor_us, self._anchor_trio = _anchor(wall)
        self._last_us = 0
        # anchored to the host's clock and timed by the real one (not a test's wall or
        # MockClock): only then is comparing it with another machine's clock meaningful
        self.system = wall is None and not mocked()

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
