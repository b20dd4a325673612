"""Reading a PostgreSQL log for the log tool: plain values out, never a write.

Theory of operation. The log tool (``eventwf.logtool``) may not import psycopg (D2a), so
every query it needs on PostgreSQL is here, on a read-only session
(:class:`PostgresStore` with ``readonly=True``: ``default_transaction_read_only``, no
writer lock, so it reads beside a running engine). Each call is its own short autocommit
query; rows come in bounded batches by position or by stream version. Rows are returned
as tuples ``(position, stream, stream_position, time_us, type, data, hash)`` with bytes;
:func:`chained` checks one against its *stream's* previous hash (PG5). Values are always
bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import psycopg

from eventwf.errors import StorageError
from eventwf.store.listing_sql import Dialect, workflow_listing
from eventwf.store.postgres import follow, log, schema, sql
from eventwf.store.postgres.projections import metadata_clause
from eventwf.store.postgres.store import PostgresStore
from eventwf.store.rows import AGENT_COLUMNS, WORKFLOW_COLUMNS

__all__ = ["PgRow", "PostgresReader", "chained", "iter_rows"]

PgRow = tuple[int, str, int, int, str, bytes, bytes]
_COLUMNS = "position, stream, stream_position, time_us, type, data, hash"
_ROWS = (f"SELECT {_COLUMNS} FROM eventwf.events WHERE position > %s AND position <= %s "  # noqa: S608
         "ORDER BY position LIMIT %s")
_STREAM_ROWS = (f"SELECT {_COLUMNS} FROM eventwf.events WHERE stream = %s AND "  # noqa: S608
                "stream_position >= %s AND position <= %s ORDER BY stream_position LIMIT %s")
_STREAMS = (
    "SELECT stream, count(*), min(position), max(position), min(time_us), max(time_us), "
    "max(stream_position) FROM eventwf.events WHERE stream > %s AND stream >= %s "
    "AND stream < %s GROUP BY stream ORDER BY stream COLLATE \"C\" LIMIT %s")
_TALLY = (
    "SELECT type, CASE WHEN stream LIKE 'wf:%%' THEN 'wf' WHEN stream LIKE 'agent:%%' "
    "THEN 'agent' ELSE 'other' END AS kind, count(*), sum(length(data)), max(length(data)), "
    "count(*) FILTER (WHERE stream_position = 0), min(time_us), max(time_us), "
    "count(*) FILTER (WHERE time_us >= %s), count(*) FILTER (WHERE time_us >= %s), "
    "count(*) FILTER (WHERE time_us >= %s) "
    "FROM eventwf.events WHERE position > %s AND position <= %s GROUP BY 1, 2")
_ALL = 2**62  # "no upper bound" for a position
_DIALECT = Dialect("eventwf.workflows", "%s", 'workflow_id COLLATE "C"', metadata_clause)


def _row(raw: Sequence[Any]) -> PgRow:
    return (int(raw[0]), str(raw[1]), int(raw[2]), int(raw[3]), str(raw[4]), bytes(raw[5]),
            bytes(raw[6]))


class PostgresReader:
    """One read-only session on an eventwf log in PostgreSQL (``path``: the URL without
    its password). ``StorageError`` when the database cannot be opened or holds no log."""

    def __init__(self, url: str) -> None:
        self._store = PostgresStore(url, readonly=True)
        self.path = self._store.path
        self.genesis = self._store.genesis
        self.conn = self._store.conn
        self.head_snapshot: str | None = None  # the snapshot of the last head() (following)

    def close(self) -> None:
        self._store.close()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._all(sql, params)
        return None if not rows else rows[0][0]

    def meta(self, key: str) -> str | None:
        try:
            return schema.get_meta(self.conn, key)
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc

    def head(self) -> int:
        """The highest position; the snapshot it was read in is kept (``head_snapshot``),
        so following can start exactly after what a listing up to it showed."""
        found, self.head_snapshot = self._all(
            "SELECT max(position), pg_current_snapshot()::text FROM eventwf.events")[0]
        return 0 if found is None else int(found)

    def visible_rows(self, snapshot: str, after: int, batch: int) -> list[PgRow]:
        """Rows after position ``after`` committed as of ``snapshot``, by position."""
        try:
            found = follow.visible_rows(self.conn, snapshot, after, batch)
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc
        return [_row(r[:1] + r[2:]) for r in found]

    def horizon_reader(self, snapshot: str) -> follow.HorizonReader:
        """A reader of the rows committed after ``snapshot`` was taken, in horizon order
        (specs/postgres.md PG7); read it with :meth:`horizon_rows`."""
        return follow.HorizonReader(self.conn, seen=snapshot)

    def horizon_rows(self, reader: follow.HorizonReader) -> list[PgRow]:
        try:
            found = reader.read()
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc
        return [_row(r[:1] + r[2:]) for r in found]

    def rows(self, after: int, until: int | None, batch: int) -> list[PgRow]:
        """Up to ``batch`` rows with ``after < position <= until``, in position order."""
        limit = _ALL if until is None else until
        return [_row(raw) for raw in self._all(_ROWS, (after, limit, batch))]

    def stream_rows(self, stream: str, from_version: int, until: int | None, batch: int
                    ) -> list[PgRow]:
        """Up to ``batch`` rows of ``stream`` from a version (at or before ``until``)."""
        limit = _ALL if until is None else until
        return [_row(raw) for raw in self._all(_STREAM_ROWS,
                                               (stream, from_version, limit, batch))]

    def chained_from(self, stream: str, version: int) -> tuple[int, bytes]:
        """The version and hash the row ``version`` of ``stream`` chains from (-1 and the
        genesis for a stream's first row)."""
        try:
            return log.before(self.conn, self.genesis, stream, version)
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc

    def stream_head(self, stream: str) -> int:
        found = self._one("SELECT max(stream_position) FROM eventwf.events WHERE stream = %s",
                          (stream,))
        return -1 if found is None else int(found)

    def stream_summaries(self, last: str, low: str, high: str, batch: int
                         ) -> list[tuple[Any, ...]]:
        """(stream, count, first/last position, first/last time, last version) by name."""
        return self._all(_STREAMS, (last, low, high, batch))

    def workflow_statuses(self, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        return self._all("SELECT workflow_id, status, workflow_name FROM eventwf.workflows "
                         "WHERE workflow_id = ANY(%s)", (list(ids),))

    def workflow_status(self, workflow_id: str) -> str | None:
        found = self._one("SELECT status FROM eventwf.workflows WHERE workflow_id = %s",
                          (workflow_id,))
        return None if found is None else str(found)

    def first_position(self, stream: str) -> int | None:
        found = self._one("SELECT position FROM eventwf.events WHERE stream = %s AND "
                          "stream_position = 0", (stream,))
        return None if found is None else int(found)

    def time_at(self, position: int) -> int | None:
        """The time of the last event at or before ``position``."""
        found = self._one("SELECT time_us FROM eventwf.events WHERE position <= %s ORDER BY "
                          "position DESC LIMIT 1", (position,))
        return None if found is None else int(found)

    def tally(self, bounds: Sequence[int], low: int, high: int) -> list[tuple[Any, ...]]:
        """Counts by (type, stream kind) of the rows ``low < position <= high``: events,
        data bytes, largest, new streams, first/last time, events at or after each bound."""
        return self._all(_TALLY, (*bounds, low, high))

    def projection_counts(self) -> tuple[dict[str, int], int, int]:
        """Workflows by status, agents, agents with callbacks still to deliver."""
        statuses = {str(s): int(n) for s, n in self._all(
            "SELECT status, count(*) FROM eventwf.workflows GROUP BY status ORDER BY status")}
        agents = int(self._one("SELECT count(*) FROM eventwf.agents"))
        pending = int(self._one("SELECT count(*) FROM eventwf.agents WHERE last_callback > "
                                "delivered_through"))
        return statuses, agents, pending

    def database_bytes(self) -> dict[str, int]:
        """The size of the log's tables (with their indexes and TOAST)."""
        return {"events": int(self._one("SELECT pg_total_relation_size('eventwf.events')")),
                "projections": int(self._one(
                    "SELECT pg_total_relation_size('eventwf.workflows') + "
                    "pg_total_relation_size('eventwf.agents')"))}

    def stored_projections(self) -> tuple[int, list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The head and the stored workflow and agent rows (columns as ``eventwf.store.rows``
        has them), read at one instant (one repeatable-read transaction)."""
        try:
            with self.conn.transaction():
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                head = self.head()
                workflows = self._all("SELECT " + ", ".join(WORKFLOW_COLUMNS)  # noqa: S608
                                      + " FROM eventwf.workflows ORDER BY workflow_id")
                agents = self._all("SELECT " + ", ".join(AGENT_COLUMNS)  # noqa: S608
                                   + " FROM eventwf.agents ORDER BY agent_class, agent_name")
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be read: {exc}") from exc
        return head, workflows, agents

    def workflow_rows(self, columns: Sequence[str], equals: Sequence[tuple[str, str]],
                      metadata: Sequence[tuple[str | None, Any]],
                      after: tuple[int, str] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` workflow rows (``columns``, constants of the log tool) newest
        first by (created time, id in byte order, as on SQLite), older than ``after``;
        ``equals`` (column, value) pairs and ``metadata`` (JSON path, value) pairs, typed
        equality as ``get_workflows``. Every value is bound."""
        statement, params = workflow_listing(_DIALECT, columns, equals, metadata, after, limit)
        return self._all(statement, params)

    def status_counts(self) -> list[tuple[Any, ...]]:
        """(status, how many workflows have it), for the statuses that occur."""
        return self._all("SELECT status, count(*) FROM eventwf.workflows GROUP BY status")

    def last_position(self, stream: str) -> int | None:
        """The position of the last event of ``stream``."""
        found = self._one("SELECT max(position) FROM eventwf.events WHERE stream = %s",
                          (stream,))
        return None if found is None else int(found)


def chained(prev: bytes, row: PgRow) -> bool:
    """Whether ``row``'s hash follows from its stream's previous hash and its own fields."""
    return sql.stream_hash(prev, row[1], row[2], row[3], row[4], row[5]) == row[6]


def iter_rows(reader: PostgresReader, after: int, until: int | None, batch: int
              ) -> Iterator[PgRow]:
    while True:
        rows = reader.rows(after, until, batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1][0]
