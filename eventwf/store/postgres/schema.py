"""The PostgreSQL schema of one engine's log: the event tables of ``sql`` plus the projections.

``sql.create_schema`` makes the schema ``eventwf`` (events, meta, leases; safe from many
engines at once). This module adds the projection tables, ``workflows`` and ``agents``,
with the columns of ``eventwf.store.rows`` (the same values and check as on SQLite), and
the meta values of one engine's log. The projections are a cache of the log: tables of
another shape (``projection_version``) are dropped and made anew, and the open that
follows rebuilds them (as on SQLite, log.md L16).
"""

from __future__ import annotations

from eventwf.errors import SchemaVersionError, StorageError
from eventwf.store.postgres import sql
from eventwf.store.postgres.sql import Conn, SchemaInfo

__all__ = ["PROJECTION_VERSION", "create", "get_meta", "set_meta"]

PROJECTION_VERSION = 4  # the SQLite projections' version: the same columns

_WORKFLOWS = (
    "CREATE TABLE IF NOT EXISTS eventwf.workflows ("
    " workflow_id text PRIMARY KEY, workflow_name text NOT NULL, agent_class text NOT NULL,"
    " agent_name text NOT NULL, status text NOT NULL, metadata text, error_name text,"
    " error_message text, created_us bigint NOT NULL, updated_us bigint NOT NULL,"
    " completed_us bigint, tracked bigint NOT NULL, run bigint NOT NULL,"
    " started_at bigint NOT NULL, run_start bigint NOT NULL, mailbox bigint NOT NULL,"
    " output bytea, corrupt_position bigint, wake_at_us bigint, wake_span_us bigint NOT NULL,"
    " wait_type text, paused_us bigint, inbox bytea, commands bigint NOT NULL, pending bytea,"
    " row_check bigint NOT NULL) WITH ({fillfactor})"
)
_AGENTS = (
    "CREATE TABLE IF NOT EXISTS eventwf.agents ("
    " agent_class text NOT NULL, agent_name text NOT NULL, state bytea,"
    " has_state bigint NOT NULL, delivered_through bigint NOT NULL,"
    " last_callback bigint NOT NULL, corrupt_position bigint, state_position bigint NOT NULL,"
    " row_check bigint NOT NULL, PRIMARY KEY (agent_class, agent_name))"
    " WITH ({fillfactor})"
)
# Each commit rewrites the row of every workflow and agent it touched, and no column a
# step changes is indexed: with room left on each page the server updates in place (HOT:
# no new index entries, no bloat). A thousand-row upsert took a third to a half of the
# time at 50 as at the default 100 (specs/postgres.md PG9d). Older logs get it at open.
_FILLFACTOR = "fillfactor=50"
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS workflows_tracking ON eventwf.workflows "
    "(agent_class, agent_name, tracked, created_us, workflow_id)",
    # by status, newest first in byte order (the console's status filter, CN17)
    "CREATE INDEX IF NOT EXISTS workflows_status_created ON eventwf.workflows "
    '(status, created_us, workflow_id COLLATE "C")',
    "CREATE INDEX IF NOT EXISTS workflows_binding ON eventwf.workflows (workflow_name)",
    # the console's listing, newest first in byte order (specs/console.md CN17)
    "CREATE INDEX IF NOT EXISTS workflows_created ON eventwf.workflows "
    '(created_us, workflow_id COLLATE "C")',
)


def get_meta(conn: Conn, key: str) -> str | None:
    row = conn.execute("SELECT value FROM eventwf.meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: Conn, key: str, value: str) -> None:
    conn.execute("INSERT INTO eventwf.meta (key, value) VALUES (%s, %s) "
                 "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


def _set_fillfactor(conn: Conn) -> None:
    """Give projection tables made before PG9d their fill factor (future pages only; a
    lock that waits for a running vacuum, so only when it is missing)."""
    for table in ("workflows", "agents"):
        row = conn.execute("SELECT reloptions FROM pg_class WHERE oid = %s::regclass",
                           (f"eventwf.{table}",)).fetchone()
        if row is None or _FILLFACTOR not in (row[0] or ()):
            conn.execute(f"ALTER TABLE eventwf.{table} SET ({_FILLFACTOR})")


def create(conn: Conn, where: str) -> tuple[SchemaInfo, bool]:
    """Make or check the schema; (its genesis and shard count, whether the projection
    tables are new and must be rebuilt from the log). ``where`` names the database in
    messages. Refuses a newer schema (``SchemaVersionError``) and a server without
    ``pg_current_xact_id`` (PostgreSQL < 13 and look-alikes: ``StorageError``)."""
    if conn.execute("SELECT to_regproc('pg_current_xact_id')").fetchone() == (None,):
        raise StorageError(f"{where}: the server has no pg_current_xact_id() (PostgreSQL 13 or "
                           "newer is needed; CockroachDB and YugabyteDB are not supported)")
    try:
        info = sql.create_schema(conn)
    except sql.SchemaVersionTooNew as exc:
        raise SchemaVersionError(f"{where}: {exc}") from exc
    with conn.transaction():
        sql.lock_schema(conn)  # engines opening a new database at once (PG1)
        found = get_meta(conn, "projection_version")
        rebuild = found != str(PROJECTION_VERSION)
        if rebuild:
            conn.execute("DROP TABLE IF EXISTS eventwf.workflows, eventwf.agents")
        conn.execute(_WORKFLOWS.format(fillfactor=_FILLFACTOR))
        conn.execute(_AGENTS.format(fillfactor=_FILLFACTOR))
        _set_fillfactor(conn)
        for statement in _INDEXES:
            conn.execute(statement)
        set_meta(conn, "projection_version", str(PROJECTION_VERSION))
    return info, rebuild
