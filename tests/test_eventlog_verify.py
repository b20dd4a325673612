"""``python -m tools.eventlog PATH verify`` on logs written by the real engine and on
deliberately damaged copies: each asserts the exact verdict and position (specs/tools.md
V11-V15). Damage is done by hand with the append-only triggers dropped."""

from __future__ import annotations

import os
import random
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trio

import eventwf
from eventwf.logtool.source import LogSource
from eventwf.logtool.verify import Checker, Report, verify
from eventwf.model.codec import encode_event
from eventwf.model.events import AgentStateSet, StepSucceeded
from eventwf.store.sqlite.log import LogRow
from eventwf.store.sqlite.rebuild import fold_log
from eventwf.store.sqlite.schema import SCHEMA_VERSION, connect, get_meta
from tests.eventlog_kit import (
    CLASS_CHANGES,
    append_forged,
    build,
    change_class,
    cli,
    copy,
    flip_byte,
    head,
    position_of,
    query,
    raw,
    rechain,
)
from tests.wfkit import TestAgent
from tools.eventlog.synth import synthesize


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("verify") / "app.db")


def verdict(path: str) -> dict[str, Any]:
    """The final JSON line of ``verify --json`` (exit status checked against it)."""
    result = cli(path, "verify", "--json")
    last = result.last()
    assert result.code == (0 if last["intact"] else 1)
    return last


def problems(path: str) -> list[tuple[str, int | None, str | None]]:
    result = cli(path, "verify", "--json", "--max-problems", "100")
    return [(r["kind"], r["position"], r["stream"]) for r in result.records()
            if r["record"] == "problem"]


def test_v14_an_engine_written_log_is_intact(log: str) -> None:
    last = verdict(log)
    assert (last["verdict"], last["position"], last["problems"]) == ("intact", None, 0)
    assert (last["events"], last["head"], last["streams"]) == (head(log), head(log), 5)
    assert (last["workflows"], last["agents"], last["projections_checked"]) == (4, 1, True)
    text = cli(log, "verify").out
    assert "INTACT" in text and "the stored projections equal a rebuild" in text


def test_v11_a_flipped_byte_is_a_broken_chain_at_its_position(log: str, tmp_path: Path
                                                              ) -> None:
    path = copy(log, tmp_path / "flipped.db")
    target = position_of(path, "wf:job-1", "event.consumed")
    flip_byte(path, target)
    last = verdict(path)
    assert (last["verdict"], last["position"], last["stream"]) == (
        "broken chain", target, "wf:job-1")
    assert "fails its checksum" in last["message"]
    # the fold quarantines job-1 (status unknown) while the table still says complete
    assert problems(path) == [("broken chain", target, "wf:job-1"),
                              ("projection mismatch", position_of(path, "wf:job-1",
                                                                  "workflow.completed"),
                               "wf:job-1")]
    text = cli(path, "verify").out
    assert f"DAMAGED at position {target}: broken chain:" in text


def test_v11_a_removed_middle_row_is_a_position_gap_at_that_position(log: str, tmp_path: Path
                                                                      ) -> None:
    path = copy(log, tmp_path / "removed.db")
    target = position_of(path, "wf:job-fail", "workflow.running")
    with raw(path) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (target,))
    last = verdict(path)
    assert (last["verdict"], last["position"]) == ("position gap", target)
    assert f"position {target} is missing" in last["message"]
    # one problem per row: the next row (same stream) is not also a stream gap; the fold
    # quarantines job-fail, whose table row still says errored
    assert problems(path) == [
        ("position gap", target, "wf:job-fail"),
        ("projection mismatch", position_of(path, "wf:job-fail", "workflow.errored"),
         "wf:job-fail")]


def test_v11_a_removed_row_is_also_a_stream_gap_at_its_stream_s_next_row(log: str,
                                                                        tmp_path: Path) -> None:
    path = copy(log, tmp_path / "removed.db")
    rows = query(path, "SELECT position, stream FROM events ORDER BY position")
    streams = [stream for _, stream in rows]
    target, stream = next(  # a row followed by another stream's, with more of its own later
        (p, s) for i, (p, s) in enumerate(rows[:-1])
        if streams[i + 1] != s and s in streams[i + 2:] and s.startswith("wf:"))
    later = next(p for p, s in rows if p > target and s == stream)
    with raw(path) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (target,))
    found = problems(path)
    assert found[0] == ("position gap", target, streams[target])  # the row after the hole
    assert ("stream gap", later, stream) in found


def test_v11_a_cut_tail_is_a_position_gap_after_the_new_end(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "cut.db")
    top = head(path)
    with raw(path) as conn:
        conn.execute("DELETE FROM events WHERE position >= ?", (top - 1,))
    last = verdict(path)
    assert (last["verdict"], last["position"]) == ("position gap", top - 1)
    assert f"positions {top - 1}..{top} were cut" in last["message"]  # the anchor says so
    os.remove(path + ".anchor")  # without the anchor, the projections still tell
    last = verdict(path)
    assert (last["verdict"], last["position"]) == ("position gap", top - 1)
    assert f"the projections reflect position {top}" in last["message"]


def test_v11_a_rewritten_and_rehashed_tail_is_caught_by_the_anchor(log: str, tmp_path: Path
                                                                   ) -> None:
    path = copy(log, tmp_path / "forged.db")
    target = position_of(path, "wf:job-1", "step.succeeded")  # fetch's value: no projection
    forged = StepSucceeded(0, "do", "fetch", {"rows": 4000, "blob": b"\x00\x01"}, 3)
    with raw(path) as conn:
        conn.execute("UPDATE events SET data = ? WHERE position = ?",
                     (encode_event(forged), target))
    rechain(path, target)  # a forger with the genesis: the chain holds again
    last = verdict(path)
    assert (last["verdict"], last["position"]) == ("broken chain", head(path))
    assert "rows up to there were rewritten" in last["message"]
    assert [k for k, _, _ in problems(path)] == ["broken chain"]


def test_v11_a_row_that_does_not_decode_is_undecodable(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "newer.db")
    version = int(query(path, "SELECT max(stream_position) FROM events "
                        "WHERE stream = 'wf:job-live'")[0][0])
    target = append_forged(path, "wf:job-live", version + 1, "workflow.teleported", b"\x80")
    last = verdict(path)
    assert (last["verdict"], last["position"], last["stream"]) == (
        "undecodable", target, "wf:job-live")
    assert "does not know" in last["message"]
    assert any("lag the log" in w for w in last["warnings"])  # the forger left them behind
    garbage = copy(log, tmp_path / "garbage.db")
    target = append_forged(garbage, "wf:job-live", version + 1, "workflow.paused", b"\xc1")
    assert (verdict(garbage)["verdict"], verdict(garbage)["position"]) == ("undecodable", target)


def test_v11_a_skipped_stream_version_is_a_stream_gap(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "skipped.db")
    version = int(query(path, "SELECT max(stream_position) FROM events "
                        "WHERE stream = 'agent:TestAgent/alice'")[0][0])
    target = append_forged(path, "agent:TestAgent/alice", version + 2, "agent.state_set",
                           encode_event(AgentStateSet({"count": 9})))
    last = verdict(path)
    assert (last["verdict"], last["position"], last["stream"]) == (
        "stream gap", target, "agent:TestAgent/alice")
    assert f"jumps from version {version} to {version + 2}" in last["message"]


def test_v12_a_projection_row_changed_by_hand_is_a_mismatch(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "edited.db")
    with raw(path) as conn:
        conn.execute("UPDATE workflows SET status = 'running' WHERE workflow_id = 'job-1'")
    last = verdict(path)
    assert (last["verdict"], last["stream"]) == ("projection mismatch", "wf:job-1")
    assert last["position"] == position_of(path, "wf:job-1", "workflow.completed")
    assert last["message"] == ("workflow 'job-1': column status: stored \"running\", the log "
                               "says \"complete\"")
    with raw(path) as conn:
        conn.execute("UPDATE agents SET delivered_through = 0")
        conn.execute("DELETE FROM workflows WHERE workflow_id = 'job-fail'")
    assert problems(path)[1:] == [
        ("projection mismatch", position_of(path, "wf:job-fail", "workflow.errored"),
         "wf:job-fail"),
        ("projection mismatch", position_of(path, "agent:TestAgent/alice",
                                            "callback.delivered", -1), "agent:TestAgent/alice")]


def test_v13_a_truncated_file_is_named_at_its_first_lost_position(log: str, tmp_path: Path
                                                                  ) -> None:
    path = copy(log, tmp_path / "truncated.db")
    page_size, last_leaf = _last_events_leaf(path)
    with open(path, "r+b") as handle:
        handle.truncate((last_leaf - 1) * page_size)  # that page and everything after it
    expected = _first_unreadable(path)
    assert 1 < expected <= head(log)
    last = verdict(path)
    assert (last["verdict"], last["position"]) == ("truncated file", expected)
    assert "bytes are missing from its end" in last["message"]
    assert last["events"] == expected - 1  # every row before it was read and verified
    assert [k for k, _, _ in problems(path)] == ["truncated file"]
    assert cli(path, "show", "job-1").code == 1  # readers say so too


def _last_events_leaf(path: str) -> tuple[int, int]:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (leaf,) = conn.execute("SELECT max(pageno) FROM dbstat WHERE name = 'events' "
                               "AND pagetype = 'leaf'").fetchone()
    finally:
        conn.close()
    return int(page_size), int(leaf)


def _first_unreadable(path: str) -> int:
    """The oracle: the first position whose own row cannot be looked up."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    conn.execute("PRAGMA writable_schema=ON")
    try:
        position = 1
        while True:
            try:
                conn.execute("SELECT data FROM events WHERE position = ?", (position,)).fetchone()
            except sqlite3.DatabaseError:
                return position
            position += 1
    finally:
        conn.close()


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 50, "sqlite"])
def test_v13_a_file_that_is_not_an_eventwf_log(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "other.db"
    if content == "sqlite":
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t(x)")
        conn.close()
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    last = verdict(str(path))
    assert (last["verdict"], last["position"]) == ("not an eventwf log", None)


def test_v14_every_problem_is_counted_and_the_list_is_capped(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "many.db")
    targets = [position_of(path, "wf:job-ctl", "workflow.running", n) for n in range(3)]
    for target in targets:
        flip_byte(path, target)
    result = cli(path, "verify", "--json", "--max-problems", "2")
    listed = [r["position"] for r in result.records() if r["record"] == "problem"]
    assert listed == targets[:2]
    assert result.last()["problems"] == 4  # three rows, and job-ctl's projection
    assert "(the first 2 shown)" in cli(path, "verify", "--max-problems", "2").out


# -- the fold is the engine's ------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["none", "flip", "remove"])
def test_v12_the_fold_equals_fold_log(log: str, tmp_path: Path, damage: str) -> None:
    path = copy(log, tmp_path / "fold.db")
    target = position_of(path, "wf:job-1", "sleep.completed")
    if damage == "flip":
        flip_byte(path, target)
    elif damage == "remove":
        with raw(path) as conn:
            conn.execute("DELETE FROM events WHERE position = ?", (target,))
    checker = Checker(b"", Report(path))
    with LogSource(path) as source:
        checker.prev = source.genesis
        for row in source.rows(0, batch=7):
            checker.feed(row)
    conn = connect(path, readonly=True)
    try:
        folded = fold_log(conn, bytes.fromhex(get_meta(conn, "genesis") or ""))
    finally:
        conn.close()
    assert _comparable(checker.workflows) == _comparable(folded.workflows)
    assert checker.agents == folded.agents
    assert [p for p, _ in folded.problems] == [
        p.position if p.kind != "position gap" else target + 1 for p in checker.report.problems
        if p.kind != "stream gap"]


def _comparable(workflows: dict[str, Any]) -> dict[str, Any]:
    """Summaries without the quarantine message (each pass words its own)."""
    return {k: (s.status, s.head, s.run, s.corrupt_position, s.output, s.mailbox)
            for k, s in workflows.items()}


# -- V15: memory, and a live writer ------------------------------------------------------------


def _peak_verify(path: str) -> int:
    tracemalloc.start()
    try:
        report = verify(path, batch=500)
        assert report.intact, report.problems
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_v15_verify_memory_does_not_grow_with_the_number_of_events(tmp_path: Path) -> None:
    small, large = str(tmp_path / "small.db"), str(tmp_path / "large.db")
    for path, events in ((small, 2_000), (large, 16_000)):  # 4 long workflows, 2 agents
        synthesize(path, events, agents=2, concurrent=4, steps=10**9, batch=1_000)
    assert int(query(large, "SELECT count(DISTINCT stream) FROM events")[0][0]) == 6
    peak_small, peak_large = _peak_verify(small), _peak_verify(large)
    assert peak_large < 1.5 * peak_small + 200_000, (peak_small, peak_large)


class Busy(eventwf.AgentWorkflow[TestAgent]):
    """Many small steps spread over time, and an agent state merge."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        async def tick() -> float:
            await trio.sleep(0.002)
            return random.random()

        for i in range(80):
            await step.do(f"s{i}", tick)
        await step.merge_agent_state({"count": 1})


@pytest.mark.realtime
async def test_v12_a_live_writer_causes_no_false_mismatch(db: str) -> None:
    reports: list[tuple[int, int, Report]] = []  # head before, head after, report
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Busy],
                                   synchronous="NORMAL") as engine:
        agent = await engine.get_agent(TestAgent, "busy")
        await agent.set_state({"count": 0})
        ids = [await agent.run_workflow("Busy") for _ in range(6)]
        done = trio.Event()

        async def finish() -> None:
            for workflow_id in ids:
                await engine.wait_workflow(workflow_id)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(finish)
            while not done.is_set() and len(reports) < 500:
                before = engine.statistics().head
                report = await trio.to_thread.run_sync(lambda: verify(db, batch=5))
                reports.append((before, engine.statistics().head, report))
    overlapped = [r for before, after, r in reports if after > before]
    assert len(overlapped) >= 2  # the engine appended while these ran
    assert [r.problems for _, _, r in reports if not (r.intact and r.projections_checked)] == []
    assert verify(db).intact


def test_v11_rows_are_read_in_bounded_batches(log: str) -> None:
    with LogSource(log) as source:
        rows = list(source.rows(0, batch=3))
    assert all(isinstance(r, LogRow) for r in rows)
    assert [r.position for r in rows] == list(range(1, head(log) + 1))


@pytest.mark.parametrize(("column", "value", "kind"), CLASS_CHANGES)
def test_v11_a_column_in_another_storage_class_is_undecodable_and_verify_reads_on(
        log: str, tmp_path: Path, column: str, value: str, kind: str) -> None:
    """One flipped bit in a row's record header (log.md L4a) stopped the reading there."""
    path = copy(log, tmp_path / f"class-{column}.db")
    target = position_of(path, "wf:job-1", "workflow.completed")
    later = position_of(path, "wf:job-live", "step.succeeded", -1)
    assert later > target
    change_class(path, target, column, value)
    flip_byte(path, later)
    assert problems(path)[:2] == [("undecodable", target, "wf:job-1"),
                                  ("broken chain", later, "wf:job-live")]
    assert f"{column} holds {kind}" in verdict(path)["message"]
    shown = cli(path, "show", "job-1")
    assert shown.code == 1 and f"!! a column holds the wrong storage class ({column} holds " \
        f"{kind}" in shown.out


@pytest.mark.parametrize(("value", "kind", "says"), [
    (str(SCHEMA_VERSION + 1), "newer schema", "NOT VERIFIED: newer schema: schema version"),
    ("1x", "unreadable", "DAMAGED at"),
])
def test_v14_a_newer_or_damaged_schema_version_is_never_intact(
        log: str, tmp_path: Path, value: str, kind: str, says: str) -> None:
    """verify cannot vouch for a format it does not know (the engine refuses it: L12)."""
    path = copy(log, tmp_path / "schema.db")
    with raw(path) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    last = verdict(path)
    assert (last["intact"], last["verdict"], last["position"]) == (False, kind, None)
    text = cli(path, "verify")
    assert text.code == 1 and says in text.out
