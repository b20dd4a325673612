"""What opening a SQLite log checks before the engine serves it.

The projections are a cache of the log: lagging ones (a crash between commits is not
possible, but an older eventwf, a rebuild interrupted, a damaged ``projected_through``) and
ones that fail their row checks are rebuilt from the log. Then the rows written since the
last verification are checked (hash chain, versions, storage classes) and the anchor is
compared: opening costs what was written meanwhile, and the rows this engine writes are
trusted until it closes (log.md L8, L7c, G8).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Protocol

from eventwf.errors import StorageError
from eventwf.store.interface import OpenReport
from eventwf.store.sqlite.anchor import anchor_mismatch, preserve_anchor
from eventwf.store.sqlite.log import scan
from eventwf.store.sqlite.schema import meta_position

__all__ = ["open_checks"]

logger = logging.getLogger("eventwf")


class Opened(Protocol):
    """What these checks need of the store being opened (``SQLiteStore``)."""

    conn: sqlite3.Connection
    genesis: bytes
    path: str
    head: int

    def projected_through(self) -> int: ...
    def rebuild_projections(self) -> object: ...
    def check_projections(self) -> bool: ...
    def mark_verified(self) -> None: ...


def open_checks(store: Opened, *, quiet: bool = False) -> OpenReport:
    """Projections brought up to date, the new rows verified (``quiet``: no warning for a
    rebuild, as a replay-only check wants)."""
    through = store.projected_through()
    if through != store.head:
        if not quiet:
            logger.warning("projections of %s lag the log (%d vs %d); rebuilding them",
                           store.path, through, store.head)
        store.rebuild_projections()
    else:
        store.check_projections()  # a cache of the log: never serve a row it does not hold
    return _verify_tail(store)


def _verify_tail(store: Opened) -> OpenReport:
    """Check the chain from the last verified position to the head, and the anchor."""
    start = meta_position(store.conn, "verified_through", store.path) + 1
    problems = [
        (item.row.position, item.row.stream,
         f"event at log position {item.row.position}: {item.problem}")
        for item in scan(store.conn, store.genesis, from_position=start)
        if item.problem is not None
    ]
    anchor = anchor_mismatch(store.conn, store.path, store.head)
    if anchor is not None and store.path != ":memory:":
        kept = preserve_anchor(store.path)  # the evidence outlives the new anchor
        anchor = f"{anchor} (previous anchor kept as {kept})"
    if anchor is not None:  # reported before the new anchor hides the mismatch: a process
        logger.error("%s", anchor)  # killed in between would otherwise lose the report
    try:
        store.mark_verified()
    except (sqlite3.Error, OSError) as exc:
        raise StorageError(f"{store.path}: cannot record the verification of the log: "
                           f"{exc}") from exc
    return OpenReport(problems, anchor)
