"""The runtime follower's schedule (eventwf/runtime/follower.py, specs/postgres.md PG18),
with a fake log and fake agents, under the mock clock: when it reads and how it waits."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from eventwf.errors import StorageError
from eventwf.runtime.follower import FAST_POLL, SLOW_POLL, Follower


class FakeAgents:
    def __init__(self) -> None:
        self.clients_now = 0
        self.followed_now = 0
        self.pushed: list[Any] = []

    def has_clients(self) -> bool:
        return self.clients_now > 0

    def follows_any(self) -> bool:
        return self.followed_now > 0

    def push_followed(self, rec: Any) -> bool:
        self.pushed.append(rec)
        return True


class FakeSource:
    more = False

    def __init__(self) -> None:
        self.reads = 0
        self.fail = False

    def read(self) -> list[Any]:
        self.reads += 1
        if self.fail:
            raise StorageError("following the log failed (test); the next read reconnects")
        return []


class Waits:
    """The follower's wait: records each fallback it was given; ``wake`` ends a wait."""

    def __init__(self) -> None:
        self.fallbacks: list[float | None] = []
        self.woken = trio.Event()

    async def __call__(self, fallback: float | None) -> object:
        self.fallbacks.append(fallback)
        with trio.move_on_after(float("inf") if fallback is None else fallback):
            await self.woken.wait()
        self.woken = trio.Event()
        return []

    def wake(self) -> None:
        self.woken.set()


async def test_with_no_client_and_no_followed_agent_it_never_reads_nor_polls() -> None:
    agents, source, waits = FakeAgents(), FakeSource(), Waits()
    follower = Follower(source, agents, waits)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        for _ in range(3):  # notifications of this engine's own commits
            waits.wake()
            await trio.sleep(1)
        assert source.reads == 0 and set(waits.fallbacks) == {None}
        agents.clients_now = 1  # a client: the next wake-up reads, then it polls fast
        waits.wake()
        await trio.sleep(FAST_POLL * 3.5)
        assert source.reads == 4 and waits.fallbacks[-1] == FAST_POLL
        agents.clients_now, agents.followed_now = 0, 1  # views of agents owned elsewhere
        await trio.sleep(FAST_POLL)
        assert waits.fallbacks[-1] == SLOW_POLL
        nursery.cancel_scope.cancel()


async def test_a_failed_read_is_logged_and_the_next_wake_up_reads_again(
        caplog: pytest.LogCaptureFixture) -> None:
    agents, source, waits = FakeAgents(), FakeSource(), Waits()
    agents.clients_now = 1
    source.fail = True
    follower = Follower(source, agents, waits)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        await trio.sleep(FAST_POLL * 2.5)
        assert source.reads == 3
        nursery.cancel_scope.cancel()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3 and "the next read reconnects" in warnings[0].getMessage()
