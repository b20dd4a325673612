"""Following a PostgreSQL log as it is committed: the horizon read, from where it was opened.

Theory of operation (specs/postgres.md PG7, PG18). Positions come from an identity column
and transactions commit out of position order, so a reader that follows the log keeps a
cursor ``(tx, position)`` and reads only rows of transactions older than the oldest one
still open (``sql.read_horizon``'s rule): such a transaction has ended, so no row can
appear below the cursor later, and nothing is ever skipped; a long transaction anywhere
in the cluster only delays the reader. :class:`HorizonReader` starts at the horizon of the
moment it is opened (the rows of every transaction that ended before are the past: the
engine loaded them, the log tool printed them), reads in bounded batches, and may follow
one kind of stream only (``prefix``, e.g. ``"agent:"``). When a batch comes back short it
has read everything below that statement's horizon, so the cursor moves up to the horizon
itself, and rows of other streams are never scanned twice.

:class:`FollowedRows` decodes rows and checks each against the previous row of its
stream (PG5: the chain is per stream), reading a stream's previous hash on first sight.
A row that fails is returned with its problem, not raised: a follower logs it and goes on.
:class:`LogFollower` puts the two on a session of its own, reopened after a loss (the
cursor is kept, so nothing is read twice or skipped).

Each call is one short autocommit statement on the caller's connection, made inline (as
the store's are, PG20).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import psycopg

from eventwf.errors import CorruptLogError, StorageError
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded
from eventwf.store.postgres import log, schema
from eventwf.store.postgres.notify import connect
from eventwf.store.postgres.sql import Conn, LogCursor, StoredEvent

__all__ = ["Followed", "FollowedRows", "HorizonReader", "LogFollower", "horizon",
           "snapshot_cursor", "visible_rows"]

_BATCH = 1000
_MAX_STREAMS = 10_000  # stream heads kept to check the next row (read again when dropped)
_XMIN = "pg_snapshot_xmin(pg_current_snapshot())"
# One statement, one snapshot: the rows below its horizon and the horizon itself.
_READ = (
    f"WITH h AS (SELECT {_XMIN} AS xmin) "  # noqa: S608 - constant text, values are bound
    "SELECT h.xmin::text, e.position, e.tx::text, e.stream, e.stream_position, e.time_us, "
    "e.type, e.data, e.hash FROM h LEFT JOIN LATERAL (SELECT * FROM eventwf.events "
    "WHERE (tx, position) > (%s::xid8, %s) AND tx < h.xmin AND starts_with(stream, %s) "
    "AND NOT pg_visible_in_snapshot(tx, %s::pg_snapshot) "
    "ORDER BY tx, position LIMIT %s) e ON true"
)
_VISIBLE = (
    "SELECT position, tx::text, stream, stream_position, time_us, type, data, hash "
    "FROM eventwf.events WHERE position > %s AND pg_visible_in_snapshot(tx, %s::pg_snapshot) "
    "ORDER BY position LIMIT %s"
)
_NOTHING = "1:1:"  # a snapshot in which no transaction is visible


def horizon(conn: Conn) -> LogCursor:
    """The cursor of "now": every transaction below it has ended, so reading after it
    gives exactly the rows of transactions that end from now on (and those still open)."""
    row = conn.execute(f"SELECT {_XMIN}::text").fetchone()
    assert row is not None
    return LogCursor(int(row[0]), 0)


def snapshot_cursor(conn: Conn, snapshot: str) -> LogCursor:
    """The cursor of the instant ``snapshot`` (``pg_current_snapshot()`` as text) was taken."""
    row = conn.execute("SELECT pg_snapshot_xmin(%s::pg_snapshot)::text", (snapshot,)).fetchone()
    assert row is not None
    return LogCursor(int(row[0]), 0)


def visible_rows(conn: Conn, snapshot: str, after: int, batch: int = _BATCH
                 ) -> list[StoredEvent]:
    """Rows after position ``after`` that ``snapshot`` sees (committed when it was taken),
    in position order, at most ``batch``."""
    return [_stored((None, *raw)) for raw in conn.execute(_VISIBLE, (after, snapshot, batch))]


class HorizonReader:
    """Reads a log's rows in ``(tx, position)`` order below the horizon, from ``start``
    (default: the horizon when it is made); rows of streams starting with ``prefix``,
    except those of transactions the snapshot ``seen`` saw committed (what a reader
    printed before it began following: ``visible_rows`` of that snapshot)."""

    def __init__(self, conn: Conn, *, start: LogCursor | None = None, prefix: str = "",
                 batch: int = _BATCH, seen: str = _NOTHING) -> None:
        self.conn = conn
        if start is None:
            start = horizon(conn) if seen == _NOTHING else snapshot_cursor(conn, seen)
        self.cursor = start
        self._seen = seen
        self._prefix = prefix
        self._batch = batch
        self.more = False  # the last read was a full batch: read again at once

    def read(self) -> list[StoredEvent]:
        """The next rows (at most a batch); the cursor moves past them, and up to the
        horizon when there were fewer than a batch."""
        got = self.conn.execute(_READ, (str(self.cursor.tx), self.cursor.position,
                                        self._prefix, self._seen,
                                        self._batch)).fetchall()
        rows = [_stored(raw) for raw in got if raw[1] is not None]
        self.more = len(rows) == self._batch
        if rows:
            self.cursor = LogCursor(rows[-1].tx, rows[-1].position)
        if not self.more and got:
            self.cursor = max(self.cursor, LogCursor(int(got[0][0]), 0))
        return rows


def _stored(raw: Sequence[Any]) -> StoredEvent:
    return StoredEvent(int(raw[1]), int(raw[2]), str(raw[3]), int(raw[4]), int(raw[5]),
                       str(raw[6]), bytes(raw[7]), bytes(raw[8]))


class Followed(NamedTuple):
    """A followed row: its record, or (``record`` None) what is wrong with it."""

    position: int
    stream: str
    record: Recorded | None
    problem: str | None = None


class FollowedRows:
    """Decodes followed rows and checks each against its stream's chain (PG5)."""

    def __init__(self, conn: Conn, genesis: bytes | None = None) -> None:
        self.conn = conn
        if genesis is None:
            found = schema.get_meta(conn, "genesis")
            if found is None:
                raise CorruptLogError("the database holds no eventwf genesis (eventwf.meta)")
            genesis = bytes.fromhex(found)
        self.genesis = genesis
        self._heads: dict[str, tuple[int, bytes]] = {}

    def check(self, rows: Sequence[StoredEvent]) -> list[Followed]:
        out: list[Followed] = []
        for row in rows:
            last, prev = self._heads.get(row.stream) or log.before(
                self.conn, self.genesis, row.stream, row.stream_position)
            if len(self._heads) >= _MAX_STREAMS:
                self._heads.clear()
            self._heads[row.stream] = (row.stream_position, row.hash)
            problem = log.row_problem(row.stream, last + 1, prev, row.stream_position,
                                      row.time_us, row.type, row.data, row.hash)
            if problem is not None:
                out.append(Followed(row.position, row.stream, None,
                                    f"event at log position {row.position}: {problem}"))
                continue
            try:
                event = decode_event(row.type, row.data, position=row.position)
            except CorruptLogError as exc:
                out.append(Followed(row.position, row.stream, None, str(exc)))
                continue
            out.append(Followed(row.position, row.stream, Recorded(
                row.position, row.stream, row.stream_position, row.time_us, event)))
        return out


class LogFollower:
    """Checked records of the log at ``url`` from the horizon at open (streams starting
    with ``prefix``), on a session of its own. A driver error is ``StorageError``; the
    next :meth:`read` opens a new session and goes on from the same cursor."""

    def __init__(self, url: str, *, prefix: str = "", batch: int = _BATCH,
                 opener: Callable[[str], Conn] = connect) -> None:
        self._url = url
        self._opener = opener
        try:
            self._conn: Conn | None = opener(url)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open a session to follow the log: {exc}") from exc
        try:
            self._reader = HorizonReader(self._conn, prefix=prefix, batch=batch)
            self._rows = FollowedRows(self._conn)
        except psycopg.Error as exc:
            self._conn.close()
            raise StorageError(f"cannot follow the log: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    @property
    def more(self) -> bool:
        """The last read stopped at a full batch: read again at once."""
        return self._reader.more

    @property
    def cursor(self) -> LogCursor:
        return self._reader.cursor

    def read(self) -> list[Followed]:
        try:
            if self._conn is None:
                self._conn = self._opener(self._url)
                self._reader.conn = self._rows.conn = self._conn
            return self._rows.check(self._reader.read())
        except psycopg.Error as exc:
            self.close()
            self._reader.more = False
            raise StorageError(f"following the log failed ({exc}); the next read reconnects"
                               ) from exc

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
