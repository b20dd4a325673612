"""Helpers for the tools/eventlog tests: run the tool in-process, copy and damage logs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import trio
import trio.testing

from eventwf.logtool.cli import main
from eventwf.store.sqlite.log import chain_hash
from tests.eventlog_factory import write_log


class Result(NamedTuple):
    code: int
    out: str
    err: str

    def records(self) -> list[dict[str, Any]]:
        """The JSON lines printed (every line must be one JSON object)."""
        return [json.loads(line) for line in self.out.splitlines()]

    def last(self) -> dict[str, Any]:
        return self.records()[-1]


def cli(*argv: str) -> Result:
    """``eventwf log *argv`` in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(argv), stdout=out)
    return Result(code, out.getvalue(), err.getvalue())


def build(path: str | Path) -> str:
    """The reference log, written by the real engine (see eventlog_factory.write_log) to
    ``path``: an SQLite file, or a PostgreSQL URL (the URL is returned)."""
    trio.run(write_log, str(path), clock=trio.testing.MockClock(autojump_threshold=0))
    return str(path)


def copy(src: str, dst: Path, *, anchor: bool = True) -> str:
    shutil.copyfile(src, dst)
    if anchor and Path(src + ".anchor").exists():
        shutil.copyfile(src + ".anchor", str(dst) + ".anchor")
    return str(dst)


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@contextlib.contextmanager
def raw(path: str) -> Iterator[sqlite3.Connection]:
    """A plain connection with the append-only triggers dropped (damage by hand)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
        yield conn
    finally:
        conn.close()


def query(path: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def position_of(path: str, stream: str, type_name: str, nth: int = 0) -> int:
    rows = query(path, "SELECT position FROM events WHERE stream = ? AND type = ? "
                 "ORDER BY position", stream, type_name)
    return int(rows[nth][0])


def head(path: str) -> int:
    return int(query(path, "SELECT max(position) FROM events")[0][0])


# (column, SQL giving it another storage class, that class): what one flipped bit in
# SQLite's record header does to a row (log.md L4a); the column's affinity keeps these.
CLASS_CHANGES = [("stream", "CAST(stream AS BLOB)", "blob"), ("type", "CAST(type AS BLOB)", "blob"),
                 ("data", "CAST(data AS TEXT)", "text"), ("hash", "CAST(hash AS TEXT)", "text"),
                 ("time_us", "time_us + 0.5", "real"),
                 ("stream_position", "CAST(stream_position AS BLOB)", "blob")]


def change_class(path: str, position: int, column: str, value: str) -> None:
    """Store row ``position``'s ``column`` as ``value`` (an entry of CLASS_CHANGES)."""
    with raw(path) as conn:
        conn.execute(f"UPDATE events SET {column} = {value} WHERE position = ?", (position,))


def flip_byte(path: str, position: int) -> None:
    with raw(path) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE position = ?",
                               (position,)).fetchone()
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        conn.execute("UPDATE events SET data = ? WHERE position = ?", (bytes(flipped), position))


def append_forged(path: str, stream: str, stream_position: int, type_name: str,
                  data: bytes) -> int:
    """Append a row with a correct chain hash (as someone holding the genesis could)."""
    with raw(path) as conn:
        genesis = bytes.fromhex(conn.execute(
            "SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
        last = conn.execute("SELECT position, hash, time_us FROM events "
                            "ORDER BY position DESC LIMIT 1").fetchone()
        position, prev, time_us = (1, genesis, 0) if last is None else (last[0] + 1, last[1],
                                                                        last[2])
        digest_ = chain_hash(prev, position, stream, stream_position, time_us, type_name, data)
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (position, stream, stream_position, time_us, type_name, data, digest_))
    return position


def rechain(path: str, start: int) -> None:
    """Recompute every hash from ``start`` on: a forged history the chain alone accepts."""
    with raw(path) as conn:
        genesis = bytes.fromhex(conn.execute(
            "SELECT value FROM meta WHERE key = 'genesis'").fetchone()[0])
        prev_row = conn.execute("SELECT hash FROM events WHERE position = ?",
                                (start - 1,)).fetchone()
        prev = genesis if prev_row is None else prev_row[0]
        rows = conn.execute("SELECT position, stream, stream_position, time_us, type, data "
                            "FROM events WHERE position >= ? ORDER BY position",
                            (start,)).fetchall()
        for position, stream, stream_position, time_us, type_name, data in rows:
            prev = chain_hash(prev, position, stream, stream_position, time_us, type_name, data)
            conn.execute("UPDATE events SET hash = ? WHERE position = ?", (prev, position))
