"""The web console on a large log: how long each page takes to build (specs/console.md CN17).

    python -m tools.bench --only console [--json]        # 100k workflows, ~1M events
    python -m tools.bench --only console --quick         # 5k workflows

The log is written by ``tools.eventlog.synth`` (the engine's own folds, committed through
``Store.commit`` in batches of 20,000 rows: a busy engine's log, written in seconds rather
than the engine's one-by-one appends, and ``verify`` finds it intact): 100 agents, 500
workflows in flight at a time, each with 3 steps (one in ten retried), half with a sleep,
some with a wait and a state merge, metadata ``{"tenant": "t<n % 37>", "priority": n % 3}``.

Each page is requested ``ROUNDS`` times over HTTP from ``eventwf console`` (the public
command, in a subprocess, on 127.0.0.1: a request opens the log, builds the page and
closes the log, as in production); the best and the median are printed in ms. The
listing's pages are then timed again without the ``created_us`` index, which shows
what the index buys, and ``EXPLAIN QUERY PLAN`` of the first page is printed for both.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eventwf.logtool.workflows import WorkflowRow, encode_cursor
from tools.eventlog.synth import synthesize

__all__ = ["bench_console"]

ROUNDS = 5
_EVENTS_PER_WORKFLOW = 10.6  # synth with steps=3: 1,035,000 events made 97,868 workflows
_INDEX = "idx_workflows_created_us_workflow_id"
_FIRST_PAGE = ("SELECT workflow_id FROM workflows ORDER BY created_us DESC, workflow_id DESC "
               "LIMIT 51")


@contextmanager
def _console(path: str) -> Iterator[str]:
    """``eventwf console PATH --port 0`` in a subprocess; its URL (without the last /)."""
    proc = subprocess.Popen([sys.executable, "-m", "eventwf", "console", path, "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        found = re.search(r"(http://\S+)/ ", proc.stdout.readline())
        if found is None:
            raise SystemExit(f"console bench: eventwf console did not start: {proc.stdout.read()}")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - http only
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _time(base: str, target: str) -> dict[str, float]:
    took = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        status, body = _get(base + target)
        took.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise SystemExit(f"console bench: {target} answered {status}: {body[:300]!r}")
    return {"best_ms": round(min(took), 1), "median_ms": round(statistics.median(took), 1)}


def _targets(path: str, workflows: int) -> dict[str, str]:
    """The pages to time, with a deep cursor (the middle of the listing) and a time."""
    conn = sqlite3.connect(path)
    try:
        middle = f"report-{workflows // 2:07d}"
        row = conn.execute("SELECT workflow_id, workflow_name, agent_class, agent_name, status, "
                           "created_us, updated_us, completed_us, error_name, error_message, "
                           "run FROM workflows WHERE workflow_id = ?", (middle,)).fetchone()
        head = int(conn.execute("SELECT max(position) FROM events").fetchone()[0])
    finally:
        conn.close()
    cursor = encode_cursor(WorkflowRow(*row))
    return {
        "list: first page": "/",
        "list: by status": "/?status=complete",
        "list: by metadata": "/?meta=tenant%3Dt5",
        "list: metadata, rare (priority=9)": "/?meta=priority%3D9",
        "list: by agent": "/?agent=ReportAgent/tenant-007",
        "list: deep cursor (middle)": f"/?cursor={cursor}",
        "list: deep cursor + metadata": f"/?cursor={cursor}&meta=tenant%3Dt5",
        "workflow page": f"/workflows/{middle}",
        "agent page, now": "/agents/ReportAgent/tenant-007",
        "agent page, time travel (head/2)": f"/agents/ReportAgent/tenant-007?at={head // 2}",
        "log tail (50)": "/log",
        "log tail by type (completed)": "/log?type=workflow.completed",
        "log tail by workflow": f"/log?workflow={middle}",
        "live tail poll (after head-100)": f"/api/log?after={head - 100}",
    }


def _plan(path: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return "; ".join(str(r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + _FIRST_PAGE))
    finally:
        conn.close()


def bench_console(workflows: int) -> dict[str, Any]:
    """Build a log of about ``workflows`` workflows and time the console's pages on it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "console.db")
        start = time.perf_counter()
        events = synthesize(path, round(workflows * _EVENTS_PER_WORKFLOW), steps=3)
        built = time.perf_counter() - start
        conn = sqlite3.connect(path)
        count = int(conn.execute("SELECT count(*) FROM workflows").fetchone()[0])
        conn.close()
        targets = _targets(path, count)
        plan = _plan(path)
        with _console(path) as base:
            pages = {name: _time(base, target) for name, target in targets.items()}
            conn = sqlite3.connect(path)
            conn.execute(f"DROP INDEX {_INDEX}")  # the same pages without the listing's index
            conn.close()
            unindexed = {name: _time(base, target) for name, target in targets.items()
                         if name.startswith("list")}
        result: dict[str, Any] = {
            "benchmark": f"console pages on a log of {count:,} workflows, {events:,} events",
            "workflows": count, "events": events,
            "build_seconds": round(built, 1),
            "bytes": Path(path).stat().st_size,
            "slowest_page_ms": max(p["median_ms"] for p in pages.values()),
            "first_page_plan": plan, "first_page_plan_without_index": _plan(path),
        }
        for name, took in pages.items():
            result[f"{name} (ms)"] = f'best {took["best_ms"]}, median {took["median_ms"]}'
        for name, took in unindexed.items():
            result[f"without index: {name} (ms)"] = (f'best {took["best_ms"]}, '
                                                     f'median {took["median_ms"]}')
        return result
