"""The same step workloads on DBOS Transact with its SQLite system database (a peer).

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


def _run_in_dbos(directory: str, workflows: int) -> dict[str, Any]:
    from dbos import DBOS  # type: ignore[import-not-found]

    DBOS(config={"name": "bench",
                 "system_database_url": f"sqlite:///{directory}/dbos.sqlite"})

    @DBOS.step()  # type: ignore[untyped-decorator]
    def one(i: int) -> int:
        return i

    @DBOS.workflow()  # type: ignore[untyped-decorator]
    def steps(n: int) -> int:
        return sum(one(i) for i in range(n))

    DBOS.launch()
    start = time.perf_counter()
    steps(1000)
    sequential = 1000 / (time.perf_counter() - start)
    start = time.perf_counter()
    handles = [DBOS.start_workflow(steps, 10) for _ in range(workflows)]
    for handle in handles:
        handle.get_result()
    concurrent = workflows * 10 / (time.perf_counter() - start)
    DBOS.destroy()
    return {"sequential_steps_per_s": round(sequential),
            "concurrent_steps_per_s": round(concurrent), "workflows": workflows}


def bench_dbos(workflows: int) -> dict[str, Any]:
    """DBOS's rates on this machine, or the reason they could not be measured."""
    python = os.environ.get("EVENTWF_BENCH_DBOS_PYTHON")
    result: dict[str, Any] = {"benchmark": "peer: DBOS Transact on SQLite, same workloads"}
    if not python:
        return {**result, "skipped": "set EVENTWF_BENCH_DBOS_PYTHON to a python with dbos"}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([python, str(Path(__file__)), tmp, str(workflows)],
                             capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        return {**result, "skipped": f"dbos run failed: {out.stderr.strip()[-300:]}"}
    return {**result, **json.loads(out.stdout.strip().splitlines()[-1])}


if __name__ == "__main__":
    print(json.dumps(_run_in_dbos(sys.argv[1], int(sys.argv[2]))))
