"""The side-effect ledger: a separate SQLite file in autocommit mode.

Step bodies call :meth:`Ledger.execution` before they return, so every execution that could
have had an effect is on disk even if the process is SIGKILLed right after. Engine opens
(``OPEN <head>``, as tests/crash_worker.py prints them), callback deliveries and injected
faults are recorded the same way. Rows are ordered by ``id`` across processes.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["Execution", "Ledger", "Open", "prepare_wal"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS executions (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT "
    "NOT NULL, workflow TEXT NOT NULL, step TEXT NOT NULL, key TEXT NOT NULL, attempt INTEGER "
    "NOT NULL, head INTEGER NOT NULL, t REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS opens (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, "
    "head INTEGER NOT NULL, t REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS callbacks (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT "
    "NULL, workflow TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, t REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT NOT NULL, "
    "what TEXT NOT NULL, t REAL NOT NULL)",
)


def prepare_wal(conn: sqlite3.Connection, path: str, schema: tuple[str, ...]) -> None:
    """Switch a harness database to WAL and create its tables, once.

    Switching the journal mode needs an exclusive lock and does not wait for one: two
    processes doing it at once on a new file fail with "database is locked". So the
    switch is made only when the file is not in WAL mode yet, and the campaign driver
    prepares every shared file before it starts workers (:meth:`Campaign.__post_init__`);
    a worker then only opens it.
    """
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"{path}: could not switch to WAL (journal_mode={mode!r})")
    for statement in schema:
        conn.execute(statement)


class Execution(NamedTuple):
    id: int
    run: str
    workflow: str
    step: str
    key: str
    attempt: int
    head: int  # the log head when the body began: its outcome must land after it


class Open(NamedTuple):
    id: int
    run: str
    head: int
    t: float


class Ledger:
    def __init__(self, path: str) -> None:
        self.path = path
        self.clock: Callable[[], float] = time.time
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA synchronous=NORMAL")  # survives a process crash
        prepare_wal(self.conn, path, _SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def execution(self, run: str, workflow: str, step: str, key: str, attempt: int,
                  head: int) -> None:
        self.conn.execute(
            "INSERT INTO executions(run, workflow, step, key, attempt, head, t) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run, workflow, step, key, attempt, head, self.clock()))

    def opened(self, run: str, head: int) -> None:
        self.conn.execute("INSERT INTO opens(run, head, t) VALUES (?, ?, ?)",
                          (run, head, self.clock()))

    def callback(self, run: str, workflow: str, kind: str, value: str) -> None:
        self.conn.execute("INSERT INTO callbacks(run, workflow, kind, value, t) "
                          "VALUES (?, ?, ?, ?, ?)", (run, workflow, kind, value, self.clock()))

    def note(self, run: str, what: str) -> None:
        self.conn.execute("INSERT INTO notes(run, what, t) VALUES (?, ?, ?)",
                          (run, what, self.clock()))

    # -- reading (the checker) -------------------------------------------------------------

    def executions(self) -> list[Execution]:
        rows = self.conn.execute("SELECT id, run, workflow, step, key, attempt, head "
                                 "FROM executions ORDER BY id").fetchall()
        return [Execution(*row) for row in rows]

    def opens(self) -> list[Open]:
        return [Open(*row) for row in
                self.conn.execute("SELECT id, run, head, t FROM opens ORDER BY id").fetchall()]

    def callbacks(self) -> list[tuple[str, str, str, str]]:
        """(run, workflow, kind, value) per delivery, in order."""
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in self.conn.execute(
            "SELECT run, workflow, kind, value FROM callbacks ORDER BY id").fetchall()]

    def notes(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in
                self.conn.execute("SELECT run, what FROM notes ORDER BY id").fetchall()]

    def lines(self) -> int:
        """How many rows of any kind (a cheap progress counter for kill loops)."""
        return int(self.conn.execute(
            "SELECT (SELECT count(*) FROM executions) + (SELECT count(*) FROM callbacks)"
        ).fetchone()[0])
