"""A trio run in a thread of its own, for synchronous drivers (hypothesis state machines).

The run's clock never moves by itself (no autojump): time passes only when the driver
jumps it, so a test decides exactly which deadlines have passed. It is a ``MockClock``, or
a :class:`ManualClock`, which jumps the same way but is not one: the engine then runs as
under a real clock (on PostgreSQL it commits in a worker thread, ``clock.mocked``).
``call`` runs an async function in the trio thread and returns its result (or raises its
exception).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

__all__ = ["ManualClock", "TrioThread"]

T = TypeVar("T")


class ManualClock(trio.abc.Clock):
    """Time that passes only by :meth:`jump`, like a ``MockClock`` with no autojump and
    rate 0, but not a ``MockClock``: the engine takes it for a real clock."""

    def __init__(self) -> None:
        self._now = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        return 0.0 if deadline <= self._now else 999_999_999.0  # as MockClock at rate 0

    def jump(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time cannot go backwards: jump({seconds!r})")
        self._now += seconds


class TrioThread:
    def __init__(self, clock: trio.testing.MockClock | ManualClock | None = None) -> None:
        self.clock = trio.testing.MockClock() if clock is None else clock
        self.nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._crash: BaseException | None = None
        ready = threading.Event()

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                ready.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

        def run() -> None:
            try:
                trio.run(main, clock=self.clock)
            except BaseException as exc:  # reported by the next call
                self._crash = exc
                ready.set()

        self._thread = threading.Thread(target=run, name="trio", daemon=True)
        self._thread.start()
        ready.wait()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self._crash is not None or self._token is None:
            raise RuntimeError(f"the trio thread ended: {self._crash!r}")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    async def settle(self) -> None:
        """Let every task run until all are blocked (at this instant of the clock)."""
        await trio.testing.wait_all_tasks_blocked()

    async def jump(self, seconds: float) -> None:
        self.clock.jump(seconds)
        await self.settle()

    def close(self) -> None:
        async def stop() -> None:
            assert self._stop is not None
            self._stop.set()

        if self._crash is None and self._thread.is_alive():
            self.call(stop)
        self._thread.join(30)
