"""One write transaction on a connection in autocommit mode (``BEGIN IMMEDIATE``).

``BEGIN IMMEDIATE`` takes the write lock at once, so a transaction never fails half way
for want of it; anything raised inside rolls it back and goes on up.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["transaction"]


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Run the block in one write transaction: committed if it ends, rolled back if not."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
