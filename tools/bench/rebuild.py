"""Rebuilding every projection from a large log, beside a raw scan-and-decode of it."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from eventwf._codec import decode_event
from eventwf._store import Store
from tools.eventlog.synth import synthesize

__all__ = ["bench_rebuild"]


def _raw_scan_decode(path: str) -> float:
    """Events per second reading every row in order and decoding it (the floor)."""
    conn = sqlite3.connect(path)
    start = time.perf_counter()
    count = 0
    cursor = conn.execute("SELECT position, type, data FROM events ORDER BY position")
    while rows := cursor.fetchmany(5000):
        for position, type_name, data in rows:
            decode_event(type_name, data, position=position)
        count += len(rows)
    elapsed = time.perf_counter() - start
    conn.close()
    return count / elapsed


def bench_rebuild(events: int, rounds: int = 2) -> dict[str, Any]:
    """Best of ``rounds`` for the floor and for the rebuild, alternating, on a warm file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "big.db")
        synthesize(path, events)
        floor = elapsed = 0.0
        for _ in range(rounds):
            floor = max(floor, _raw_scan_decode(path))
            store = Store(path)
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
            "problems": len(folded.problems),
            "rounds": rounds,
        }
