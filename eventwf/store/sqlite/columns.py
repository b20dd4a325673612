"""The storage class of every column of ``events``, and reading rows whatever they hold.

eventwf writes ``stream`` and ``type`` as TEXT, ``stream_position`` and ``time_us`` as
INTEGER, ``data`` and ``hash`` as BLOB. One flipped bit in SQLite's record header changes
a value's class (a blob of n bytes becomes text of n bytes, an 8-byte integer a float)
while ``PRAGMA integrity_check`` still passes. Read plainly, such a row raises (text that
is not UTF-8) or slips through as another type, and a stream stored as a blob is not equal
to its name. So such a row is damaged at its position, like a changed byte: the hot scans
select only rows whose every column holds its class (:data:`TYPED`, which also keeps the
classes in their text); the rows they leave out are read back here with every value cast
to its class (:func:`mistyped_rows`) and carry their problem in a :class:`Mistyped` data
value, which no check takes for a blob.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

__all__ = ["CAST_ROW", "COLUMNS", "SHOWN_COLUMNS", "LogRow", "Mistyped", "Text", "cast_row",
           "class_problem", "mistyped", "mistyped_problem", "mistyped_rows", "row_problem",
           "shown_columns", "shown_row", "text_as_bytes", "typed", "typed_batches"]

class LogRow(NamedTuple):
    position: int
    stream: str
    stream_position: int
    time_us: int
    type: str
    data: bytes
    hash: bytes


COLUMNS = ("stream", "stream_position", "time_us", "type", "data", "hash")
CLASSES = ("text", "integer", "integer", "text", "blob", "blob")


def typed(prefix: str = "") -> str:
    """An SQL condition: every column of the row (``prefix``, e.g. ``e.``) holds its class."""
    return " AND ".join(f"typeof({prefix}{column}) = '{kind}'"
                        for column, kind in zip(COLUMNS, CLASSES, strict=True))


def cast_row(prefix: str = "") -> str:
    """Every column cast to its class (text as blobs): reading it never raises."""
    p = prefix
    return (f"{p}position, CAST({p}stream AS BLOB), CAST({p}stream_position AS INTEGER), "
            f"CAST({p}time_us AS INTEGER), CAST({p}type AS BLOB), CAST({p}data AS BLOB), "
            f"CAST({p}hash AS BLOB)")


CAST_ROW = cast_row()
_FOUND = ", ".join(f"typeof({column})" for column in COLUMNS)
_MISTYPED = (f"SELECT {CAST_ROW}, {_FOUND} FROM events "  # noqa: S608 - constants only
             f"WHERE position >= ? AND position <= ? AND NOT ({typed()}) ORDER BY position")


class Text(bytes):
    """A TEXT value, as the checking scans read one where a column should not hold text."""


class Mistyped(bytes):
    """The data of a row whose columns do not all hold their class; ``problem`` says
    which. A subclass, so ``data.__class__ is bytes`` (every row check) is False."""

    problem: str


def class_problem(found: Sequence[str]) -> str | None:
    """What is wrong with a row whose columns hold the classes ``found`` (None: nothing)."""
    wrong = [f"{column} holds {kind}, not {want}"
             for column, want, kind in zip(COLUMNS, CLASSES, found, strict=True)
             if kind != want]
    if not wrong:
        return None
    return f"a column holds the wrong storage class ({'; '.join(wrong)}): the row was damaged"


def mistyped(data: bytes | None, problem: str) -> Mistyped:
    value = Mistyped(data or b"")
    value.problem = problem
    return value


def mistyped_rows(conn: sqlite3.Connection, low: int, high: int) -> list[tuple[Any, ...]]:
    """Rows ``low``..``high`` whose columns do not all hold their class, as raw rows
    (position, stream bytes, version, time, type bytes, :class:`Mistyped` data, hash)."""
    out: list[tuple[Any, ...]] = []
    for position, stream, version, time_us, type_name, data, digest, *found in conn.execute(
            _MISTYPED, (low, high)):
        value = mistyped(data, class_problem(found) or "a column holds the wrong storage class")
        out.append((position, stream or b"", version or 0, time_us or 0, type_name or b"",
                    value, digest or b""))
    return out


def typed_batches(conn: sqlite3.Connection, sql: str, low: int, high: int, batch: int
                  ) -> Iterator[list[tuple[Any, ...]]]:
    """Rows ``low``..``high`` in position order, a batch at a time, from ``sql`` (which
    selects the rows whose stream and type are text, from position ``?`` to ``?``). Text
    in data, hash, version or time comes as :class:`Text` (never a decoding error), so the
    checks see its class; a row whose stream or type is not text is left out by the query,
    found in the gap it leaves and handed out from :func:`mistyped_rows`. Costs one test
    per batch."""
    with text_as_bytes(conn):
        cursor = conn.execute(sql, (low, high))
    following = low  # the first position not yet handed out
    while True:
        with text_as_bytes(conn):  # only around fetching: other queries get str
            rows = cursor.fetchmany(batch)
        if not rows:
            break
        if rows[0][0] != following or rows[-1][0] - rows[0][0] != len(rows) - 1:
            odd = mistyped_rows(conn, following, rows[-1][0])  # gaps: lost or mistyped rows
            if odd:
                rows = sorted(rows + odd, key=_position)
        following = rows[-1][0] + 1
        yield rows
    if following <= high and (odd := mistyped_rows(conn, following, high)):
        yield odd


def _position(row: tuple[Any, ...]) -> int:
    return int(row[0])


@contextmanager
def text_as_bytes(conn: sqlite3.Connection) -> Iterator[None]:
    """While inside, TEXT values come from ``conn`` as :class:`Text`: never a decoding error,
    and a class every check tells from ``bytes``, ``str`` and ``int``."""
    factory, conn.text_factory = conn.text_factory, Text
    try:
        yield
    finally:
        conn.text_factory = factory


def mistyped_problem(conn: sqlite3.Connection, position: int, data: Any, version: Any,
                     digest: Any) -> tuple[str, int, bytes]:
    """The problem of a row with a column in another storage class, and its version and
    hash as the chain goes on with them (the hash's bytes, so the next row is intact)."""
    problem = data.problem if data.__class__ is Mistyped else row_problem(conn, position)
    return problem, _integer(version), bytes(digest) if isinstance(digest, bytes) else b""


def _integer(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -2  # no version follows it: the stream's next row reports the jump


def row_problem(conn: sqlite3.Connection, position: int) -> str:
    """The storage-class problem of one row, for a message."""
    rows = mistyped_rows(conn, position, position)
    return rows[0][5].problem if rows else "its columns hold their storage classes"


# The columns of a row for readers that show every row as it is (eventwf.logtool): each
# value cast to its class, then whether every column held its class; see shown_row.
SHOWN_COLUMNS = f"{cast_row()}, {typed()}"


def shown_columns(prefix: str) -> str:
    """:data:`SHOWN_COLUMNS` of the table aliased ``prefix`` (e.g. ``e.``)."""
    return f"{cast_row(prefix)}, {typed(prefix)}"


def shown_row(conn: sqlite3.Connection, raw: tuple[Any, ...]) -> LogRow:
    """A row read with :data:`SHOWN_COLUMNS`, its text decoded (U+FFFD where it is not
    UTF-8). A row damaged in its storage classes or its text holds a :class:`Mistyped`
    data value saying so, so that nothing takes it for intact."""
    position, stream, version, time_us, type_name, data, digest, ok = raw[:8]
    problem = None if ok else row_problem(conn, position)
    texts = []
    for value in (stream, type_name):
        try:
            texts.append(bytes(value or b"").decode())
        except UnicodeDecodeError:
            texts.append(bytes(value).decode(errors="replace"))
            problem = problem or "its stream or type column is not valid UTF-8 text"
    if problem is not None:
        data = mistyped(data, problem)
    return LogRow(position, texts[0], version, time_us, texts[1], data, digest)

