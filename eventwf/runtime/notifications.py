"""Notifications from trio with no thread: coalesced sending, and waiters that also poll.

Theory of operation (specs/postgres.md PG4, PG16). :class:`Notifier` is told after each
commit what to announce (:meth:`Notifier.notify`: no I/O) and its task sends what is
pending in one statement, then waits ``coalesce`` seconds (10 ms, as DBOS) before the
next: a burst of commits costs one statement per window, and each ``(channel, payload)``
at most one notification per window. It never sends inside a commit: a NOTIFY in the
append transaction serialises commits (the reference: up to −46 %).

:class:`Listener` keeps one listening session and wakes the waiters of a channel when a
notification for it arrives: its task waits until the session's socket is readable
(``trio.lowlevel.wait_readable``), then drains it. Notifications are hints, never the only
way: :meth:`Listener.wait` also returns after the caller's fallback interval, so every
waiter polls, and a lost notification (the session dropped, PgBouncer in transaction
mode, CockroachDB with no LISTEN) adds at most that interval of latency. A lost session
wakes every waiter at once (what it missed is unknown) and is reopened, backing off.

The sessions are given (:class:`Sender`, :data:`OpenSession`): on PostgreSQL they are
``eventwf.store.postgres.notify``'s; this module imports no driver (design.md D2a).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from eventwf.errors import StorageError
from eventwf.runtime.clock import mocked

__all__ = ["COALESCE", "MAX_KEPT", "Listener", "Notifier", "OpenSession", "Sender", "Session",
           "wait_real"]


async def wait_real(until: Callable[[], Awaitable[object]], seconds: float | None) -> bool:
    """Await ``until()`` for at most ``seconds`` of *real* time (None: no limit); True if
    it finished. Polls of the database (other engines' rows, the inbox, the horizon) are
    timed in real time: other engines write in real time, and under a test's
    ``MockClock(autojump_threshold=0)`` a poll timed by trio's clock would run as fast as
    the clock jumps (a mocked day of one-second polls is 86,400 queries)."""
    if seconds is None:
        await until()
        return True
    if not mocked():
        with trio.move_on_after(seconds):  # trio's own clock is real time: no thread
            await until()
            return True
        return False
    finished = False
    async with trio.open_nursery() as nursery:
        async def timer() -> None:
            await trio.to_thread.run_sync(time.sleep, seconds, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()

        nursery.start_soon(timer)
        # in this task, at once (as on the real clock): a wait that registers before its
        # first checkpoint misses nothing that happens after the caller looked
        await until()
        finished = True
        nursery.cancel_scope.cancel()
    return finished

logger = logging.getLogger("eventwf")

COALESCE = 0.010  # seconds between two statements of one notifier
MAX_KEPT = 1000  # payloads kept per channel between two waits (the waiter polls anyway)


class Sender(Protocol):
    def send(self, pending: Sequence[tuple[str, str]]) -> None: ...
    def close(self) -> None: ...


class Session(Protocol):
    """A listening session (``store.postgres.notify.ListenSession``)."""

    def fileno(self) -> int: ...
    def listen(self, channel: str) -> None: ...
    def drain(self) -> list[tuple[str, str]]: ...
    def close(self) -> None: ...


OpenSession = Callable[[Sequence[str]], Session]  # a new session listening on channels


class Notifier:
    """Sends notifications after commits, coalesced (see the module's docstring)."""

    def __init__(self, sender: Sender, *, coalesce: float = COALESCE) -> None:
        self._sender = sender
        self._coalesce = coalesce
        self._pending: dict[tuple[str, str], None] = {}  # an insertion-ordered set
        self._wake = trio.Event()
        self.statements = 0  # statements sent (each with one or more notifications)
        self.sent = 0  # notifications sent

    def notify(self, channel: str, payload: str = "") -> None:
        """Announce ``payload`` on ``channel`` in the next statement (call it after the
        commit it announces); a repeat within one window is sent once."""
        self._pending[channel, payload] = None
        self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Send what is pending, one statement per ``coalesce`` seconds at most, until
        cancelled. A failed send is logged and dropped: listeners poll."""
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                pending, self._pending = list(self._pending), {}
                try:
                    self._sender.send(pending)
                except StorageError as exc:
                    logger.warning("%s; listeners find the changes by polling", exc)
                else:
                    self.statements += 1
                    self.sent += len(pending)
                await trio.sleep(self._coalesce)
        finally:
            self._sender.close()


class Listener:
    """Wakes waiters per channel on notifications; every wait also ends after the caller's
    fallback interval (see the module's docstring). :meth:`serve` is its task."""

    def __init__(self, open_session: OpenSession, *, retry: float = 0.2,
                 max_retry: float = 5.0) -> None:
        self._open_session = open_session
        self._retry = retry
        self._max_retry = max_retry
        self._session: Session | None = None
        self._events: dict[str, trio.Event] = {}
        self._payloads: dict[str, list[str]] = {}
        self._signalled: set[str] = set()  # channels with news since their last wait
        self.received = 0  # notifications received
        self.losses = 0  # sessions lost (each reopened)

    @property
    def listening(self) -> bool:
        return self._session is not None

    def watch(self, channel: str) -> None:
        """Listen on ``channel`` from now on (called before :meth:`serve` starts: from its
        first session), so nothing sent to it is missed while nobody waits."""
        if channel in self._events:
            return
        self._events[channel] = trio.Event()
        self._payloads[channel] = []
        if self._session is not None:
            try:
                self._session.listen(channel)
            except StorageError as exc:
                self._lost(exc)  # the task reopens it, listening on every channel

    async def wait(self, channel: str, fallback: float | None) -> list[str]:
        """Wait until a notification on ``channel`` arrives (or the session is lost), or
        ``fallback`` seconds pass (None: no fallback, for a caller with nothing to poll).
        Returns at once if something arrived since the previous wait on ``channel``.
        Returns the payloads received since then (empty: the fallback passed, or a loss
        woke it), so the caller looks for itself."""
        self.watch(channel)
        if channel in self._signalled:
            await trio.lowlevel.checkpoint()
        else:
            await wait_real(self._events[channel].wait, fallback)
        self._signalled.discard(channel)
        payloads, self._payloads[channel] = self._payloads[channel], []
        return payloads

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Listen until cancelled, reopening the session (backing off) after each loss.
        Started once the first session listens, or failed (logged; polling meanwhile)."""
        delay = self._retry
        started = False
        try:
            while True:
                try:
                    self._session = self._open_session(list(self._events))
                    delay = self._retry
                except StorageError as exc:
                    logger.warning("%s; polling only, trying again in %.1f s", exc, delay)
                if not started:
                    task_status.started()
                    started = True
                if self._session is not None:
                    await self._read_until_lost(self._session)
                await trio.sleep(delay)
                delay = min(delay * 2, self._max_retry)
        finally:
            self._close()

    async def _read_until_lost(self, session: Session) -> None:
        while self._session is session:
            try:
                await trio.lowlevel.wait_readable(session.fileno())
            except trio.ClosedResourceError:
                return  # closed by ``watch`` after a failed LISTEN (``_lost``)
            try:
                arrived = session.drain()
            except StorageError as exc:
                self._lost(exc)
                return
            for channel, payload in arrived:
                self._deliver(channel, payload)

    def _deliver(self, channel: str, payload: str) -> None:
        event = self._events.get(channel)
        if event is None:
            return  # a channel this listener never watched
        self.received += 1
        kept = self._payloads[channel]
        if len(kept) < MAX_KEPT:
            kept.append(payload)
        self._wake(channel)

    def _wake(self, channel: str) -> None:
        self._signalled.add(channel)
        self._events[channel].set()
        self._events[channel] = trio.Event()

    def _lost(self, exc: StorageError) -> None:
        """The session is gone: close it and wake every waiter (it may have missed a
        notification, so it should look now)."""
        logger.warning("%s; reopening it, polling meanwhile", exc)
        self._close()
        self.losses += 1
        for channel in list(self._events):
            self._wake(channel)

    def _close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            trio.lowlevel.notify_closing(session.fileno())  # ends a wait on its socket
            session.close()
