"""A real process is SIGKILLed mid-flight, again and again; reopening finishes every
workflow and no step whose outcome was logged before a kill ever runs again (R1, R2)."""

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


def _start(db: Path, ledger: Path, count: int, steps: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.crash_worker", str(db), str(ledger), str(count), str(steps)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_mid_flight_then_reopen_finishes_without_rerunning_logged_steps(
        tmp_path: Path) -> None:
    db, ledger = tmp_path / "crash.db", tmp_path / "ledger.txt"
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
    with sqlite3.connect(db) as conn:
        for position, stream, type_name, data in conn.execute(
                "SELECT position, stream, type, data FROM events ORDER BY position"):
            event = decode_event(type_name, data, position=position)
            if isinstance(event, StepSucceeded) and event.kind == "do":
                key = (stream[3:], str(event.name))
                assert key not in logged, f"step {key} recorded twice"
                logged[key] = position
        outputs = conn.execute("SELECT status, count(*) FROM workflows GROUP BY status").fetchall()
    assert outputs == [("complete", count)]
    assert len(logged) == count * steps
    for pid, wid, name in executions:
        assert logged[wid, name] > opened[pid], (
            f"{wid}/{name} ran in process {pid} although it was logged at position "
            f"{logged[wid, name]} before that process opened the log at {opened[pid]}")
    reruns = len(executions) - len(logged)
    print(f"kills={kills} executions={len(executions)} steps={len(logged)} reruns={reruns}")
