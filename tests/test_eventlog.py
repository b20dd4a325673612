"""tools/eventlog on logs written by the real engine: reading, time travel, check, export,
rebuild (specs/tools.md V1-V10, V16-V18). Verification: tests/test_eventlog_verify.py."""

from __future__ import annotations

import argparse
import base64
import io
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import eventwf
from eventwf.logtool import listing
from eventwf.logtool.cli import COMMANDS, build_parser
from eventwf.logtool.render import Output
from eventwf.logtool.source import LogSource
from eventwf.model.codec import decode_event, decode_value
from tests import golden
from tests.eventlog_factory import GO_PAYLOAD, Job
from tests.eventlog_kit import (
    build,
    cli,
    copy,
    digest,
    flip_byte,
    head,
    position_of,
    query,
    raw,
)
from tests.wfkit import TestAgent, virtual_wall

ROOT = Path(__file__).resolve().parent.parent
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("eventlog") / "app.db")


def _steps(records: list[dict[str, Any]], run: int = 1) -> dict[int, dict[str, Any]]:
    return {r["seq"]: r for r in records if r["record"] == "step" and r["run"] == run}


# -- V1: commands, help, the guide ------------------------------------------------------------


def _subcommands() -> list[str]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(action.choices)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_v1_every_command_has_help(command: str, log: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli(log, command, "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: eventwf log PATH {command}" in out
    assert "exit status" in out


def test_v1_the_guide_shows_every_command_with_an_example() -> None:
    guide = (ROOT / "docs" / "guides" / "inspecting-a-log.md").read_text()
    commands = _subcommands()
    assert sorted(commands) == sorted(COMMANDS)
    missing = [c for c in commands
               if not re.search(rf"eventwf log \S+ {re.escape(c)}(\s|$)", guide)]
    assert missing == [], f"add an example of each to docs/guides/inspecting-a-log.md: {missing}"


# -- V2-V4: read-only, output, exit statuses ---------------------------------------------------


def test_v2_reading_commands_leave_the_log_byte_identical(log: str) -> None:
    before = (digest(log), digest(log + ".anchor"))
    for argv in (["streams"], ["show", "job-1"], ["tail", "-n", "5"], ["workflow", "job-ctl"],
                 ["agent", "TestAgent", "alice", "--at", "3"], ["stats"], ["verify"],
                 ["export"], ["check", "tests.eventlog_factory:jobs"]):
        assert cli(log, *argv).code == 0, argv
    assert (digest(log), digest(log + ".anchor")) == before


def test_v3_json_lines_hold_every_event_with_iso_times_and_bytes(log: str) -> None:
    result = cli(log, "show", "wf:job-1", "--json")
    rows = query(log, "SELECT position, type, data FROM events WHERE stream = 'wf:job-1' "
                 "ORDER BY stream_position")
    records = result.records()
    assert [r["position"] for r in records] == [p for p, _, _ in rows]
    for record, (_, type_name, data) in zip(records, rows, strict=True):
        assert ISO.match(record["time"]) and record["type"] == type_name
        assert record["event"] == msgspec.to_builtins(decode_event(type_name, data))
    [received] = [r for r in records if r["type"] == "event.received"]
    assert received["event"]["payload"] == {"ok": True, "raw": "/wA="}  # bytes: base64
    assert GO_PAYLOAD["raw"] == b"\xff\x00"


def test_v3_json_flag_works_before_or_after_the_command(log: str) -> None:
    assert cli("--json", log, "tail", "-n", "1").records() == cli(
        log, "tail", "-n", "1", "--json").records()


def test_v4_exit_statuses_and_one_line_errors(log: str, tmp_path: Path) -> None:
    missing = cli(str(tmp_path / "nope.db"), "streams")
    assert (missing.code, missing.err) == (2, f"eventlog: {tmp_path / 'nope.db'}: no such file\n")
    (tmp_path / "text.db").write_text("hello")
    assert cli(str(tmp_path / "text.db"), "streams").code == 1
    unknown = cli(log, "workflow", "job-404")
    assert unknown.code == 1 and "no workflow 'job-404'" in unknown.err
    assert cli(log, "show", "agent:Nobody/x").code == 1
    with pytest.raises(SystemExit) as usage:
        cli(log, "frobnicate")
    assert usage.value.code == 2


# -- V5-V7: streams, show, tail, follow --------------------------------------------------------


def test_v5_streams_lists_counts_positions_times_and_status(log: str) -> None:
    records = {r["stream"]: r for r in cli(log, "streams", "--json").records()}
    expected = query(log, "SELECT stream, count(*), min(position), max(position), "
                     "min(time_us), max(time_us) FROM events GROUP BY stream")
    assert set(records) == {row[0] for row in expected}
    for stream, count, first, last, first_us, last_us in expected:
        record = records[stream]
        assert (record["events"], record["first_position"], record["last_position"],
                record["first_time_us"], record["last_time_us"]) == (
            count, first, last, first_us, last_us)
        assert record["versions_contiguous"] is True
    assert records["wf:job-1"]["status"] == "complete"
    assert records["wf:job-ctl"]["status"] == "terminated"
    assert "status" not in records["agent:TestAgent/alice"]
    assert [r["stream"] for r in cli(log, "streams", "--kind", "agent", "--json").records()
            ] == ["agent:TestAgent/alice"]
    text = cli(log, "streams").out
    assert "wf:job-fail" in text and "errored (Job)" in text and "5 stream(s)" in text


def test_v6_show_and_tail_print_decoded_events_in_order(log: str) -> None:
    top = head(log)
    assert [r["position"] for r in cli(log, "tail", "-n", "3", "--json").records()] == [
        top - 2, top - 1, top]
    alice = cli(log, "tail", "-n", "2", "--stream", "TestAgent/alice", "--json").records()
    assert [r["stream"] for r in alice] == ["agent:TestAgent/alice"] * 2
    text = cli(log, "show", "job-1").out
    consumed = position_of(log, "wf:job-1", "event.consumed")
    [line] = [x for x in text.splitlines() if x.startswith(f"{consumed} ")]
    assert "event.consumed" in line and 'name="go"' in line
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line)


def test_v6_a_damaged_row_is_flagged_and_exits_1(log: str, tmp_path: Path) -> None:
    damaged = copy(log, tmp_path / "flipped.db")
    target = position_of(damaged, "wf:job-1", "sleep.started")
    flip_byte(damaged, target)
    result = cli(damaged, "show", "job-1", "--json")
    assert result.code == 1
    flagged = [r["position"] for r in result.records() if "problem" in r]
    assert flagged == [target]
    assert "!! checksum mismatch" in cli(damaged, "show", "job-1").out
    removed = position_of(damaged, "wf:job-fail", "workflow.running")
    with raw(damaged) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (removed,))
    flagged = [(r["position"], r["problem"]) for r in
               cli(damaged, "show", "job-fail", "--json").records() if "problem" in r]
    assert flagged == [(removed + 1, f"the event before log position {removed + 1} is missing")]


async def test_v7_follow_prints_every_row_a_live_engine_commits(db: str) -> None:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows={"Job": Job},
                                   wall_clock=virtual_wall) as engine:
        alice = await engine.get_agent(TestAgent, "bob")
        start = engine.statistics().head
        buffer = io.StringIO()
        with LogSource(db) as source:
            out = Output(json=True, stream=buffer)

            def done() -> bool:
                return '"workflow.completed"' in buffer.getvalue()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: listing.follow(source, out, start, interval=10,
                                                          stop=done))
                wid = await alice.run_workflow("Job", id="followed")
                await trio.sleep(3600 + 60 + 10)
                await alice.send_workflow_event("Job", wid, {"type": "go", "payload": 1})
                await engine.wait_workflow(wid)
        printed = [r["position"] for r in _lines(buffer.getvalue())]
        assert printed == list(range(start + 1, start + 1 + len(printed)))
        assert printed[-1] >= position_of(db, "wf:followed", "workflow.completed")
        assert all("problem" not in r for r in _lines(buffer.getvalue()))


def _lines(text: str) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in text.splitlines()]


# -- V8: workflow timeline ---------------------------------------------------------------------


def test_v8_timeline_of_retries_sleep_waits_and_state(log: str) -> None:
    records = cli(log, "workflow", "job-1", "--json").records()
    steps = _steps(records)
    fetch, nap, never, go, merge = (steps[i] for i in range(5))
    assert (fetch["kind"], fetch["name"], fetch["outcome"]) == ("do", "fetch", "succeeded")
    assert [a["attempt"] for a in fetch["attempts"]] == [1, 2, 3]
    assert [a["error"]["message"] if a["error"] else None for a in fetch["attempts"]] == [
        "upstream timed out (attempt 1)", "upstream timed out (attempt 2)", None]
    assert fetch["attempts"][0]["error"]["type"] == "builtins.ConnectionError"
    assert fetch["duration_us"] == 6_000_000 and fetch["started_inferred"] is True
    assert fetch["value"] == {"rows": 3, "blob": "AAE="}
    (wake,) = query(log, "SELECT time_us FROM events WHERE position = ?",
                    position_of(log, "wf:job-1", "sleep.completed"))[0]
    assert (nap["kind"], nap["outcome"], nap["duration_us"], nap["wake_at_us"]) == (
        "sleep", "completed", 3_600_000_000, wake)
    assert (never["outcome"], never["event_type"], never["duration_us"]) == (
        "timed out", "never", 60_000_000)
    received = position_of(log, "wf:job-1", "event.received")
    assert (go["outcome"], go["event_type"], go["received_position"]) == (
        "consumed", "go", received)
    assert (merge["kind"], merge["outcome"]) == ("merge_state", "succeeded")
    changes = [(r["type"], r["status"]) for r in records if r["record"] == "status"]
    assert changes == [("workflow.started", "queued"), ("workflow.running", "running"),
                       ("workflow.completed", "complete")]
    [mail] = [r for r in records if r["record"] == "received"]
    assert (mail["position"], mail["consumed_by"]) == (received, 3)
    text = cli(log, "workflow", "job-1").out
    assert "failed: builtins.ConnectionError: upstream timed out (attempt 2)" in text
    assert f"took 'go' from position {received}" in text and "projection agrees" in text


def test_v8_timeline_of_failure_pause_restart_terminate_and_divergence(log: str) -> None:
    failed = _steps(cli(log, "workflow", "job-fail", "--json").records())[0]
    assert (failed["name"], failed["outcome"], len(failed["attempts"])) == ("broken", "failed", 2)
    assert failed["error"]["type"] == "builtins.ValueError"
    ctl = cli(log, "workflow", "job-ctl", "--json").records()
    runs = [r for r in ctl if r["record"] == "run"]
    assert [(r["run"], r["ended"]) for r in runs] == [(1, "restarted"), (2, "terminated")]
    assert [r["type"] for r in ctl if r["record"] == "status" and r["run"] == 1] == [
        "workflow.started", "workflow.running", "workflow.paused", "workflow.resumed",
        "workflow.running", "workflow.waiting"]
    assert [(r["type"], r["status"]) for r in ctl if r["record"] == "status" and r["run"] == 2
            ] == [("workflow.restarted", "queued"), ("workflow.running", "running"),
                  ("workflow.terminated", "terminated")]
    nap = _steps(ctl, 1)[1]
    assert (nap["outcome"], nap["paused_us"]) == ("in progress", 30_000_000)  # R5
    assert "cut short (restarted)" in cli(log, "workflow", "job-ctl").out
    live = cli(log, "workflow", "job-live", "--json").records()
    [blocked] = [r for r in live if r["record"] == "status" and r["type"] == "workflow.blocked"]
    assert blocked["status"] == "paused" and "at command #1" in blocked["detail"]


def test_v8_timeline_stops_at_a_damaged_row(log: str, tmp_path: Path) -> None:
    damaged = copy(log, tmp_path / "flipped.db")
    target = position_of(damaged, "wf:job-1", "wait.started", 1)
    flip_byte(damaged, target)
    result = cli(damaged, "workflow", "job-1", "--json")
    assert result.code == 1
    assert result.last()["record"] == "problem" and result.last()["position"] == target
    assert "stopped at log position" in cli(damaged, "workflow", "job-1").out


# -- V9: agent state as of a position ----------------------------------------------------------


def test_v9_agent_state_now_and_as_of_any_position(log: str) -> None:
    stream = "agent:TestAgent/alice"
    merged = position_of(log, stream, "agent.state_merged")  # the first change: into initial
    set_ = position_of(log, stream, "agent.state_set")

    def at(*extra: str) -> dict[str, Any]:
        return cli(log, "agent", "TestAgent", "alice", "--json", *extra).records()[0]

    early = at("--at", str(merged - 1))
    assert (early["exists"], early["has_state"], early["initial_state"]) == (True, False, True)
    assert "initial_state" in cli(log, "agent", "TestAgent", "alice", "--at", str(merged - 1)).out
    assert at("--at", str(merged))["state"] == {"count": 1}
    now = at()
    (stored,) = query(log, "SELECT state FROM agents WHERE agent_name = 'alice'")[0]
    assert now["state"] == decode_value(stored) == {"count": 5}
    assert (now["at"], now["state_position"], now["state_changes"]) == (head(log), set_, 2)
    history = cli(log, "agent", "TestAgent", "alice", "--history", "--json").records()
    assert [r["position"] for r in history[1:]] == [merged, set_]
    missing = cli(log, "agent", "TestAgent", "alice", "--at", "0")
    assert missing.code == 1 and "does not exist yet at position 0" in missing.out
    text = cli(log, "agent", "TestAgent", "alice").out  # the state as indented JSON lines
    assert '\n  "count": 5\n' in text and "\\n" not in text


# -- V10: stats --------------------------------------------------------------------------------


def test_v10_stats_count_types_kinds_bytes_and_rates(log: str) -> None:
    stats = cli(log, "stats", "--json").records()[0]
    by_type = dict(query(log, "SELECT type, count(*) FROM events GROUP BY type"))
    assert {k: v["events"] for k, v in stats["by_type"].items()} == by_type
    assert stats["by_kind"]["wf"]["streams"] == 4 and stats["by_kind"]["agent"]["streams"] == 1
    (events, data, first, last) = query(log, "SELECT count(*), sum(length(data)), "
                                        "min(time_us), max(time_us) FROM events")[0]
    assert (stats["events"], stats["data_bytes"]) == (events, data)
    assert stats["events_per_second"] == pytest.approx(events / ((last - first) / 1e6))
    assert stats["workflows"] == {"complete": 1, "errored": 1, "paused": 1, "terminated": 1}
    assert stats["files"]["database"] > 0 and stats["pages"]["page_size"] > 0
    text = cli(log, "stats").out
    assert "by event type" in text and "step.attempt_failed" in text


# -- V16: check --------------------------------------------------------------------------------


def test_v16_check_replays_unfinished_workflows_read_only(log: str) -> None:
    before = digest(log)
    ok = cli(log, "check", "tests.eventlog_factory:jobs", "--json")
    assert ok.code == 0
    [verdict] = [r for r in ok.records() if r["record"] == "check"]
    assert (verdict["workflow_id"], verdict["verdict"]) == ("job-live", "ok")
    changed = cli(log, "check", "tests.eventlog_factory:jobs_changed")
    assert changed.code == 1 and "diverged" in changed.out and "command #1" in changed.out
    assert "NOT safe to deploy" in changed.out
    assert digest(log) == before


def test_v16_check_on_the_golden_histories(tmp_path: Path) -> None:
    good, bad = str(tmp_path / "good.db"), str(tmp_path / "bad.db")
    golden.load("in-flight.jsonl", good)
    golden.load("divergent.jsonl", bad)
    golden.LEDGER.clear()
    assert cli(good, "check", "tests.eventlog_factory:golden_engine").code == 0
    diverged = cli(bad, "check", "tests.eventlog_factory:golden_engine_async", "--json")
    assert diverged.code == 1
    assert diverged.records()[0]["verdict"] == "diverged"
    assert "step.do('charge-card')" in diverged.records()[0]["message"]
    orphan = cli(good, "check", "tests.eventlog_factory:OTHER_BINDING", "--json")
    assert orphan.code == 0 and orphan.records()[0]["verdict"] == "orphan"
    assert cli(good, "check", "tests.eventlog_factory:OTHER_BINDING", "--strict").code == 1
    assert golden.LEDGER == []  # no step ran


@pytest.mark.parametrize(("spec", "message"), [
    ("tests.eventlog_factory", "MODULE:NAME"),
    ("tests.eventlog_factory:nothing", "has no attribute 'nothing'"),
    ("tests.no_such_module:x", "cannot import 'tests.no_such_module'"),
    ("tests.eventlog_factory:NO_AGENTS", "gives no agents"),
    ("tests.eventlog_factory:NOT_A_DICT", "must be (or return) a dict"),
])
def test_v16_a_factory_that_cannot_be_used_is_exit_2(log: str, spec: str, message: str) -> None:
    result = cli(log, "check", spec)
    assert result.code == 2 and message in result.err and result.err.count("\n") == 1


# -- V17: export -------------------------------------------------------------------------------


def test_v17_export_jsonl_holds_every_row(log: str) -> None:
    records = cli(log, "export").records()
    rows = query(log, "SELECT position, stream, stream_position, time_us, type, data, hash "
                 "FROM events ORDER BY position")
    assert len(records) == len(rows)
    for record, (position, stream, version, time_us, type_name, data, digest_) in zip(
            records, rows, strict=True):
        assert (record["position"], record["stream"], record["stream_position"],
                record["time_us"], record["type"], record["hash"]) == (
            position, stream, version, time_us, type_name, digest_.hex())
        assert record["event"] == msgspec.to_builtins(decode_event(type_name, data))
        assert base64.b64decode(record["data"]) == data  # lossless
    window = cli(log, "export", "--stream", "job-fail", "--after", "22", "--until", "25")
    assert {r["stream"] for r in window.records()} == {"wf:job-fail"}
    assert all(22 < r["position"] <= 25 for r in window.records())


def test_v17_export_golden_replays_into_the_same_events(log: str, tmp_path: Path) -> None:
    out = tmp_path / "history.jsonl"
    assert cli(log, "export", "--format", "golden", "-o", str(out)).code == 0
    again = str(tmp_path / "again.db")
    golden.load(str(out), again)  # an absolute name: HISTORIES / name is that path
    columns = "SELECT stream, stream_position, time_us, type, data FROM events ORDER BY position"
    replayed, original = query(again, columns), query(log, columns)
    assert [r[:4] for r in replayed] == [r[:4] for r in original]
    for (*_, type_name, data), (*_, _, data_before) in zip(replayed, original, strict=True):
        # JSON values only: bytes come back as their base64 text (as in every golden file)
        assert msgspec.to_builtins(decode_event(type_name, data)) == msgspec.to_builtins(
            decode_event(type_name, data_before))


# -- V18: rebuild-projections ------------------------------------------------------------------


def test_v18_rebuild_restores_projections_and_never_writes_events(log: str, tmp_path: Path
                                                                  ) -> None:
    path = copy(log, tmp_path / "edited.db")
    with raw(path) as conn:
        conn.execute("UPDATE workflows SET status = 'running' WHERE workflow_id = 'job-1'")
        conn.execute("DELETE FROM agents")
    assert cli(path, "verify").code == 1
    events = query(path, "SELECT * FROM events ORDER BY position")
    result = cli(path, "rebuild-projections", "--json")
    assert result.code == 0
    assert (result.last()["workflows"], result.last()["agents"]) == (4, 1)
    assert cli(path, "verify").code == 0
    assert query(path, "SELECT * FROM events ORDER BY position") == events


async def test_v18_rebuild_refuses_while_an_engine_holds_the_log(db: str) -> None:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows={"Job": Job},
                                   wall_clock=virtual_wall):
        result = cli(db, "rebuild-projections")
    assert result.code == 2
    assert result.err.startswith("eventlog: cannot rebuild the projections:")
    assert "already open for writing by pid" in result.err


def test_v18_rebuild_refuses_to_hide_a_cut_tail_unless_forced(log: str, tmp_path: Path) -> None:
    path = copy(log, tmp_path / "cut.db")
    top = head(path)
    with raw(path) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (top,))
    refused = cli(path, "rebuild-projections")
    assert refused.code == 2 and f"positions {top}..{top} were cut" in refused.err
    assert cli(path, "rebuild-projections", "--force").code == 0


# -- V3a: what a log holds is printed, never obeyed by the terminal -------------------------

HOSTILE = "\x1b[2J\x1b[31mboom\r\nfaked line\x07\u202eevil\u2028\x9b"
_RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class Hostile(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        def fail() -> None:
            raise eventwf.NonRetryableError(HOSTILE)

        await step.do("echo", lambda: {"text": HOSTILE})
        await step.do("fail", fail)


async def _hostile_log(path: str) -> None:
    async with eventwf.open_engine(path, agents=[TestAgent], workflows=[Hostile],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("Hostile", {"note": HOSTILE}, id="hostile")
        assert (await engine.wait_workflow("hostile")).status == "errored"


@pytest.mark.parametrize("command", [["show", "hostile"], ["workflow", "hostile"],
                                     ["tail", "-n", "50"], ["streams"], ["verify"],
                                     ["show", "wf:" + HOSTILE]])
def test_v3a_control_characters_from_the_log_are_escaped_in_text_output(
        tmp_path: Path, command: list[str]) -> None:
    path = str(tmp_path / "hostile.db")
    trio.run(_hostile_log, path, clock=trio.testing.MockClock(autojump_threshold=0))
    result = cli(path, *command)
    lines = (result.out + result.err).splitlines()
    assert lines and not [line for line in lines if _RAW.search(line)], lines
    if command[0] in ("show", "workflow", "tail") and command[1:] != ["wf:" + HOSTILE]:
        assert "\\x1b[2J\\x1b[31mboom\\r\\nfaked line" in result.out
    if command[1:] == ["wf:" + HOSTILE]:
        assert result.code == 1 and "\\x1b[2J" in result.err
