"""Notifications on PostgreSQL (specs/postgres.md PG4, PG16): sent after a commit and
coalesced (``eventwf.runtime.notifications.Notifier`` over
``eventwf.store.postgres.notify.NotifySender``), heard from trio with no thread
(``Listener`` over ``ListenSession``), polling when one is lost."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
import trio

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

from eventwf.errors import StorageError  # noqa: E402
from eventwf.runtime.notifications import Listener, Notifier  # noqa: E402
from eventwf.store.postgres.notify import (  # noqa: E402 - needs psycopg
    LOG_CHANNEL,
    ListenSession,
    NotifySender,
)


class Sessions:
    """Opens listening sessions for a ``Listener`` and keeps them, to end them from outside."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opened: list[ListenSession] = []
        self.refuse = False  # as if the server could not be reached

    def __call__(self, channels: Sequence[str]) -> ListenSession:
        if self.refuse:
            raise StorageError("cannot listen for notifications: refused by the test")
        self.opened.append(ListenSession(self.url, channels))
        return self.opened[-1]


@pytest.fixture
def sender(fresh_postgres_url: str) -> Iterator[NotifySender]:
    sender = NotifySender(fresh_postgres_url)
    yield sender
    sender.close()


@pytest.mark.realtime
async def test_a_waiter_wakes_on_the_notification_sent_after_a_commit(
        fresh_postgres_url: str, sender: NotifySender) -> None:
    """PG16: the notifier sends after the commit (a NOTIFY is delivered at commit anyway);
    a waiter with no fallback interval wakes on it alone, with its payload."""
    listener = Listener(Sessions(fresh_postgres_url))
    notifier = Notifier(sender)
    writer = psycopg.connect(fresh_postgres_url, autocommit=True)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                listener.watch(LOG_CHANNEL)
                await nursery.start(listener.serve)
                await nursery.start(notifier.serve)
                with writer.transaction():
                    writer.execute("CREATE TABLE t (x int)")
                notifier.notify(LOG_CHANNEL, "log")  # after the commit, as the engine does
                assert await listener.wait(LOG_CHANNEL, None) == ["log"]
                assert (notifier.statements, notifier.sent, listener.received) == (1, 1, 1)
                nursery.cancel_scope.cancel()
    finally:
        writer.close()


@pytest.mark.realtime
async def test_notifications_are_coalesced_into_one_statement_per_window(
        fresh_postgres_url: str, sender: NotifySender) -> None:
    """PG16: a burst of 200 notifications of three distinct payloads (two channels) is one
    statement, and each (channel, payload) arrives once."""
    listener = Listener(Sessions(fresh_postgres_url))
    notifier = Notifier(sender, coalesce=0.01)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener.watch(LOG_CHANNEL)
            listener.watch("eventwf_shard_3")
            await nursery.start(listener.serve)
            await nursery.start(notifier.serve)
            for i in range(200):  # one group of commits after another, no checkpoint
                notifier.notify(LOG_CHANNEL, "log")
                notifier.notify("eventwf_shard_3", f"reply-{i % 2}")
            got = await listener.wait("eventwf_shard_3", None)
            while len(got) < 2:
                got += await listener.wait("eventwf_shard_3", None)
            assert sorted(got) == ["reply-0", "reply-1"]
            assert await listener.wait(LOG_CHANNEL, None) == ["log"]
            assert (notifier.statements, notifier.sent, listener.received) == (1, 3, 3)
            nursery.cancel_scope.cancel()


class CountingSender:
    def __init__(self) -> None:
        self.statements: list[list[tuple[str, str]]] = []

    def send(self, pending: Sequence[tuple[str, str]]) -> None:
        self.statements.append(list(pending))

    def close(self) -> None:
        pass


async def test_the_notifier_sends_at_most_one_statement_per_window() -> None:
    """PG16 under the mock clock: a commit every millisecond for 100 ms is at most one
    statement per 10 ms window (11: the first at once, then one per window), and the
    last commit's notification is never held back."""
    sender = CountingSender()
    notifier = Notifier(sender, coalesce=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(notifier.serve)
        for _ in range(100):
            notifier.notify(LOG_CHANNEL, "log")
            await trio.sleep(0.001)
        await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    assert len(sender.statements) == 11
    assert all(batch == [(LOG_CHANNEL, "log")] for batch in sender.statements)


@pytest.mark.realtime
async def test_a_killed_listening_session_is_reopened_and_polling_covers_the_gap(
        fresh_postgres_url: str, sender: NotifySender) -> None:
    """PG16: pg_terminate_backend on the listening session wakes the waiter at once (it
    may have missed something); while no session can be opened, a notification is lost
    and the waiter's fallback interval returns anyway (it polls); then the session is
    reopened, listens again, and a notification sent after that arrives."""
    sessions = Sessions(fresh_postgres_url)
    listener = Listener(sessions, retry=0.05)
    admin = psycopg.connect(fresh_postgres_url, autocommit=True)
    try:
        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                listener.watch(LOG_CHANNEL)
                await nursery.start(listener.serve)
                pid = sessions.opened[0].conn.info.backend_pid
                sessions.refuse = True
                admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
                assert await listener.wait(LOG_CHANNEL, None) == []  # woken by the loss
                assert listener.losses == 1
                sender.send([(LOG_CHANNEL, "lost")])  # nobody listens: lost
                assert await listener.wait(LOG_CHANNEL, 0.2) == []  # the fallback: a poll
                assert not listener.listening
                sessions.refuse = False
                while not listener.listening:
                    await trio.sleep(0.01)
                sender.send([(LOG_CHANNEL, "after")])
                assert await listener.wait(LOG_CHANNEL, None) == ["after"]
                assert len(sessions.opened) == 2
                assert sessions.opened[1].conn.info.backend_pid != pid
                nursery.cancel_scope.cancel()
    finally:
        admin.close()
