"""``Ack``: the writer's answer to one append, waited for uncancellably (spec W3)."""

from __future__ import annotations

import pytest
import trio

from eventwf.runtime.ack import Ack


async def test_a_cancelled_waiter_waits_for_the_answer_then_meets_the_cancel() -> None:
    ack = Ack()
    seen: list[str] = []

    async def waiter(scope_out: list[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            scope_out.append(scope)
            await ack.wait()
            seen.append("answered")
            await trio.lowlevel.checkpoint()
            seen.append("not cancelled")  # never: the cancel comes at this checkpoint
        seen.append("cancelled" if scope.cancelled_caught else "ran through")

    async with trio.open_nursery() as nursery:
        scopes: list[trio.CancelScope] = []
        nursery.start_soon(waiter, scopes)
        await trio.sleep(1)
        scopes[0].cancel()
        await trio.sleep(1)
        assert seen == []  # still waiting: the cancel did not interrupt the wait
        ack.set()
    assert seen == ["answered", "cancelled"]


async def test_set_before_wait_returns_at_once_and_twice_is_once() -> None:
    ack = Ack()
    ack.set()
    ack.set()
    with trio.CancelScope() as scope:
        scope.cancel()
        await ack.wait()  # a cancel-shielded checkpoint: no Cancelled here
    assert ack.is_set and not scope.cancelled_caught


async def test_a_second_waiter_is_refused() -> None:
    ack = Ack()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ack.wait)
        await trio.sleep(1)
        with pytest.raises(RuntimeError, match="already waits"):
            await ack.wait()
        ack.set()
