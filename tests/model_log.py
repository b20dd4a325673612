"""What the stateful model test (tests/test_model.py) reads from the log, on either backend.

The machine checks the engine against the log itself, not against the engine's memory: a
stream's head, the events a send logged, every consumption, and ``verify``. Each read goes
through the log tool's read-only sources (``eventwf.logtool``: ``LogSource`` for an SQLite
file, ``PgLogSource`` for a PostgreSQL URL), opened for the one read and closed again, so
the test never holds a read transaction across the engine's commits and never depends on
either backend's table layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eventwf.logtool import pgverify
from eventwf.logtool import verify as sqlite_verify
from eventwf.logtool.pgsource import PgLogSource
from eventwf.logtool.source import LogSource
from eventwf.logtool.verify_report import Report
from eventwf.model.codec import decode_event
from eventwf.model.events import EventConsumed, EventReceived
from eventwf.store import is_url

__all__ = ["consumptions", "received_since", "stream_head", "verify"]


@contextmanager
def _opened(location: str) -> Iterator[LogSource]:
    log = PgLogSource(location) if is_url(location) else LogSource(location)
    try:
        yield log
    finally:
        log.close()


def stream_head(location: str, wid: str) -> int:
    """The last version of workflow ``wid``'s stream (-1 when it has no events)."""
    with _opened(location) as log:
        return log.stream_head(f"wf:{wid}")


def received_since(location: str, wid: str, head: int) -> list[tuple[str, Any]]:
    """(type, payload) of each ``event.received`` of ``wid`` after version ``head``, in
    log order."""
    with _opened(location) as log:
        rows = [row for row, _ in log.stream_rows(f"wf:{wid}", from_version=head + 1)
                if row.type == "event.received"]
    rows.sort(key=lambda row: row.position)
    events = [decode_event(row.type, row.data, position=row.position) for row in rows]
    return [(e.event_type, e.payload) for e in events if isinstance(e, EventReceived)]


def consumptions(location: str) -> list[tuple[str, Any]]:
    """(stream, the received event it names) of every ``event.consumed`` in the log."""
    with _opened(location) as log:
        rows = [row for row in log.rows() if row.type == "event.consumed"]
    events = [(row.stream, decode_event(row.type, row.data, position=row.position))
              for row in rows]
    return [(stream, e.received) for stream, e in events if isinstance(e, EventConsumed)]


def verify(location: str) -> Report:
    """The log tool's ``verify`` of the log, on its backend."""
    return pgverify.verify(location) if is_url(location) else sqlite_verify.verify(location)
