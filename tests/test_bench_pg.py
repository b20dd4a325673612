"""``python -m tools.bench --backend postgres --quick`` runs and prints its figures as JSON:
the engine's rates beside the raw floor of the same rows, and the ratios (issue 15, item 8).

DBOS is left out (no ``EVENTWF_BENCH_DBOS_PYTHON``: it says so); the 2- and 3-engine
figures and the takeover time are numbers (any engine serves any agent, PG15).
Skips, with the fixture's reason, when no PostgreSQL server can be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent




def test_quick_postgres_run_prints_rates_floors_and_ratios(fresh_postgres_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTWF_BENCH_DBOS_PYTHON"}
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--backend", "postgres", "--quick", "--json",
         "--url", fresh_postgres_url], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dbos, sequential, concurrent, engines, takeover, upsert = map(
        json.loads, done.stdout.splitlines())
    assert "without --url" in upsert["skipped"]
    assert "EVENTWF_BENCH_DBOS_PYTHON" in dbos["skipped"]
    assert sequential["steps_per_s"] > 0 and sequential["raw_insert_one_per_commit_per_s"] > 0
    ratio = sequential["steps_per_s"] / sequential["raw_insert_one_per_commit_per_s"]
    assert sequential["ratio_to_raw"] > 0  # from unrounded rates: near the shown ones
    assert sequential["ratio_to_raw"] == pytest.approx(ratio, rel=0.01, abs=0.002)
    assert concurrent["raw_copy_batch256_per_s"] > 0
    assert concurrent["raw_copy_same_batches_per_s"] > 0
    assert concurrent["rows_per_transaction"] > 1  # the engine batched its commits
    assert concurrent["ratio_to_raw_batch256"] > 0 and concurrent["ratio_to_raw_same_batches"] > 0
    assert engines["engines_1"]["steps"] == 6 * 5 * 5 and engines["engines_1"]["steps_per_s"] > 0
    for count in (2, 3):  # each engine starts workflows on agents others own (PG15)
        run = engines[f"engines_{count}"]
        assert run["steps"] == 6 * 5 * 5 and run["steps_per_s"] > 0, run
        assert len(run["per_engine_steps_per_s"]) == count
    assert takeover["takeover_seconds"] > 0 and takeover["workflows"] == 3 * 2, takeover
    password = urlsplit(fresh_postgres_url).password
    assert not password or password not in done.stdout + done.stderr


def test_the_upsert_benchmark_times_each_fill_factor(fresh_postgres_url: str) -> None:
    from tools.bench.pgupsert import FILL_FACTORS, bench_upsert

    result = bench_upsert(fresh_postgres_url, 20, 2)
    for fill in FILL_FACTORS:
        run = result[f"fillfactor_{fill}"]
        assert run["median_ms"] > 0 and run["table_bytes_after"] > 0, run
