"""``python -m tools.bench --backend postgres``: the PostgreSQL benchmarks of one run.

Without ``--url`` a throwaway cluster is started from the installed server binaries
(``tools/pgserver.py``: PostgreSQL's durable defaults, not the tests' fast settings) and
each benchmark gets a fresh database of it; the cluster is deleted after. With ``--url``
every benchmark writes into that database (the floor's table in a schema of its own,
dropped after; DBOS in its own ``dbos`` schema), except ``upsert``, which drops and makes
the ``eventwf`` schema at each fill factor, so it runs on a throwaway cluster only. DBOS
runs first so that the step benchmarks can give their ratio to it: the same workloads, the
same server, the same run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tools.bench.dbos_peer import bench_dbos
from tools.bench.pgscale import bench_engines, bench_takeover
from tools.bench.pgsteps import bench_pg_steps
from tools.bench.pgupsert import bench_upsert
from tools.pgserver import open_server

__all__ = ["run_postgres"]

# name -> (full sizes, quick sizes)
_SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "dbos": ({"workflows": 1000, "steps": 1000}, {"workflows": 50, "steps": 50}),
    "sequential": ({"workflows": 1, "steps": 1000}, {"workflows": 1, "steps": 50}),
    "concurrent": ({"workflows": 1000, "steps": 10}, {"workflows": 50, "steps": 10}),
    "engines": ({"agents": 30, "workflows": 20, "steps": 10, "ttl": 5.0},
                {"agents": 6, "workflows": 5, "steps": 5, "ttl": 2.0}),
    "takeover": ({"agents": 10, "workflows": 5, "steps": 20, "ttl": 5.0},
                 {"agents": 3, "workflows": 2, "steps": 20, "ttl": 2.0}),
    "upsert": ({"rows": 1000, "rounds": 30}, {"rows": 50, "rounds": 3}),
}


def _steps(name: str, size: dict[str, Any], url: str, dbos: dict[str, Any]) -> dict[str, Any]:
    workflows, steps = size["workflows"], size["steps"]
    key = "sequential_steps_per_s" if workflows == 1 else "concurrent_steps_per_s"
    title = (f"postgres sequential: 1 workflow x {steps:,} steps" if workflows == 1 else
             f"postgres concurrent: {workflows:,} workflows x {steps} steps")
    return bench_pg_steps(url, title, workflows, steps, dbos.get(key))


def run_postgres(url: str | None, quick: bool, only: list[str] | None,
                 emit: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Run the PostgreSQL benchmarks (``only``: these), handing each result to ``emit``;
    ``NoServer`` (tools.pgserver) without ``url`` and without server binaries."""
    names = [name for name in _SIZES if only is None or name in only]
    results: list[dict[str, Any]] = []
    dbos: dict[str, Any] = {}
    with open_server(url) as server:
        for name in names:
            size = _SIZES[name][1 if quick else 0]
            started = time.perf_counter()
            database = server.new_database()
            if name == "dbos":
                result = bench_dbos(size["workflows"], size["steps"], url=database)
                dbos = result
            elif name in ("sequential", "concurrent"):
                result = _steps(name, size, database, dbos)
            elif name == "upsert" and url is not None:  # it drops its schema each round
                result = {"benchmark": "postgres projection upsert", "skipped": "it needs "
                          "a database of its own: run it without --url"}
            elif name == "upsert":
                result = bench_upsert(database, size["rows"], size["rounds"])
            elif name == "engines":
                result = bench_engines(database, size["agents"], size["workflows"],
                                       size["steps"], size["ttl"])
            else:
                result = bench_takeover(database, size["agents"], size["workflows"],
                                        size["steps"], size["ttl"])
            result["server"] = server.where
            result["bench_seconds"] = round(time.perf_counter() - started, 1)
            results.append(result)
            emit(result)
    return results
