"""A fork server for worker processes: imports everything once, then forks on request.

Starting a fresh interpreter and importing eventwf and trio takes about 0.5 s here; a fork
of this pre-imported process takes milliseconds, so kill loops spend their time running
the workload. The zygote itself never opens a database or starts trio, so each child is a
clean process (it only inherits imported modules). Children are SIGKILLed by pid by the
driver; the zygote reaps them and reports exit statuses.

Protocol (JSON lines on stdin/stdout): ``{"spawn": CONFIG_JSON}`` -> ``{"pid": n}``;
``{"poll": pid}`` -> ``{"pid": n, "status": code-or-null}`` (negative: killed by that
signal); EOF on stdin ends the zygote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from . import worker
from .workload import Config

__all__ = ["Zygote"]

ROOT = Path(__file__).resolve().parents[2]


def _serve() -> None:
    statuses: dict[int, int] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if "spawn" in request:
            cfg = Config.load(request["spawn"])
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    log = os.open(os.path.join(cfg.dir, f"run-{os.getpid()}.log"),
                                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    os.close(0)
                    code = worker.child(cfg)
                finally:
                    os._exit(code)
            reply: dict[str, int | None] = {"pid": pid}
        else:
            pid = int(request["poll"])
            if pid not in statuses:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    statuses[pid] = os.waitstatus_to_exitcode(status)
            reply = {"pid": pid, "status": statuses.get(pid)}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


class Zygote:
    """The driver's handle on a zygote process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.campaign.zygote"], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, bufsize=1)

    def _ask(self, request: dict[str, object]) -> dict[str, object]:
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the zygote died (exit status {self.proc.poll()})")
        reply: dict[str, object] = json.loads(line)
        return reply

    def spawn(self, cfg: Config) -> int:
        return int(str(self._ask({"spawn": cfg.dump()})["pid"]))

    def poll(self, pid: int) -> int | None:
        status = self._ask({"poll": pid})["status"]
        return None if status is None else int(str(status))

    def wait(self, pid: int, timeout: float) -> int | None:
        """The exit status, or None if still running after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.poll(pid)
            if status is not None or time.monotonic() > deadline:
                return status
            time.sleep(0.005)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    _serve()
