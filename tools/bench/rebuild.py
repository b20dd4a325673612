"""Rebuilding every projection from a large log, beside a raw scan-and-decode of it."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from eventwf.model.codec import decode_event
from eventwf.store.sqlite import SQLiteStore
from tools.eventlog.synth import synthesize

__all__ = ["bench_rebuild"]

# The floor reads the same rows the rebuild reads (every column, as the insert floors write
# every column); the data-only scan is reported beside it.
_ROW = ("SELECT position, type, data, stream, stream_position, time_us, hash FROM events "
        "ORDER BY position")
_DATA_ONLY = "SELECT position, type, data FROM events ORDER BY position"


def _raw_scan_decode(path: str, query: str = _ROW) -> float:
    """Events per second reading every row in order and decoding it (the floor)."""
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    count = 0
    cursor = conn.execute(query)
    while rows := cursor.fetchmany(5000):
        for row in rows:
            decode_event(row[1], row[2], position=row[0])
        count += len(rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


def bench_rebuild(events: int, rounds: int = 3) -> dict[str, Any]:
    """Best of ``rounds`` for the floor and for the rebuild, alternating, on a warm file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "big.db")
        synthesize(path, events)
        floor = data_only = elapsed = 0.0
        for _ in range(rounds):
            floor = max(floor, _raw_scan_decode(path))
            data_only = max(data_only, _raw_scan_decode(path, _DATA_ONLY))
            store = SQLiteStore(path)
            try:
                start = time.perf_counter()
                folded = store.rebuild_projections()
                took = time.perf_counter() - start
            finally:
                store.close()
            elapsed = took if not elapsed else min(elapsed, took)
        rate = folded.events / elapsed
        return {
            "benchmark": f"rebuild projections from a {folded.events:,}-event log",
            "events": folded.events,
            "workflows": len(folded.workflows),
            "seconds": round(elapsed, 2),
            "events_per_s": round(rate),
            "raw_scan_decode_per_s": round(floor),
            "ratio_to_raw": round(rate / floor, 3),
            "raw_scan_decode_data_only_per_s": round(data_only),
            "ratio_to_raw_data_only": round(rate / data_only, 3),
            "problems": len(folded.problems),
            "rounds": rounds,
        }
