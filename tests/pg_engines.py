"""Engines in one trio run for the several-engine tests (tests/test_pg_inbox.py,
tests/test_pg_multi.py, tests/test_pg_inbox_commit.py): each engine in a task of its own,
waits for conditions with a deadline, agents that a given engine owns.

Real clock (PG3a): leases and polls run in real time; every wait is for a condition with
a generous deadline, and nothing here asserts a duration.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import trio

import eventwf

__all__ = ["Opener", "Running", "owned_name", "until"]

Opener = Callable[[str], AbstractAsyncContextManager[eventwf.Engine]]


class Running:
    """An engine in its own task (so engines close in any order), closed on ``close``."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self.stop = trio.Event()
        self.stopped = trio.Event()

    async def serve(self, url: str, *, task_status: trio.TaskStatus[eventwf.Engine]
                    = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with self._opener(url) as engine:
                task_status.started(engine)
                await self.stop.wait()
        finally:
            self.stopped.set()

    async def close(self) -> None:
        self.stop.set()
        await self.stopped.wait()


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds; ``AssertionError`` naming ``what`` after
    ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"{what} did not happen within {timeout} s")


def owned_name(engine: eventwf.Engine, agent_class: str, prefix: str,
               not_shard: int | None = None) -> str:
    """The first name ``prefix<i>`` of an ``agent_class`` agent that ``engine`` owns now
    (and whose shard is not ``not_shard``)."""
    own = engine.runtime.ownership
    return next(f"{prefix}{i}" for i in range(100_000) if own.owns(agent_class, f"{prefix}{i}")
                and own.shard(agent_class, f"{prefix}{i}") != not_shard)
