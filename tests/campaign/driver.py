"""Start, kill and restart worker processes on one campaign's log; then check it.

A :class:`Campaign` owns a directory (plan, log, ledger, service, history, one log file
per run) and a seed. :meth:`Campaign.kill_loop` runs workers and SIGKILLs each one after a
random delay (or lets an armed fault point kill it), :meth:`Campaign.finish` runs one
last worker without faults that must finish everything, and :meth:`Campaign.check` runs
the oracles. Seeds come from ``EVENTWF_SEED`` when set, so a failure replays with
``EVENTWF_SEED=<seed> pytest -k <test>``; every summary line prints the seed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checker import Report, check
from .ledger import Ledger
from .programs import make_plan
from .service import Service
from .workload import Config
from .zygote import Zygote

__all__ = ["Campaign", "RunRecord", "seed_for", "summary"]


def summary(line: str) -> None:
    """Print a scenario's one-line summary (``pytest -s`` shows it), and append it to the
    file named by ``EVENTWF_CAMPAIGN_LOG`` when that is set (to collect tables)."""
    print(line, flush=True)
    target = os.environ.get("EVENTWF_CAMPAIGN_LOG")
    if target:
        with open(target, "a") as handle:
            handle.write(line + "\n")


def seed_for(name: str, default: int) -> int:
    """The campaign's seed: ``EVENTWF_SEED`` (mixed with the name) or the default."""
    env = os.environ.get("EVENTWF_SEED")
    if env is None:
        return default
    return int(env) * 1000 + sum(name.encode()) % 1000


@dataclass
class RunRecord:
    run: str
    status: int | None  # exit status; negative: killed by that signal; None: still running
    killed: bool  # we (or an armed kill fault) SIGKILLed it
    fault: str = ""
    seconds: float = 0.0


@dataclass
class Campaign:
    root: Path
    name: str
    seed: int
    zygote: Zygote
    workflows: int = 100
    plan_options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = self.root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = Config(str(self.dir), **self.config)
        if not os.path.exists(self.cfg.plan):
            make_plan(self.seed, self.workflows, **self.plan_options).dump(self.cfg.plan)
        # Every file the workers share is made here, before any worker starts: workers
        # started at once must not race to create one (or to switch it to WAL).
        Ledger(self.cfg.ledger).close()
        Service(self.cfg.service).close()
        self.rng = random.Random(self.seed)

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.runs)

    def killed_runs(self) -> set[str]:
        return {r.run for r in self.runs if r.killed or (r.status or 0) < 0}

    def _record(self, record: RunRecord) -> RunRecord:
        self.runs.append(record)
        with open(self.dir / "runs.jsonl", "a") as handle:
            handle.write(json.dumps(vars(record)) + "\n")
        return record

    def start(self, **overrides: Any) -> int:
        cfg = Config(**{**vars(self.cfg), **overrides})
        return self.zygote.spawn(cfg)

    def run_once(self, *, kill_after: float | None = None, fault: str = "",
                 timeout: float = 120.0, **overrides: Any) -> RunRecord:
        """One worker; SIGKILLed after ``kill_after`` seconds unless it ended before."""
        began = time.monotonic()
        pid = self.start(fault=fault, **overrides)
        status = self.zygote.wait(pid, kill_after if kill_after is not None else timeout)
        killed = False
        if status is None:
            os.kill(pid, signal.SIGKILL)
            status = self.zygote.wait(pid, 30)
            killed = kill_after is not None
            if not killed:
                raise AssertionError(f"{self.name}: run {pid} did not end within {timeout} s; "
                                     f"seed {self.seed}; {self.log_tail(pid)}")
        if status == -signal.SIGKILL:
            killed = True
        return self._record(RunRecord(str(pid), status, killed, fault,
                                      round(time.monotonic() - began, 3)))

    def kill_loop(self, kills: int, *, low: float = 0.02, high: float = 0.7,
                  faults: list[str] | None = None, **overrides: Any) -> int:
        """SIGKILL ``kills`` workers, each after U(low, high) seconds; returns kills done.
        Stops early when a worker finishes the whole plan."""
        done = 0
        while done < kills:
            fault = faults[done % len(faults)] if faults else ""
            record = self.run_once(kill_after=self.rng.uniform(low, high), fault=fault,
                                   **overrides)
            if record.killed:
                done += 1
            elif record.status == 0:
                break
            elif record.status != 2:  # 2: stopped early (start_limit), not done yet
                raise AssertionError(f"{self.name}: run {record.run} exited with "
                                     f"{record.status}; seed {self.seed}; "
                                     f"{self.log_tail(int(record.run))}")
        return done

    def finish(self, timeout: float = 120.0, **overrides: Any) -> RunRecord:
        """A last worker, without faults, must finish every workflow and exit 0."""
        record = self.run_once(timeout=timeout, **overrides)
        if record.status != 0:
            raise AssertionError(f"{self.name}: the final run exited with {record.status}; "
                                 f"seed {self.seed}; {self.log_tail(int(record.run))}")
        return record

    def log_tail(self, pid: int, lines: int = 30) -> str:
        path = self.dir / f"run-{pid}.log"
        if not path.exists():
            return "(no output)"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return "output:\n" + "\n".join(text)

    def check(self, **options: Any) -> Report:
        options.setdefault("killed", self.killed_runs())
        return check(self.cfg, **options)

    def assert_clean(self, report: Report, label: str) -> None:
        if report.violations:
            shown = "\n  ".join(report.violations[:25])
            raise AssertionError(f"{label} seed={self.seed} dir={self.dir}: "
                                 f"{len(report.violations)} violation(s):\n  {shown}")
