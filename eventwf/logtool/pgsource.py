"""A PostgreSQL log as a :class:`LogSource`: the same reads, through the store.

Theory of operation. The commands read a log through :class:`LogSource`'s methods (rows
by position, a stream's rows by version, the lookups of ``lookups``). On PostgreSQL those
come from :class:`eventwf.store.postgres.reader.PostgresReader`, a read-only session (the
log tool never imports psycopg itself: D2a), imported only when a URL is opened, so the
tool works without psycopg for SQLite files. What differs is the chain: each row's hash
follows from the previous row *of its stream* (specs/postgres.md PG5), not of the log, so
a row is checked against its stream's previous hash (:class:`StreamChains`), and position
order is checked on its own (one engine writes a database: positions are gap-free).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

import trio

from eventwf.errors import CorruptLogError, StorageError
from eventwf.model.codec import decode_event
from eventwf.model.events import Event
from eventwf.store.sqlite.columns import LogRow

from .lookups import LISTED_COLUMNS
from .rowview import RowView
from .source import BATCH, ChainedReader, Following, LogSource, NotALog, ToolError

if TYPE_CHECKING:
    import sqlite3

    from eventwf.runtime.notifications import Listener
    from eventwf.store.postgres.follow import HorizonReader
    from eventwf.store.postgres.reader import PostgresReader

__all__ = ["PgChainedReader", "PgLogSource", "StreamChains"]


def _decoded(row: LogRow) -> tuple[Event | None, str | None]:
    try:
        return decode_event(row.type, row.data, position=row.position), None
    except CorruptLogError as exc:
        return None, str(exc)


class StreamChains:
    """Each stream's last version and hash, to check the next row of that stream."""

    def __init__(self, pg: PostgresReader) -> None:
        from eventwf.store.postgres.reader import chained  # psycopg only with a URL

        self.pg = pg
        self.chained = chained
        self.heads: dict[str, tuple[int, bytes]] = {}

    def check(self, row: LogRow) -> tuple[str, str] | None:
        """(kind, message) of what is wrong with ``row``'s place in its stream, or None;
        kinds as ``verify_report.KINDS`` names them. The stream goes on from ``row``."""
        last, prev = self.heads.get(row.stream) or self.pg.chained_from(
            row.stream, row.stream_position)
        self.heads[row.stream] = (row.stream_position, row.hash)
        if row.stream_position != last + 1:
            return "stream gap", (f"stream {row.stream!r} jumps from version {last} to "
                                  f"{row.stream_position} at position {row.position}: an "
                                  "event of that stream is missing")
        if not self.chained(prev, row):
            return "broken chain", (f"event at position {row.position} (stream "
                                    f"{row.stream!r}, {row.type}) fails its checksum: the row "
                                    "was changed, damaged or moved within its stream")
        return None


class PgChainedReader(ChainedReader):
    """Rows after a position, each checked: gap-free positions, its stream's chain."""

    def __init__(self, log: PgLogSource, after: int) -> None:  # noqa: D107
        self.log = log
        self.after = after
        self.prev = None
        self.chains = StreamChains(log.pg)

    def read(self, until: int | None = None) -> Iterator[RowView]:
        for row in self.log.rows(self.after, until):
            problem = None
            if row.position != self.after + 1:
                problem = f"log positions jump from {self.after} to {row.position}"
            found = self.chains.check(row)
            problem = problem or (found[1] if found else None)
            event, undecodable = _decoded(row)
            self.after = row.position
            yield RowView(row, event, problem or undecodable)


class PgFollowing:
    """``tail --follow`` on PostgreSQL: first the rows after ``after`` that the snapshot of
    the listing's head saw, by position; then every row committed after that snapshot,
    in commit-horizon order (specs/postgres.md PG7: a row committed late is never
    skipped, and none is printed twice), each checked against its stream's chain. Woken
    by the engines' notification after each commit, or by polling."""

    def __init__(self, log: PgLogSource, after: int, listener: Listener, channel: str
                 ) -> None:
        pg = log.pg
        if pg.head_snapshot is None:
            pg.head()
        assert pg.head_snapshot is not None
        self.pg = pg
        self.snapshot = pg.head_snapshot
        self.after = after
        self.chains = StreamChains(pg)
        self.horizon: HorizonReader | None = None
        self._listener = listener
        self._channel = channel

    def read(self) -> Iterator[RowView]:
        if self.horizon is None:
            while fetched := self.pg.visible_rows(self.snapshot, self.after, BATCH):
                for raw in fetched:
                    yield self._view(LogRow(*raw))
                    self.after = raw[0]
            self.horizon = self.pg.horizon_reader(self.snapshot)
        while True:
            for raw in self.pg.horizon_rows(self.horizon):
                yield self._view(LogRow(*raw))
            if not self.horizon.more:
                return

    def _view(self, row: LogRow) -> RowView:
        found = self.chains.check(row)
        event, undecodable = _decoded(row)
        return RowView(row, event, found[1] if found else undecodable)

    async def wait(self, interval: float) -> None:
        await self._listener.wait(self._channel, interval)


class PgLogSource(LogSource):
    """An eventwf log in a PostgreSQL database, opened read-only by its URL.

    ``path`` is the URL without its password (it is never printed). SQLite-only reads
    (``snapshot``, ``hash_at``) refuse with :class:`ToolError`.
    """

    def __init__(self, url: str) -> None:  # the SQLite opening does not apply
        try:
            from eventwf.store.postgres.reader import PostgresReader
        except ImportError as exc:
            raise ToolError(f"reading a PostgreSQL log needs psycopg "
                            f"(pip install 'eventwf[postgres]'): {exc}") from exc
        try:
            self.pg = PostgresReader(url)
        except StorageError as exc:
            raise NotALog(str(exc)) from exc
        self._url = url
        self.path = self.home = self.pg.path
        self.header = None
        self.salvage = False
        self.genesis = self.pg.genesis

    def close(self) -> None:
        self.pg.close()

    def __enter__(self) -> PgLogSource:
        return self

    def meta(self, key: str) -> str | None:
        return self.pg.meta(key)

    def head(self) -> int:
        return self.pg.head()

    def hash_at(self, position: int) -> NoReturn:
        raise ToolError(f"{self.path}: rows chain per stream on PostgreSQL, not by position")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        raise ToolError(f"{self.path}: not an SQLite log")
        yield  # never reached: makes this a generator, as the SQLite snapshot is

    def rows(self, after: int = 0, until: int | None = None, *,
             batch: int = BATCH) -> Iterator[LogRow]:
        from eventwf.store.postgres.reader import iter_rows

        for raw in iter_rows(self.pg, after, until, batch):
            yield LogRow(*raw)

    def reader(self, after: int) -> ChainedReader:
        return PgChainedReader(self, after)

    @asynccontextmanager
    async def following(self, after: int) -> AsyncIterator[Following]:
        """Rows as they are committed, in commit-horizon order (:class:`PgFollowing`),
        woken by the engines' notifications (a listening session of its own)."""
        from eventwf.runtime.notifications import Listener
        from eventwf.store.postgres.notify import LOG_CHANNEL, ListenSession

        listener = Listener(lambda channels: ListenSession(self._url, channels))
        listener.watch(LOG_CHANNEL)
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            yield PgFollowing(self, after, listener, LOG_CHANNEL)
            nursery.cancel_scope.cancel()

    def stream_rows(self, stream: str, *, from_version: int = 0, until: int | None = None,
                    batch: int = BATCH) -> Iterator[tuple[LogRow, bytes | None]]:
        """The stream's rows in version order, each with its stream's previous hash."""
        _, prev = self.pg.chained_from(stream, from_version)
        version = from_version
        while True:
            fetched = self.pg.stream_rows(stream, version, until, batch)
            for raw in fetched:
                row = LogRow(*raw)
                yield row, prev
                prev = row.hash
            if len(fetched) < batch:
                return
            version = fetched[-1][2] + 1

    def stream_views(self, stream: str, *, from_version: int = 0,
                     until: int | None = None) -> Iterator[RowView]:
        chains = StreamChains(self.pg)
        for row, _ in self.stream_rows(stream, from_version=from_version, until=until):
            found = chains.check(row)
            event, undecodable = _decoded(row)
            yield RowView(row, event, found[1] if found else undecodable)

    def stream_head(self, stream: str) -> int:
        return self.pg.stream_head(stream)

    # -- the lookups ---------------------------------------------------------------------

    def stream_summaries(self, last: str, low: str, high: str, batch: int
                         ) -> list[tuple[Any, ...]]:
        return self.pg.stream_summaries(last, low, high, batch)

    def workflow_statuses(self, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        return self.pg.workflow_statuses(ids) if ids else []

    def workflow_status(self, workflow_id: str) -> str | None:
        return self.pg.workflow_status(workflow_id)

    def workflow_rows(self, equals: Sequence[tuple[str, str]],
                      metadata: Sequence[tuple[str | None, Any]],
                      after: tuple[int, str] | None, limit: int) -> list[tuple[Any, ...]]:
        return self.pg.workflow_rows(LISTED_COLUMNS, equals, metadata, after, limit)

    def status_counts(self) -> list[tuple[Any, ...]]:
        return self.pg.status_counts()

    def first_position(self, stream: str) -> int | None:
        return self.pg.first_position(stream)

    def time_at(self, position: int) -> int | None:
        return self.pg.time_at(position)

    def tally(self, bounds: Sequence[int], low: int, high: int) -> list[tuple[Any, ...]]:
        return self.pg.tally(bounds, low, high)

    def projection_counts(self) -> tuple[dict[str, int], int, int]:
        return self.pg.projection_counts()

    def storage(self) -> tuple[dict[str, int], dict[str, int]]:
        """The sizes of the log's tables; PostgreSQL has no pages to count here."""
        return self.pg.database_bytes(), {}
