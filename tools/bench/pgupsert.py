"""The workflow projection's upsert on PostgreSQL at several fill factors (PG9d).

Each commit of a busy engine rewrites the projection row of every workflow it touched.
This writes ``rows`` workflow rows, then upserts the same rows ``rounds`` times, one
transaction each, through the engine's own ``write_workflows`` (a COPY-staged upsert),
into a fresh schema per fill factor: the time per commit and the table's size after
show whether the server could update the rows in place (HOT) or had to copy them.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg
from psycopg import sql

from eventwf.store.postgres import projections, schema
from eventwf.store.rows import row_check

__all__ = ["bench_upsert"]

FILL_FACTORS = (100, 85, 70, 50)


def _rows(count: int, round_: int) -> list[tuple[Any, ...]]:
    """Rows shaped like a running workflow's after ``round_`` steps (the columns a step
    changes: ``updated_us``, ``commands``, ``pending``)."""
    out = []
    for i in range(count):
        values = (f"wf-{i:06d}-0123456789abcdef", "Steps", "BenchAgent", "bench", "running",
                  None, None, None, 1_700_000_000_000_000 + i, 1_700_000_000_000_000 + round_,
                  None, 1, 1, 1, 1, 0, None, None, None, 0, None, None, None, round_,
                  b'[["do",%d,[]]]' % round_)
        out.append((*values, row_check(values)))
    return out


def _one(url: str, fill: int, rows: int, rounds: int) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        conn.execute("DROP SCHEMA IF EXISTS eventwf CASCADE")
        conn.commit()
        schema.create(conn, url)
        conn.execute(sql.SQL("ALTER TABLE eventwf.workflows SET (fillfactor = {})").format(
            sql.Literal(fill)))
        conn.commit()
        ms: list[float] = []
        for round_ in range(rounds + 1):  # round 0 inserts the rows
            batch = _rows(rows, round_)
            started = time.perf_counter()
            with conn.transaction():
                projections.write_workflows(conn, batch)
            if round_:
                ms.append((time.perf_counter() - started) * 1000)
        size = conn.execute("SELECT pg_relation_size('eventwf.workflows')").fetchone()
        conn.execute("DROP SCHEMA eventwf CASCADE")
        conn.commit()
    half = ms[len(ms) // 2:]
    return {"median_ms": round(statistics.median(ms), 1),
            "median_ms_second_half": round(statistics.median(half), 1),
            "table_bytes_after": int(size[0]) if size else None}


def bench_upsert(url: str, rows: int, rounds: int) -> dict[str, Any]:
    """``rounds`` upserts of the same ``rows`` workflows at each of :data:`FILL_FACTORS`
    (the engine uses 50), in a database of its own (its ``eventwf`` schema is dropped)."""
    result: dict[str, Any] = {
        "benchmark": f"postgres projection upsert: {rows:,} workflow rows x {rounds} commits",
        "backend": "postgres", "rows": rows, "rounds": rounds}
    for fill in FILL_FACTORS:
        result[f"fillfactor_{fill}"] = _one(url, fill, rows, rounds)
    return result
