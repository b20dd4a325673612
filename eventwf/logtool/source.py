"""Reading a log without disturbing its writer.

Every query is its own short read transaction (the connection is in autocommit mode and
each batch is fetched whole), so a live engine is never blocked and the WAL is never
pinned for long. The one exception is :meth:`LogSource.snapshot`, a deliberately short
transaction used where two tables must be read at one instant. Rows come in bounded
batches by position or by stream version; nothing loads the whole log.

A file that SQLite calls malformed because it is shorter than its header says is read in
salvage mode (``PRAGMA writable_schema=ON`` on the read-only connection lets SQLite use
the pages that are there); the first row that cannot be read raises :class:`Unreadable`.
"""

from __future__ import annotations

import heapq
import os
import sqlite3
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

from eventwf.errors import StorageError
from eventwf.store.sqlite.columns import SHOWN_COLUMNS, shown_columns, shown_row, typed
from eventwf.store.sqlite.lock import log_home, read_start
from eventwf.store.sqlite.log import LogRow
from eventwf.store.sqlite.schema import connect, get_meta

from .lookups import SqliteLookups
from .rowview import RowView, stream_view, view

__all__ = [
    "BATCH",
    "ChainedReader",
    "Damaged",
    "FileHeader",
    "LogSource",
    "NotALog",
    "NotFound",
    "ToolError",
    "Unreadable",
    "read_header",
]

BATCH = 2000
# Every value cast to its class, then whether each column held it (shown_row): a row in
# another storage class or with text that is not UTF-8 is shown with its problem, never
# an exception that stops the reading.
_ROWS = f"SELECT {SHOWN_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"  # noqa: S608
_ROWS_UNTIL = (f"SELECT {SHOWN_COLUMNS} FROM events WHERE position > ? AND position <= ? "  # noqa: S608
               "ORDER BY position LIMIT ?")
_JOIN = "FROM events e LEFT JOIN events p ON p.position = e.position - 1 "
_STREAM_ROWS = (  # a stream's rows whose columns hold their classes, in version order
    f"SELECT {shown_columns('e.')}, CAST(p.hash AS BLOB) {_JOIN}"
    f"WHERE e.stream = ? AND e.stream_position >= ? AND {typed('e.')} "
    "ORDER BY e.stream_position LIMIT ?")
_STREAM_MISTYPED = (  # and the others (its name stored as a blob, too)
    f"SELECT {shown_columns('e.')}, CAST(p.hash AS BLOB) {_JOIN}"
    f"WHERE e.stream IN (?, CAST(? AS BLOB)) AND NOT ({typed('e.')})")
_SQLITE_MAGIC = b"SQLite format 3\x00"


class ToolError(Exception):
    """A failure the tool reports in one line and turns into an exit status."""

    exit_code = 2


class NotFound(ToolError):
    """The log has no such stream, workflow or agent."""

    exit_code = 1


class NotALog(ToolError):
    """The file is not an eventwf log (or not an SQLite database at all)."""

    exit_code = 1


class Damaged(ToolError):
    """An eventwf log that SQLite cannot read (a damaged page, a truncated file)."""

    exit_code = 1


class Unreadable(Damaged):
    """SQLite cannot read the rows from ``position`` on (a truncated or damaged file)."""

    exit_code = 1

    def __init__(self, position: int, message: str) -> None:
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class FileHeader:
    """What the 100-byte SQLite header says about the file, against its real size."""

    size: int
    page_size: int
    page_count: int  # 0 when the header's count is not valid (SQLite uses the size)

    @property
    def truncated(self) -> bool:
        expected = self.page_count * self.page_size
        return self.size < expected or self.size % self.page_size != 0

    def describe(self) -> str:
        expected = self.page_count * self.page_size
        if self.page_count and self.size < expected:
            lost = expected - self.size
            return (f"the file is {self.size:,} bytes but its header says {self.page_count:,} "
                    f"pages of {self.page_size:,} bytes ({expected:,}): {lost:,} bytes are "
                    "missing from its end")
        return (f"the file is {self.size:,} bytes, not a whole number of "
                f"{self.page_size:,}-byte pages")


def _open_error(path: str, exc: sqlite3.DatabaseError, truncated: FileHeader | None
                ) -> ToolError:
    text = str(exc)
    if truncated is not None:
        return Unreadable(1, f"{path} cannot be read ({text}): {truncated.describe()}")
    if "no such table" in text or "not a database" in text:
        return NotALog(f"{path} is not an eventwf log: {text}")
    return Damaged(f"{path} cannot be read: {text}; run `verify` for a diagnosis")


def read_header(path: str) -> FileHeader | None:
    """The header of an SQLite file, or None if the file does not start with one."""
    header = read_start(path, 100)  # never closes a descriptor of a log held here
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    counter_ok = header[24:28] == header[92:96]
    page_count = int.from_bytes(header[28:32], "big") if counter_ok else 0
    return FileHeader(os.path.getsize(path), page_size or 1, page_count)


class LogSource(SqliteLookups):
    """A log opened read-only: meta values, batched rows, lookups, and short snapshots."""

    def __init__(self, path: str) -> None:
        if not os.path.isfile(path):
            raise ToolError(f"{path}: no such file")
        self.path = path
        self.home = log_home(path)  # the name the engine opens it by (its WAL's name)
        self.header = read_header(self.home)
        if self.header is None and os.path.getsize(path) > 0:
            raise NotALog(f"{path} is not an eventwf log: it is not an SQLite database")
        self.salvage = False
        try:
            self.conn = connect(self.home, readonly=True)
        except StorageError as exc:  # e.g. commits in a -wal of a read-only directory
            raise Damaged(str(exc)) from exc
        try:
            self.genesis = self._genesis()
        except BaseException:
            self.conn.close()
            raise

    def _genesis(self) -> bytes:
        try:
            genesis = self.meta("genesis")
        except sqlite3.DatabaseError as exc:
            if self.salvage or self.header is None or not self.header.truncated:
                raise _open_error(self.path, exc, self.header if self.salvage else None) from exc
            self.salvage = True  # SQLite refuses a file shorter than its header says:
            self.conn.close()  # read the pages that are there, on a fresh connection
            self.conn = connect(self.home, readonly=True)
            self.conn.execute("PRAGMA writable_schema=ON")
            return self._genesis()
        if genesis is None:
            raise NotALog(f"{self.path} is not an eventwf log: its meta table has no genesis")
        try:
            return bytes.fromhex(genesis)
        except ValueError:
            raise NotALog(f"{self.path} is not an eventwf log: its genesis {genesis!r} is not "
                          "hexadecimal") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> LogSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- single values -------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        if not self.salvage:
            return get_meta(self.conn, key)
        row = self.conn.execute(  # a table scan: the key index may be among the lost pages
            "SELECT value FROM meta NOT INDEXED WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def head(self) -> int:
        """The highest position in the log (0 when empty)."""
        row = self.conn.execute("SELECT max(position) FROM events").fetchone()
        return 0 if row[0] is None else int(row[0])

    def hash_at(self, position: int) -> bytes | None:
        """The stored hash of row ``position`` (the genesis for 0), None if there is none."""
        if position == 0:
            return self.genesis
        row = self.conn.execute("SELECT CAST(hash AS BLOB) FROM events WHERE position = ?",
                                (position,)).fetchone()
        return row[0] if row is not None and isinstance(row[0], bytes) else None

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same instant of the log."""
        self.conn.execute("BEGIN")
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    # -- rows ----------------------------------------------------------------------------

    def reader(self, after: int) -> ChainedReader:
        """The rows after position ``after``, each checked, read again at every poll."""
        return ChainedReader(self, after)

    @asynccontextmanager
    async def following(self, after: int) -> AsyncIterator[Following]:
        """The rows committed after position ``after`` as they come (``tail --follow``):
        here a fresh short query per poll (one writer: positions commit in order)."""
        yield _Polling(self.reader(after))

    def rows(self, after: int = 0, until: int | None = None, *,
             batch: int = BATCH) -> Iterator[LogRow]:
        """Rows with ``after < position <= until`` in position order, ``batch`` per query."""
        sql = _ROWS if until is None else _ROWS_UNTIL
        db = self.conn
        while True:
            params = (after, until, batch) if until is not None else (after, batch)
            try:
                fetched = db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError:
                after = yield from self._probe(after, until, batch, db)
                if after < 0:
                    return
                continue
            for raw in fetched:
                yield shown_row(db, raw)
            if len(fetched) < batch:
                return
            after = fetched[-1][0]

    def _probe(self, after: int, until: int | None, batch: int,
               db: sqlite3.Connection) -> Generator[LogRow, None, int]:
        """After a batch failed: read one row at a time to name the first unreadable one.

        Returns the last position read, or -1 when the rows ran out before an error.
        """
        for _ in range(batch):
            try:
                raw = db.execute(_ROWS, (after, 1)).fetchone()
            except sqlite3.DatabaseError as exc:
                raise Unreadable(after + 1, self._unreadable(after, exc)) from exc
            if raw is None or (until is not None and raw[0] > until):
                return -1
            yield shown_row(db, raw)
            after = raw[0]
        return after

    def _unreadable(self, after: int, exc: sqlite3.DatabaseError) -> str:
        where = f"rows after position {after} cannot be read ({exc})"
        if self.salvage and self.header is not None:
            return f"{where}: {self.header.describe()}"
        return where

    def stream_rows(self, stream: str, *, from_version: int = 0, until: int | None = None,
                    batch: int = BATCH) -> Iterator[tuple[LogRow, bytes | None]]:
        """One stream's rows in version order, each with the hash of the row before it.

        The previous hash is the genesis for position 1 and None when that row is missing.
        ``until`` stops at that log position.
        """
        order = _version_order
        found = heapq.merge(self._typed_stream_rows(stream, from_version, batch),
                            sorted(self._mistyped_stream_rows(stream, from_version), key=order),
                            key=order)
        for row, prev in found:
            if until is not None and row.position > until:
                return
            yield row, (self.genesis if row.position == 1 else prev)

    def _typed_stream_rows(self, stream: str, version: int, batch: int
                           ) -> Iterator[tuple[LogRow, bytes | None]]:
        while True:
            fetched = self.conn.execute(_STREAM_ROWS, (stream, version, batch)).fetchall()
            for raw in fetched:
                yield shown_row(self.conn, raw), raw[8]
            if len(fetched) < batch:
                return
            version = fetched[-1][2] + 1

    def _mistyped_stream_rows(self, stream: str, version: int
                              ) -> list[tuple[LogRow, bytes | None]]:
        """The stream's rows in another storage class (few: each is damage)."""
        rows = self.conn.execute(_STREAM_MISTYPED, (stream, stream)).fetchall()
        return [(shown_row(self.conn, raw), raw[8]) for raw in rows if raw[2] >= version]

    def stream_views(self, stream: str, *, from_version: int = 0,
                     until: int | None = None) -> Iterator[RowView]:
        """One stream's rows, decoded and checked: hash, previous row, contiguous versions."""
        expected: int | None = from_version
        for row, prev in self.stream_rows(stream, from_version=from_version, until=until):
            yield stream_view(row, prev, expected)
            expected = row.stream_position + 1

    def stream_head(self, stream: str) -> int:
        """The last version of ``stream``, -1 when it has no events."""
        row = self.conn.execute("SELECT max(CAST(stream_position AS INTEGER)) FROM events "
                                "WHERE stream IN (?, CAST(? AS BLOB))",
                                (stream, stream)).fetchone()
        return -1 if row[0] is None else int(row[0])


def _version_order(item: tuple[LogRow, bytes | None]) -> tuple[int, int]:
    return item[0].stream_position, item[0].position


class Following(Protocol):
    """What ``tail --follow`` reads: new rows, then a wait until there may be more."""

    def read(self) -> Iterator[RowView]: ...
    async def wait(self, interval: float) -> None: ...


class _Polling:
    def __init__(self, reader: ChainedReader) -> None:
        self._reader = reader

    def read(self) -> Iterator[RowView]:
        return self._reader.read()

    async def wait(self, interval: float) -> None:
        await trio.sleep(interval)


class ChainedReader:
    """Rows after a position, each decoded and checked against the row before it.

    Keeps the last hash between calls, so polling (``tail --follow``) verifies every new
    row with fresh short queries.
    """

    def __init__(self, log: LogSource, after: int) -> None:
        self.log = log
        self.after = after
        self.prev = log.hash_at(after)

    def read(self, until: int | None = None) -> Iterator[RowView]:
        for row in self.log.rows(self.after, until):
            contiguous = row.position == self.after + 1
            item = view(row, self.prev if contiguous else None)
            if not contiguous:
                gap = f"log positions jump from {self.after} to {row.position}"
                item = item._replace(problem=item.problem or gap)
            self.after = row.position
            self.prev = row.hash if isinstance(row.hash, bytes) else None
            yield item
