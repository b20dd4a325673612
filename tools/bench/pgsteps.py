"""Durable steps per second on PostgreSQL, beside the raw floor of the same rows.

The engine runs the step workloads of ``steps.py`` on a PostgreSQL database; then the
very rows it appended (same stream, version, time, type, data and hash values) are
appended again, as fast as plain SQL allows, to a bare table of the same shape in a
schema of their own (``eventwf_floor``, dropped after) on the same server in the same run:
one plain ``INSERT`` per commit for the sequential case (the engine commits once per step
there), and ``COPY`` in batches for the concurrent one: the engine's own batches (the rows
of each of its transactions, told apart by the ``tx`` column, one COPY transaction each)
and batches of 256 rows. The floor has no projections, no triggers and no hash computing:
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


def engine_rows(url: str, after: int, through: int) -> list[list[Row]]:
    """The rows the engine appended at positions ``after`` + 1 .. ``through``, in position
    order, grouped by the transaction that appended them."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT tx::text, {_COLUMNS} FROM eventwf.events "  # noqa: S608
            "WHERE position > %s AND position <= %s ORDER BY position",
            (after, through)).fetchall()
    batches: list[list[Row]] = []
    last = None
    for r in rows:
        if r[0] != last:
            batches.append([])
            last = r[0]
        batches[-1].append((str(r[1]), int(r[2]), int(r[3]), str(r[4]), bytes(r[5]),
                            bytes(r[6])))
    return batches


def _rebatched(batches: list[list[Row]], size: int) -> list[list[Row]]:
    rows = [row for batch in batches for row in batch]
    return [rows[i:i + size] for i in range(0, len(rows), size)]


def floor_rate(url: str, batches: list[list[Row]], *, copy: bool) -> float:
    """Rows per second appending ``batches`` to a fresh bare table, one transaction each:
    by COPY, or (``copy`` false, batches of one row) by one autocommit INSERT per row."""
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
            for batch in batches:
                if not copy:
                    for row in batch:
                        conn.execute(insert, row)
                    continue
                with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as out:
                    out.set_types(["text", "int8", "int8", "text", "bytea", "bytea"])
                    for row in batch:
                        out.write_row(row)
            elapsed = time.perf_counter() - start
        finally:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(schema))
    return sum(map(len, batches)) / elapsed


def bench_pg_steps(url: str, name: str, workflows: int, steps: int,
                   dbos_steps_per_s: float | None = None) -> dict[str, Any]:
    """The engine's steps per second on ``url`` and its ratios to the floor (and to DBOS
    on the same server, when measured)."""
    run = trio.run(engine_run, url, workflows, steps)
    # the rows of the timed window only: the agent's callback deliveries that follow the
    # last completion are not part of what was timed
    batches = engine_rows(url, run["head_before"], run["head_after"])
    rows = sum(map(len, batches))
    steps_per_s = run["steps"] / run["seconds"]
    result: dict[str, Any] = {
        "benchmark": name,
        "backend": "postgres",
        "workflows": workflows,
        "steps_per_workflow": steps,
        "steps_per_s": round(steps_per_s),
        "events": run["events"],
        "commits": run["commits"],
        "transactions": len(batches),  # as the database saw them (distinct tx)
        "rows_per_transaction": round(rows / max(len(batches), 1), 1),
        "events_per_step": round(rows / max(run["steps"], 1), 2),
    }
    if workflows == 1:
        floor = floor_rate(url, _rebatched(batches, 1), copy=False)
        result["raw_insert_one_per_commit_per_s"] = round(floor)
        result["ratio_to_raw"] = round(steps_per_s / floor, 3)  # as steps.py: steps/s / rows/s
    else:
        same = floor_rate(url, batches, copy=True)
        big = floor_rate(url, _rebatched(batches, 256), copy=True)
        result["raw_copy_same_batches_per_s"] = round(same)
        result["raw_copy_batch256_per_s"] = round(big)
        result["ratio_to_raw_same_batches"] = round(steps_per_s / same, 3)
        result["ratio_to_raw_batch256"] = round(steps_per_s / big, 3)
    if dbos_steps_per_s:
        result["dbos_postgres_steps_per_s"] = round(dbos_steps_per_s)
        result["times_dbos_postgres"] = round(steps_per_s / dbos_steps_per_s, 1)
    return result
