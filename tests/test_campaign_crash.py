"""Process crashes: SIGKILL at random points (F1), at every named fault point (F2), and two
processes racing for one log (specs/guarantees.md). Real worker processes, real SIGKILL.

Each campaign prints one summary line with its seed; replay a failure with
``EVENTWF_SEED=<seed> pytest tests/test_campaign_crash.py -k <name>``. The PR tier runs
by default; ``pytest -m slow`` runs the same scenarios at the plan's sizes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from eventwf import faults
from tests.campaign.checker import Report
from tests.campaign.driver import Campaign, RunRecord, seed_for, summary
from tests.campaign.ledger import Ledger
from tests.campaign.logview import read_anchor
from tests.campaign.zygote import Zygote

# -- F1: SIGKILL at random points ------------------------------------------------------------


def _f1(tmp_path: Path, zygote: Zygote, name: str, default_seed: int, workflows: int,
        kills: int, hibernate_after: float | None) -> tuple[int, Report]:
    seed = seed_for(name, default_seed)
    low, high = 0.02, 0.7  # each worker is SIGKILLed U(low, high) s after it was forked
    # pace the starts so that the plan outlasts the kills (by ~30%): every run starts a
    # few workflows, continues the ones before it, and is killed; the last run finishes
    gap = 1.2 * (low + high) / 2 * kills / workflows
    campaign = Campaign(tmp_path, name, seed, zygote, workflows=workflows, config={
        "hibernate_after": hibernate_after, "start_gap": round(gap, 4)})
    began = time.monotonic()
    done = campaign.kill_loop(kills, low=low, high=high)
    final = campaign.finish(start_gap=0.005)
    report = campaign.check()
    summary(f"F1[{name}] seed={seed} kills={done} runs={len(campaign.runs)} "
            f"final_run_s={final.seconds} wall_s={time.monotonic() - began:.1f} "
            f"{report.summary()}")
    campaign.assert_clean(report, f"F1[{name}]")
    assert report.acked > workflows  # the client really did acknowledged work
    return done, report


@pytest.mark.parametrize(("name", "seed", "hibernate_after"), [
    ("hibernating", 101, 0.1), ("in-memory", 202, None)])
def test_f1_sigkill_at_random_points_loses_and_repeats_nothing(
        tmp_path: Path, zygote: Zygote, name: str, seed: int,
        hibernate_after: float | None) -> None:
    done, _ = _f1(tmp_path, zygote, name, seed, workflows=150, kills=25,
                  hibernate_after=hibernate_after)
    assert done == 25


@pytest.mark.slow
@pytest.mark.parametrize("index", range(4))
def test_f1_slow_sigkill_campaigns(tmp_path: Path, zygote: Zygote, index: int) -> None:
    """4 campaigns x 300 workflows x 250 kills: >= 1,000 workflows, ~1,000 SIGKILLs."""
    done, _ = _f1(tmp_path, zygote, f"slow{index}", 1000 + index, workflows=300, kills=250,
                  hibernate_after=0.1 if index % 2 == 0 else None)
    assert done == 250


# -- F2: kill at every fault point -----------------------------------------------------------

# Which hits of each point to kill at in the PR tier (a 12-workflow plan hits the append
# points ~130 times, the step points ~40, the others a few times, open.after_recover once).
_PR_HITS = {
    "append.before_commit": (1, 40, 120), "append.after_commit": (2, 41, 119),
    "step.before_call": (1, 10, 30), "step.after_call": (1, 9, 25),
    "sleep.after_record": (1, 2, 4), "event.after_consume": (1, 3, 5),
    "callback.after_hook": (1, 5, 11), "open.after_recover": (1,),
}


def _f2_trial(tmp_path: Path, zygote: Zygote, label: str, seed: int, point: str,
              nth: int, workflows: int) -> tuple[bool, Report]:
    campaign = Campaign(tmp_path, f"{point}-{nth}", seed, zygote, workflows=workflows)
    record = campaign.run_once(fault=f"{point}:{nth}:kill", timeout=60)
    fired = record.status == -signal.SIGKILL
    if not fired and record.status != 0:
        raise AssertionError(f"{label} {point}:{nth}: the faulted run exited with "
                             f"{record.status}; {campaign.log_tail(int(record.run))}")
    campaign.finish()
    report = campaign.check()
    campaign.assert_clean(report, f"{label} {point}:{nth}")
    return fired, report


def _f2(tmp_path: Path, zygote: Zygote, label: str, hits: dict[str, Any], workflows: int,
        default_seed: int) -> None:
    seed = seed_for(label, default_seed)
    assert set(hits) == faults.POINTS, "every named fault point is covered"
    trials = fired = reexec = ambiguous = 0
    began = time.monotonic()
    for point in sorted(hits):
        for nth in hits[point]:
            killed, report = _f2_trial(tmp_path, zygote, label, seed, point, nth, workflows)
            trials += 1
            fired += killed
            reexec += report.reexec
            ambiguous += report.info_landed
    summary(f"{label} seed={seed} points={len(hits)} trials={trials} kills={fired} "
            f"not_reached={trials - fired} reexec={reexec} ambiguous_landed={ambiguous} "
            f"wall_s={time.monotonic() - began:.1f} violations=0")
    assert fired >= trials * 0.8


def test_f2_kill_at_every_fault_point(tmp_path: Path, zygote: Zygote) -> None:
    _f2(tmp_path, zygote, "F2", _PR_HITS, workflows=12, default_seed=303)


def _count_hits(tmp_path: Path, zygote: Zygote, seed: int, workflows: int) -> dict[str, int]:
    campaign = Campaign(tmp_path, "count", seed, zygote, workflows=workflows)
    spec = ",".join(f"{point}:{10**9}:raise" for point in sorted(faults.POINTS))
    record = campaign.run_once(fault=spec, timeout=120)
    assert record.status == 0, campaign.log_tail(int(record.run))
    ledger = Ledger(campaign.cfg.ledger)
    try:
        note = next(what for _, what in ledger.notes() if what.startswith("HITS "))
    finally:
        ledger.close()
    counts: dict[str, int] = json.loads(note[5:])
    return counts


@pytest.mark.slow
def test_f2_slow_kill_at_every_hit_of_every_fault_point(tmp_path: Path,
                                                         zygote: Zygote) -> None:
    """The SQLite do_faultsim model: count the hits of a 20-workflow plan, then kill at
    each hit in turn (a fresh log each time), finish, and check."""
    seed = seed_for("F2-slow", 404)
    counts = _count_hits(tmp_path / "count", zygote, seed, 20)
    hits = {point: tuple(range(1, counts.get(point, 0) + 2)) for point in faults.POINTS}
    _f2(tmp_path, zygote, "F2-slow", hits, workflows=20, default_seed=404)


# -- two processes, one log ------------------------------------------------------------------


def _notes(campaign: Campaign) -> list[tuple[str, str]]:
    ledger = Ledger(campaign.cfg.ledger)
    try:
        return ledger.notes()
    finally:
        ledger.close()


def _executing_runs(campaign: Campaign) -> set[str]:
    ledger = Ledger(campaign.cfg.ledger)
    try:
        return {ex.run for ex in ledger.executions()}
    finally:
        ledger.close()


def _holding(campaign: Campaign, pid: int, timeout: float = 30.0) -> None:
    """Wait until run ``pid`` holds the log's writer lock (its pid is in the lock file)."""
    lock = Path(campaign.cfg.db + ".lock")
    deadline = time.monotonic() + timeout
    while not (lock.exists() and lock.read_text().startswith(f"pid {pid} ")):
        assert time.monotonic() < deadline, f"run {pid} took no writer lock in {timeout} s"
        time.sleep(0.01)


# Paced starts keep each run busy for 3 s or more, so the one refused always meets a
# holder that is still working, however slowly a loaded machine starts it.
_BUSY = {"start_gap": 0.2}


def test_two_processes_on_one_log_one_is_refused_naming_the_holder(
        tmp_path: Path, zygote: Zygote) -> None:
    seed = seed_for("race", 505)
    trials = 6
    named = 0
    for trial in range(trials):
        campaign = Campaign(tmp_path, f"race{trial}", seed + trial, zygote, workflows=15)
        if trial % 2:  # the holder is already serving when the second one starts
            first = campaign.start(**_BUSY)
            _holding(campaign, first)
            second = campaign.start(**_BUSY)
        else:  # both start at once
            first, second = campaign.start(**_BUSY), campaign.start(**_BUSY)
        statuses = {pid: zygote.wait(pid, 60) for pid in (first, second)}
        # one finished, one refused
        assert sorted(statuses.values()) == [0, 3], (statuses, *map(campaign.log_tail, statuses))
        winner = next(pid for pid, status in statuses.items() if status == 0)
        loser = next(pid for pid, status in statuses.items() if status == 3)
        assert trial % 2 == 0 or winner == first
        for pid, status in statuses.items():
            campaign._record(RunRecord(str(pid), status, False))
        locked = [what for run, what in _notes(campaign) if run == str(loser)]
        assert len(locked) == 1 and locked[0].startswith("LOCKED "), locked
        assert "already open for writing by" in locked[0]
        assert _executing_runs(campaign) <= {str(winner)}  # the refused one ran nothing
        report = campaign.check()
        campaign.assert_clean(report, f"race{trial}")
        # the holder's pid is named (or "an unknown process" if the refused one read the
        # lock file in the instant between the holder's flock() and its writing the pid)
        assert f"pid {winner} " in locked[0] or "an unknown process" in locked[0], locked[0]
        named += f"pid {winner} " in locked[0]

    # a holder that dies (SIGKILL) frees the lock at once; the next engine finishes its work
    campaign = Campaign(tmp_path, "race-kill", seed, zygote, workflows=15)
    holder = campaign.start(**_BUSY)
    _holding(campaign, holder)
    refused = campaign.start()
    assert zygote.wait(refused, 30) == 3, campaign.log_tail(refused)
    os.kill(holder, signal.SIGKILL)
    assert zygote.wait(holder, 30) == -signal.SIGKILL, campaign.log_tail(holder)
    campaign._record(RunRecord(str(holder), -signal.SIGKILL, True))
    campaign.finish()
    report = campaign.check()
    campaign.assert_clean(report, "race-kill")
    notes = [what for run, what in _notes(campaign) if run == str(refused)]
    assert notes and f"pid {holder} " in notes[0], notes
    summary(f"RACE seed={seed} trials={trials + 1} refused={trials + 1} "
            f"holder_pid_named={named + 1} double_runs=0 violations=0")


# -- F7: torn or truncated WAL tail ----------------------------------------------------------


def _rows(db: Path, scratch: Path) -> tuple[list[tuple[int, bytes]], str]:
    """(position, hash) of every row a fresh open of a copy of db+wal finds, and
    integrity_check (SQLite runs WAL recovery on the copy; the original is untouched)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    copy = scratch / "copy.db"
    shutil.copyfile(db, copy)
    if Path(str(db) + "-wal").exists():
        shutil.copyfile(str(db) + "-wal", str(copy) + "-wal")
    conn = sqlite3.connect(copy)
    try:
        rows = [(int(p), bytes(h)) for p, h in
                conn.execute("SELECT position, hash FROM events ORDER BY position")]
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    return rows, str(integrity)


def _damage(wal: Path, kind: str, rng: Any) -> str:
    size = wal.stat().st_size
    with open(wal, "r+b") as handle:
        if kind == "truncate":
            cut = rng.randrange(32, size)
            handle.truncate(cut)
            return f"truncated at {cut} of {size}"
        if kind == "garbage":
            at = rng.randrange(32, size - 16)
            handle.seek(at)
            handle.write(bytes(rng.randrange(256) for _ in range(16)))
            return f"16 garbage bytes at {at} of {size}"
        page = min(4096, size - 32)
        handle.seek(size - page)
        handle.write(bytes(page))
        return f"last {page} bytes zeroed of {size}"


def _f7(tmp_path: Path, zygote: Zygote, trials: int, default_seed: int, label: str) -> None:
    seed = seed_for(label, default_seed)
    rng = random.Random(seed)
    campaign = Campaign(tmp_path, label, seed, zygote, workflows=max(40, trials * 3), config={
        "wal_autocheckpoint": 0, "start_gap": 0.02, "start_limit": 2})
    db = Path(campaign.cfg.db)
    wal = Path(str(db) + "-wal")
    damaged = lost_rows = detections = expected_detections = 0
    pending: list[tuple[int, int, int]] = []  # (run index after damage, head, anchor)
    last_damage_run = 0
    for _ in range(trials):
        record = campaign.run_once(kill_after=rng.uniform(0.1, 0.4))
        if not record.killed or not wal.exists() or wal.stat().st_size < 4096 + 64:
            continue
        before, ok = _rows(db, tmp_path / "scratch")
        assert ok == "ok"
        anchor = read_anchor(str(db))
        what = _damage(wal, rng.choice(("truncate", "garbage", "zero")), rng)
        after, integrity = _rows(db, tmp_path / "scratch")
        assert integrity == "ok", f"{label} seed={seed}: {what}: integrity_check {integrity}"
        assert after == before[:len(after)], f"{label} seed={seed}: {what}: not a prefix"
        damaged += 1
        lost_rows += len(before) - len(after)
        last_damage_run = len(campaign.runs)
        if anchor is not None and anchor.position > len(after):
            expected_detections += 1
            pending.append((len(campaign.runs), len(after), anchor.position))
    campaign.finish(start_limit=None)
    opened = {o.run for o in _opens(campaign)}
    starts = [index for index, _, _ in pending]
    for n, (index, head, anchored) in enumerate(pending):  # reported by the first open
        text, reached = "", len(campaign.runs)
        for at, record in enumerate(campaign.runs[index:], start=index):
            text += campaign.log_tail(int(record.run), lines=10_000)
            if record.run in opened:
                reached = at
                break
        if n + 1 < len(starts) and starts[n + 1] <= reached:
            # the next run was killed before it opened the log, and the tail was damaged
            # again: the open that follows sees (and reports) only the later damage
            expected_detections -= 1
            continue
        if f"ends at position {head}, but its anchor says {anchored}" in text:
            detections += 1
    after_run = campaign.runs[last_damage_run].run if last_damage_run < len(campaign.runs) \
        else None
    report = campaign.check(lost_allowed=True, after_run=after_run)
    summary(f"{label} seed={seed} kills={campaign.kills} damaged_tails={damaged} "
            f"rows_lost={lost_rows} anchor_mismatches={expected_detections} "
            f"anchor_detected={detections} {report.summary()}")
    campaign.assert_clean(report, label)
    assert detections == expected_detections
    assert damaged >= trials // 3


def _opens(campaign: Campaign) -> list[Any]:
    ledger = Ledger(campaign.cfg.ledger)
    try:
        return ledger.opens()
    finally:
        ledger.close()


def test_f7_torn_wal_tail_leaves_a_prefix_and_the_anchor_reports_lost_events(
        tmp_path: Path, zygote: Zygote) -> None:
    _f7(tmp_path, zygote, trials=30, default_seed=606, label="F7")


@pytest.mark.slow
def test_f7_slow_torn_wal_tails(tmp_path: Path, zygote: Zygote) -> None:
    _f7(tmp_path, zygote, trials=300, default_seed=607, label="F7-slow")
