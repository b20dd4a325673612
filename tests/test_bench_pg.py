"""``python -m tools.bench --backend postgres --quick`` runs and prints its figures as JSON:
the engine's rates beside the raw floor of the same rows, and the ratios (issue 15, item 8).

DBOS is left out (no ``EVENTWF_BENCH_DBOS_PYTHON``: it says so); the multi-engine figures
are numbers once several engines can open one database, and until then say why not.
Skips, with the fixture's reason, when no PostgreSQL server can be had.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _either_a_rate_or_why_not(record: dict[str, Any], rate: str) -> None:
    if "skipped" in record:
        assert "already open for writing" in record["skipped"]
    else:
        assert record[rate] > 0


def test_quick_postgres_run_prints_rates_floors_and_ratios(fresh_postgres_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EVENTWF_BENCH_DBOS_PYTHON"}
    done = subprocess.run(
        [sys.executable, "-m", "tools.bench", "--backend", "postgres", "--quick", "--json",
         "--url", fresh_postgres_url], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    dbos, sequential, concurrent, engines, takeover = map(json.loads, done.stdout.splitlines())
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
    for count in (2, 3):
        _either_a_rate_or_why_not(engines[f"engines_{count}"], "steps_per_s")
    _either_a_rate_or_why_not(takeover, "takeover_seconds")
    if "skipped" in takeover:  # one engine per database: a restart after the SIGKILL instead
        restart = takeover["restart_after_sigkill"]
        assert restart["workflows"] == 3 * 2 and restart["seconds"] > 0
    password = urlsplit(fresh_postgres_url).password
    assert not password or password not in done.stdout + done.stderr
