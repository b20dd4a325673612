"""Storage: the only code that touches a database (specs/design.md, rule D2).

``open_store`` picks the backend from the location: a file path (or ``":memory:"``) is a
SQLite log, a ``postgresql://`` (or ``postgres://``) URL a PostgreSQL database; every
backend implements ``interface.LogStore``, which is all the runtime and
the engine see.
"""

from __future__ import annotations

import os

from eventwf.errors import StorageError
from eventwf.store.interface import LogStore as LogStore
from eventwf.store.interface import OpenReport as OpenReport
from eventwf.store.interface import PendingRow as PendingRow
from eventwf.store.interface import TrackingQuery as TrackingQuery

__all__ = [
    "LogStore", "OpenReport", "PendingRow", "TrackingQuery", "copy_log", "copy_log_prefix",
    "is_url", "open_store",
]

_URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return location.startswith(_URL_SCHEMES)


def open_store(location: str | os.PathLike[str], *, readonly: bool = False,
               synchronous: str = "FULL") -> LogStore:
    """The log at ``location``, opened for writing (one writer per log) or reading."""
    where = os.fspath(location)
    if is_url(where):
        from eventwf.store.postgres import PostgresStore

        return PostgresStore(where, readonly=readonly)  # ``synchronous``: the server's own
    from eventwf.store.sqlite import SQLiteStore

    return SQLiteStore(where, readonly=readonly, synchronous=synchronous)


def copy_log(source: str | os.PathLike[str], target: str) -> None:
    """A consistent copy of a (possibly live) log into the SQLite file ``target``."""
    where = os.fspath(source)
    if is_url(where):
        raise StorageError("copying a PostgreSQL log is not supported yet")
    from eventwf.store.sqlite import backup

    backup(where, target)


def copy_log_prefix(source: str | os.PathLike[str], target: str, through: int) -> int:
    """A new log ``target`` holding the first ``through`` events of the SQLite log
    ``source``, as a crash after that event leaves it; returns that event's time (µs)."""
    where = os.fspath(source)
    if is_url(where):
        raise StorageError("cutting a PostgreSQL log is not supported yet")
    from eventwf.store.sqlite.prefix import copy_prefix

    return copy_prefix(where, target, through)
