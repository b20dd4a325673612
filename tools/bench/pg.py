"""PostgreSQL appends (eventwf/store/postgres/sql.py) beside their raw floor, from trio.

    python -m tools.bench.pg [--url URL] [--seconds S] [--rounds N] [--json]

Every call goes through ``trio.to_thread.run_sync`` (psycopg's sync API in a worker
thread, as the engine will call it: specs/postgres.md PG3). Single-row commits:
``commit_batch`` by COPY, by executemany and by its default (``insert_rows``: executemany
below 16 rows) beside a plain one-row INSERT in autocommit. 256-row batches: the same
three beside a plain COPY of the same rows into the same table.
The variants take turns for ``--rounds`` rounds of ``--seconds`` each; the median round is
reported. Without ``--url`` a throwaway cluster is started with PostgreSQL's durable
defaults (``fsync``, ``synchronous_commit=on``; not the tests' fast settings) and
deleted after. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import psycopg
import trio

from eventwf.store.postgres import sql as pg_sql
from tools.bench.common import machine
from tools.pgserver import NoServer, open_server

ROW_BYTES = 120  # the data size of the reference measurements (specs/postgres.md)


class Rows:
    """Fresh chained rows: every batch appends to new streams (expected version -1)."""

    def __init__(self) -> None:
        self.count = 0

    def batch(self, size: int) -> list[pg_sql.NewEvent]:
        out = []
        for _ in range(size):
            self.count += 1
            stream = f"wf:bench-{self.count}"
            data = os.urandom(ROW_BYTES)
            digest = pg_sql.stream_hash(bytes(16), stream, 0, self.count, "step.succeeded", data)
            out.append(pg_sql.NewEvent(stream, 0, self.count, "step.succeeded", data, digest))
        return out


def _plain_insert(conn: psycopg.Connection, rows: list[pg_sql.NewEvent]) -> None:
    for row in rows:
        conn.execute("INSERT INTO eventwf.events (stream, stream_position, time_us, type, "
                     "data, hash) VALUES (%s, %s, %s, %s, %s, %s)", row)


def _plain_copy(conn: psycopg.Connection, rows: list[pg_sql.NewEvent]) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(
            "COPY eventwf.events (stream, stream_position, time_us, type, data, hash) "
            "FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(["text", "int8", "int8", "text", "bytea", "bytea"])
        for row in rows:
            copy.write_row(row)


def _ours(insert: pg_sql.Insert) -> Callable[[psycopg.Connection, list[pg_sql.NewEvent]], None]:
    def append(conn: psycopg.Connection, rows: list[pg_sql.NewEvent]) -> None:
        pg_sql.commit_batch(conn, rows, insert=insert)
    return append


VARIANTS = {
    "floor": (_plain_insert, _plain_copy),
    "copy": (_ours(pg_sql.insert_by_copy), _ours(pg_sql.insert_by_copy)),
    "executemany": (_ours(pg_sql.insert_by_executemany), _ours(pg_sql.insert_by_executemany)),
    "rows": (_ours(pg_sql.insert_rows), _ours(pg_sql.insert_rows)),  # the default
}


async def _round(conn: psycopg.Connection, append: Callable[..., None], rows: Rows, size: int,
                 seconds: float) -> float:
    """Rows per second committed in ``seconds``, each commit through a worker thread."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        await trio.to_thread.run_sync(append, conn, rows.batch(size))
        done += size
    return done / (time.perf_counter() - start)


async def measure(url: str, seconds: float, rounds: int) -> dict[str, Any]:
    conn = await trio.to_thread.run_sync(lambda: psycopg.connect(url, autocommit=True))
    try:
        await trio.to_thread.run_sync(pg_sql.create_schema, conn)
        rows = Rows()
        result: dict[str, Any] = {}
        for size, kind in ((1, 0), (256, 1)):
            runs: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(rounds):
                for name, appends in VARIANTS.items():
                    runs[name].append(await _round(conn, appends[kind], rows, size, seconds))
            medians = {name: statistics.median(values) for name, values in runs.items()}
            for name, values in runs.items():
                key = f"rows{size}_{name}"
                result[key] = round(medians[name])
                result[key + "_runs"] = [round(v) for v in values]
                if name != "floor":
                    result[key + "_ratio"] = round(medians[name] / medians["floor"], 2)
        return result
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.pg", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a database to write into (default: a throwaway cluster)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per variant")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args(argv)
    try:
        with open_server(args.url) as server:
            url = server.new_database()
            result = trio.run(measure, url, args.seconds, args.rounds)
            postgres = _version(url) if server.bindir is None else str(server.bindir)
    except NoServer as exc:
        parser.error(str(exc))
    result = {"benchmark": "postgres appends through trio.to_thread", **result,
              "seconds": args.seconds, "rounds": args.rounds, "postgres": postgres,
              "machine": machine()}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28} {value}")
    return 0


def _version(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return "?" if row is None else str(row[0])


if __name__ == "__main__":
    sys.exit(main())
