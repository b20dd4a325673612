"""The SQLite file: connection settings, schema and meta values.

One ``events`` table is the source of truth (append-only, enforced by triggers); the
``workflows`` and ``agents`` tables are projections kept in the same transactions and
rebuildable from the log. Tables are created with sqlite-utils.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import sqlite_utils

from ..errors import SchemaVersionError, StorageError

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "connect",
    "create_schema",
    "get_meta",
    "set_meta",
]

SCHEMA_VERSION = 1
APPLICATION_ID = 0x65776631  # "ewf1"

_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events BEGIN "
    "SELECT RAISE(ABORT, 'eventwf: the events table is append-only (UPDATE refused)'); END",
    "CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events BEGIN "
    "SELECT RAISE(ABORT, 'eventwf: the events table is append-only (DELETE refused)'); END",
)


def connect(path: str, *, readonly: bool = False, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode; writers use WAL, ``synchronous`` and a 30 s busy wait."""
    if synchronous not in ("FULL", "NORMAL", "EXTRA"):
        raise ValueError(f"invalid synchronous {synchronous!r}: use 'FULL', 'EXTRA' or 'NORMAL'")
    if readonly:
        if path == ":memory:":
            raise ValueError("a ':memory:' log cannot be opened read-only from elsewhere")
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly and path != ":memory:":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: cannot switch the log to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # value checked above
    return conn


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables on a new file; refuse a file written by a newer eventwf."""
    db = sqlite_utils.Database(conn, execute_plugins=False)
    existing = set(db.table_names())
    if "meta" in existing:
        version = int(get_meta(conn, "schema_version") or 0)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"this log has schema version {version}, newer than this eventwf "
                f"(version {SCHEMA_VERSION}); upgrade eventwf to write to it"
            )
    _create_tables(db, existing)
    for statement in _TRIGGERS:
        conn.execute(statement)
    conn.execute("BEGIN IMMEDIATE")
    try:
        if get_meta(conn, "schema_version") is None:
            set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            set_meta(conn, "genesis", os.urandom(16).hex())
            set_meta(conn, "projected_through", "0")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


_EVENTS = {"position": int, "stream": str, "stream_position": int, "time_us": int,
           "type": str, "data": bytes, "hash": bytes}
_WORKFLOWS = {
    "workflow_id": str, "workflow_name": str, "agent_class": str, "agent_name": str,
    "status": str, "metadata": str, "error_name": str, "error_message": str,
    "created_us": int, "updated_us": int, "completed_us": int, "tracked": int, "run": int,
    "started_at": int, "run_start": int, "mailbox": int, "output": bytes,
    "corrupt_position": int, "wake_at_us": int, "wake_span_us": int, "wait_type": str,
    "paused_us": int, "row_check": int,
}
_WORKFLOWS_NOT_NULL = {"workflow_name", "agent_class", "agent_name", "status", "created_us",
                       "updated_us", "tracked", "run", "started_at", "run_start", "mailbox",
                       "wake_span_us"}
_AGENTS = {"agent_class": str, "agent_name": str, "state": bytes, "has_state": int,
           "delivered_through": int, "last_callback": int, "corrupt_position": int,
           "state_position": int, "row_check": int}


def _create_tables(db: sqlite_utils.Database, existing: set[str]) -> None:
    if "meta" not in existing:
        db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    if "events" not in existing:
        db.table("events").create(_EVENTS, pk="position",
                                  not_null=set(_EVENTS) - {"position"})
    db.table("events").create_index(["stream", "stream_position"], unique=True, if_not_exists=True)
    if "workflows" not in existing:
        db.table("workflows").create(_WORKFLOWS, pk="workflow_id", not_null=_WORKFLOWS_NOT_NULL)
    db.table("workflows").create_index(
        ["agent_class", "agent_name", "tracked", "created_us", "workflow_id"], if_not_exists=True
    )
    db.table("workflows").create_index(["status"], if_not_exists=True)
    db.table("workflows").create_index(["workflow_name"], if_not_exists=True)
    if "agents" not in existing:
        db.table("agents").create(
            _AGENTS, pk=("agent_class", "agent_name"),
            not_null={"has_state", "delivered_through", "last_callback", "state_position"})
    for table in ("workflows", "agents"):  # tables of an eventwf before row checks: their
        if "row_check" not in db.table(table).columns_dict:  # rows fail it and are rebuilt
            db.table(table).add_column("row_check", int)


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
