"""One writing engine per PostgreSQL database: a session advisory lock on the writer's session.

Why an advisory lock on the writing connection itself (and not a lease row): in this
version one engine writes a database, as one engine writes a SQLite file. The lock is
held by the very session that appends, so there is no moment when this engine writes
without holding it: if that session ends (the engine exits or is SIGKILLed, the server
ends it, the network drops it) the lock goes with it, and so does every later append of
the engine, which has no other session to write on. A second engine's
``pg_try_advisory_lock`` then fails at once and names the holder from ``pg_locks`` and
``pg_stat_activity`` (its application name carries host and pid). What an advisory lock
does not do well (specs/postgres.md, "Ownership"): a *paused* holder keeps it, and a
partitioned one keeps it until TCP keepalives give up; several engines per database take
shards by lease rows instead (PG12), not this lock.
"""

from __future__ import annotations

import os
import socket

from eventwf.errors import LogLockedError
from eventwf.store.postgres.sql import Conn

__all__ = ["WRITER_LOCK", "acquire", "application_name"]

WRITER_LOCK = 0x6577_6631_5047_0002  # "ewf1PG" 2: the writer of a database (sql.py has 1)
_HOLDER = (
    "SELECT a.application_name, a.client_addr::text, l.pid FROM pg_locks l "
    "LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid::bigint = %s AND l.objid::bigint = %s"
)


def application_name() -> str:
    """How this engine's sessions name themselves to the server (host and pid)."""
    return f"eventwf on {socket.gethostname()[:30]} pid {os.getpid()}"


def acquire(conn: Conn, where: str) -> None:
    """Take the writer lock on ``conn``'s session, or raise ``LogLockedError`` naming the
    engine that holds it (``where`` names the database)."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK,)).fetchone()
    if row is not None and row[0]:
        return
    raise LogLockedError(f"{where} is already open for writing by {_holder(conn)}; close that "
                         "engine first (one engine per PostgreSQL database in this version)")


def _holder(conn: Conn) -> str:
    key = WRITER_LOCK
    row = conn.execute(_HOLDER, (key >> 32, key & 0xFFFF_FFFF)).fetchone()
    if row is None:
        return "another engine (it has just let go: try again)"
    name, address, pid = row
    who = str(name) if name else "another engine"
    return f"{who} (server session {pid}{', from ' + str(address) if address else ''})"
