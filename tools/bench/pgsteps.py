"""Durable steps per second on PostgreSQL, beside the raw floor of the same rows.

The engine runs the step workloads of ``steps.py`` on a PostgreSQL database; then the
very rows it appended (same stream, version, time, type, data and hash values) are
appended again, as fast as plain SQL allows, to a bare table of the same shape in a
schema of their own (``eventwf_floor``, dropped after) on the same server in the same run:
one plain ``INSERT`` per commit for the sequential case (the engine commits once per step
there), and ``COPY`` in batches for the concurrent one: batches of the engine's own mean
size and of 256 rows. The floor has no projections, no triggers and no hash computing:
it is what the server alone costs for those rows.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import trio
from psycopg import sql

from tools.bench.steps import engine_run

__all__ = ["bench_pg_steps", "engine_rows", "floor_rate"]

Row = tuple[str, int, int, str, bytes, bytes]
_FLOOR = "eventwf_floor"
_FLOOR_DDL = (
    "CREATE TABLE {schema}.events ("
    " position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    " tx xid8 NOT NULL DEFAULT pg_current_xact_id(),"
    " stream text NOT NULL, stream_position bigint NOT NULL, time_us bigint NOT NULL,"
    " type text NOT NULL, data bytea NOT NULL, hash bytea NOT NULL,"
    " UNIQUE (stream, stream_position))"
)
_COLUMNS = "stream, stream_position, time_us, type, data, hash"


def _head(url: str) -> int:
    """The log's last position (0: no log yet)."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('eventwf.events')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT max(position) FROM eventwf.events").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def engine_rows(url: str, after: int) -> list[Row]:
    """The rows the engine appended after position ``after``, in position order."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM eventwf.events WHERE position > %s "  # noqa: S608
            "ORDER BY position", (after,)).fetchall()
    return [(str(r[0]), int(r[1]), int(r[2]), str(r[3]), bytes(r[4]), bytes(r[5]))
            for r in rows]


def floor_rate(url: str, rows: list[Row], batch: int) -> float:
    """Rows per second appending ``rows`` to a fresh bare table: one autocommit INSERT per
    row when ``batch`` is 1, else one COPY transaction per ``batch`` rows."""
    schema = sql.Identifier(_FLOOR)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema))
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
        conn.execute(sql.SQL(_FLOOR_DDL).format(schema=schema))
        insert = sql.SQL("INSERT INTO {}.events ({}) VALUES (%s, %s, %s, %s, %s, %s)").format(
            schema, sql.SQL(_COLUMNS))
        copy_sql = sql.SQL("COPY {}.events ({}) FROM STDIN (FORMAT BINARY)").format(
            schema, sql.SQL(_COLUMNS))
        try:
            start = time.perf_counter()
            if batch == 1:
                for row in rows:
                    conn.execute(insert, row)
            else:
                for i in range(0, len(rows), batch):
                    with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                        copy.set_types(["text", "int8", "int8", "text", "bytea", "bytea"])
                        for row in rows[i:i + batch]:
                            copy.write_row(row)
            elapsed = time.perf_counter() - start
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    return len(rows) / elapsed


def bench_pg_steps(url: str, name: str, workflows: int, steps: int,
                   dbos_steps_per_s: float | None = None) -> dict[str, Any]:
    """The engine's steps per second on ``url`` and its ratios to the floor (and to DBOS
    on the same server, when measured)."""
    before = _head(url)
    run = trio.run(engine_run, url, workflows, steps)
    rows = engine_rows(url, before)
    steps_per_s = run["steps"] / run["seconds"]
    result: dict[str, Any] = {
        "benchmark": name,
        "backend": "postgres",
        "workflows": workflows,
        "steps_per_workflow": steps,
        "steps_per_s": round(steps_per_s),
        "events": run["events"],
        "commits": run["commits"],
        "events_per_commit": round(run["events"] / max(run["commits"], 1), 1),
        "events_per_step": round(len(rows) / max(run["steps"], 1), 2),
    }
    if workflows == 1:
        floor = floor_rate(url, rows, 1)
        result["raw_insert_one_per_commit_per_s"] = round(floor)
        result["ratio_to_raw"] = round(steps_per_s / floor, 3)  # as steps.py: steps/s / rows/s
    else:
        batch = max(2, round(run["events"] / max(run["commits"], 1)))
        same = floor_rate(url, rows, batch)
        big = floor_rate(url, rows, 256)
        result["raw_copy_same_batches"] = batch
        result["raw_copy_same_batches_per_s"] = round(same)
        result["raw_copy_batch256_per_s"] = round(big)
        result["ratio_to_raw_same_batches"] = round(steps_per_s / same, 3)
        result["ratio_to_raw_batch256"] = round(steps_per_s / big, 3)
    if dbos_steps_per_s:
        result["dbos_postgres_steps_per_s"] = round(dbos_steps_per_s)
        result["times_dbos_postgres"] = round(steps_per_s / dbos_steps_per_s, 1)
    return result
