"""The small lookups the commands make besides reading rows, on an SQLite log.

Each is one short query of the read-only connection. They are methods (of
:class:`~eventwf.logtool.source.LogSource`, which mixes this class in) rather than SQL in
the commands so that a PostgreSQL log (``pgsource``) can answer the same questions with
its own statements.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any

from eventwf.store.listing_sql import Dialect, workflow_listing
from eventwf.store.sqlite.projections import metadata_clause

__all__ = ["LISTED_COLUMNS", "SqliteLookups"]

# The columns of a listing row (it filters on ``eventwf.store.listing_sql.FILTER_COLUMNS``).
LISTED_COLUMNS = ("workflow_id", "workflow_name", "agent_class", "agent_name", "status",
                  "created_us", "updated_us", "completed_us", "error_name", "error_message",
                  "run")
_DIALECT = Dialect("workflows", "?", "workflow_id", metadata_clause)

_STREAMS_SQL = (
    "SELECT stream, count(*), min(position), max(position), min(time_us), max(time_us), "
    "max(stream_position) FROM events WHERE stream > ? AND stream >= ? AND stream < ? "
    "GROUP BY stream ORDER BY stream LIMIT ?"
)
_TALLY_SQL = (
    "SELECT type, CASE WHEN substr(stream, 1, 3) = 'wf:' THEN 'wf' "
    "WHEN substr(stream, 1, 6) = 'agent:' THEN 'agent' ELSE 'other' END, "
    "count(*), sum(length(data)), max(length(data)), sum(stream_position = 0), "
    "min(time_us), max(time_us), sum(time_us >= ?), sum(time_us >= ?), sum(time_us >= ?) "
    "FROM events WHERE position > ? AND position <= ? GROUP BY 1, 2"
)


class SqliteLookups:
    """Lookups on ``self.conn``, an SQLite log opened read-only."""

    conn: sqlite3.Connection
    home: str

    def stream_summaries(self, last: str, low: str, high: str, batch: int
                         ) -> list[tuple[Any, ...]]:
        """Up to ``batch`` streams named after ``last`` in ``[low, high)``, by name: (stream,
        count, first/last position, first/last time, last version)."""
        return self.conn.execute(_STREAMS_SQL, (last, low, high, batch)).fetchall()

    def workflow_statuses(self, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """(workflow id, status, binding) of the projected workflows among ``ids``."""
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        return self.conn.execute(
            f"SELECT workflow_id, status, workflow_name FROM workflows "  # noqa: S608 - marks
            f"WHERE workflow_id IN ({marks})", list(ids)).fetchall()

    def workflow_rows(self, equals: Sequence[tuple[str, str]],
                      metadata: Sequence[tuple[str | None, Any]],
                      after: tuple[int, str] | None, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows (``LISTED_COLUMNS``) of the projected workflows, newest
        first by (created time, id), older than the keyset ``after``; ``equals`` pairs a
        column of ``FILTER_COLUMNS`` with its value, ``metadata`` a JSON path with a value
        compared with its JSON type (as ``Agent.get_workflows``). Every value is bound."""
        statement, params = workflow_listing(_DIALECT, LISTED_COLUMNS, equals, metadata,
                                             after, limit)
        return self.conn.execute(statement, params).fetchall()

    def status_counts(self) -> list[tuple[Any, ...]]:
        """(status, how many workflows have it), for the statuses that occur."""
        return self.conn.execute("SELECT status, count(*) FROM workflows GROUP BY status"
                                 ).fetchall()

    def workflow_status(self, workflow_id: str) -> str | None:
        """The projected status of a workflow, None if it has no projection row."""
        row = self.conn.execute("SELECT status FROM workflows WHERE workflow_id = ?",
                                (workflow_id,)).fetchone()
        return None if row is None else str(row[0])

    def first_position(self, stream: str) -> int | None:
        """The log position of version 0 of ``stream``, None if there is none."""
        row = self.conn.execute("SELECT position FROM events WHERE stream = ? AND "
                                "stream_position = 0", (stream,)).fetchone()
        return None if row is None else int(row[0])

    def time_at(self, position: int) -> int | None:
        """The time of the last event at or before ``position``."""
        row = self.conn.execute("SELECT time_us FROM events WHERE position <= ? ORDER BY "
                                "position DESC LIMIT 1", (position,)).fetchone()
        return None if row is None else int(row[0])

    def tally(self, bounds: Sequence[int], low: int, high: int) -> list[tuple[Any, ...]]:
        """By (type, stream kind), of the rows ``low < position <= high``: events, data
        bytes, largest, new streams, first/last time, events at or after each bound."""
        return self.conn.execute(_TALLY_SQL, (*bounds, low, high)).fetchall()

    def projection_counts(self) -> tuple[dict[str, int], int, int]:
        """Workflows by status, agents, agents with callbacks still to deliver."""
        conn = self.conn
        statuses = {str(status): int(n) for status, n in conn.execute(
            "SELECT status, count(*) FROM workflows GROUP BY status ORDER BY status")}
        agents = int(conn.execute("SELECT count(*) FROM agents").fetchone()[0])
        pending = int(conn.execute(
            "SELECT count(*) FROM agents WHERE last_callback > delivered_through").fetchone()[0])
        return statuses, agents, pending

    def storage(self) -> tuple[dict[str, int], dict[str, int]]:
        """The sizes of the log's files, and its page counts."""
        files: dict[str, int] = {}
        for suffix, label in (("", "database"), ("-wal", "wal"), ("-shm", "shm")):
            path = self.home + suffix
            if os.path.exists(path):
                files[label] = os.path.getsize(path)
        pages = {pragma: int(self.conn.execute(f"PRAGMA {pragma}").fetchone()[0])
                 for pragma in ("page_size", "page_count", "freelist_count")}
        return files, pages
