"""PostgreSQL notifications, the driver's side: sending after a commit, and a listening session.

Theory of operation (specs/postgres.md PG4, PG16). A NOTIFY inside an append transaction
takes a global lock at commit and serialised commits (up to −46 %, the reference), so
notifications are sent *after* the commit, by :class:`NotifySender`, in one short
autocommit ``pg_notify`` statement on a session of its own, carrying everything pending
(the coalescing itself, at most one statement per window, is
``eventwf.runtime.notifications.Notifier``'s). Payloads are short strings (a shard number,
a reply channel, ``"log"``).

:class:`ListenSession` is one autocommit session that ``LISTEN``\\ s on channels and hands
over what arrived without blocking: the caller waits until :meth:`ListenSession.fileno`
is readable (trio's ``wait_readable``: no thread), then calls :meth:`~ListenSession.drain`
(libpq's ``consume_input`` then ``notifies``, which every psycopg 3 has; notifications
that arrive while a ``LISTEN`` runs come through psycopg's notify handler). The trio side
(waiters per channel, polling as the fallback, reconnecting) is
``eventwf.runtime.notifications``: this layer imports no trio (design.md D3), and no
layer above it imports psycopg (D2a). A lost session is ``StorageError``.

The statements run inline, as the store's do (PG20): one short round trip each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg
from psycopg import pq
from psycopg import sql as pgsql

from eventwf.errors import StorageError
from eventwf.store.postgres import lock
from eventwf.store.postgres.sql import Conn

__all__ = ["LOG_CHANNEL", "ListenSession", "NotifySender", "check_channel", "connect"]

LOG_CHANNEL = "eventwf_log"  # payload "log": rows were committed (followers read the horizon)
_MAX_CHANNEL = 63  # PostgreSQL truncates identifiers (NAMEDATALEN - 1 bytes)

Notification = tuple[str, str]  # (channel, payload)


def connect(url: str) -> Conn:
    """An autocommit session named like the engine's others (``lock.application_name``)."""
    return psycopg.connect(url, autocommit=True, connect_timeout=10,
                           application_name=lock.application_name())


def check_channel(channel: str) -> None:
    """``ValueError`` unless ``channel`` can name a PostgreSQL notification channel."""
    if not channel or len(channel.encode()) > _MAX_CHANNEL or "\x00" in channel:
        raise ValueError(f"invalid notification channel {channel!r}: 1-{_MAX_CHANNEL} bytes, "
                         "no NUL")


class NotifySender:
    """Sends notifications in one autocommit statement on a session of its own (opened
    on first use, and again after a failure)."""

    def __init__(self, url: str, *, opener: Callable[[str], Conn] = connect) -> None:
        self._url = url
        self._opener = opener
        self._conn: Conn | None = None

    def send(self, pending: Sequence[Notification]) -> None:
        """Send ``pending`` (``(channel, payload)`` pairs); ``StorageError`` if it could
        not (the session is closed, and the next send opens another)."""
        try:
            if self._conn is None:
                self._conn = self._opener(self._url)
            self._conn.execute("SELECT pg_notify(c, p) FROM unnest(%s::text[], %s::text[]) "
                               "AS n(c, p)", ([c for c, _ in pending], [p for _, p in pending]))
        except psycopg.Error as exc:
            self.close()
            raise StorageError(f"could not send {len(pending)} notification(s): {exc}"
                               ) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class ListenSession:
    """One session listening on channels (see the module's docstring). Opening it
    connects and listens on ``channels``; ``StorageError`` if it cannot."""

    def __init__(self, url: str, channels: Sequence[str] = (), *,
                 opener: Callable[[str], Conn] = connect) -> None:
        self._arrived: list[Notification] = []
        try:
            self.conn = opener(url)
        except psycopg.Error as exc:
            raise StorageError(f"cannot listen for notifications: {exc}") from exc
        try:
            self.conn.add_notify_handler(lambda n: self._arrived.append((n.channel, n.payload)))
            for channel in channels:
                self.listen(channel)
            self._fd = self.conn.fileno()
        except BaseException:
            self.conn.close()
            raise

    def fileno(self) -> int:
        """The socket to wait on (readable: call :meth:`drain`)."""
        return self._fd

    def listen(self, channel: str) -> None:
        check_channel(channel)
        try:
            self.conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
        except psycopg.Error as exc:
            raise StorageError(f"cannot listen on {channel!r}: {exc}") from exc

    def drain(self) -> list[Notification]:
        """What arrived, without blocking; ``StorageError`` once the session is lost."""
        pgconn = self.conn.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as exc:
            raise StorageError(f"the session listening for notifications was lost: {exc}"
                               ) from exc
        arrived, self._arrived = self._arrived, []
        while (found := pgconn.notifies()) is not None:
            arrived.append((found.relname.decode(), found.extra.decode()))
        if pgconn.status != pq.ConnStatus.OK:
            raise StorageError("the session listening for notifications was lost (the server "
                               "closed it)")
        return arrived

    def close(self) -> None:
        self.conn.close()
