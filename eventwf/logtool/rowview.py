"""One log row decoded and checked: its hash, the row before it, its place in its stream.

A ``RowView`` is what every command and the console show and filter: the row as stored,
its event (None when it does not decode) and the first thing wrong with it, in words.
Checking a row needs no database (the caller passes the hash of the row before it), so
both sources, SQLite's ``LogSource`` (``source.py``) and PostgreSQL's ``PgLogSource``
(``pgsource.py``), and the views that only show rows depend on this module, not on how
rows are read. A problem is reported, never raised: a damaged row is shown with its
damage and the reading goes on.
"""

from __future__ import annotations

from typing import NamedTuple

from eventwf.errors import CorruptLogError
from eventwf.model.codec import decode_event
from eventwf.model.events import Event, Recorded
from eventwf.store.sqlite.log import LogRow, chain_hash

__all__ = ["RowView", "stream_view", "view"]


class RowView(NamedTuple):
    """A log row, its decoded event (None if it does not decode) and what is wrong with it."""

    row: LogRow
    event: Event | None
    problem: str | None

    def recorded(self) -> Recorded | None:
        if self.event is None:
            return None
        row = self.row
        return Recorded(row.position, row.stream, row.stream_position, row.time_us, self.event)


def view(row: LogRow, prev: bytes | None) -> RowView:
    """Decode ``row`` and check its hash against ``prev`` (None: not checked)."""
    problem = None
    if row.data.__class__ is not bytes or not isinstance(row.hash, bytes):
        problem = getattr(row.data, "problem", None) or "data or hash column is not a blob"
    elif prev is not None and chain_hash(prev, row.position, row.stream, row.stream_position,
                                         row.time_us, row.type, row.data) != row.hash:
        problem = "checksum mismatch: the row was changed, damaged, inserted or moved"
    event: Event | None = None
    if row.data.__class__ is bytes:
        try:
            event = decode_event(row.type, row.data, position=row.position)
        except CorruptLogError as exc:
            problem = problem or str(exc)
    return RowView(row, event, problem)


def stream_view(row: LogRow, prev: bytes | None, expected_version: int | None) -> RowView:
    """A row read by :meth:`LogSource.stream_rows`, also checked for its place in its stream.

    ``prev`` None means the row before it in the log is missing; ``expected_version`` None
    means the version is not checked (the read began mid-stream).
    """
    item = view(row, prev)
    if item.problem is None and prev is None:
        item = item._replace(problem=f"the event before log position {row.position} is missing")
    if item.problem is None and expected_version is not None and (
            row.stream_position != expected_version):
        item = item._replace(problem=f"stream {row.stream!r} jumps from version "
                             f"{expected_version - 1} to {row.stream_position}: an event is "
                             "missing")
    return item
