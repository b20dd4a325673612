"""The append-only event table: positions, per-stream versions, the hash chain.

Each row's ``hash`` is BLAKE2b-128 over the previous row's hash and this row's fields, so
changing, removing or reordering a row breaks the chain at that row; the first row chains
from a random per-file genesis value kept in ``meta``. Rows are verified whenever they are
read for replay, and :func:`scan` verifies the whole chain in one streaming pass.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterator
from hashlib import blake2b
from typing import Any, NamedTuple

from eventwf.errors import CorruptLogError
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded
from eventwf.store.sqlite.columns import (
    LogRow,
    mistyped_problem,
    row_problem,
    text_as_bytes,
    typed_batches,
)

__all__ = ["LogRow", "ScanItem", "chain_hash", "checked_batches",
           "read_stream", "scan", "stream_head", "workflow_batches"]

_PACK = struct.Struct(">qqq").pack
# Text columns are read as blobs so that invalid UTF-8 is a finding, not an exception.
_ROWS = ("SELECT position, CAST(stream AS BLOB), stream_position, time_us, CAST(type AS BLOB), "
         "data, hash FROM events ")


def chain_hash(
    prev: bytes, position: int, stream: str, stream_position: int, time_us: int,
    type_name: str, data: bytes,
) -> bytes:
    return blake2b(b"".join((prev, _PACK(position, stream_position, time_us), stream.encode(),
                             b"\x00", type_name.encode(), b"\x00", data)),
                   digest_size=16).digest()


_hash = chain_hash


class ScanItem(NamedTuple):
    """A row as read by :func:`scan`, with what is wrong with it (None when intact)."""

    row: LogRow
    problem: str | None


def stream_head(conn: sqlite3.Connection, stream: str) -> int:
    """The last stream position of ``stream``, or -1 if it has no events."""
    return _max_version(conn, stream, (1 << 63) - 1)


def read_stream(
    conn: sqlite3.Connection,
    genesis: bytes,
    stream: str,
    from_stream_position: int = 0,
    *,
    after_position: int = 0,
) -> list[Recorded]:
    """Every event of ``stream`` from a stream position (and after a log position) on,
    verified and decoded.

    Raises ``CorruptLogError`` naming the first row that fails its checksum, is missing
    from the stream's sequence, or does not decode.
    """
    bounds = (from_stream_position, after_position)
    with text_as_bytes(conn):  # text where it does not belong arrives as Text, not an error
        if conn.execute(_BLOB_NAMED, (stream,)).fetchone() is None:
            rows = conn.execute(_STREAM_ROWS, (stream, *bounds)).fetchall()
            try:
                return _verified(conn, genesis, stream, rows, from_stream_position,
                                 after_position)
            except CorruptLogError:
                pass  # a version in another class sorts last in the index: read in order
        rows = conn.execute(_ANY_NAMED_ROWS, (stream, stream, *bounds)).fetchall()
    return _verified(conn, genesis, stream, rows, from_stream_position, after_position)


def _verified(conn: sqlite3.Connection, genesis: bytes, stream: str, rows: list[Any],
              from_stream_position: int, after_position: int) -> list[Recorded]:
    """:func:`read_stream`'s rows checked and decoded, in the order given."""
    out: list[Recorded] = []
    expected: int | None = None if after_position else from_stream_position
    for position, stream_position, time_us, raw_type, data, digest, prev, text in rows:
        if not text or data.__class__ is not bytes or digest.__class__ is not bytes or \
                stream_position.__class__ is not int or time_us.__class__ is not int:
            raise CorruptLogError(f"event at log position {position} (stream {stream!r}): "
                                  f"{row_problem(conn, position)}", position=position)
        type_name = _text(raw_type, position, "type")
        if expected is None:
            expected = stream_position
        if stream_position != expected:
            raise CorruptLogError(
                f"stream {stream!r} jumps from version {expected - 1} to {stream_position} at "
                f"log position {position}: an event is missing",
                position=position,
            )
        _verify_row(conn, genesis, stream, position, stream_position, time_us, type_name, data,
                    digest, prev)
        out.append(
            Recorded(position, stream, stream_position, time_us,
                     decode_event(type_name, data, position=position))
        )
        expected += 1
    return out


# A stream's rows, in index order, with the hash of the row before each and whether the
# type is text (the other columns' classes show in the values, read under text_as_bytes:
# L4a). A stream stored as a blob is not equal to its name: _BLOB_NAMED finds such rows,
# and then, as when a version in another class sorts out of place, _ANY_NAMED_ROWS reads
# the stream in version order (a sort, which the plain read does not need).
_STREAM_COLUMNS = (
    "SELECT e.position, e.stream_position, e.time_us, CAST(e.type AS BLOB), e.data, e.hash, "
    "CAST(p.hash AS BLOB), typeof(e.type) = 'text'")
_JOIN = " FROM events e LEFT JOIN events p ON p.position = e.position - 1 "
_STREAM_ROWS = (_STREAM_COLUMNS + _JOIN + "WHERE e.stream = ? AND e.stream_position >= ? "
                "AND e.position > ? ORDER BY e.stream_position")
_BLOB_NAMED = "SELECT 1 FROM events WHERE stream = CAST(? AS BLOB) LIMIT 1"
_ANY_NAMED_ROWS = (_STREAM_COLUMNS + " AND typeof(e.stream) = 'text'" + _JOIN
                   + "WHERE e.stream IN (?, CAST(? AS BLOB)) AND e.stream_position >= ? AND "
                   "e.position > ? ORDER BY CAST(e.stream_position AS INTEGER), e.position")


def _verify_row(conn: sqlite3.Connection, genesis: bytes, stream: str, position: int,
                stream_position: int, time_us: int, type_name: str, data: Any, digest: Any,
                prev: Any) -> None:
    """The row's hash must follow from the previous row's (raises ``CorruptLogError``)."""
    if not isinstance(data, bytes) or not isinstance(digest, bytes) or not isinstance(
            prev, bytes | None):
        raise CorruptLogError(
            f"event at log position {position} (stream {stream!r}) has a data or hash "
            "column that is not a blob", position=position)
    if prev is None:
        if position != 1:
            raise CorruptLogError(
                f"the event before log position {position} is missing (stream {stream!r})",
                position=position,
            )
        prev = genesis
    if chain_hash(prev, position, stream, stream_position, time_us, type_name, data) != digest:
        held = _should_have_held(conn, genesis, position - 1)  # was only *its* hash damaged?
        if held is None or chain_hash(held, position, stream, stream_position, time_us,
                                      type_name, data) != digest:
            _checksum_failed(stream, position, type_name)


def _checksum_failed(stream: str, position: int, type_name: str) -> None:
    raise CorruptLogError(
        f"event at log position {position} (stream {stream!r}, {type_name}) fails its "
        "checksum: the row was changed or damaged",
        position=position,
    )


def scan(
    conn: sqlite3.Connection, genesis: bytes, *, from_position: int = 1, batch: int = 2000
) -> Iterator[ScanItem]:
    """Every row in position order with its chain checked, in bounded memory.

    A row whose hash does not follow from the previous row is reported; the chain then
    continues from the stored hash, so one damaged row is reported once.
    """
    make = LogRow._make
    for rows in checked_batches(conn, genesis, from_position=from_position, batch=batch):
        for raw, problem in rows:
            yield ScanItem(make(raw), problem)


def checked_batches(
    conn: sqlite3.Connection, genesis: bytes, *, from_position: int = 1, batch: int = 2000,
    through: int | None = None, versions: dict[str, int] | None = None,
    wf_types: frozenset[str] | None = None,
) -> Iterator[list[tuple[tuple[Any, ...], str | None]]]:
    """:func:`scan` as raw row tuples, a batch at a time (a list per fetch: no generator
    switch per row, no row object: for hot loops),
    up to position ``through`` if given; ``versions``, if given, receives each stream's last
    version once every row is read. With ``wf_types``, an intact row of a workflow stream is
    checked but left out of the batches unless its type is one of these."""
    prev = genesis
    if from_position > 1:
        row = conn.execute(
            "SELECT CAST(hash AS BLOB) FROM events WHERE position = ?", (from_position - 1,)
        ).fetchone()
        prev = genesis if row is None else bytes(row[0])
    last = (1 << 63) - 1 if through is None else through
    chain = _ChainPass(conn, prev, from_position, wf_types)
    for rows in typed_batches(conn, _TYPED_ROWS, from_position, last, batch):
        yield chain.check(rows)
    if versions is not None:
        versions.update((stream, last) for stream, last in chain.streams.values())


# Rows whose stream and type are text (the classes of the other columns are checked as
# they are read: see typed_batches).
_TYPED_ROWS = (_ROWS + "WHERE position >= ? AND position <= ? AND typeof(stream) = 'text' "
               "AND typeof(type) = 'text' ORDER BY position")


class _ChainPass:
    """Where one pass of :func:`checked_batches` is between two batches: the chain value
    the next row must follow from, the position it must have, each stream's last version
    and the texts of the stream and type blobs seen so far (one lookup each per row: a
    whole-log check runs :meth:`check`'s loop a million times, so it holds these in locals
    while it runs and hands them back at the end of each batch)."""

    __slots__ = ("alternative", "conn", "damaged", "expected", "from_position", "prev",
                 "streams", "types", "wf_types")

    def __init__(self, conn: sqlite3.Connection, prev: bytes, from_position: int,
                 wf_types: frozenset[str] | None) -> None:
        self.conn, self.from_position, self.wf_types = conn, from_position, wf_types
        self.prev, self.expected = prev, from_position
        # The chain value a damaged hash column should hold: if only a row's hash column
        # is damaged, the next row chains from what it should have held: it is then intact.
        self.alternative: bytes | None = None
        # Per distinct stream blob: [its text, its last version]; per type blob: its text.
        self.streams: dict[Any, list[Any]] = {}
        self.damaged: dict[Any, list[Any]] = {}  # stream blobs that are not UTF-8 text
        self.types: dict[Any, str] = {}

    def check(self, rows: list[tuple[Any, ...]]) -> list[tuple[tuple[Any, ...], str | None]]:
        """The next batch of rows, each with what is wrong with it (None when intact)."""
        conn, wf_types = self.conn, self.wf_types
        streams_get, types_get = self.streams.get, self.types.get
        pack, digest_of = _PACK, blake2b
        prev, expected, alternative = self.prev, self.expected, self.alternative
        out: list[tuple[tuple[Any, ...], str | None]] = []
        append = out.append
        for position, raw_stream, version, time_us, raw_type, data, digest in rows:
            state, type_name = streams_get(raw_stream), types_get(raw_type)
            if state is None or type_name is None:
                state, type_name = self._first_sight(raw_stream, raw_type)
            stream = state[0]
            problem = None
            if position != expected:
                problem = f"log positions jump from {expected - 1} to {position}"
            elif type_name is None:
                problem = "its stream or type column is not valid UTF-8 text"
            elif data.__class__ is not bytes or digest.__class__ is not bytes:
                problem, version, digest = mistyped_problem(conn, position, data, version, digest)
            else:  # chain_hash, inlined on the raw blobs (the same bytes) for speed
                try:
                    packed = pack(position, version, time_us)
                except struct.error:  # a version or time that is not an integer
                    problem, version, digest = mistyped_problem(conn, position, data, version,
                                                                digest)
                else:
                    computed = digest_of(b"".join((prev, packed, raw_stream, b"\x00", raw_type,
                                                   b"\x00", data)), digest_size=16).digest()
                    if computed != digest and (alternative is None or _hash(
                            alternative, position, stream, version, time_us, type_name,
                            data) != digest):
                        problem = "checksum mismatch: the row was changed, damaged or moved"
                        alternative = computed  # what its hash column should have held
                    else:
                        alternative = None
                    if problem is None and version != state[1] + 1:
                        problem = f"stream {stream!r} jumps from version {state[1]} to {version}"
            state[1] = version
            prev = digest if digest.__class__ is bytes else b""
            expected = position + 1
            if (wf_types is not None and problem is None and type_name not in wf_types
                    and stream[:3] == "wf:"):
                continue
            append(((position, stream, version, time_us, type_name or "", data, digest),
                    problem))
        self.prev, self.expected, self.alternative = prev, expected, alternative
        return out

    def _first_sight(self, raw_stream: Any, raw_type: Any) -> tuple[list[Any], str | None]:
        """The slow path of :meth:`check`, for a stream or type blob not seen before or
        not UTF-8: the stream's [text, last version] entry and the type's text (None when
        either is not text: a stream that is not is kept apart and shown with U+FFFD)."""
        try:
            stream, good = raw_stream.decode(), True
        except (UnicodeDecodeError, AttributeError):
            stream, good = (raw_stream.decode(errors="replace") if isinstance(raw_stream, bytes)
                            else str(raw_stream)), False
        try:
            type_name: str | None = raw_type.decode()
        except (UnicodeDecodeError, AttributeError):
            type_name = None
        table = self.streams if good else self.damaged
        state = table.get(raw_stream)
        if state is None:
            from_position = self.from_position
            last = _version_before(self.conn, stream, from_position) if from_position > 1 else -1
            state = table[raw_stream] = [stream, last]
        if type_name is not None and len(self.types) < 100_000:  # a bounded cache of names
            self.types[raw_type] = type_name
        return state, type_name if good else None


def workflow_batches(
    conn: sqlite3.Connection, through: int, *, batch: int = 2000
) -> Iterator[list[tuple[tuple[Any, ...], str | None]]]:
    """Rows 1..``through`` of workflow streams, shaped like :func:`checked_batches` (hash
    None) but with *no* checks: only for a fold whose rows another pass checks
    (``chaincheck``). Text columns are compared and read as text even when stored as blobs,
    as that pass reads them; text that is not UTF-8 raises ``CorruptLogError``."""
    cursor = conn.execute(
        "SELECT position, CAST(stream AS TEXT), CAST(stream_position AS INTEGER), "
        "CAST(time_us AS INTEGER), CAST(type AS TEXT), CAST(data AS BLOB), NULL FROM events "
        "WHERE position <= ? AND CAST(stream AS TEXT) >= 'wf:' "
        "AND CAST(stream AS TEXT) < 'wf;' ORDER BY position",
        (through,))
    while True:
        try:
            rows = cursor.fetchmany(batch)
        except sqlite3.OperationalError as exc:
            if "decode to UTF-8" not in str(exc):
                raise
            raise CorruptLogError(f"a workflow row is not UTF-8 text: {exc}") from exc
        if not rows:
            return
        yield [(row, None) for row in rows]


def _should_have_held(conn: sqlite3.Connection, genesis: bytes, position: int) -> bytes | None:
    """The hash row ``position`` should hold, from its content and its predecessor's hash."""
    row = conn.execute(
        "SELECT r.position, CAST(r.stream AS BLOB), CAST(r.stream_position AS INTEGER), "
        "CAST(r.time_us AS INTEGER), CAST(r.type AS BLOB), CAST(r.data AS BLOB), "
        "CAST(r.hash AS BLOB), CAST(p.hash AS BLOB) FROM events r "
        "LEFT JOIN events p ON p.position = r.position - 1 WHERE r.position = ?",
        (position,)).fetchone()
    if row is None:
        return None
    position, stream, version, time_us, type_name, data, _, before = _decoded(row[:7]) + row[7:]
    if type_name is None or not isinstance(data, bytes):
        return None
    before = genesis if position == 1 else before
    if not isinstance(before, bytes):
        return None
    return chain_hash(before, position, stream, version, time_us, type_name, data)


def _decoded(raw: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row read with its text columns as blobs: decode them (type None: not UTF-8)."""
    position, stream, version, time_us, type_name, data, digest = raw
    try:
        return position, stream.decode(), version, time_us, type_name.decode(), data, digest
    except (UnicodeDecodeError, AttributeError):
        shown = stream.decode(errors="replace") if isinstance(stream, bytes) else str(stream)
        return position, shown, version, time_us, None, data, digest


def _text(value: Any, position: int, column: str) -> str:
    """A text column read as a blob; ``CorruptLogError`` if it is not UTF-8."""
    try:
        return bytes(value).decode()
    except (UnicodeDecodeError, TypeError) as exc:
        raise CorruptLogError(f"event at log position {position} has a {column} column that "
                              "is not valid UTF-8 text", position=position) from exc


def _version_before(conn: sqlite3.Connection, stream: str, position: int) -> int:
    return _max_version(conn, stream, position - 1)


_MAX_VERSION = ("SELECT (SELECT max(stream_position) FROM events WHERE stream = ?1 AND "
                "position <= ?2), (SELECT max(stream_position) FROM events WHERE "
                "stream = CAST(?1 AS BLOB) AND position <= ?2)")


def _max_version(conn: sqlite3.Connection, stream: str, through: int) -> int:
    """The last version of ``stream`` up to position ``through`` (-1: none), also counting
    its rows whose stream is stored as a blob; a version that is not an integer counts as
    what it casts to (such a row is damaged, and reading the stream says so)."""
    versions = conn.execute(_MAX_VERSION, (stream, through)).fetchone()
    if any(v is not None and v.__class__ is not int for v in versions):
        versions = conn.execute(
            "SELECT max(CAST(stream_position AS INTEGER)) FROM events WHERE "
            "stream IN (?1, CAST(?1 AS BLOB)) AND position <= ?2", (stream, through)).fetchone()
    found = [v for v in versions if v is not None]
    return int(max(found)) if found else -1


def decode_row(row: LogRow) -> Recorded:
    return Recorded(row.position, row.stream, row.stream_position, row.time_us,
                    decode_event(row.type, row.data, position=row.position))

