"""Shared test agents and workflows, plus small helpers to read a log back."""

from __future__ import annotations

import sqlite3
from typing import Any

import eventwf
from eventwf.store import is_url
from eventwf.testing import virtual_wall as virtual_wall  # the kit's; tests import it here


class TestAgent(eventwf.Agent):
    """Records every callback it receives."""

    __test__ = False
    initial_state: Any = {"count": 0}

    def __init__(self) -> None:
        self.callbacks: list[tuple[str, str, str, Any]] = []
        self.states: list[tuple[Any, str]] = []

    async def on_workflow_progress(self, workflow_name: str, workflow_id: str, p: Any) -> None:
        self.callbacks.append(("progress", workflow_name, workflow_id, p))

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str, r: Any) -> None:
        self.callbacks.append(("complete", workflow_name, workflow_id, r))

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, e: str) -> None:
        self.callbacks.append(("error", workflow_name, workflow_id, e))

    async def on_workflow_event(self, workflow_name: str, workflow_id: str, e: Any) -> None:
        self.callbacks.append(("event", workflow_name, workflow_id, e))

    async def on_state_update(self, state: Any, source: str) -> None:
        self.states.append((state, source))


def _pg_rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def event_types(path: str, stream: str | None = None) -> list[str]:
    """The type column of every event (of one stream), in log order (either backend)."""
    if is_url(path):
        where, params = ("", ()) if stream is None else (" WHERE stream = %s", (stream,))
        return [r[0] for r in _pg_rows(path, "SELECT type FROM eventwf.events" + where
                                       + " ORDER BY position", params)]
    with sqlite3.connect(path) as conn:
        if stream is None:
            rows = conn.execute("SELECT type FROM events ORDER BY position").fetchall()
        else:
            rows = conn.execute(
                "SELECT type FROM events WHERE stream = ? ORDER BY position", (stream,)
            ).fetchall()
    return [r[0] for r in rows]


def count_events(path: str) -> int:
    if is_url(path):
        return int(_pg_rows(path, "SELECT count(*) FROM eventwf.events")[0][0])
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


def event_data(path: str, type_name: str) -> list[tuple[int, bytes]]:
    """(position, data) of every event of one type, in log order (either backend)."""
    if is_url(path):
        rows = _pg_rows(path, "SELECT position, data FROM eventwf.events WHERE type = %s "
                        "ORDER BY position", (type_name,))
    else:
        with sqlite3.connect(path) as conn:
            rows = conn.execute("SELECT position, data FROM events WHERE type = ? "
                                "ORDER BY position", (type_name,)).fetchall()
        conn.close()
    return [(int(p), bytes(d)) for p, d in rows]


def flip_last_byte(path: str, stream: str, type_name: str) -> tuple[int, bytes]:
    """Damage the first event of ``type_name`` in ``stream`` as a disk or a hand would (the
    append-only trigger set aside for it); its position and the damaged data."""
    if is_url(path):
        import psycopg

        with psycopg.connect(path) as pg:  # one transaction: the trigger is off only in it
            pg.execute("ALTER TABLE eventwf.events DISABLE TRIGGER events_append_only")
            found = pg.execute(
                "SELECT position, data FROM eventwf.events WHERE stream = %s AND type = %s "
                "ORDER BY position LIMIT 1", (stream, type_name)).fetchone()
            assert found is not None, (stream, type_name)
            position, data = found
            damaged = bytes(data[:-1]) + bytes([data[-1] ^ 0x01])
            pg.execute("UPDATE eventwf.events SET data = %s WHERE position = %s",
                       (damaged, position))
            pg.execute("ALTER TABLE eventwf.events ENABLE TRIGGER events_append_only")
        return int(position), damaged
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        position, data = conn.execute(
            "SELECT position, data FROM events WHERE stream = ? AND type = ? "
            "ORDER BY position LIMIT 1", (stream, type_name)).fetchone()
        damaged = bytes(data[:-1]) + bytes([data[-1] ^ 0x01])
        conn.execute("UPDATE events SET data = ? WHERE position = ?", (damaged, position))
    conn.close()
    return int(position), damaged
