"""Storage layer: the only code that touches SQLite (see specs/design.md)."""

from .store import PendingRow as PendingRow
from .store import Store as Store
from .store import backup as backup

__all__ = ["PendingRow", "Store", "backup"]
