"""Benchmarks: eventwf against the raw SQLite floor measured in the same run.

    python -m tools.bench [--quick] [--json] [--out FILE]

Each benchmark runs an engine workload on a fresh log file, then inserts the very rows
that workload wrote (same bytes, same schema, WAL, same ``synchronous``) into another
fresh file as fast as SQLite allows: one row per commit for the sequential case, and in
batches for the concurrent one. Results are ratios to that floor, because this machine is
shared and noisy; absolute rates are printed for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

import eventwf


class BenchAgent(eventwf.Agent):
    pass


class Steps(eventwf.AgentWorkflow[BenchAgent]):
    """``n`` trivial durable steps."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        total = 0
        for i in range(event.payload["n"]):
            total += await step.do(f"s{i}", _value(i))
        return total


def _value(i: int) -> Callable[[], Any]:
    async def fn() -> int:
        return i

    return fn


async def _engine_run(path: str, workflows: int, steps: int, synchronous: str) -> dict[str, Any]:
    async with eventwf.open_engine(path, agents=[BenchAgent], workflows=[Steps],
                                   synchronous=synchronous) as engine:
        agent = await engine.get_agent(BenchAgent, "bench")
        before = engine.statistics()
        start = time.perf_counter()
        ids: list[str] = []

        async def start_and_wait() -> None:
            workflow_id = await agent.run_workflow("Steps", {"n": steps})
            ids.append(workflow_id)
            await engine.wait_workflow(workflow_id)

        async with trio.open_nursery() as nursery:
            for _ in range(workflows):
                nursery.start_soon(start_and_wait)
        elapsed = time.perf_counter() - start
        after = engine.statistics()
    return {
        "seconds": elapsed,
        "steps": workflows * steps,
        "commits": after.commits - before.commits,
        "events": after.events - before.events,
    }


def _rows(path: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT position, stream, stream_position, time_us, type, data, hash FROM events "
            "ORDER BY position").fetchall()
    conn.close()
    return rows


def _raw_floor(path: str, rows: list[tuple[Any, ...]], batch: int, synchronous: str) -> float:
    """Rows per second inserting ``rows`` into a bare events table, ``batch`` per commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
                 "stream_position INTEGER NOT NULL, time_us INTEGER NOT NULL, type TEXT NOT NULL,"
                 " data BLOB NOT NULL, hash BLOB NOT NULL)")
    conn.execute("CREATE UNIQUE INDEX idx ON events(stream, stream_position)")
    sql = "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)"
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows[i:i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


def bench(name: str, workflows: int, steps: int, synchronous: str = "FULL") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "engine.db")
        run = trio.run(_engine_run, log, workflows, steps, synchronous)
        rows = _rows(log)
        steps_per_s = run["steps"] / run["seconds"]
        result: dict[str, Any] = {
            "benchmark": name,
            "workflows": workflows,
            "steps_per_workflow": steps,
            "synchronous": synchronous,
            "steps_per_s": round(steps_per_s),
            "events": run["events"],
            "commits": run["commits"],
            "events_per_commit": round(run["events"] / max(run["commits"], 1), 1),
        }
        if workflows == 1:
            floor = _raw_floor(str(Path(tmp) / "raw1.db"), rows, 1, synchronous)
            result["raw_one_per_commit_per_s"] = round(floor)
            result["ratio_to_raw"] = round(steps_per_s / floor, 3)
        else:
            batch = max(1, round(run["events"] / max(run["commits"], 1)))
            same = _raw_floor(str(Path(tmp) / "rawb.db"), rows, batch, synchronous)
            big = _raw_floor(str(Path(tmp) / "raw256.db"), rows, 256, synchronous)
            result["raw_same_batches_per_s"] = round(same)
            result["raw_batch256_per_s"] = round(big)
            result["ratio_to_raw_same_batches"] = round(steps_per_s / same, 3)
            result["ratio_to_raw_batch256"] = round(steps_per_s / big, 3)
        return result


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "eventwf": eventwf.__version__ if hasattr(eventwf, "__version__") else "?",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--out", help="also write the results (and machine) to this JSON file")
    args = parser.parse_args(argv)
    scale = 10 if args.quick else 1
    plans = [
        ("sequential: 1 workflow x 1000 steps", 1, 1000 // scale),
        ("concurrent: 1000 workflows x 10 steps", 1000 // scale, 10),
    ]
    results = [bench(name, workflows, steps) for name, workflows, steps in plans]
    for result in results:
        if args.json:
            print(json.dumps(result))
    if not args.json:
        for result in results:
            print(f"{result['benchmark']}: {result['steps_per_s']:,} steps/s, "
                  f"{result['events_per_commit']} events/commit")
            for key, value in result.items():
                if key.startswith(("raw_", "ratio_")):
                    print(f"    {key:30} {value:,}")
    if args.out:
        Path(args.out).write_text(json.dumps({"machine": machine(), "results": results},
                                             indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
