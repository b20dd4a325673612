"""The SQLite file: connection settings, schema and meta values.

One ``events`` table is the source of truth (append-only, enforced by triggers); the
``workflows`` and ``agents`` tables are projections kept in the same transactions and
rebuildable from the log. Tables are created with sqlite-utils.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

import sqlite_utils

from eventwf.errors import CorruptLogError, SchemaVersionError, StorageError
from eventwf.store.sqlite.anchor import anchor_path, read_anchor
from eventwf.store.sqlite.transaction import transaction

__all__ = [
    "APPLICATION_ID",
    "PROJECTION_VERSION",
    "SCHEMA_VERSION",
    "connect",
    "create_schema",
    "get_meta",
    "meta_position",
    "parse_genesis",
    "record_home",
    "refuse_emptied",
    "refuse_lost_log",
    "schema_version",
    "set_meta",
]

logger = logging.getLogger("eventwf")

SCHEMA_VERSION = 1
# The shape of the projection tables (3: inbox and command columns, row check values; 4: the
# pending commands of a concurrent run in one column, replay.md R14). They
# are a cache of the log: a log whose projections have another version gets them dropped,
# made anew and rebuilt on open (log.md L16).
PROJECTION_VERSION = 4
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
        return _reader(path)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    if not readonly and path != ":memory:":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(f"{path}: cannot switch the log to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={synchronous}")  # value checked above
    return conn


def _reader(path: str) -> sqlite3.Connection:
    """A read-only connection. A reader of a WAL-mode log needs its ``-shm`` file; in a
    directory it cannot write, where no writer can run either, a log with no WAL content
    is read as the immutable file it then is; one whose ``-wal`` holds commits cannot be
    read without them, which is said (``StorageError``)."""
    uri = Path(path).resolve().as_uri()
    conn = sqlite3.connect(uri + "?mode=ro", uri=True, isolation_level=None,
                           check_same_thread=False)
    conn.execute("PRAGMA busy_timeout=30000")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL index
    except sqlite3.DatabaseError as exc:
        if os.path.exists(path + "-shm") or not _unwritable(path):
            return conn  # not that: the caller meets the error and says what it is
        conn.close()
        wal = path + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            raise StorageError(
                f"{path} cannot be read: its directory is read-only and {wal} holds commits "
                f"that SQLite can read only with a {path}-shm file it cannot create there "
                f"({exc}); make the directory writable, or copy the log with its -wal file "
                "to one that is") from exc
        conn = sqlite3.connect(uri + "?mode=ro&immutable=1", uri=True, isolation_level=None,
                               check_same_thread=False)
    return conn


def _unwritable(path: str) -> bool:
    directory = os.path.dirname(os.path.abspath(path))
    return not os.access(directory, os.W_OK)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables on a new file; refuse a file written by a newer eventwf."""
    db = sqlite_utils.Database(conn, execute_plugins=False)
    existing = set(db.table_names())
    if "meta" in existing:
        version = schema_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"this log has schema version {version}, newer than this eventwf "
                f"(version {SCHEMA_VERSION}); upgrade eventwf to write to it"
            )
    if "meta" in existing and _projection_version(conn) != PROJECTION_VERSION:
        _drop_projections(conn, existing)
        existing -= {"workflows", "agents"}
    _create_tables(db, existing)
    for statement in _TRIGGERS:
        conn.execute(statement)
    with transaction(conn):
        if get_meta(conn, "schema_version") is None:
            set_meta(conn, "schema_version", str(SCHEMA_VERSION))
            set_meta(conn, "genesis", os.urandom(16).hex())
            set_meta(conn, "projected_through", "0")
        set_meta(conn, "projection_version", str(PROJECTION_VERSION))
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _projection_version(conn: sqlite3.Connection) -> int:
    value = get_meta(conn, "projection_version")
    return 1 if value is None else int(value) if value.isdigit() else -1


def _drop_projections(conn: sqlite3.Connection, existing: set[str]) -> None:
    """Drop projection tables of another shape; the open that follows rebuilds them."""
    with transaction(conn):
        for table in ("workflows", "agents"):
            if table in existing:
                conn.execute(f"DROP TABLE {table}")  # a constant name
        set_meta(conn, "projected_through", "0")


_EVENTS = {"position": int, "stream": str, "stream_position": int, "time_us": int,
           "type": str, "data": bytes, "hash": bytes}
_WORKFLOWS = {
    "workflow_id": str, "workflow_name": str, "agent_class": str, "agent_name": str,
    "status": str, "metadata": str, "error_name": str, "error_message": str,
    "created_us": int, "updated_us": int, "completed_us": int, "tracked": int, "run": int,
    "started_at": int, "run_start": int, "mailbox": int, "output": bytes,
    "corrupt_position": int, "wake_at_us": int, "wake_span_us": int, "wait_type": str,
    "paused_us": int, "inbox": str, "commands": int,
    "pending": str, "row_check": int,
}
_WORKFLOWS_NOT_NULL = {"workflow_name", "agent_class", "agent_name", "status", "created_us",
                       "updated_us", "tracked", "run", "started_at", "run_start", "mailbox",
                       "wake_span_us", "commands"}
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
    # the console's listing, newest first (specs/console.md CN17)
    db.table("workflows").create_index(["created_us", "workflow_id"], if_not_exists=True)
    if "agents" not in existing:
        db.table("agents").create(
            _AGENTS, pk=("agent_class", "agent_name"),
            not_null={"has_state", "delivered_through", "last_callback", "state_position"})


def get_meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "...")


def schema_version(conn: sqlite3.Connection) -> int:
    """``meta.schema_version`` (0 when unset); ``CorruptLogError`` naming a damaged one."""
    text = get_meta(conn, "schema_version")
    if text is None:
        return 0
    if not text.isdigit():  # isdigit: also no sign or spaces, which int() would take
        raise CorruptLogError(f"this log's meta.schema_version is {_shown(text)}, not a "
                              "version number: its meta table was changed or damaged")
    return int(text)


def parse_genesis(path: str, text: str) -> bytes:
    """``meta.genesis`` as bytes; ``CorruptLogError`` if it is not hexadecimal."""
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise CorruptLogError(f"{path}: meta.genesis is {_shown(text)}, not hexadecimal: the "
                              "hash chain cannot be checked (the meta table was changed or "
                              "damaged)") from None


def meta_position(conn: sqlite3.Connection, key: str, path: str, *, damaged: int = 0) -> int:
    """A position kept in ``meta`` (0 when unset). A damaged value is logged and read as
    ``damaged``: these are caches (what was verified, what the projections reflect), so
    the engine redoes that work rather than trust it."""
    text = get_meta(conn, key) or "0"
    if text.isdigit():
        return int(text)
    logger.warning("%s: meta.%s is %s, not a log position; treating it as %d", path, key,
                   _shown(text), damaged)
    return damaged


def record_home(conn: sqlite3.Connection, home: str) -> None:
    """Keep the log's home path in ``meta.home``, checkpointed into the database file,
    where ``lock.log_home`` looks when the file has several hard links."""
    if home == ":memory:" or get_meta(conn, "home") == home:
        return
    with transaction(conn):
        set_meta(conn, "home", home)
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def refuse_lost_log(conn: sqlite3.Connection, path: str) -> None:
    """Refuse to start a log over when it lost what it held (before the schema is made).

    A log whose anchor records a head but that holds no events (the file truncated to
    nothing, the events table dropped or emptied) is ``CorruptLogError``: deleting the
    anchor file is how one says "start a new log here". A log whose events lost their
    genesis (the meta table dropped) cannot be checked, and is refused too."""
    tables = {str(row[0]) for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    events = 0
    if "events" in tables:
        events = int(conn.execute("SELECT count(*) FROM (SELECT 1 FROM events LIMIT 1)")
                     .fetchone()[0])
    if events and ("meta" not in tables or get_meta(conn, "genesis") is None):
        raise CorruptLogError(f"{path} holds events but no genesis in its meta table (the "
                              "table was dropped or changed): its hash chain cannot be "
                              "checked, and eventwf will not start it over; restore the file "
                              "from a backup", position=1)
    if not events:
        refuse_emptied(path, "the file is empty" if not tables else "it has no events table"
                       if "events" not in tables else "its events table is empty")


def refuse_emptied(path: str, state: str) -> None:
    """``CorruptLogError`` if the anchor of this log, which holds no events (``state``
    says how), records a head: see :func:`refuse_lost_log`."""
    if path == ":memory:":
        return
    try:
        anchor = read_anchor(path)
    except ValueError:
        return  # reported when the log is verified
    if anchor is None or anchor.position == 0:
        return
    raise CorruptLogError(
        f"{path} holds no events ({state}), but its anchor {anchor_path(path)} says the log "
        f"reached position {anchor.position}: the log was emptied or replaced, and eventwf "
        f"will not start it over. Restore the file from a backup; to start a new, empty log "
        f"here instead, delete {anchor_path(path)}", position=1)

