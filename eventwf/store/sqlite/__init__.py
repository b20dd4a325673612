"""The SQLite backend: one file, WAL, ``synchronous=FULL``, one writing engine."""

from eventwf.store.sqlite.store import SQLiteStore as SQLiteStore
from eventwf.store.sqlite.store import backup as backup

__all__ = ["SQLiteStore", "backup"]
