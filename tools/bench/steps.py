"""Durable steps per second, beside the raw SQLite floor of the same bytes.

The engine workload runs on a fresh log; then the very rows it wrote (same bytes, same
schema, WAL, same ``synchronous``) are inserted into another fresh file as fast as SQLite
allows: one row per commit for the sequential case, in batches for the concurrent one.
"""

from __future__ import annotations

import sqlite3
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


async def engine_run(path: str, workflows: int, steps: int,
                     synchronous: str = "FULL") -> dict[str, Any]:
    """``workflows`` concurrent runs of ``steps`` steps on the log at ``path``: the time
    from the first start to the last completion, the commits and events it took, and the
    log's head before and after (what was appended in that time lies between)."""
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
        "head_before": before.head,
        "head_after": after.head,
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


DBOS_SQLITE_STEPS_PER_S = 400  # DBOS 3.4 on SQLite on a machine like ours (issue #6)


def bench(name: str, workflows: int, steps: int, synchronous: str = "FULL") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "engine.db")
        run = trio.run(engine_run, log, workflows, steps, synchronous)
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
            result["times_dbos_sqlite"] = round(steps_per_s / DBOS_SQLITE_STEPS_PER_S, 1)
        return result
