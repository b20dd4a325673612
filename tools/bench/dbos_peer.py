"""The same step workloads on DBOS Transact with its SQLite system database (a peer), or
with a PostgreSQL system database (its home backend: ``python -m tools.bench --backend
postgres`` passes the URL of a database of the same server).

Runs in an interpreter that has ``dbos`` installed (never a dependency of eventwf):

    EVENTWF_BENCH_DBOS_PYTHON=/path/to/venv/bin/python python -m tools.bench --only dbos

This file is executed by that interpreter as a script and prints one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["bench_dbos"]

_URL_VARIABLE = "EVENTWF_BENCH_DBOS_URL"  # the PostgreSQL system database, for the child


def _run_in_dbos(directory: str, workflows: int, sequential_steps: int = 1000,
                 url: str | None = None) -> dict[str, Any]:
    from dbos import DBOS  # type: ignore[import-not-found]

    DBOS(config={"name": "bench",
                 "system_database_url": url or f"sqlite:///{directory}/dbos.sqlite"})

    @DBOS.step()  # type: ignore[untyped-decorator]
    def one(i: int) -> int:
        return i

    @DBOS.workflow()  # type: ignore[untyped-decorator]
    def steps(n: int) -> int:
        return sum(one(i) for i in range(n))

    DBOS.launch()
    start = time.perf_counter()
    steps(sequential_steps)
    sequential = sequential_steps / (time.perf_counter() - start)
    start = time.perf_counter()
    handles = [DBOS.start_workflow(steps, 10) for _ in range(workflows)]
    for handle in handles:
        handle.get_result()
    concurrent = workflows * 10 / (time.perf_counter() - start)
    DBOS.destroy()
    return {"sequential_steps_per_s": round(sequential),
            "concurrent_steps_per_s": round(concurrent), "workflows": workflows,
            "sequential_steps": sequential_steps}


def bench_dbos(workflows: int, sequential_steps: int = 1000, url: str | None = None
               ) -> dict[str, Any]:
    """DBOS's rates on this machine (on SQLite, or on the PostgreSQL database ``url``), or
    the reason they could not be measured."""
    python = os.environ.get("EVENTWF_BENCH_DBOS_PYTHON")
    backend = "SQLite" if url is None else "PostgreSQL"
    result: dict[str, Any] = {"benchmark": f"peer: DBOS Transact on {backend}, same workloads"}
    if not python:
        return {**result, "skipped": "set EVENTWF_BENCH_DBOS_PYTHON to a python with dbos"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, _URL_VARIABLE: url or ""}  # not on argv: it may hold a password
        out = subprocess.run([python, str(Path(__file__)), tmp, str(workflows),
                              str(sequential_steps)], env=env,
                             capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {**result, "skipped": f"dbos run failed: {out.stderr.strip()[-300:]}"}
    return {**result, **json.loads(out.stdout.strip().splitlines()[-1])}


if __name__ == "__main__":
    print(json.dumps(_run_in_dbos(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                  os.environ.get(_URL_VARIABLE) or None)))
