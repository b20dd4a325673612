"""Event rows on PostgreSQL: the per-stream hash chain of new rows, checked reads.

Theory of operation. Each row's hash chains it to the previous row *of its stream*
(``sql.stream_hash``; the database's genesis for version 0), not to the previous row of
the log (specs/postgres.md PG5). The writer keeps each stream's head hash it has seen
(:class:`Heads`, read from the database on first use), so chaining costs no query.
Positions come from the identity column when the rows are inserted (PG6: unique, with
gaps, several engines drawing at once); ``UNIQUE(stream, stream_position)`` refuses a row
whose version another writer took. Reads verify the chain as they go: a changed, removed
or reordered row of a stream is ``CorruptLogError`` at its position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from eventwf.errors import CorruptLogError
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded
from eventwf.store.interface import PendingRow
from eventwf.store.postgres.sql import Conn, NewEvent, stream_hash, stream_heads

__all__ = ["CheckedRow", "Heads", "before", "checked_rows", "positions_of", "read_stream",
           "row_problem", "stream_head"]

_MAX_CACHED = 100_000  # stream heads kept in memory (read again from the log when dropped)


class Heads:
    """The last version and hash of each stream this writer has seen: what chains the
    next row. A miss reads the heads from the log (one query per batch)."""

    def __init__(self, genesis: bytes) -> None:
        self.genesis = genesis
        self._known: dict[str, tuple[int, bytes]] = {}

    def chain(self, conn: Conn, rows: Sequence[PendingRow]
              ) -> tuple[list[NewEvent], dict[str, tuple[int, bytes]]]:
        """``rows`` chained to their streams' heads, and the streams' new heads (to
        :meth:`advance` to once they committed)."""
        missing = [r.stream for r in rows if r.stream not in self._known]
        if missing:
            for stream, head in stream_heads(conn, list(dict.fromkeys(missing))).items():
                self._known[stream] = (head.version, head.hash or self.genesis)
        heads: dict[str, tuple[int, bytes]] = {}
        out: list[NewEvent] = []
        for row in rows:
            _, prev = heads.get(row.stream) or self._known[row.stream]
            digest = stream_hash(prev, row.stream, row.stream_position, row.time_us, row.type,
                                 row.data)
            heads[row.stream] = (row.stream_position, digest)
            out.append(NewEvent(*row, digest))
        return out, heads

    def advance(self, heads: dict[str, tuple[int, bytes]]) -> None:
        if len(self._known) + len(heads) > _MAX_CACHED:
            self._known.clear()
        self._known.update(heads)

    def forget(self) -> None:
        """After a failed commit: what is known may be wrong; read it again."""
        self._known.clear()


def positions_of(conn: Conn, keys: Sequence[tuple[str, int]]) -> list[int]:
    """The positions of the rows ``(stream, version)``, in the order given."""
    rows = conn.execute(
        "SELECT k.i, e.position FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY "
        "AS k(stream, version, i) JOIN eventwf.events e ON e.stream = k.stream "
        "AND e.stream_position = k.version ORDER BY k.i",
        ([k[0] for k in keys], [k[1] for k in keys])).fetchall()
    return [int(r[1]) for r in rows]


def stream_head(conn: Conn, stream: str) -> int:
    row = conn.execute("SELECT max(stream_position) FROM eventwf.events WHERE stream = %s",
                       (stream,)).fetchone()
    return -1 if row is None or row[0] is None else int(row[0])


def read_stream(conn: Conn, genesis: bytes, stream: str, from_stream_position: int = 0, *,
                after_position: int = 0) -> list[Recorded]:
    """The events of ``stream`` from a version (and after a log position), verified against
    the chain and decoded; ``CorruptLogError`` at the first row that fails."""
    start = from_stream_position
    if after_position:
        row = conn.execute("SELECT min(stream_position) FROM eventwf.events WHERE stream = %s "
                           "AND stream_position >= %s AND position > %s",
                           (stream, from_stream_position, after_position)).fetchone()
        if row is None or row[0] is None:
            return []
        start = int(row[0])
    rows = conn.execute(
        "SELECT position, stream_position, time_us, type, data, hash FROM eventwf.events "
        "WHERE stream = %s AND stream_position >= %s ORDER BY stream_position",
        (stream, max(start - 1, 0))).fetchall()
    prev = genesis
    if start > 0:
        if not rows or rows[0][1] != start - 1:
            if rows:
                raise CorruptLogError(f"stream {stream!r} has no version {start - 1} before "
                                      f"log position {rows[0][0]}: an event is missing",
                                      position=int(rows[0][0]))
            return []
        prev = bytes(rows[0][5])
        rows = rows[1:]
    out: list[Recorded] = []
    for position, version, time_us, type_name, data, digest in rows:
        problem = row_problem(stream, start + len(out), prev, version, time_us, type_name,
                           bytes(data), bytes(digest))
        if problem is not None:
            raise CorruptLogError(f"event at log position {position} (stream {stream!r}): "
                                  f"{problem}", position=int(position))
        out.append(Recorded(int(position), stream, int(version), int(time_us),
                            decode_event(type_name, bytes(data), position=int(position))))
        prev = bytes(digest)
    return out


def row_problem(stream: str, expected: int, prev: bytes, version: int, time_us: int,
             type_name: str, data: bytes, digest: bytes) -> str | None:
    """What is wrong with a row, given its stream's previous hash (None: intact)."""
    if version != expected:
        return f"stream {stream!r} jumps from version {expected - 1} to {version}"
    if stream_hash(prev, stream, version, time_us, type_name, data) != digest:
        return (f"{type_name} fails its checksum: the row was changed, damaged or moved "
                "within its stream")
    return None


class CheckedRow(NamedTuple):
    position: int
    stream: str
    stream_position: int
    time_us: int
    type: str
    data: bytes
    problem: str | None


def checked_rows(conn: Conn, genesis: bytes, *, after: int = 0, page: int = 2000
                 ) -> Iterator[CheckedRow]:
    """Every row after position ``after`` in position order, each checked against its
    stream's chain (a stream's first row here against the row before it), in pages.
    After a bad row its stream goes on from the stored hash: one damage, one report."""
    streams: dict[str, tuple[int, bytes]] = {}
    while True:
        rows = conn.execute(
            "SELECT position, stream, stream_position, time_us, type, data, hash "
            "FROM eventwf.events WHERE position > %s ORDER BY position LIMIT %s",
            (after, page)).fetchall()
        for position, stream, version, time_us, type_name, raw, raw_digest in rows:
            data, digest = bytes(raw), bytes(raw_digest)
            if stream not in streams:
                streams[stream] = before(conn, genesis, stream, int(version))
            last, prev = streams[stream]
            problem = row_problem(stream, last + 1, prev, version, time_us, type_name, data,
                               digest)
            streams[stream] = (int(version), digest)
            yield CheckedRow(int(position), stream, int(version), int(time_us), type_name,
                             data, problem)
        if len(rows) < page:
            return
        after = int(rows[-1][0])


def before(conn: Conn, genesis: bytes, stream: str, version: int) -> tuple[int, bytes]:
    """The version and hash a stream's row of ``version`` chains from."""
    if version <= 0:
        return -1, genesis
    row = conn.execute("SELECT stream_position, hash FROM eventwf.events WHERE stream = %s "
                       "AND stream_position < %s ORDER BY stream_position DESC LIMIT 1",
                       (stream, version)).fetchone()
    return (-1, genesis) if row is None else (int(row[0]), bytes(row[1]))
