"""A real process is SIGKILLed mid-flight, again and again; reopening finishes every
workflow and no step whose outcome was logged before a kill ever runs again (R1, R2).
On both backends (issue 15 item 5): on PostgreSQL the reopened engine takes the killed
one's shards over once their leases (1 s here) expire, and claims what it resumes."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from eventwf.model.codec import decode_event
from eventwf.model.events import StepSucceeded

ROOT = Path(__file__).resolve().parent.parent


def _start(db: str, ledger: Path, count: int, steps: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", db, str(ledger), str(count), str(steps),
         "1.0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _log(db: str) -> tuple[list[tuple[int, str, str, bytes]], list[tuple[str, int]]]:
    """Every event row (position order) and the workflows' statuses with their counts."""
    if db.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(db, autocommit=True) as conn:
            rows = [(int(p), str(s), str(t), bytes(d)) for p, s, t, d in conn.execute(
                "SELECT position, stream, type, data FROM eventwf.events ORDER BY position")]
            statuses = [(str(s), int(n)) for s, n in conn.execute(
                "SELECT status, count(*) FROM eventwf.workflows GROUP BY status")]
        return rows, statuses
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT position, stream, type, data FROM events ORDER BY position"
                            ).fetchall()
        statuses = conn.execute("SELECT status, count(*) FROM workflows GROUP BY status"
                                ).fetchall()
    return rows, statuses


def test_sigkill_mid_flight_then_reopen_finishes_without_rerunning_logged_steps(
        any_db: str, tmp_path: Path) -> None:
    db, ledger = any_db, tmp_path / "ledger.txt"
    rng = random.Random(int(os.environ.get("EVENTWF_SEED", "7")))
    count, steps = 30, 9
    kills = 0
    for _ in range(6):
        proc = _start(db, ledger, count, steps)
        target = _lines(ledger) + rng.randint(10, 60)  # kill after some real progress
        deadline = time.monotonic() + 30
        while _lines(ledger) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    final = _start(db, ledger, count, steps)
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err.decode()
    assert b"DONE" in out
    assert kills >= 3

    opened: dict[str, int] = {}
    executions: list[tuple[str, str, str]] = []
    for line in ledger.read_text().splitlines():
        pid, what, rest = line.split(" ", 2)
        if what == "OPEN":
            opened[pid] = int(rest)
        else:
            executions.append((pid, what, rest))
    logged: dict[tuple[str, str], int] = {}
    rows, outputs = _log(db)
    for position, stream, type_name, data in rows:
        event = decode_event(type_name, data, position=position)
        if isinstance(event, StepSucceeded) and event.kind == "do":
            key = (stream[3:], str(event.name))
            assert key not in logged, f"step {key} recorded twice"
            logged[key] = position
    assert outputs == [("complete", count)]
    assert len(logged) == count * steps
    for pid, wid, name in executions:
        assert logged[wid, name] > opened[pid], (
            f"{wid}/{name} ran in process {pid} although it was logged at position "
            f"{logged[wid, name]} before that process opened the log at {opened[pid]}")
    reruns = len(executions) - len(logged)
    print(f"kills={kills} executions={len(executions)} steps={len(logged)} reruns={reruns}")
