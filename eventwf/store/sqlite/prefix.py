"""A log cut after one of its events: the file a crash at that moment would leave.

The crash tests (``eventwf.testing.CrashReplay``) copy the first ``through`` events of a
finished log into a new file and reopen it: since every write is one transaction, any
crash leaves exactly such a prefix (log.md L8). The copy keeps the source's genesis, so
the hash chain of the copied rows verifies, and drops the projections, which the engine
rebuilds from the events when it opens the copy.
"""

from __future__ import annotations

from eventwf.errors import StorageError
from eventwf.store.sqlite.lock import log_home
from eventwf.store.sqlite.schema import connect, get_meta, set_meta
from eventwf.store.sqlite.store import SQLiteStore
from eventwf.store.sqlite.transaction import transaction

__all__ = ["copy_prefix"]


def copy_prefix(source: str, target: str, through: int) -> int:
    """Write the events of ``source`` at positions ``1..through`` into the new log
    ``target`` and return the time (µs since the epoch) of the last one copied, where a
    restart right after the crash would begin.

    ``through`` must lie within ``source`` (1 to its head): ``ValueError`` names it.
    """
    reader = connect(log_home(source), readonly=True)
    try:
        head = reader.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        if isinstance(through, bool) or not isinstance(through, int) or not 1 <= through <= head:
            raise ValueError(f"invalid prefix length {through!r}: {source} holds events 1 to "
                             f"{head}")
        genesis = get_meta(reader, "genesis")
        if genesis is None:
            raise StorageError(f"{source} has no genesis record: it is not an eventwf log")
        rows = reader.execute(
            "SELECT position, stream, stream_position, time_us, type, data, hash FROM events "
            "WHERE position <= ? ORDER BY position", (through,)).fetchall()
    finally:
        reader.close()
    SQLiteStore(target).close()  # the schema, the anchor and the lock's home
    writer = connect(target)
    try:
        with transaction(writer):
            set_meta(writer, "genesis", genesis)
            writer.executemany(
                "INSERT INTO events(position, stream, stream_position, time_us, type, data, "
                "hash) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            set_meta(writer, "projected_through", "0")
    finally:
        writer.close()
    return int(rows[-1][3])
