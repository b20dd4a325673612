"""PostgreSQL statements of the store: a prototype of the SQL layer (specs/postgres.md).

Theory of operation. One ``events`` table holds every engine's events; ``UNIQUE(stream,
stream_position)`` is the fence: every append names the version it expects by the
position of its first row, so a writer that lost a stream to another engine collides
(:class:`VersionConflict`, "ownership lost") instead of forking it. Each row is chained
to the previous row *of its stream* (PG5). Positions come from an identity column and
``tx`` is the writing transaction's id, so a reader that follows the log orders rows by
``(tx, position)`` and reads only below the oldest transaction still open: it never skips
a row committed late (PG7). The shard leases' table is made here with the schema; their
statements, and the stream claims that fence a previous owner off, are ``shard_sql.py``'s.

The functions take a psycopg 3 connection (sync API; from trio, call them through
``trio.to_thread.run_sync``) in autocommit mode and run their own transactions, except
where a docstring says otherwise. Values are always bound parameters. This module imports
only psycopg and the standard library.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from hashlib import blake2b
from typing import Any, NamedTuple

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

__all__ = [
    "COPY_MIN_ROWS", "DEFAULT_SHARDS", "SCHEMA_VERSION", "Conn", "Head", "Insert", "LogCursor",
    "NewEvent", "RequestsGone", "SchemaInfo", "SchemaVersionTooNew", "StoredEvent",
    "VersionConflict", "batch_landed", "commit_batch", "consume_requests", "create_schema",
    "insert_by_copy", "insert_by_executemany", "insert_rows", "lock_schema", "read_horizon",
    "read_stream", "settle_backend", "stream_hash", "stream_heads",
]

SCHEMA_VERSION = 1
DEFAULT_SHARDS = 256
_SCHEMA_LOCK = 0x6577_6631_5047_0001  # pg_advisory_xact_lock key of schema changes ("ewf1PG")
_PACK = struct.Struct(">qq").pack
_STREAM_CONSTRAINT = "events_stream_version"
Conn = psycopg.Connection[TupleRow]

# Idempotent: each statement may run again on a made schema (under _SCHEMA_LOCK, since two
# concurrent CREATE ... IF NOT EXISTS of one name can still collide in the catalogue).
_DDL = (
    "CREATE SCHEMA IF NOT EXISTS eventwf",
    "CREATE TABLE IF NOT EXISTS eventwf.meta (key text PRIMARY KEY, value text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS eventwf.events ("
    " position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " tx xid8 NOT NULL DEFAULT pg_current_xact_id(),"
    " stream text NOT NULL CHECK (stream <> ''),"
    " stream_position bigint NOT NULL CHECK (stream_position >= 0),"
    " time_us bigint NOT NULL,"
    " type text NOT NULL CHECK (type <> ''),"
    " data bytea NOT NULL,"
    " hash bytea NOT NULL CHECK (length(hash) = 16),"
    " CONSTRAINT events_stream_version UNIQUE (stream, stream_position))",
    "CREATE INDEX IF NOT EXISTS events_horizon ON eventwf.events (tx, position)",
    "CREATE OR REPLACE FUNCTION eventwf.refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'eventwf: the events table is append-only (% refused)', TG_OP "
    "USING ERRCODE = 'restrict_violation'; END $$",
    "CREATE OR REPLACE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON eventwf.events "
    "FOR EACH ROW EXECUTE FUNCTION eventwf.refuse_change()",
    "CREATE OR REPLACE TRIGGER events_no_truncate BEFORE TRUNCATE ON eventwf.events "
    "FOR EACH STATEMENT EXECUTE FUNCTION eventwf.refuse_change()",
    # A lease is held by ``owner`` until ``expires_at`` (both NULL: by nobody).
    "CREATE TABLE IF NOT EXISTS eventwf.shard_leases (shard integer PRIMARY KEY CHECK "
    "(shard >= 0), owner text, epoch bigint NOT NULL DEFAULT 0, expires_at timestamptz, "
    "CHECK ((owner IS NULL) = (expires_at IS NULL)))",
    # The engines alive now (PG12a: the fair share divides the shards among them).
    "CREATE TABLE IF NOT EXISTS eventwf.engines (owner text PRIMARY KEY, "
    "expires_at timestamptz NOT NULL)",
)


class SchemaVersionTooNew(Exception):  # noqa: N818 - named like errors.SchemaVersionError
    """The database's eventwf schema is newer than this code; nothing was changed."""


class VersionConflict(Exception):  # noqa: N818 - a condition the engine maps, not a bug
    """An append named a version another writer already used: its streams were lost.

    ``conflicts`` holds ``(stream, expected version, version found)`` per stream; nothing
    of the batch was committed. The engine drops those streams' work (ownership lost)."""

    def __init__(self, conflicts: Sequence[tuple[str, int, int]]) -> None:
        self.conflicts = tuple(conflicts)
        shown = ", ".join(f"{_shown(s)} expected version {e}, found {f}"
                          for s, e, f in self.conflicts[:5])
        more = f" and {len(self.conflicts) - 5} more" if len(self.conflicts) > 5 else ""
        super().__init__(f"another writer appended to {len(self.conflicts)} stream(s) first "
                         f"({shown}{more}); nothing of this batch was committed")


class RequestsGone(Exception):  # noqa: N818 - a condition the store maps, not a bug
    """Inbox requests a batch consumes are no longer queued as its writer's (withdrawn,
    or taken over by another engine); nothing of the batch was committed."""

    def __init__(self, request_ids: Sequence[int]) -> None:
        self.request_ids = tuple(request_ids)
        super().__init__(f"inbox request(s) {', '.join(map(str, self.request_ids))} are no "
                         "longer queued as this engine's")


class SchemaInfo(NamedTuple):
    genesis: bytes
    shards: int


class NewEvent(NamedTuple):
    """A row to append; its ``stream_position`` is the expected version plus one."""

    stream: str
    stream_position: int
    time_us: int
    type: str
    data: bytes
    hash: bytes


class StoredEvent(NamedTuple):
    position: int
    tx: int
    stream: str
    stream_position: int
    time_us: int
    type: str
    data: bytes
    hash: bytes


class LogCursor(NamedTuple):
    """Where a reader that follows the log is: the last ``(tx, position)`` it has read."""

    tx: int = 0
    position: int = 0


class Head(NamedTuple):
    version: int  # -1: the stream has no events
    hash: bytes | None


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def stream_hash(prev: bytes, stream: str, stream_position: int, time_us: int, type_name: str,
                data: bytes) -> bytes:
    """BLAKE2b-128 chaining a row to its stream's previous row (``prev``; the database's
    genesis for version 0). The global position is not in it: it is unknown until the
    insert, and commit order is not position order (PG5)."""
    return blake2b(b"".join((prev, _PACK(stream_position, time_us), stream.encode(), b"\x00",
                             type_name.encode(), b"\x00", data)), digest_size=16).digest()


# -- schema ---------------------------------------------------------------------------------

def lock_schema(conn: Conn) -> None:
    """Inside a transaction: wait until no other session changes the schema (concurrent
    ``CREATE … IF NOT EXISTS`` of one name collide in the catalogue, PG1)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))


def create_schema(conn: Conn, *, shards: int = DEFAULT_SHARDS) -> SchemaInfo:
    """Make the schema if missing (safe from many engines at once); the genesis and shard
    count a database was made with win over ``shards``. Refuses a newer schema version."""
    if not 1 <= shards <= 65_536:
        raise ValueError(f"shards must be 1..65536, not {shards!r}")
    with conn.transaction():
        lock_schema(conn)
        row = None
        if conn.execute("SELECT to_regclass('eventwf.meta')").fetchone() != (None,):
            row = conn.execute("SELECT value FROM eventwf.meta WHERE key = 'schema_version'"
                               ).fetchone()
        if row is not None and (not row[0].isdigit() or int(row[0]) > SCHEMA_VERSION):
            raise SchemaVersionTooNew(  # or damaged: either way, not this code's to change
                f"this database's eventwf schema has version {_shown(row[0])}, not one this "
                f"eventwf (version {SCHEMA_VERSION}) knows; upgrade eventwf to use it")
        for statement in _DDL:
            conn.execute(statement)
        for key, value in (("schema_version", str(SCHEMA_VERSION)),
                           ("genesis", os.urandom(16).hex()), ("shards", str(shards))):
            conn.execute("INSERT INTO eventwf.meta (key, value) VALUES (%s, %s) "
                         "ON CONFLICT (key) DO NOTHING", (key, value))
        meta: dict[str, str] = dict(conn.execute("SELECT key, value FROM eventwf.meta").fetchall())
        count = int(meta["shards"])
        conn.execute("INSERT INTO eventwf.shard_leases (shard) SELECT generate_series(0, %s) "
                     "ON CONFLICT (shard) DO NOTHING", (count - 1,))
    return SchemaInfo(bytes.fromhex(meta["genesis"]), count)


# -- appending ------------------------------------------------------------------------------

Insert = Callable[[psycopg.Cursor[TupleRow], Sequence[NewEvent]], list[int]]


def insert_by_copy(cur: psycopg.Cursor[TupleRow], rows: Sequence[NewEvent]) -> list[int]:
    """COPY the rows into ``events`` (inside the caller's transaction); their positions,
    read back by this transaction's id through the horizon index (a session draws its
    positions in order, so this COPY's are the transaction's last)."""
    with cur.copy("COPY eventwf.events (stream, stream_position, time_us, type, data, hash) "
                  "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int8", "int8", "text", "bytea", "bytea"])
        for row in rows:
            copy.write_row(row)
    cur.execute("SELECT position FROM eventwf.events WHERE tx = pg_current_xact_id() "
                "ORDER BY tx, position")
    return [int(r[0]) for r in cur.fetchall()][-len(rows):]


def insert_by_executemany(cur: psycopg.Cursor[TupleRow], rows: Sequence[NewEvent]) -> list[int]:
    """One INSERT per row, pipelined (inside the caller's transaction); their positions."""
    cur.executemany("INSERT INTO eventwf.events (stream, stream_position, time_us, type, data, "
                    "hash) VALUES (%s, %s, %s, %s, %s, %s) RETURNING position", rows,
                    returning=True)
    positions: list[int] = []
    while True:
        positions.extend(int(r[0]) for r in cur.fetchall())
        if not cur.nextset():
            return positions


# Measured through trio.to_thread (durable settings, 4 runs): executemany commits 1.0-1.4x
# more single rows per second than COPY, 1.0-1.3x more 4-row batches; COPY 1.1-1.2x more
# 16-row ones, 1.5x more 64-row and 2.1-2.2x more 256-row ones (specs/postgres.md PG9b).
COPY_MIN_ROWS = 16


def insert_rows(cur: psycopg.Cursor[TupleRow], rows: Sequence[NewEvent]) -> list[int]:
    """COPY for batches of :data:`COPY_MIN_ROWS` or more, executemany below."""
    if len(rows) < COPY_MIN_ROWS:
        return insert_by_executemany(cur, rows)
    return insert_by_copy(cur, rows)


def commit_batch(conn: Conn, rows: Sequence[NewEvent], *,
                 insert: Insert = insert_rows,
                 then: Callable[[Conn], None] | None = None) -> list[int]:
    """Append ``rows`` (any streams, each stream's rows consecutive from its expected
    version plus one) and run ``then`` (projection rows, inbox deletes) in one transaction;
    their positions. All or nothing: a version another writer took raises
    :class:`VersionConflict` naming every such stream, and nothing is committed."""
    _check_batch(rows)
    try:
        with conn.transaction(), conn.cursor() as cur:
            positions = insert(cur, rows)
            if then is not None:
                then(conn)
    except pg_errors.UniqueViolation as exc:
        if exc.diag.constraint_name != _STREAM_CONSTRAINT:
            raise
        # Raised only once the clashing row committed (an insert waits for an open one),
        # so the heads read now show every stream that was taken.
        raise VersionConflict(_conflicts(conn, rows)) from exc
    return positions


def consume_requests(conn: Conn, consumes: Sequence[tuple[int, str]], placeholder: str
                     ) -> None:
    """Inside the caller's transaction (``commit_batch``'s ``then``): delete the inbox rows
    ``consumes`` names as ``(id, taken_by)``, each only while that taker still holds it,
    and write each one's ``placeholder`` reply, in one statement (PG15: the request is
    consumed with its first events). :class:`RequestsGone` naming the rows not found: the
    caller's transaction then rolls back, so nothing of the batch is committed."""
    ids = [int(request_id) for request_id, _ in consumes]
    found = conn.execute(
        "WITH gone AS (DELETE FROM eventwf.inbox i USING unnest(%s::bigint[], %s::text[]) "
        "AS c(id, taken_by) WHERE i.id = c.id AND i.taken_by = c.taken_by RETURNING i.id), "
        "placed AS (INSERT INTO eventwf.inbox_replies (id, reply) SELECT id, %s FROM gone "
        "ON CONFLICT (id) DO NOTHING) SELECT id FROM gone",
        (ids, [taken_by for _, taken_by in consumes], placeholder)).fetchall()
    missing = sorted(set(ids) - {int(row[0]) for row in found})
    if missing:
        raise RequestsGone(missing)


def _check_batch(rows: Sequence[NewEvent]) -> None:
    """Each stream's rows must be consecutive: a caller error, before anything is sent."""
    last: dict[str, int] = {}
    for row in rows:
        before = last.get(row.stream)
        if before is not None and row.stream_position != before + 1:
            raise ValueError(f"stream {_shown(row.stream)} jumps from version {before} to "
                             f"{row.stream_position} within one batch")
        last[row.stream] = row.stream_position


def _conflicts(conn: Conn, rows: Sequence[NewEvent]) -> list[tuple[str, int, int]]:
    first: dict[str, int] = {}
    for row in rows:
        first.setdefault(row.stream, row.stream_position)
    heads = stream_heads(conn, list(first))
    return [(stream, version - 1, heads[stream].version) for stream, version in first.items()
            if heads[stream].version >= version]


def batch_landed(conn: Conn, first: NewEvent) -> bool:
    """After a commit whose outcome is unknown, and once its session is gone
    (:func:`settle_backend`): did the batch whose first row is ``first`` land? Another
    row in its place raises :class:`VersionConflict` (the stream was lost meanwhile)."""
    row = conn.execute("SELECT hash FROM eventwf.events WHERE stream = %s AND "
                       "stream_position = %s", (first.stream, first.stream_position)).fetchone()
    if row is None:
        return False
    if bytes(row[0]) != first.hash:
        raise VersionConflict([(first.stream, first.stream_position - 1, first.stream_position)])
    return True


def settle_backend(conn: Conn, pid: int, *, timeout_ms: int = 10_000) -> None:
    """End the server session ``pid`` (a lost connection's) and wait until it is gone, so a
    commit it was running has landed or never will (PG10). ``TimeoutError`` if it stays."""
    if pid == conn.info.backend_pid:
        raise ValueError(f"session {pid} is this connection's own")
    row = conn.execute("SELECT pg_terminate_backend(%s, %s) OR NOT EXISTS (SELECT 1 FROM "
                       "pg_stat_activity WHERE pid = %s)", (pid, timeout_ms, pid)).fetchone()
    if not (row and row[0]):
        raise TimeoutError(f"server session {pid} did not end within {timeout_ms} ms")


# -- reading --------------------------------------------------------------------------------

def _stored(rows: Iterable[tuple[Any, ...]]) -> list[StoredEvent]:
    return [StoredEvent(int(p), int(str(tx)), str(s), int(v), int(t), str(ty),
                        bytes(d), bytes(h))
            for p, tx, s, v, t, ty, d, h in rows]


def read_stream(conn: Conn, stream: str, from_version: int = 0) -> list[StoredEvent]:
    """A stream's rows from ``from_version`` on, in version order (unchecked: the chain is
    checked by the caller, as for SQLite)."""
    return _stored(conn.execute(
        "SELECT position, tx::text, stream, stream_position, time_us, type, data, hash "
        "FROM eventwf.events WHERE stream = %s AND stream_position >= %s "
        "ORDER BY stream_position", (stream, from_version)).fetchall())


def stream_heads(conn: Conn, streams: Sequence[str]) -> dict[str, Head]:
    """Each stream's last version and hash (``Head(-1, None)``: no events), one query."""
    rows = conn.execute(
        "SELECT s.stream, e.stream_position, e.hash FROM unnest(%s::text[]) AS s(stream) "
        "LEFT JOIN LATERAL (SELECT stream_position, hash FROM eventwf.events "
        "WHERE stream = s.stream ORDER BY stream_position DESC LIMIT 1) e ON true",
        (list(streams),)).fetchall()
    return {str(s): Head(-1, None) if v is None else Head(int(v), bytes(h))
            for s, v, h in rows}


def read_horizon(conn: Conn, after: LogCursor, limit: int = 1000) -> list[StoredEvent]:
    """Committed rows after ``after`` in ``(tx, position)`` order, only from transactions
    older than the oldest one still open (PG7): a row committed late is never passed over.
    The next cursor is the last row's ``(tx, position)``."""
    return _stored(conn.execute(
        "SELECT position, tx::text, stream, stream_position, time_us, type, data, hash "
        "FROM eventwf.events WHERE (tx, position) > (%s::xid8, %s) "
        "AND tx < pg_snapshot_xmin(pg_current_snapshot()) "
        "ORDER BY tx, position LIMIT %s", (str(after.tx), after.position, limit)).fetchall())
