"""Several engines on one PostgreSQL database: throughput with 1, 2 and 3, and takeover time.

Each engine is a process of its own (``pgworker.py``) on the same database. Throughput:
the workflows are spread over agents and the agents over the engines (agent ``i`` to
engine ``i mod n``); every engine opens and says it is ready, then all are told to go at
once, and the rate is every step over the time from "go" to the last engine's "done".

Takeover: engine A opens, then engine B; A starts slow workflows and, once every start
is acknowledged, is SIGKILLed. The takeover time runs from the SIGKILL to the moment the
database's ``workflows`` projection shows every one of them complete (polled every 20 ms):
it must be at most ``lease_ttl`` + 2 s (the target, reported, not asserted).

While the database admits only one engine, a second engine's ``open_engine`` raises
``LogLockedError``: the run then reports ``{"skipped": <its message>}``, never a number.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import psycopg

from tools.bench.pgworker import URL_VARIABLE

__all__ = ["bench_engines", "bench_takeover"]

_ROOT = Path(__file__).resolve().parents[2]
_POLL = 0.02


class _Worker:
    """One engine process and the JSON lines it prints."""

    def __init__(self, url: str, role: str, agents: list[int], workflows: int, steps: int,
                 ttl: float) -> None:
        # a file, not a pipe: a full pipe would block the engine; closed in close()
        self._errors = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.bench.pgworker", role, ",".join(map(str, agents)),
             str(workflows), str(steps), str(ttl)],
            cwd=_ROOT, env={**os.environ, URL_VARIABLE: url}, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._errors)

    @property
    def _out(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def record(self, timeout: float = 600.0) -> dict[str, Any]:
        """The next JSON line it prints; ``{"failed": ...}`` if it exits first or prints
        nothing for ``timeout`` seconds (then it is killed)."""
        ready, _, _ = select.select([self._out], [], [], timeout)
        if not ready:
            self.proc.kill()
            return {"failed": f"engine process printed nothing for {timeout:g} s (killed)"}
        line = self._out.readline()
        if not line:
            self.proc.wait()
            self._errors.seek(0)
            return {"failed": f"engine process exit {self.proc.returncode}: "
                              f"{self._errors.read().strip()[-6000:]}"}
        record: dict[str, Any] = json.loads(line)
        return record

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Let it go (standard input closed), and end it if it does not."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._errors.close()


def _refusal(record: dict[str, Any]) -> str | None:
    """Why an engine could not open, from its first record (None: it is ready)."""
    if record.get("ready"):
        return None
    return str(record.get("locked") or record.get("failed") or record)


def _throughput(url: str, engines: int, agents: int, workflows: int, steps: int,
                ttl: float) -> dict[str, Any]:
    workers = [_Worker(url, "run", list(range(k, agents, engines)), workflows, steps, ttl)
               for k in range(engines)]
    try:
        for worker in workers:
            refusal = _refusal(worker.record())
            if refusal is not None:
                return {"skipped": refusal}
        start = time.perf_counter()
        for worker in workers:
            worker.tell("go")
        done = [worker.record() for worker in workers]
        elapsed = time.perf_counter() - start
    finally:
        for worker in workers:
            worker.close()
    failed = [record["failed"] for record in done if "failed" in record]
    if failed:
        return {"failed": failed[0]}
    total = sum(int(record["steps"]) for record in done)
    return {"steps": total, "seconds": round(elapsed, 2), "steps_per_s": round(total / elapsed),
            "per_engine_steps_per_s": [round(r["steps"] / r["seconds"]) for r in done]}


def bench_engines(url: str, agents: int, workflows: int, steps: int, ttl: float,
                  counts: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    """Steps per second with each number of engines in ``counts`` on the database ``url``."""
    result: dict[str, Any] = {
        "benchmark": f"postgres: {agents} agents x {workflows} workflows x {steps} steps "
                     "over 1, 2, 3 engines", "lease_ttl": ttl}
    for engines in counts:
        result[f"engines_{engines}"] = _throughput(url, engines, agents, workflows, steps, ttl)
    one = result.get("engines_1", {}).get("steps_per_s")
    for engines in counts[1:]:
        rate = result[f"engines_{engines}"].get("steps_per_s")
        if one and rate:
            result[f"engines_{engines}"]["times_one_engine"] = round(rate / one, 2)
    return result


def _complete(url: str, ids: list[str]) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM eventwf.workflows WHERE workflow_id = ANY(%s) "
                           "AND status = 'complete'", (ids,)).fetchone()
    return 0 if row is None else int(row[0])


def _kill_and_wait(url: str, victim: _Worker, limit: float, restart: float | None
                   ) -> dict[str, Any]:
    """Start the victim's workflows, SIGKILL it once they are acknowledged, and time
    until all are complete (``restart``: a new engine, with that ``lease_ttl``, is
    started after the SIGKILL to finish them, the only way while one engine per database).
    """
    victim.tell("go")
    started = victim.record()
    if "started" not in started:
        return {"failed": str(started)}
    ids = [str(i) for i in started["started"]]
    victim.proc.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    victim.proc.wait()
    in_flight = len(ids) - _complete(url, ids)
    fresh = None if restart is None else _Worker(url, "serve", [], 0, 0, restart)
    try:
        if fresh is not None:
            refusal = _refusal(fresh.record())
            if refusal is not None:
                return {"failed": f"the new engine could not open: {refusal}"}
            fresh.tell("go")
        while _complete(url, ids) < len(ids):
            if time.perf_counter() - killed > limit:
                return {"failed": f"not all complete {limit:g} s after the SIGKILL"}
            time.sleep(_POLL)
        seconds = time.perf_counter() - killed
    finally:
        if fresh is not None:
            fresh.close()
    return {"workflows": len(ids), "in_flight_at_kill": in_flight, "seconds": round(seconds, 2)}


def bench_takeover(url: str, agents: int, workflows: int, steps: int, ttl: float,
                   limit: float = 120.0) -> dict[str, Any]:
    """Seconds from SIGKILLing an engine to its workflows completing on another.

    While a second engine cannot open the database, the result says why (``skipped``)
    and gives instead, under ``restart_after_sigkill``, the time from the SIGKILL to the
    workflows completing on a new engine started after it (its process start included):
    what one engine per database offers today, not a takeover."""
    result: dict[str, Any] = {
        "benchmark": f"postgres: takeover after SIGKILL ({agents} agents x {workflows} "
                     f"workflows x {steps} slow steps)", "lease_ttl": ttl,
        "target_seconds": ttl + 2}
    victim = _Worker(url, "start", list(range(agents)), workflows, steps, ttl)
    try:
        refusal = _refusal(victim.record())
        if refusal is not None:
            return {**result, "failed": f"the first engine could not open: {refusal}"}
        survivor = _Worker(url, "serve", [], 0, 0, ttl)
        try:
            refusal = _refusal(survivor.record())
            if refusal is None:
                survivor.tell("go")
                run = _kill_and_wait(url, victim, limit, None)
        finally:
            survivor.close()
        if refusal is not None:
            return {**result, "skipped": refusal,
                    "restart_after_sigkill": _kill_and_wait(url, victim, limit, ttl)}
    finally:
        victim.close()
    if "failed" in run:
        return {**result, **run}
    return {**result, "workflows": run["workflows"], "in_flight_at_kill": run["in_flight_at_kill"],
            "takeover_seconds": run["seconds"], "within_target": run["seconds"] <= ttl + 2}
