"""A large rebuild checks rows in a second process while this one folds (rebuild.py):
the result must be exactly the checked fold's, whatever the checker finds or fails to do."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from eventwf._store import Store
from eventwf._store import rebuild as rb
from eventwf._store.chaincheck import check_rows, main
from eventwf._store.rebuild import Folded, fold_log

from .eventlog_kit import build, copy, flip_byte, head, position_of


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("parallel") / "ref.db")


@pytest.fixture
def parallel(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Take the two-process path on any log and record each checker's verdict."""
    monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(rb, "_cores", lambda: 2)
    verdicts: list[Any] = []
    clean = rb._checked_clean

    def spy(checker: subprocess.Popen[bytes], path: str, through: int) -> bool:
        verdicts.append(clean(checker, path, through))
        return bool(verdicts[-1])

    monkeypatch.setattr(rb, "_checked_clean", spy)
    return verdicts


def _both(path: str) -> tuple[Folded, Folded]:
    """(the fold as Store.fold does it, with the path; the fold checked in this process)."""
    store = Store(path, readonly=True)
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


def test_the_checker_reports_the_first_problem_with_its_position(
        reference: str, tmp_path: Path) -> None:
    assert check_rows(reference, head(reference)) == (head(reference), None)
    assert check_rows(reference, 3) == (3, None)  # stops at THROUGH
    path = copy(reference, tmp_path / "flipped.db")
    bad = position_of(path, "wf:job-1", "step.succeeded")
    flip_byte(path, bad)
    rows, problem = check_rows(path, head(path))
    assert rows == bad and problem is not None and problem[0] == bad
    assert "checksum" in problem[1]
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
    monkeypatch.setattr(rb.sys, "executable", executable)
    with caplog.at_level(logging.WARNING, logger="eventwf"):
        fast, checked = _both(reference)
    assert warning in caplog.text
    assert fast.workflows == checked.workflows and fast.problems == checked.problems == []


def test_small_logs_and_single_cores_fold_in_one_process(
        reference: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str, through: int) -> None:
        raise AssertionError("no checker process for this log")

    monkeypatch.setattr(rb, "_start_checker", refuse)
    _both(reference)  # below PARALLEL_MIN_ROWS
    monkeypatch.setattr(rb, "PARALLEL_MIN_ROWS", 1)
    monkeypatch.setattr(rb, "_cores", lambda: 1)
    _both(reference)
