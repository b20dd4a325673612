"""Benchmarks: eventwf beside the raw SQLite floor measured in the same run.

    python -m tools.bench [--quick] [--json] [--only NAME ...] [--out FILE] [--profile]
    python -m tools.bench --backend postgres [--url URL] [--quick] [--json] [--only NAME ...]

Every benchmark prints its figures and, where one exists, its floor from the same run
(raw SQLite inserts or a raw scan-and-decode of the same bytes). This machine is shared
and noisy: read the ratios, not the absolute rates. ``--quick`` runs small sizes (CI
smoke run; nothing is asserted). ``--out`` writes the results and the machine as JSON.
``--profile`` prints where each benchmark's time went (pyinstrument, if installed: it is
a development tool, not a dependency) to standard error.

``--backend postgres`` runs the PostgreSQL benchmarks instead (``pgplans.py``):
sequential and concurrent steps beside the raw INSERT/COPY floor of the same rows, DBOS
Transact on the same server, throughput with 1, 2 and 3 engines and the takeover time
after a SIGKILL, and the projection upsert at several fill factors (``pgupsert.py``); on
``--url``, else on a throwaway cluster with durable settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tools.bench.common import machine
from tools.bench.console import bench_console
from tools.bench.dbos_peer import bench_dbos
from tools.bench.fanout import bench_fanout
from tools.bench.idle import bench_idle_in_subprocess
from tools.bench.rebuild import bench_rebuild
from tools.bench.recovery import bench_recovery
from tools.bench.steps import bench

# name -> (full run, quick run)
PLANS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]]]] = {
    "sequential": (lambda: bench("sequential: 1 workflow x 1,000 steps", 1, 1000),
                   lambda: bench("sequential: 1 workflow x 100 steps", 1, 100)),
    "concurrent": (lambda: bench("concurrent: 1,000 workflows x 10 steps", 1000, 10),
                   lambda: bench("concurrent: 100 workflows x 10 steps", 100, 10)),
    "rebuild": (lambda: bench_rebuild(1_000_000), lambda: bench_rebuild(20_000)),
    "recovery": (lambda: bench_recovery(10_000), lambda: bench_recovery(300)),
    "idle": (lambda: bench_idle_in_subprocess(100_000), lambda: bench_idle_in_subprocess(2_000,
                                                                                       50)),
    "fanout": (lambda: bench_fanout(500, 20.0, 10.0), lambda: bench_fanout(20, 20.0, 2.0)),
    "fanout-client": (lambda: bench_fanout(500, 20.0, 10.0, kind="eventwf"),
                      lambda: bench_fanout(20, 20.0, 2.0, kind="eventwf")),
    "dbos": (lambda: bench_dbos(1000), lambda: bench_dbos(50)),
    "console": (lambda: bench_console(100_000), lambda: bench_console(5_000)),
}
# the PostgreSQL benchmarks (pgplans.py: imported only for them, as it needs psycopg)
PG_PLANS = ("sequential", "concurrent", "dbos", "engines", "takeover", "upsert")


def _run(plan: Callable[[], dict[str, Any]], profile: bool) -> dict[str, Any]:
    if not profile:
        return plan()
    from pyinstrument import Profiler  # optional development tool (checked in main)

    profiler = Profiler(interval=0.0005)
    profiler.start()
    try:
        return plan()
    finally:
        profiler.stop()
        print(profiler.output_text(color=False, unicode=False), file=sys.stderr)


def _show(result: dict[str, Any]) -> None:
    print(result["benchmark"])
    for key, value in result.items():
        if key != "benchmark":
            shown = f"{value:,}" if isinstance(value, int | float) else value
            print(f"    {key:28} {shown}")


def _parser() -> argparse.ArgumentParser:
    """The command line of ``python -m tools.bench`` (the module's docstring is its help)."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI smoke runs")
    parser.add_argument("--json", action="store_true", help="print JSON lines only")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help=f"run only these (sqlite: {', '.join(PLANS)}; postgres: "
                             f"{', '.join(PG_PLANS)})")
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                        help="the log's backend (default: sqlite)")
    parser.add_argument("--url", help="postgres: the database to write into (default: a "
                                      "throwaway cluster of the installed server binaries)")
    parser.add_argument("--out", help="also write the results and the machine to this file")
    parser.add_argument("--profile", action="store_true",
                        help="print each benchmark's profile (needs pyinstrument) to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.profile and importlib.util.find_spec("pyinstrument") is None:
        parser.error("--profile needs pyinstrument: pip install pyinstrument")
    plans = PG_PLANS if args.backend == "postgres" else tuple(PLANS)
    wrong = [name for name in args.only or () if name not in plans]
    if wrong:
        parser.error(f"--backend {args.backend} has no benchmark {wrong[0]!r}: choose from "
                     f"{', '.join(plans)}")
    if args.url is not None and args.backend != "postgres":
        parser.error("--url needs --backend postgres")
    if args.profile and args.backend == "postgres":
        parser.error("--profile is for the SQLite benchmarks (the PostgreSQL ones run "
                     "engines in other processes)")
    results: list[dict[str, Any]] = []
    emit = (lambda r: print(json.dumps(r), flush=True)) if args.json else _show
    if args.backend == "postgres":
        from tools.bench.pgplans import run_postgres
        from tools.pgserver import NoServer

        try:
            results = run_postgres(args.url, args.quick, args.only, emit)
        except NoServer as exc:
            parser.error(str(exc))
    else:
        for name in args.only or list(PLANS):
            started = time.perf_counter()
            result = _run(PLANS[name][1 if args.quick else 0], args.profile)
            result["bench_seconds"] = round(time.perf_counter() - started, 1)
            results.append(result)
            emit(result)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"machine": machine(), "backend": args.backend, "quick": args.quick,
             "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
