"""Storage layer: the only code that touches SQLite (see specs/design.md)."""

from eventwf.store.sqlite.store import PendingRow as PendingRow
from eventwf.store.sqlite.store import Store as Store
from eventwf.store.sqlite.store import backup as backup

__all__ = ["PendingRow", "Store", "backup"]
