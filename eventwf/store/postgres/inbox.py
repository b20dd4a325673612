"""The inbox of requests for agents another engine owns, the driver's side (PG15).

Theory of operation (specs/postgres.md PG15). An engine that serves an agent it does not
own inserts the request (JSON text: operation, agent, arguments; never pickle) with the
agent's shard and its own reply channel; the shard's owner takes its shards' rows in id
order and marks a row taken (its owner id) before it applies it. The request's first
append consumes the row: the writer's commit deletes it, only while this owner still
holds it, and writes the placeholder reply (``PENDING_REPLY``, "applied, result pending")
in the transaction of the request's events (``sql.consume_requests``, through
``LogStore.commit(consumes=...)``); the final reply then replaces the placeholder
(:meth:`InboxTable.finish`). A request that logs nothing is answered by deleting the row
and writing the reply in one transaction (:meth:`InboxTable.answer`). So a row still
present was never applied, whoever marked it taken, and is applied again by whoever
owns its shard now (taking it from its previous taker). The requester reads the final
reply, deleting it; after its deadline it learns what is left (:meth:`InboxTable.abandon`).
Replies nobody read are swept after an hour.

Each method is one short statement (or one transaction) on a session of its own, opened
on first use and again after a failure; a failure is ``StorageError``. The trio side is
``eventwf.runtime.inbox``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import psycopg

from eventwf.errors import StorageError
from eventwf.model.inbox_codec import PENDING_REPLY
from eventwf.store.postgres.notify import connect
from eventwf.store.postgres.sql import Conn

__all__ = ["INBOX_CHANNEL", "Abandoned", "InboxRow", "InboxTable", "create_inbox"]

T = TypeVar("T")

INBOX_CHANNEL = "eventwf_inbox"  # payload: the shard of a new request
_LOCK = 7_164_302_115  # the advisory lock of the inbox tables' creation
_DDL = (
    "CREATE TABLE IF NOT EXISTS eventwf.inbox (id bigint GENERATED ALWAYS AS IDENTITY "
    "PRIMARY KEY, shard integer NOT NULL, request text NOT NULL, reply_channel text NOT NULL,"
    " taken_by text, created_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS inbox_shard ON eventwf.inbox (shard, id)",
    "CREATE TABLE IF NOT EXISTS eventwf.inbox_replies (id bigint PRIMARY KEY, reply text "
    "NOT NULL, created_at timestamptz NOT NULL DEFAULT now())",
)


class InboxRow(NamedTuple):
    id: int
    shard: int
    request: str
    reply_channel: str
    taken_by: str | None


class Abandoned(NamedTuple):
    """What a requester that gives up finds: its row (``queued``: present; ``taken_by``:
    who marked it) and its reply, final or ``PENDING_REPLY``, now deleted (None: none)."""

    queued: bool
    taken_by: str | None
    reply: str | None


def create_inbox(conn: Conn) -> None:
    """Make the inbox tables if missing (safe from many engines at once)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        for statement in _DDL:
            conn.execute(statement)


class InboxTable:
    """The inbox tables through one autocommit session (see the module docstring)."""

    def __init__(self, url: str, *, opener: Callable[[str], Conn] = connect) -> None:
        self._url = url
        self._opener = opener
        self._conn: Conn | None = None

    def _session(self) -> Conn:
        if self._conn is None:
            conn = self._opener(self._url)
            try:
                create_inbox(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _run(self, what: str, fn: Callable[[Conn], T]) -> T:
        try:
            return fn(self._session())
        except psycopg.Error as exc:
            self.close()  # reopened at the next call
            raise StorageError(f"the inbox could not {what}: {exc}") from exc

    def enqueue(self, shard: int, request: str, reply_channel: str) -> int:
        """Queue a request for ``shard``'s owner; its id (the reply's key)."""
        def run(conn: Conn) -> int:
            row = conn.execute(
                "INSERT INTO eventwf.inbox (shard, request, reply_channel) VALUES (%s, %s, %s) "
                "RETURNING id", (shard, request, reply_channel)).fetchone()
            assert row is not None
            return int(row[0])
        return self._run("queue a request", run)

    def pending(self, shards: Sequence[int], limit: int = 100) -> list[InboxRow]:
        """The oldest queued requests of ``shards``, in id order."""
        def run(conn: Conn) -> list[InboxRow]:
            rows = conn.execute(
                "SELECT id, shard, request, reply_channel, taken_by FROM eventwf.inbox "
                "WHERE shard = ANY(%s) ORDER BY id LIMIT %s", (list(shards), limit)).fetchall()
            return [InboxRow(int(r[0]), int(r[1]), str(r[2]), str(r[3]), r[4]) for r in rows]
        return self._run("read its requests", run)

    def take(self, request_id: int, owner: str, was: str | None = None) -> bool:
        """Mark a request taken by ``owner`` before applying it, if ``was`` (None: nobody)
        still holds it (a row still present was never applied: its first append would
        have deleted it); False if it is gone or someone else took it meanwhile."""
        def run(conn: Conn) -> bool:
            cur = conn.execute("UPDATE eventwf.inbox SET taken_by = %s WHERE id = %s AND "
                               "taken_by IS NOT DISTINCT FROM %s", (owner, request_id, was))
            return cur.rowcount == 1
        return self._run("take a request", run)

    def release(self, request_id: int, owner: str) -> None:
        """Put back a request ``owner`` took but did not apply (nothing of it was logged)."""
        def run(conn: Conn) -> None:
            conn.execute("UPDATE eventwf.inbox SET taken_by = NULL WHERE id = %s AND "
                         "taken_by = %s", (request_id, owner))
        self._run("put back a request", run)

    def answer(self, request_id: int, reply: str, owner: str) -> bool:
        """Delete a request ``owner`` holds and write its reply, in one transaction (a
        request that logged nothing); False, writing nothing, if ``owner`` no longer
        holds it (withdrawn, or another engine took it over and answers it)."""
        def run(conn: Conn) -> bool:
            cur = conn.execute(
                "WITH gone AS (DELETE FROM eventwf.inbox WHERE id = %s AND taken_by = %s "
                "RETURNING id) INSERT INTO eventwf.inbox_replies (id, reply) SELECT id, %s "
                "FROM gone ON CONFLICT (id) DO NOTHING", (request_id, owner, reply))
            return cur.rowcount == 1
        return self._run("answer a request", run)

    def finish(self, request_id: int, reply: str) -> bool:
        """Replace the placeholder reply of a request a commit consumed with its final
        reply; False if the placeholder is gone (its requester gave up, or it was swept)."""
        def run(conn: Conn) -> bool:
            cur = conn.execute("UPDATE eventwf.inbox_replies SET reply = %s, created_at = "
                               "now() WHERE id = %s AND reply = %s",
                               (reply, request_id, PENDING_REPLY))
            return cur.rowcount == 1
        return self._run("answer a request", run)

    def reply(self, request_id: int) -> str | None:
        """The final reply to a request, deleted as it is read; None while there is none
        (the placeholder is not a reply: it stays)."""
        def run(conn: Conn) -> str | None:
            row = conn.execute("DELETE FROM eventwf.inbox_replies WHERE id = %s AND "
                               "reply <> %s RETURNING reply", (request_id, PENDING_REPLY)
                               ).fetchone()
            return None if row is None else str(row[0])
        return self._run("read a reply", run)

    def abandon(self, request_id: int) -> Abandoned:
        """A requester gives up: delete whatever reply there is (final or placeholder),
        and say whether the row is still queued and who took it, in one transaction."""
        def run(conn: Conn) -> Abandoned:
            with conn.transaction():
                got = conn.execute("DELETE FROM eventwf.inbox_replies WHERE id = %s "
                                   "RETURNING reply", (request_id,)).fetchone()
                row = conn.execute("SELECT taken_by FROM eventwf.inbox WHERE id = %s",
                                   (request_id,)).fetchone()
            return Abandoned(row is not None, None if row is None else row[0],
                             None if got is None else str(got[0]))
        return self._run("read what is left of a request", run)

    def withdraw(self, request_id: int) -> bool:
        """Delete a request nobody has taken; True if it was (it will never be applied)."""
        def run(conn: Conn) -> bool:
            cur = conn.execute("DELETE FROM eventwf.inbox WHERE id = %s AND taken_by IS NULL",
                               (request_id,))
            return cur.rowcount == 1
        return self._run("withdraw a request", run)

    def sweep(self) -> int:
        """Delete replies older than an hour (their requester gave up); how many."""
        def run(conn: Conn) -> int:
            cur = conn.execute("DELETE FROM eventwf.inbox_replies WHERE created_at < "
                               "now() - interval '1 hour'")
            return cur.rowcount
        return self._run("sweep old replies", run)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
