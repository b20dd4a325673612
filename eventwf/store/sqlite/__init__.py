"""The SQLite backend: one file, WAL, ``synchronous=FULL``, one writing engine."""

from eventwf.store.sqlite.backup import backup as backup
from eventwf.store.sqlite.store import SQLiteStore as SQLiteStore

__all__ = ["SQLiteStore", "backup"]
