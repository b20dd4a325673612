"""The projection tables on PostgreSQL: rows of ``eventwf.store.rows``, and the tracking queries.

The rows and their checks are the SQLite ones (``eventwf.store.rows``); only the SQL
differs. Every value is a bound parameter; the only text built here is column names (the
constants of ``rows``) and a metadata key's JSON path, which travels as a ``text[]``
parameter. Metadata is stored as the same JSON text as on SQLite (the row check covers
it) and read as ``json``, not ``jsonb``, which keeps each value's text: whether a number
was written as a float, and strings with U+0000, which ``jsonb`` cannot hold. Filters
match as on SQLite: a number equals a number of the same value (``1`` and ``1.0``),
never a string (``"1"``) or a boolean.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg.pq import TransactionStatus

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import TrackingQuery
from eventwf.store.postgres.sql import Conn
from eventwf.store.rows import (
    AGENT_COLUMNS,
    WORKFLOW_COLUMNS,
    agent_from_row,
    checked,
    summary_from_row,
)

__all__ = ["count_workflows", "damaged_rows", "load_agent", "load_workflow", "metadata_clause",
           "query_workflows", "unfinished_rows", "workflow_statuses", "write_agents",
           "write_workflows"]

_WF_SELECT = "SELECT " + ", ".join(WORKFLOW_COLUMNS) + " FROM eventwf.workflows"
_AG_SELECT = "SELECT " + ", ".join(AGENT_COLUMNS) + " FROM eventwf.agents"
_FINISHED = "('complete', 'errored', 'terminated')"
_SEGMENT = re.compile(r'\."([^"]*)"')


def _upsert(table: str, columns: Sequence[str], keys: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (f"INSERT INTO eventwf.{table} ({', '.join(columns)}) VALUES "
            f"({', '.join('%s' for _ in columns)}) ON CONFLICT ({', '.join(keys)}) "
            f"DO UPDATE SET {updates}")


_WF_UPSERT = _upsert("workflows", WORKFLOW_COLUMNS, ("workflow_id",))
_AG_UPSERT = _upsert("agents", AGENT_COLUMNS, ("agent_class", "agent_name"))
# the types of the workflows table (schema.py): text, bytea, else bigint
_WF_TEXT = frozenset({"workflow_id", "workflow_name", "agent_class", "agent_name", "status",
                      "metadata", "error_name", "error_message", "wait_type"})
_WF_BYTES = frozenset({"output", "inbox", "pending"})


# Many rows go through a staging table (COPY, then one upsert): psycopg dumps COPY rows in
# C, where bound arrays are dumped in Python (4-7x the client CPU for a thousand rows,
# measured in specs/postgres.md PG9c). The table is the session's own, emptied at commit;
# made on first use in each session (so also behind a transaction-mode pooler).
_WF_STAGE = "eventwf_workflows_stage"
_WF_STAGE_DDL = (f"CREATE TEMP TABLE IF NOT EXISTS {_WF_STAGE} (LIKE eventwf.workflows) "
                 "ON COMMIT DELETE ROWS")
_WF_COPY = f"COPY {_WF_STAGE} ({', '.join(WORKFLOW_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_WF_TYPES = ["text" if c in _WF_TEXT else "bytea" if c in _WF_BYTES else "int8"
             for c in WORKFLOW_COLUMNS]
_WF_MERGE = (f"INSERT INTO eventwf.workflows ({', '.join(WORKFLOW_COLUMNS)}) "
             f"SELECT {', '.join(WORKFLOW_COLUMNS)} FROM {_WF_STAGE} "
             "ON CONFLICT (workflow_id) DO UPDATE SET "
             + ", ".join(f"{c} = excluded.{c}" for c in WORKFLOW_COLUMNS if c != "workflow_id"))
COPY_MIN_ROWS = 16  # fewer rows: one statement per row costs less than the staging


def write_workflows(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> None:
    """Upsert workflow rows, inside the caller's transaction: many with distinct ids through
    the staging table (a commit of a thousand workflows is three statements, not a
    thousand); else one statement per row (the same id twice: the later row wins, as it
    does row by row)."""
    rows = list(rows)
    if len(rows) >= COPY_MIN_ROWS and len({row[0] for row in rows}) == len(rows):
        if conn.info.transaction_status != TransactionStatus.INTRANS:
            raise RuntimeError("write_workflows stages rows until the commit: call it inside "
                               "a transaction")
        conn.execute(_WF_STAGE_DDL)
        with conn.cursor() as cur:
            with cur.copy(_WF_COPY) as copy:
                copy.set_types(_WF_TYPES)
                for row in rows:
                    copy.write_row(row)
            cur.execute(_WF_MERGE)
        return
    with conn.cursor() as cur:
        cur.executemany(_WF_UPSERT, rows)


def write_agents(conn: Conn, rows: Iterable[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(_AG_UPSERT, list(rows))


def load_workflow(conn: Conn, workflow_id: str, head: int) -> WorkflowSummary | None:
    row = conn.execute(_WF_SELECT + " WHERE workflow_id = %s", (workflow_id,)).fetchone()
    return None if row is None else summary_from_row(row, head)


def workflow_statuses(conn: Conn, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
    """(status, run) of each of ``workflow_ids`` that has a row (unchecked: a hint to
    read the row itself, which is checked)."""
    rows = conn.execute("SELECT workflow_id, status, run FROM eventwf.workflows "
                        "WHERE workflow_id = ANY(%s::text[])", (list(workflow_ids),)).fetchall()
    return {str(w): (str(s), int(r)) for w, s, r in rows}


def unfinished_rows(conn: Conn) -> list[tuple[Any, ...]]:
    """Raw rows of the workflows to resume, in creation order (heads not filled in)."""
    return conn.execute(_WF_SELECT + f" WHERE status NOT IN {_FINISHED} "
                        "ORDER BY created_us, workflow_id COLLATE \"C\"").fetchall()


def load_agent(conn: Conn, agent_class: str, name: str, head: int) -> AgentSummary | None:
    row = conn.execute(_AG_SELECT + " WHERE agent_class = %s AND agent_name = %s",
                       (agent_class, name)).fetchone()
    return None if row is None else agent_from_row(row, head)


def damaged_rows(conn: Conn, *, limit: int = 5) -> tuple[int, list[str]]:
    """Check every projection row: (how many fail, the first ``limit`` of them named)."""
    count, named = 0, list[str]()
    for table, select in (("workflows", _WF_SELECT), ("agents", _AG_SELECT)):
        for row in conn.execute(select).fetchall():
            try:
                checked(table, row)
            except CorruptLogError as exc:
                count += 1
                if len(named) < limit:
                    named.append(str(exc).split(":")[0])
    return count, named


def _where(query: TrackingQuery) -> tuple[str, list[Any]]:
    """The WHERE clause of a tracking query and its parameters (every value is one)."""
    clauses = ["agent_class = %s", "agent_name = %s", "tracked = 1"]
    params: list[Any] = [query.agent_class, query.agent_name]
    if query.statuses is not None:
        clauses.append("status = ANY(%s)")
        params.append(list(query.statuses))
    if query.workflow_name:
        clauses.append("workflow_name = %s")
        params.append(query.workflow_name)
    for path, value in query.metadata:
        clause, values = metadata_clause(path, value)
        clauses.append(clause)
        params.extend(values)
    if query.created_before_us is not None:
        clauses.append("created_us < %s")
        params.append(query.created_before_us)
    return " AND ".join(clauses), params


_AT = "(metadata::json #> %s::text[])"  # the value's JSON text as stored (json, not jsonb)
_REAL = "(metadata::json #> %s::text[])::text ~ '[.eE]'"  # written as a float


def metadata_clause(path: str | None, value: Any) -> tuple[str, list[Any]]:
    """Typed equality on one JSON path (``$."a"."b"``, from ``values.metadata_key_path``),
    as Python compares: the stored JSON text is Python's (``ensure_ascii``), so a string,
    a boolean or null equals the value's own JSON text; a number stored as a float compares
    as a double, one stored as an integer exactly (``1 == 1.0``, ``2**64 == 2.0**64``,
    ``2**64 - 1 != 2.0**64``), and never a string or a boolean."""
    if path is None or not isinstance(value, str | int | float | bool | None):
        return "false", []
    keys = _SEGMENT.findall(path)
    if value is None or isinstance(value, bool | str):
        return f"json_typeof({_AT}) = %s AND {_AT}::text = %s", [
            keys, "null" if value is None else "boolean" if isinstance(value, bool)
            else "string", keys, json.dumps(value)]
    return _number_clause(keys, value)


def _number_clause(keys: list[str], value: int | float) -> tuple[str, list[Any]]:
    integer = value if isinstance(value, int) else int(value) if value.is_integer() else None
    try:
        real: float | None = float(value)
    except OverflowError:
        real = None
    clauses: list[str] = []
    params: list[Any] = []
    if real is not None and real == value and math.isfinite(real):
        clauses.append(f"{_REAL} AND {_AT}::text::float8 = %s")
        params += [keys, keys, real]
    if integer is not None:
        clauses.append(f"NOT {_REAL} AND {_AT}::text::numeric = %s::numeric")
        params += [keys, keys, str(integer)]
    if not clauses:
        return "false", []
    return f"json_typeof({_AT}) = 'number' AND ((" + ") OR (".join(clauses) + "))", [
        keys, *params]


def count_workflows(conn: Conn, query: TrackingQuery) -> int:
    where, params = _where(query)
    row = conn.execute("SELECT count(*) FROM eventwf.workflows WHERE " + where, params
                       ).fetchone()
    return 0 if row is None else int(row[0])


def query_workflows(conn: Conn, query: TrackingQuery, *, ascending: bool, limit: int | None,
                    after: tuple[int, str] | None = None) -> list[WorkflowSummary]:
    """Tracked workflows ordered by (created time, id), after a keyset cursor."""
    where, params = _where(query)
    sql = _WF_SELECT + " WHERE " + where
    if after is not None:
        op = ">" if ascending else "<"
        sql += f" AND (created_us, workflow_id COLLATE \"C\") {op} (%s, %s)"
        params.extend(after)
    direction = "ASC" if ascending else "DESC"
    sql += f" ORDER BY created_us {direction}, workflow_id COLLATE \"C\" {direction}"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    return [summary_from_row(row, -1) for row in conn.execute(sql, params).fetchall()]
