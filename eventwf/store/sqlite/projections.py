"""Projection tables on SQLite: writing and reading rows, and the tracking queries (the row
values themselves, shared with PostgreSQL, are ``eventwf.store.rows``).

Rows hold every summary field except ``head`` (the stream version, read from the log), so
a step that changes no tracking field writes no projection row. Query values are always
bound parameters; JSON paths are built only from validated key segments.

The tables are a cache of the log, and a file can be changed or damaged under it. So each
row ends with ``row_check``, a BLAKE2b-64 of every other column (:func:`row_check`): every
row read into a summary is checked first (a mismatch is ``CorruptLogError`` naming the
table and row, never a state the log does not hold), and opening a log checks them all
(:func:`damaged_rows`) and rebuilds the tables from the log if one fails. Like the hash
chain, the check finds accidents and edits by hand, not a forger who recomputes it.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import TrackingQuery
from eventwf.store.rows import (
    AGENT_COLUMNS,
    WORKFLOW_COLUMNS,
    agent_from_row,
    agent_row,
    checked,
    row_check,
    summary_from_row,
    workflow_row,
)

__all__ = ["AGENT_COLUMNS", "WORKFLOW_COLUMNS", "agent_row", "count_workflows", "damaged_rows",
           "load_agent", "load_workflow", "load_workflows", "metadata_clause",
           "query_workflows", "row_check", "summary_from_row", "workflow_row",
           "workflow_statuses", "write_agents", "write_workflows"]

JSON_TEXT_OPERATOR = sqlite3.sqlite_version_info >= (3, 38, 0)  # ``->``: a value's JSON text
_WF_SELECT = "SELECT " + ", ".join(WORKFLOW_COLUMNS) + " FROM workflows"
_AG_SELECT = "SELECT " + ", ".join(AGENT_COLUMNS) + " FROM agents"


def _upsert(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (f"INSERT INTO {table}({names}) VALUES ({marks}) "
            f"ON CONFLICT({', '.join(keys)}) DO UPDATE SET {updates}")


_WF_UPSERT = _upsert("workflows", WORKFLOW_COLUMNS, ("workflow_id",))
_AG_UPSERT = _upsert("agents", AGENT_COLUMNS, ("agent_class", "agent_name"))


def damaged_rows(conn: sqlite3.Connection, *, limit: int = 5) -> tuple[int, list[str]]:
    """Check every projection row: (how many fail, the first ``limit`` of them named).

    A row that cannot even be read (text that is not UTF-8) fails the whole table."""
    count, named = 0, list[str]()
    for table, select in (("workflows", _WF_SELECT), ("agents", _AG_SELECT)):
        try:
            cursor = conn.execute(select)
            while rows := cursor.fetchmany(1000):
                for row in rows:
                    try:
                        checked(table, row)
                    except CorruptLogError as exc:
                        count += 1
                        if len(named) < limit:
                            named.append(str(exc).split(":")[0])
        except sqlite3.OperationalError as exc:  # e.g. "Could not decode to UTF-8"
            count += 1
            named.append(f"the {table} table cannot be read ({exc})")
    return count, named


def write_workflows(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    conn.executemany(_WF_UPSERT, rows)


def write_agents(conn: sqlite3.Connection, rows: Iterable[tuple[Any, ...]]) -> None:
    conn.executemany(_AG_UPSERT, rows)


def load_workflow(conn: sqlite3.Connection, workflow_id: str, head: int) -> WorkflowSummary | None:
    row = conn.execute(_WF_SELECT + " WHERE workflow_id = ?", (workflow_id,)).fetchone()
    return None if row is None else summary_from_row(row, head)


def workflow_statuses(conn: sqlite3.Connection, workflow_ids: Sequence[str]
                      ) -> dict[str, tuple[str, int]]:
    """(status, run) of each of ``workflow_ids`` that has a row (unchecked: a hint to
    read the row itself, which is checked)."""
    rows = conn.execute("SELECT workflow_id, status, run FROM workflows WHERE workflow_id IN "
                        "(SELECT value FROM json_each(?))", (json.dumps(list(workflow_ids)),))
    return {str(w): (str(s), int(r)) for w, s, r in rows}


def load_workflows(conn: sqlite3.Connection, *, unfinished: bool) -> list[tuple[Any, ...]]:
    """Raw rows (heads not filled in); ``unfinished`` selects the ones to resume."""
    if unfinished:
        sql = _WF_SELECT + (" WHERE status NOT IN ('complete', 'errored', 'terminated') "
                            "ORDER BY created_us, workflow_id")
    else:
        sql = _WF_SELECT + " ORDER BY workflow_id"
    return conn.execute(sql).fetchall()


def load_agent(
    conn: sqlite3.Connection, agent_class: str, name: str, head: int
) -> AgentSummary | None:
    row = conn.execute(
        _AG_SELECT + " WHERE agent_class = ? AND agent_name = ?", (agent_class, name)
    ).fetchone()
    return None if row is None else agent_from_row(row, head)


def load_agents(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(_AG_SELECT + " ORDER BY agent_class, agent_name").fetchall()


def _where(query: TrackingQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of a tracking query and its parameters (every value is one)."""
    clauses = ["agent_class = ?", "agent_name = ?", "tracked = 1"]
    params: list[Any] = [query.agent_class, query.agent_name]
    if query.statuses is not None:
        statuses = query.statuses
        clauses.append(f"status IN ({', '.join('?' for _ in statuses)})" if statuses else "0")
        params.extend(statuses)
    if query.workflow_name:
        clauses.append("workflow_name = ?")
        params.append(query.workflow_name)
    for path, value in query.metadata:
        clause, values = metadata_clause(path, value)
        clauses.append(clause)
        params.extend(values)
    if query.created_before_us is not None:
        clauses.append("created_us < ?")
        params.append(query.created_before_us)
    return " AND ".join(clauses), params


def metadata_clause(path: str | None, value: Any) -> tuple[str, list[Any]]:
    """Typed equality on one JSON path: ``1`` matches numbers only, ``"1"`` strings only."""
    if path is None:
        return "0", []
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, int | float):
        return _number_clause(path, value)
    return "json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?", [path, path, value]


def _number_clause(path: str, value: int | float) -> tuple[str, list[Any]]:
    """Exact numeric equality, as Python compares int and float, at any magnitude.

    A stored real matches if it equals ``value`` exactly; a stored integer within SQLite's
    64-bit range compares as an INTEGER; one beyond it (a log holds up to 2**64 - 1)
    reads back as a rounded REAL, so it is matched by its JSON text instead (``->``, SQLite
    3.38; older SQLite: ``ValueError`` naming the value, never an inexact answer).
    """
    integer = value if isinstance(value, int) else int(value) if value.is_integer() else None
    try:
        real: float | None = float(value)
    except OverflowError:
        real = None
    clauses: list[str] = []
    params: list[Any] = []
    if real is not None and real == value and math.isfinite(real):
        clauses.append("json_type(metadata, ?) = 'real' AND json_extract(metadata, ?) = ?")
        params += [path, path, real]
    if integer is not None and -(1 << 63) <= integer < 1 << 63:
        clauses.append("json_type(metadata, ?) = 'integer' AND json_extract(metadata, ?) = ?")
        params += [path, path, integer]
    elif integer is not None and 1 << 63 <= integer < 1 << 64:
        if not JSON_TEXT_OPERATOR:
            raise ValueError(f"metadata filter value {value!r} is beyond SQLite's 64-bit "
                             "integers: comparing it exactly needs SQLite 3.38 or newer (this "
                             f"is {sqlite3.sqlite_version})")
        clauses.append("json_type(metadata, ?) = 'integer' AND metadata -> ? = ?")
        params += [path, path, str(integer)]
    return ("((" + ") OR (".join(clauses) + "))", params) if clauses else ("0", [])


def count_workflows(conn: sqlite3.Connection, query: TrackingQuery) -> int:
    where, params = _where(query)
    return int(conn.execute("SELECT count(*) FROM workflows WHERE " + where, params
                            ).fetchone()[0])


def query_workflows(
    conn: sqlite3.Connection,
    query: TrackingQuery,
    *,
    ascending: bool,
    limit: int | None,
    after: tuple[int, str] | None = None,
) -> list[WorkflowSummary]:
    """Tracked workflows ordered by (created time, id), after a keyset cursor."""
    where, params = _where(query)
    sql = _WF_SELECT + " WHERE " + where
    if after is not None:
        op = ">" if ascending else "<"
        sql += f" AND (created_us {op} ? OR (created_us = ? AND workflow_id {op} ?))"
        params.extend([after[0], after[0], after[1]])
    direction = "ASC" if ascending else "DESC"
    sql += f" ORDER BY created_us {direction}, workflow_id {direction}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [summary_from_row(row, -1) for row in conn.execute(sql, params)]
