"""A large rebuild checks rows in a second process while this one folds (rebuild.py):
the result must be exactly the checked fold's, whatever the checker finds or fails to do."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventwf.store.sqlite import SQLiteStore, chaincheck
from eventwf.store.sqlite import rebuild as rb
from eventwf.store.sqlite.chaincheck import check_rows, main
from eventwf.store.sqlite.rebuild import Folded, fold_log

from .eventlog_kit import CLASS_CHANGES, build, copy, flip_byte, head, position_of, raw, rechain


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("parallel") / "ref.db")


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Take the two-process path on any log and record each checker's verdict."""
    monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(rb, "_cores", lambda: 2)
    verdicts: list[Any] = []
    accept = rb._accept

    def spy(*args: Any) -> bool:
        verdicts.append(accept(*args))
        return bool(verdicts[-1])

    monkeypatch.setattr(rb, "_accept", spy)
    return verdicts


def _both(path: str) -> tuple[Folded, Folded]:
    """(the fold as Store.fold does it, with the path; the fold checked in this process)."""
    store = SQLiteStore(path, readonly=True)
    try:
        return store.fold(), fold_log(store.conn, store.genesis)
    finally:
        store.close()


def test_an_intact_log_is_folded_once_while_the_checker_agrees(
        reference: str, parallel: list[Any]) -> None:
    fast, checked = _both(reference)
    assert parallel == [True]  # the checker ran and found nothing: the fast fold stood
    assert fast.workflows == checked.workflows and fast.agents == checked.agents
    assert (fast.head, fast.events, fast.problems) == (checked.head, checked.events, [])


def test_a_damaged_row_makes_the_checked_fold_decide(
        reference: str, parallel: list[Any], tmp_path: Path) -> None:
    path = copy(reference, tmp_path / "flipped.db")
    bad = position_of(path, "wf:job-1", "step.succeeded")
    flip_byte(path, bad)
    fast, checked = _both(path)
    assert parallel == [False]
    assert fast.problems == checked.problems and fast.problems[0][0] == bad
    assert fast.workflows == checked.workflows
    assert fast.workflows["job-1"].status == "unknown"


def test_a_step_row_that_chains_but_does_not_decode_is_caught_by_the_checker(
        reference: str, parallel: list[Any], tmp_path: Path) -> None:
    """The fast fold does not decode head-only step rows: the checker must decode them."""
    path = copy(reference, tmp_path / "undecodable.db")
    bad = position_of(path, "wf:job-1", "step.succeeded")
    flip_byte(path, bad)
    rechain(path, bad)  # the chain now vouches for the damaged bytes
    fast, checked = _both(path)
    assert parallel == [False]
    assert fast.problems == checked.problems and fast.problems[0][0] == bad
    assert "cannot be decoded" in fast.problems[0][1]
    assert fast.workflows == checked.workflows
    assert fast.workflows["job-1"].status == "unknown"


def test_rebuild_projections_replaces_a_tentative_fold_the_checker_rejects(
        reference: str, parallel: list[Any], tmp_path: Path) -> None:
    """The tentative fold is written before the verdict; a rejected one never commits."""
    path = copy(reference, tmp_path / "flipped.db")
    flip_byte(path, position_of(path, "wf:job-1", "step.succeeded"))
    store = SQLiteStore(path)
    try:
        folded = store.rebuild_projections()
        stored = store.conn.execute(
            "SELECT workflow_id, status FROM workflows ORDER BY workflow_id").fetchall()
        checked = fold_log(store.conn, store.genesis)
    finally:
        store.close()
    assert parallel == [False]
    assert folded.workflows == checked.workflows
    assert stored == sorted((k, s.status) for k, s in checked.workflows.items())
    assert dict(stored)["job-1"] == "unknown"


def test_a_type_that_is_not_utf8_on_a_folded_row_sends_the_log_to_the_checked_fold(
        reference: str, parallel: list[Any], tmp_path: Path) -> None:
    path = copy(reference, tmp_path / "not-utf8.db")
    bad = position_of(path, "wf:job-1", "workflow.running")
    with raw(path) as conn:
        conn.execute("UPDATE events SET type = CAST(x'776f726bff' AS TEXT) WHERE position = ?",
                     (bad,))
    fast, checked = _both(path)
    assert parallel == []  # the split pass gave up before asking the checker
    assert fast.problems == checked.problems and fast.problems[0][0] == bad
    assert "UTF-8" in fast.problems[0][1]
    assert fast.workflows == checked.workflows and fast.agents == checked.agents




@pytest.mark.parametrize(("column", "value", "kind"), CLASS_CHANGES)
def test_a_column_in_another_storage_class_is_damage_that_both_passes_find(
        reference: str, parallel: list[Any], tmp_path: Path, column: str, value: str,
        kind: str) -> None:
    """One flipped bit in SQLite's record header changes a value's storage class (log.md
    L4a): the row is damaged at its position, in the split fold as in the checked one."""
    path = copy(reference, tmp_path / f"class-{column}.db")
    moved = position_of(path, "wf:job-1", "workflow.completed")  # its last row
    with raw(path) as conn:
        conn.execute(f"UPDATE events SET {column} = {value} WHERE position = ?", (moved,))
        assert conn.execute(f"SELECT typeof({column}) FROM events WHERE position = ?",
                            (moved,)).fetchone() == (kind,)
    fast, checked = _both(path)
    assert parallel == [False]  # the checker found it
    assert fast.problems == checked.problems and fast.problems[0][0] == moved
    assert f"{column} holds {kind}" in fast.problems[0][1]
    assert fast.workflows == checked.workflows and fast.agents == checked.agents
    assert fast.workflows["job-1"].status == "unknown"
    assert fast.workflows["job-1"].corrupt_position == moved


mutations = st.lists(st.tuples(st.sampled_from(["copy", "swap"]), st.integers(1, 55),
                               st.integers(1, 55)), min_size=1, max_size=3)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=mutations)
@example(changes=[("copy", 45, 43)])  # a step after the last sleep.started: at the end
@example(changes=[("copy", 12, 8)])  # a step while waiting, in the middle of a stream
@example(changes=[("swap", 2, 8)])  # a step before the workflow starts
def test_the_split_fold_equals_the_checked_fold_on_any_rechained_history(
        reference: str, parallel: list[Any], tmp_path: Path,
        changes: list[tuple[str, int, int]]) -> None:
    """Rows given another row's event (steps where steps are not allowed, agent events on
    workflow streams, ...) with the chain recomputed, so only the fold can object."""
    path = copy(reference, tmp_path / f"mutated-{len(parallel)}.db")
    with raw(path) as conn:
        for op, p, q in changes:
            rows = {pos: conn.execute("SELECT type, data FROM events WHERE position = ?",
                                      (pos,)).fetchone() for pos in (p, q)}
            conn.execute("UPDATE events SET type = ?, data = ? WHERE position = ?",
                         (*rows[q], p))
            if op == "swap":
                conn.execute("UPDATE events SET type = ?, data = ? WHERE position = ?",
                             (*rows[p], q))
    rechain(path, 1)
    fast, checked = _both(path)
    assert fast.workflows == checked.workflows and fast.agents == checked.agents
    assert (fast.problems, fast.head, fast.events) == (checked.problems, checked.head,
                                                       checked.events)


def _tables(path: str) -> tuple[list[Any], list[Any], str | None]:
    store = SQLiteStore(path, readonly=True)
    try:
        conn = store.conn
        return (conn.execute("SELECT * FROM workflows ORDER BY workflow_id").fetchall(),
                conn.execute("SELECT * FROM agents ORDER BY agent_class, agent_name").fetchall(),
                conn.execute("SELECT value FROM meta WHERE key = 'projected_through'")
                .fetchone()[0])
    finally:
        store.close()


def test_rebuild_projections_through_the_split_writes_what_the_checked_one_writes(
        reference: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Agents and the projected head arrive with the checker's verdict: all must land."""
    expected = _tables(reference)  # as the engine wrote them
    for cores in (1, 2):
        monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
        monkeypatch.setattr(rb, "_cores", lambda cores=cores: cores)
        path = copy(reference, tmp_path / f"rebuilt-{cores}.db")
        store = SQLiteStore(path)
        try:
            store.rebuild_projections()
        finally:
            store.close()
        assert _tables(path) == expected, cores
    assert expected[1] and expected[2] == str(head(reference))


def test_the_checker_reports_the_first_problem_with_its_position(
        reference: str, tmp_path: Path) -> None:
    whole = check_rows(reference, head(reference))
    checked = _both(reference)[1]
    assert (whole.rows, whole.problem) == (head(reference), None)
    assert {(a.agent_class, a.name): a for a in whole.agents} == checked.agents
    assert whole.heads == {"wf:" + k: s.head for k, s in checked.workflows.items()}
    assert (check_rows(reference, 3).rows, check_rows(reference, 3).problem) == (3, None)
    path = copy(reference, tmp_path / "flipped.db")
    bad = position_of(path, "wf:job-1", "step.succeeded")
    flip_byte(path, bad)
    report = check_rows(path, head(path))
    assert report.rows == bad and report.problem is not None and report.problem[0] == bad
    assert "checksum" in report.problem[1]
    assert main(["only-one-argument"]) == 2


@pytest.mark.parametrize(("executable", "warning"), [
    ("/nonexistent/python", "cannot start the checking process"),
    ("/bin/false", "the checking process failed (exit 1"),
])
def test_a_checker_that_cannot_run_or_dies_leaves_the_fold_to_this_process(
        reference: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        executable: str, warning: str) -> None:
    monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(rb, "_cores", lambda: 2)
    monkeypatch.setattr(chaincheck.sys, "executable", executable)
    with caplog.at_level(logging.WARNING, logger="eventwf"):
        fast, checked = _both(reference)
    assert warning in caplog.text
    assert fast.workflows == checked.workflows and fast.problems == checked.problems == []


def test_small_logs_and_single_cores_fold_in_one_process(
        reference: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, through: int) -> None:
        raise AssertionError("no checker process for this log")

    monkeypatch.setattr(rb, "start_checker", refuse)
    _both(reference)  # below PARALLEL_MIN_ROWS
    monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(rb, "_cores", lambda: 1)
    _both(reference)
