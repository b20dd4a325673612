"""The sans-I/O replay core (eventwf/_replay.py): decisions per command (R1-R5, R8)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from eventwf.errors import CorruptLogError, NonDeterminismError
from eventwf.model.events import (
    ErrorInfo,
    Event,
    EventConsumed,
    EventReceived,
    Recorded,
    SleepCompleted,
    SleepStarted,
    StepAttemptFailed,
    StepFailed,
    StepRetrying,
    StepSucceeded,
    WaitStarted,
    WaitTimedOut,
    WorkflowBlocked,
    WorkflowPaused,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowRunning,
    WorkflowStarted,
)
from eventwf.model.replay import (
    Execute,
    Raise,
    Replayed,
    ReplayMachine,
    ResumeAttempt,
    ResumeBackoff,
    ResumeSleep,
    ResumeWait,
    describe_command,
)

PACKAGE = Path(__file__).resolve().parents[1] / "eventwf"
ERR = ErrorInfo("builtins.ValueError", "boom", args=["boom"])


class History:
    """A workflow stream being written: positions and stream positions count up."""

    def __init__(self, workflow_id: str = "wf-1", name: str = "Flow") -> None:
        self.machine = ReplayMachine(workflow_id, name)
        self.position = 100  # other streams' rows come first; positions need not be dense
        self.stream_position = 0
        self.feed(WorkflowStarted(name, "A", "a"), at=0)
        self.feed(WorkflowRunning(), at=0)

    def feed(self, event: Event, *, at: int = 0) -> Recorded:
        rec = Recorded(self.position, "wf:" + self.machine.workflow_id, self.stream_position,
                       at, event)
        self.machine.feed(rec)
        self.position += 1
        self.stream_position += 1
        return rec


def machine(*events: Event, at: int = 0) -> ReplayMachine:
    h = History()
    for event in events:
        h.feed(event, at=at)
    return h.machine


# -- R2: finished commands are served from the log ----------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "value"),
    [("do", "fetch", {"x": [1, 2]}), ("now", None, 1_700_000_000_000_000), ("random", None, 0.5),
     ("uuid4", None, "5b0c8f5e"), ("report_complete", None, None), ("send_event", "ping", 1)],
)
def test_r2_succeeded_commands_are_replayed_with_their_value(kind: str, name: str | None,
                                                             value: Any) -> None:
    m = machine(StepSucceeded(0, kind, name, value))
    assert m.replaying
    assert m.next(kind, name) == Replayed(value)
    assert not m.replaying and m.position == 1


def test_r2_completed_sleep_is_replayed() -> None:
    m = machine(SleepStarted(0, "nap", 5_000, 5_000), SleepCompleted(0),
                SleepStarted(1, "until", 9_000, 4_000, until=True), SleepCompleted(1))
    assert m.next("sleep", "nap") == Replayed(None)
    assert m.next("sleep_until", "until") == Replayed(None)


def test_r2_failed_step_raises_its_logged_error_again() -> None:
    m = machine(StepAttemptFailed(0, "a", 1, ERR, 2_000, 1_000), StepRetrying(0, "a", 2),
                StepFailed(0, "do", "a", 2, ERR))
    assert m.next("do", "a") == Raise(ERR)


def test_r2_timed_out_wait_raises_a_timeout_again() -> None:
    m = machine(WaitStarted(0, "w", "go", 9_000, 8_000), WaitTimedOut(0, "w", "go"))
    assert m.next("wait", "w") == Raise(None, timeout=True)


def test_r2_consumed_wait_replays_type_payload_and_receive_time() -> None:
    h = History()
    received = h.feed(EventReceived("go", {"ok": True}), at=700)
    h.feed(EventConsumed(0, "w", "go", received.stream_position), at=800)
    assert h.machine.next("wait", "w") == Replayed(("go", {"ok": True}, 700))
    assert h.machine.buffered("go") is None


# -- R5/R6: commands in progress resume --------------------------------------------------------


def test_r5_sleep_in_progress_resumes_until_its_deadline() -> None:
    m = machine(SleepStarted(0, "nap", 60_000, 50_000), at=10_000)
    assert m.next("sleep", "nap") == ResumeSleep(60_000, 50_000)


def test_r5_backoff_in_progress_resumes_with_its_retry_time() -> None:
    m = machine(StepAttemptFailed(0, "a", 3, ERR, 8_000, 4_000), at=4_000)
    assert m.next("do", "a") == ResumeBackoff(failed_attempt=3, retry_at_us=8_000, delay_us=4_000)


def test_r6_begun_attempt_runs_again_with_the_same_number() -> None:
    m = machine(StepAttemptFailed(0, "a", 1, ERR, 8_000, 4_000), StepRetrying(0, "a", 2))
    assert m.next("do", "a") == ResumeAttempt(2)


def test_r5_wait_in_progress_resumes_until_its_timeout() -> None:
    m = machine(WaitStarted(0, "w", "go", 90_000, 80_000), at=10_000)
    assert m.next("wait", "w") == ResumeWait("go", 90_000, 80_000)


@pytest.mark.parametrize(
    ("started", "expected"),
    [(SleepStarted(0, "nap", 60_000, 50_000), ResumeSleep(60_000 + 3_000 + 500, 50_000)),
     (StepAttemptFailed(0, "nap", 1, ERR, 60_000, 50_000),
      ResumeBackoff(1, 60_000 + 3_000 + 500, 50_000)),
     (WaitStarted(0, "nap", "go", 60_000, 50_000), ResumeWait("go", 60_000 + 3_000 + 500, 50_000))],
    ids=["sleep", "backoff", "wait"],
)
def test_r5_time_spent_paused_is_added_to_deadlines_in_progress(started: Event,
                                                                expected: Any) -> None:
    h = History()
    h.feed(WorkflowPaused(), at=5_000)  # before the command began: not counted
    h.feed(WorkflowResumed(), at=9_000)
    h.feed(started, at=10_000)
    h.feed(WorkflowPaused(), at=20_000)
    h.feed(WorkflowResumed(), at=23_000)
    h.feed(WorkflowResumed(), at=24_000)  # a resume without a pause adds nothing
    h.feed(WorkflowPaused(), at=30_000)
    h.feed(WorkflowResumed(), at=30_500)
    h.feed(WorkflowPaused(), at=40_000)  # still paused: not (yet) counted
    kind = {SleepStarted: "sleep", WaitStarted: "wait"}.get(type(started), "do")
    assert h.machine.next(kind, "nap") == expected


def test_r5_time_spent_blocked_is_added_to_deadlines_in_progress() -> None:
    h = History()
    h.feed(StepSucceeded(0, "do", "a", 1), at=5_000)
    h.feed(SleepStarted(1, "nap", 60_000, 50_000), at=10_000)
    # restarted with changed code: diverged at command 0, left paused until resumed
    h.feed(WorkflowBlocked(0, ErrorInfo("eventwf.errors.NonDeterminismError", "x")), at=20_000)
    h.feed(WorkflowResumed(), at=25_000)
    assert h.machine.next("do", "a") == Replayed(1)
    assert h.machine.next("sleep", "nap") == ResumeSleep(65_000, 50_000)


# -- Execute past the end -------------------------------------------------------------------------


def test_commands_past_the_end_of_the_history_are_executed_in_order() -> None:
    m = machine(StepSucceeded(0, "do", "a", 1))
    assert m.next("do", "a") == Replayed(1)
    # a new command's number is given when its first event is queued (the runner), so
    # concurrent tasks number theirs in log order (R14); the machine gives each its place
    assert [m.issue("do", "b"), m.issue("sleep", "c"), m.issue("now", None)] == [
        (Execute(), None, 1), (Execute(), None, 2), (Execute(), None, 3)]
    assert not m.replaying and m.position == 4 and m.commands == 1
    m.finish()


def test_a_fresh_run_executes_from_command_zero() -> None:
    m = machine()
    assert not m.replaying
    assert m.issue("do", "a") == (Execute(), None, 0)


# -- R3/R4: divergence ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "name", "asked"),
    [("sleep", "a", "step.sleep('a')"), ("do", "b", "step.do('b')"),
     ("wait", "a", "step.wait_for_event('a')"), ("now", None, "step.now()")],
)
def test_r3_other_kind_or_name_raises_naming_workflow_command_and_both_steps(
    kind: str, name: str | None, asked: str
) -> None:
    m = machine(StepSucceeded(0, "do", "x", 1), StepSucceeded(1, "do", "a", 2))
    assert m.next("do", "x") == Replayed(1)
    with pytest.raises(NonDeterminismError) as info:
        m.next(kind, name)
    message = str(info.value)
    assert "'wf-1'" in message and "(Flow)" in message and "command #1" in message
    assert "the log has step.do('a')" in message and f"asked for {asked}" in message


def test_r3_repeated_step_names_are_labelled_with_their_occurrence() -> None:
    m = machine(StepSucceeded(0, "do", "a", 1), StepSucceeded(1, "do", "a", 2))
    m.next("do", "a")
    with pytest.raises(NonDeterminismError, match=r"step\.do\('a'\) \(occurrence 2\)"):
        m.next("do", "b")


def test_r4_finish_raises_when_the_log_holds_more_commands() -> None:
    m = machine(StepSucceeded(0, "do", "a", 1), SleepStarted(1, "nap", 9, 9))
    m.next("do", "a")
    assert m.replaying
    with pytest.raises(NonDeterminismError) as info:
        m.finish()
    assert "'wf-1'" in str(info.value) and "command #1" in str(info.value)
    assert "step.sleep('nap')" in str(info.value)


def test_r4_finish_is_quiet_when_every_logged_command_was_issued() -> None:
    m = machine(StepSucceeded(0, "do", "a", 1))
    m.next("do", "a")
    m.finish()


def test_a_logged_command_number_with_a_gap_is_a_corrupt_log() -> None:
    # the engine never writes a gap: it is damage (quarantine), not code that diverged
    h = History()
    with pytest.raises(CorruptLogError, match="command #2 .*only 0 commands precede it"):
        h.feed(StepSucceeded(2, "do", "a", 1))


def test_sleep_completed_for_an_unknown_command_is_a_corrupt_log() -> None:
    with pytest.raises(CorruptLogError, match="not a sleep in progress"):
        History().feed(SleepCompleted(0))


# -- mailbox ------------------------------------------------------------------------------------


def test_buffered_is_fifo_per_event_type() -> None:
    h = History()
    a1 = h.feed(EventReceived("a", 1), at=10)
    b1 = h.feed(EventReceived("b", "x"), at=11)
    a2 = h.feed(EventReceived("a", 2), at=12)
    m = h.machine
    assert m.buffered("a") == (a1.stream_position, 1, 10)
    assert m.buffered("b") == (b1.stream_position, "x", 11)
    assert m.buffered("c") is None
    h.feed(EventConsumed(0, "w", "a", a1.stream_position))
    assert m.buffered("a") == (a2.stream_position, 2, 12)
    h.feed(EventConsumed(1, "w2", "a", a2.stream_position))
    assert m.buffered("a") is None
    assert m.buffered("b") == (b1.stream_position, "x", 11)


def test_consuming_an_event_that_is_not_buffered_is_corrupt() -> None:
    h = History()
    rec = h.feed(EventReceived("a", 1))
    h.feed(EventConsumed(0, "w", "a", rec.stream_position))
    with pytest.raises(CorruptLogError) as info:
        h.feed(EventConsumed(1, "w", "a", rec.stream_position))
    assert info.value.position == h.position  # the row being fed (not counted)


# -- runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("event", [WorkflowRestarted(), WorkflowStarted("Flow", "A", "a")],
                         ids=["restarted", "started-again"])
def test_a_new_run_clears_history_mailbox_pauses_and_reports(event: Event) -> None:
    h = History()
    h.feed(StepSucceeded(0, "report_complete", None, 1))
    h.feed(StepSucceeded(1, "report_error", None, "e"))
    h.feed(EventReceived("a", 1))
    h.feed(WorkflowPaused(), at=5)
    assert h.machine.complete_reported and h.machine.error_reported
    h.feed(event, at=1_000)
    m = h.machine
    assert (m.complete_reported, m.error_reported, m.replaying) == (False, False, False)
    assert m.buffered("a") is None
    assert m.position == 0
    h.feed(SleepStarted(0, "nap", 5_000, 4_000), at=1_000)
    h.feed(WorkflowResumed(), at=2_000)  # the old run's pause does not count
    assert m.next("sleep", "nap") == ResumeSleep(5_000, 4_000)
    assert m.issue("do", "a") == (Execute(), None, 1) and m.commands == 1


def test_workflow_started_is_remembered_with_its_time() -> None:
    m = ReplayMachine("wf-1", "Flow")
    start = WorkflowStarted("Flow", "A", "a", params={"n": 1})
    m.feed(Recorded(1, "wf:wf-1", 0, 777, start))
    assert (m.start, m.start_time_us) == (start, 777)


def test_describe_command_labels() -> None:
    assert describe_command("wait", "w") == "step.wait_for_event('w')"
    assert describe_command("sleep_until", "t") == "step.sleep_until('t')"
    assert describe_command("uuid4", None) == "step.uuid4()"


# -- R8: no I/O -----------------------------------------------------------------------------------


def _imports(module: str) -> set[str]:
    """The absolute names ``eventwf.<module>`` imports (the model imports absolutely)."""
    tree = ast.parse((PACKAGE / (module.replace(".", "/") + ".py")).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module}: relative import"
            names.add(node.module or "")
    return names


@pytest.mark.parametrize("module", ["model.replay", "model.workflow_fold", "model.commands"])
def test_r8_replay_and_fold_import_neither_trio_nor_sqlite3_even_indirectly(module: str) -> None:
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _imports(current):
            root = name.split(".")[0]
            assert root not in {"trio", "sqlite3", "sqlite_utils"}, (current, name)
            if root == "eventwf" and (PACKAGE / (name[8:].replace(".", "/") + ".py")).exists():
                todo.append(name[8:])
    assert {"model.events", "errors"} <= seen
