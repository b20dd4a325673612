"""The campaign's oracles are not vacuous: a clean run passes, and each kind of damage a
campaign is meant to catch (a lost acknowledgement, a re-executed step, a duplicate
outcome, a second effect, a wrong result, a projection that drifted) is reported with a
precise message."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from eventwf.model.codec import decode_event
from tests.campaign.checker import check
from tests.campaign.ledger import Ledger
from tests.campaign.programs import make_plan
from tests.campaign.service import Service
from tests.campaign.workload import Config, session
from tests.wfkit import virtual_wall


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Config:
    directory = tmp_path_factory.mktemp("checker") / "clean"
    directory.mkdir()
    cfg = Config(str(directory), ledger_clock="trio")
    make_plan(4242, 25).dump(cfg.plan)

    async def run() -> None:
        assert await session(cfg, wall_clock=virtual_wall)

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    return cfg


def _copy(clean: Config, target: Path) -> Config:
    shutil.copytree(clean.dir, target)
    return Config(str(target), ledger_clock="trio")


def test_a_clean_run_has_no_violations(clean: Config) -> None:
    report = check(clean)
    assert report.violations == [] and report.known == []
    assert report.acked > 25 and report.executions > 0 and report.effects > 0


def _a_logged_do_step(cfg: Config) -> tuple[int, str, Any]:
    conn = sqlite3.connect(cfg.db)
    try:
        rows = conn.execute("SELECT position, stream, data FROM events WHERE type = "
                            "'step.succeeded' ORDER BY position").fetchall()
    finally:
        conn.close()
    for position, stream, data in rows:
        event = decode_event("step.succeeded", data)
        if event.kind == "do" and str(event.name).startswith("do-"):  # type: ignore[attr-defined]
            return int(position), str(stream), event
    raise AssertionError("no logged do step")


def _lose_an_ack(cfg: Config) -> str:
    with open(cfg.history, "a") as handle:  # the client was told a start succeeded...
        handle.write(json.dumps({"type": "invoke", "op": "start", "key": "w9999",
                                 "token": "phantom", "run": "r"}) + "\n")
        handle.write(json.dumps({"type": "ok", "token": "phantom"}) + "\n")
    return "O1 acknowledged start w9999 (token phantom, run r) is not in the log"


def _rerun_a_logged_step(cfg: Config) -> str:
    position, stream, event = _a_logged_do_step(cfg)
    wid, name = stream[3:], str(event.name)
    ledger = Ledger(cfg.ledger)
    ledger.execution("late", wid, name, f"{wid}/1/{event.seq}/{name}", 1, position + 5)
    ledger.close()
    return f"O4 step {wid}/{name} attempt 1 ran again in run late"


def _run_twice_in_one_run(cfg: Config) -> str:
    ledger = Ledger(cfg.ledger)
    first = ledger.executions()[0]
    ledger.execution(first.run, first.workflow, first.step, first.key, first.attempt, -1)
    ledger.close()
    return "O5 1 attempt(s) ran more than once within one run"


def _second_effect(cfg: Config) -> str:
    service = Service(cfg.service)
    key, (result, amount, _) = next(iter(service.effects().items()))
    service.conn.execute("UPDATE effects SET result = 'another receipt' WHERE key = ?", (key,))
    service.close()
    return "but the service's one effect is 'another receipt'"


def _wrong_model(cfg: Config) -> str:
    with open(cfg.plan) as handle:
        plan = json.load(handle)
    for workflow in plan["workflows"]:
        for command in workflow["program"]:
            if command[0] == "do":
                command[1] += 1
                with open(cfg.plan, "w") as out:
                    json.dump(plan, out)
                return f"O7 workflow {workflow['id']} ended with complete"
    raise AssertionError("no do step")


def _drifted_projection(cfg: Config) -> str:
    conn = sqlite3.connect(cfg.db)
    with conn:
        conn.execute("UPDATE workflows SET mailbox = mailbox + 1 WHERE workflow_id = 'w0000'")
    conn.close()
    return "O9 the workflows table differs from the fold of the log"


def _unfinished(cfg: Config) -> str:
    with open(cfg.plan) as handle:
        plan = json.load(handle)
    plan["workflows"].append({"id": "w9998", "agent": "a0", "program": [["do", 1]],
                              "sends": []})
    with open(cfg.plan, "w") as out:
        json.dump(plan, out)
    return "O12 workflow w9998 did not finish (never started)"


@pytest.mark.parametrize("damage", [_lose_an_ack, _rerun_a_logged_step, _run_twice_in_one_run,
                                    _second_effect, _wrong_model, _drifted_projection,
                                    _unfinished], ids=lambda f: f.__name__.strip("_"))
def test_each_oracle_reports_its_violation(clean: Config, tmp_path: Path,
                                           damage: Callable[[Config], str]) -> None:
    cfg = _copy(clean, tmp_path / "damaged")
    expected = damage(cfg)
    report = check(cfg)
    assert any(expected in violation for violation in report.violations), (
        expected, report.violations)


def _open_shared_files_at(directory: str, start: float) -> str:
    """A racing worker's first moves: open the ledger and the service at ``start``."""
    import time

    time.sleep(max(0.0, start - time.time()))
    try:
        ledger, service = Ledger(f"{directory}/ledger.db"), Service(f"{directory}/service.db")
        ledger.note("racer", "opened")
        service.charge(f"k{os.getpid()}", 1, "racer")
        ledger.close()
        service.close()
        return "ok"
    except Exception as exc:  # reported to the test, which names it
        return repr(exc)


def test_the_driver_prepares_shared_files_so_workers_started_at_once_never_collide(
        tmp_path: Path) -> None:
    # Two SQLite connections switching one new file to WAL at the same instant fail with
    # "database is locked" (no busy wait on that switch): that flaked the lock race test.
    # The driver makes every shared file before any worker starts; workers only open them.
    import concurrent.futures
    import multiprocessing
    import time

    from tests.campaign.driver import Campaign

    failures = []
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(3, mp_context=context) as pool:
        for trial in range(40):
            campaign = Campaign(tmp_path, f"t{trial}", trial, zygote=None,  # type: ignore[arg-type]
                                workflows=1)
            for name in ("ledger.db", "service.db"):
                conn = sqlite3.connect(campaign.dir / name)
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name
                conn.close()
            start = time.time() + 0.05
            results = list(pool.map(_open_shared_files_at, [str(campaign.dir)] * 3,
                                    [start] * 3))
            failures += [r for r in results if r != "ok"]
    assert failures == []
