"""A fake external service whose requests carry an idempotency key (oracle O6).

The first request for a key performs the effect and stores its result (a receipt naming
the run that made it); every later request with that key returns the stored result and
only bumps a request counter. With ``eventwf.step_context().idempotency_key`` a step that
runs more than once (at least once) therefore has exactly one effect.
"""

from __future__ import annotations

import sqlite3

from .ledger import prepare_wal

__all__ = ["Service"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, result TEXT NOT NULL, "
    "amount INTEGER NOT NULL, requests INTEGER NOT NULL, run TEXT NOT NULL)",
)


class Service:
    def __init__(self, path: str) -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA synchronous=NORMAL")
        prepare_wal(self.conn, path, _SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def charge(self, key: str, amount: int, run: str) -> str:
        """Charge ``amount`` once per ``key``; returns the receipt of the first charge."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT result FROM effects WHERE key = ?", (key,)).fetchone()
            if row is None:
                (count,) = conn.execute("SELECT count(*) FROM effects").fetchone()
                result = f"receipt-{count + 1}-{run}"
                conn.execute("INSERT INTO effects(key, result, amount, requests, run) "
                             "VALUES (?, ?, ?, 1, ?)", (key, result, amount, run))
            else:
                result = str(row[0])
                conn.execute("UPDATE effects SET requests = requests + 1 WHERE key = ?", (key,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def effects(self) -> dict[str, tuple[str, int, int]]:
        """key -> (result, amount, requests)."""
        return {str(k): (str(r), int(a), int(n)) for k, r, a, n in self.conn.execute(
            "SELECT key, result, amount, requests FROM effects")}
