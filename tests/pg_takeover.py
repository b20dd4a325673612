"""Takeover time after a SIGKILL on PostgreSQL (specs/postgres.md, "Several engines").

Usage: python -m tests.pg_takeover [LEASE_TTL ...]   (default: 1.5 15)
Two engine processes (tests/pg_multi_worker.py) on a throwaway cluster with PostgreSQL's
durable settings; the second one starts three workflows of 0.2 s steps and is SIGKILLed
a second later. Prints, per lease length, the time from the kill to the first step body
of its workflows on the other engine (three runs; one for leases over 10 s).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from tests.pg_cluster import PgCluster, find_bindir

ROOT = Path(__file__).resolve().parents[1]


def _drain(stream: IO[str] | None, into: list[str]) -> None:
    assert stream is not None
    for line in stream:
        into.append(line.rstrip("\n"))


def _engine(url: str, ledger: Path, ttl: float, workflows: int) -> tuple[subprocess.Popen[str],
                                                                          list[str]]:
    lines: list[str] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pg_multi_worker", url, str(ledger), str(ttl),
         str(workflows), "40"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True)
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
    while "READY" not in lines:
        time.sleep(0.02)
    return proc, lines


def takeover(url: str, ledger: Path, ttl: float) -> float:
    """Seconds from the SIGKILL to the first step of the victim's workflows elsewhere."""
    survivor, _ = _engine(url, ledger, ttl, 0)  # takes every shard, then gives half up
    victim, lines = _engine(url, ledger, ttl, 3)
    try:
        while sum(line.startswith("STARTED") for line in lines) < 3:
            time.sleep(0.02)
        time.sleep(1.0)
        victim.kill()
        killed = time.time()
        victim.wait()
        last = {}
        for row in ledger.read_text().splitlines():
            pid, wid, _, _ = row.split()
            last[wid] = int(pid)
        mine = {wid for wid, pid in last.items() if pid == victim.pid}
        assert mine, "no workflow was running on the killed engine"
        while True:
            later = [float(started) for pid, wid, _, started in
                     (row.split() for row in ledger.read_text().splitlines())
                     if wid in mine and int(pid) != victim.pid and float(started) > killed]
            if later:
                return min(later) - killed
            time.sleep(0.01)
    finally:
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def main(ttls: list[float], tmp: Path) -> None:
    bindir = find_bindir()
    assert bindir is not None, "no PostgreSQL binaries (apt-get install postgresql)"
    cluster = PgCluster(bindir, fast=False)
    try:
        for ttl in ttls:
            times = []
            for run in range(3 if ttl <= 10 else 1):
                url = cluster.new_database()
                times.append(takeover(url, tmp / f"ledger-{ttl}-{run}", ttl))
                cluster.drop_database(url)
            shown = ", ".join(f"{t:.2f}" for t in times)
            print(f"lease_ttl {ttl:g} s: takeover {shown} s "
                  f"(median {statistics.median(times):.2f})", flush=True)
    finally:
        cluster.close()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="eventwf-takeover-") as where:
        main([float(a) for a in sys.argv[1:]] or [1.5, 15.0], Path(where))
