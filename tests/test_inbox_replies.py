"""A requester's waits for inbox replies (runtime/inbox.py, specs/postgres.md PG15): the
notification naming a request wakes that request's waiter only, so N waiters and N
replies cost about 2N reads of the reply table, not N²; a notification with no usable
payload (a lost session, a fallback) wakes every waiter. Fakes stand for the database."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from eventwf.runtime.inbox import Inbox
from eventwf.runtime.ownership import Ownership


class Replies:
    """The reply table: ``reply`` counts its reads."""

    def __init__(self) -> None:
        self.replies: dict[int, str] = {}
        self.reads = 0

    def reply(self, request_id: int) -> str | None:
        self.reads += 1
        return self.replies.get(request_id)


class Channel:
    """The listener of the reply channel: ``wait`` returns what was sent since, or []
    after the fallback."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.arrived = trio.Event()

    def watch(self, channel: str) -> None:
        pass

    def send(self, payload: str) -> None:
        self.sent.append(payload)
        self.arrived.set()

    async def wait(self, channel: str, fallback: float | None) -> list[str]:
        with trio.move_on_after(fallback if fallback is not None else float("inf")):
            await self.arrived.wait()
        self.arrived = trio.Event()
        out, self.sent = self.sent, []
        return out


def _inbox(table: Replies, listener: Channel) -> Inbox:
    fake: Any = None
    return Inbox(fake, Ownership(None, 15.0), table, fake, listener, fake,  # type: ignore[arg-type]
                 fake)


@pytest.mark.realtime
async def test_each_reply_wakes_only_its_own_waiter() -> None:
    table, listener = Replies(), Channel()
    inbox = _inbox(table, listener)
    got: dict[int, str | None] = {}
    count = 20

    async def wait(request_id: int) -> None:
        got[request_id] = await inbox._wait_reply(request_id)

    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.dispatch_replies)
        for request_id in range(count):
            nursery.start_soon(wait, request_id)
        await trio.testing.wait_all_tasks_blocked()
        assert table.reads == count  # each looked once
        for request_id in range(count):
            table.replies[request_id] = f"r{request_id}"
            listener.send(str(request_id))
            await trio.testing.wait_all_tasks_blocked()
        while len(got) < count:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert got == {i: f"r{i}" for i in range(count)}
    assert table.reads == 2 * count  # and once more when its own reply was notified


@pytest.mark.realtime
async def test_a_notification_without_a_request_id_wakes_every_waiter() -> None:
    table, listener = Replies(), Channel()
    inbox = _inbox(table, listener)
    got: dict[int, str | None] = {}

    async def wait(request_id: int) -> None:
        got[request_id] = await inbox._wait_reply(request_id)

    async with trio.open_nursery() as nursery:
        await nursery.start(inbox.dispatch_replies)
        for request_id in range(3):
            nursery.start_soon(wait, request_id)
        await trio.testing.wait_all_tasks_blocked()
        for request_id in range(3):
            table.replies[request_id] = "done"
        listener.send("lost")  # not a request id: every waiter looks
        while len(got) < 3:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert got == {0: "done", 1: "done", 2: "done"} and table.reads == 6
