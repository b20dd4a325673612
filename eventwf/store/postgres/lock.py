"""How an engine's PostgreSQL sessions name themselves to the server.

Several engines may share a database (specs/postgres.md PG12): they own shards by lease
rows, not by a lock. What is left of the writer lock of the first version (PG22) is the
name each session gives itself (``application_name``: host and pid), so an operator can
tell in ``pg_stat_activity`` which engine a session belongs to, and a test can find a
killed engine's session.
"""

from __future__ import annotations

import os
import socket

__all__ = ["application_name"]


def application_name() -> str:
    """How this engine's sessions name themselves to the server (host and pid)."""
    return f"eventwf on {socket.gethostname()[:30]} pid {os.getpid()}"
