"""Projection tables: summaries to rows and back, and the tracking queries.

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
from hashlib import blake2b
from typing import Any

import msgspec

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.codec import decode_value, encode_value
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import TrackingQuery

__all__ = [
    "AGENT_COLUMNS",
    "WORKFLOW_COLUMNS",
    "agent_row",
    "count_workflows",
    "damaged_rows",
    "load_agent",
    "load_workflow",
    "load_workflows",
    "query_workflows",
    "row_check",
    "summary_from_row",
    "workflow_row",
    "write_agents",
    "write_workflows",
]

WORKFLOW_COLUMNS = (
    "workflow_id", "workflow_name", "agent_class", "agent_name", "status", "metadata",
    "error_name", "error_message", "created_us", "updated_us", "completed_us", "tracked",
    "run", "started_at", "run_start", "mailbox", "output", "corrupt_position", "wake_at_us",
    "wake_span_us", "wait_type", "paused_us", "inbox", "commands", "pending", "row_check",
)
AGENT_COLUMNS = (
    "agent_class", "agent_name", "state", "has_state", "delivered_through", "last_callback",
    "corrupt_position", "state_position", "row_check",
)
# One encoder, made once: ``json.dumps`` with options builds a new encoder per call (the
# same text, several times slower, and a rebuild encodes every workflow's metadata).
_METADATA_JSON = json.JSONEncoder(separators=(",", ":")).encode
# The inbox column: JSON ``[[stream position, event type], ...]`` (NULL when empty); the
# ``mailbox`` column beside it is its length, for queries.
_INBOX_JSON = msgspec.json.Encoder().encode
_INBOX_DECODE = msgspec.json.Decoder(tuple[tuple[int, str], ...]).decode
# The pending column: JSON ``[[kind, command number, [task path]], ...]`` (NULL when none).
_PENDING_DECODE = msgspec.json.Decoder(tuple[tuple[str, int, tuple[int, ...]], ...]).decode
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


_CHECK_ENCODE = msgspec.msgpack.Encoder().encode


def row_check(values: Sequence[Any]) -> int:
    """The check value of a projection row's other columns: BLAKE2b-64 of their msgpack
    encoding (a value's type counts: the text ``"1"`` is not the integer 1), signed."""
    digest = blake2b(_CHECK_ENCODE(values), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def workflow_row(s: WorkflowSummary) -> tuple[Any, ...]:
    row = (
        s.workflow_id, s.workflow_name, s.agent_class, s.agent_name, s.status,
        None if s.metadata is None else _METADATA_JSON(s.metadata),
        s.error_name, s.error_message, s.created_us, s.updated_us, s.completed_us,
        int(s.tracked), s.run, s.started_at, s.run_start, s.mailbox,
        None if s.output is None else encode_value(s.output, "output", limit=1 << 62),
        s.corrupt_position, s.wake_at_us, s.wake_span_us, s.wait_type, s.paused_us,
        _INBOX_JSON(s.inbox) if s.inbox else None,
        s.commands, _INBOX_JSON(s.pending) if s.pending else None,
    )
    return (*row, row_check(row))


def _checked(table: str, row: Sequence[Any]) -> Sequence[Any]:
    """``row`` without its check value; ``CorruptLogError`` if that does not match."""
    values = row[:-1]
    try:
        matches = row_check(values) == row[-1]
    except (TypeError, ValueError, msgspec.EncodeError):
        matches = False
    if not matches:
        raise CorruptLogError(
            f"the {table} row of {_name(table, row)} does not match its check value: the "
            "projection was changed or damaged outside eventwf, and is not served; close "
            "the engine and open the log again to rebuild it from the log")
    return values


def _name(table: str, row: Sequence[Any]) -> str:
    shown = [str(value)[:100] for value in row[:2]]
    return f"workflow {shown[0]!r}" if table == "workflows" else f"agent {'/'.join(shown)}"


def summary_from_row(row: Sequence[Any], head: int) -> WorkflowSummary:
    """The summary a checked ``workflows`` row holds (``CorruptLogError`` if it fails)."""
    (workflow_id, workflow_name, agent_class, agent_name, status, metadata, error_name,
     error_message, created_us, updated_us, completed_us, tracked, run, started_at,
     run_start, _mailbox, output, corrupt_position, wake_at_us, wake_span_us, wait_type,
     paused_us, inbox, commands, pending) = _checked("workflows", row)
    try:
        decoded_metadata = None if metadata is None else json.loads(metadata)
        decoded_output = None if output is None else decode_value(output)
        decoded_inbox = () if inbox is None else _INBOX_DECODE(inbox)
        decoded_pending = () if pending is None else _PENDING_DECODE(pending)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise CorruptLogError(f"the workflows row of workflow {str(workflow_id)[:100]!r} "
                              f"holds a value that does not decode: {exc}") from exc
    return WorkflowSummary(
        workflow_id=workflow_id, workflow_name=workflow_name, agent_class=agent_class,
        agent_name=agent_name, status=status, created_us=created_us, updated_us=updated_us,
        completed_us=completed_us, metadata=decoded_metadata,
        error_name=error_name, error_message=error_message, output=decoded_output,
        tracked=bool(tracked), run=run, started_at=started_at, run_start=run_start,
        head=head, corrupt_position=corrupt_position, wake_at_us=wake_at_us,
        wake_span_us=wake_span_us, wait_type=wait_type, paused_us=paused_us,
        inbox=decoded_inbox,
        commands=commands,
        pending=decoded_pending,
    )


def agent_row(s: AgentSummary) -> tuple[Any, ...]:
    state = encode_value(s.state, "agent state", limit=1 << 62) if s.has_state else None
    row = (s.agent_class, s.name, state, int(s.has_state), s.delivered_through,
           s.last_callback, s.corrupt_position, s.state_position)
    return (*row, row_check(row))


def _agent_from_row(row: Sequence[Any], head: int) -> AgentSummary:
    agent_class, name, state, has_state, delivered, last_callback, corrupt, state_at = \
        _checked("agents", row)
    try:
        decoded = None if state is None else decode_value(state)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise CorruptLogError(f"the agents row of agent {agent_class}/{name} holds a state "
                              f"that does not decode: {exc}") from exc
    return AgentSummary(
        agent_class=agent_class, name=name, state=decoded, has_state=bool(has_state),
        head=head, delivered_through=delivered, last_callback=last_callback,
        corrupt_position=corrupt, state_position=state_at,
    )


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
                        _checked(table, row)
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
    return None if row is None else _agent_from_row(row, head)


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
        clause, values = _metadata_clause(path, value)
        clauses.append(clause)
        params.extend(values)
    if query.created_before_us is not None:
        clauses.append("created_us < ?")
        params.append(query.created_before_us)
    return " AND ".join(clauses), params


def _metadata_clause(path: str | None, value: Any) -> tuple[str, list[Any]]:
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
