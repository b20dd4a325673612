"""The ``eventwf`` command (tools.md V0, V1) and ``eventwf log PATH backup OUT`` (V19).

Parsing and dispatch run in-process; the installed wheel is tested in tests/test_wheel.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import eventwf
import eventwf.__main__ as command
from eventwf.logtool.cli import COMMANDS
from eventwf.store.sqlite import backup
from tests.eventlog_kit import build, cli, digest, head, query
from tests.wfkit import TestAgent

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("cli") / "app.db")


# -- V0: one command: demo, example, log, console -------------------------------------------


def test_v0_help_lists_demo_example_log_and_console(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        command.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: eventwf ")
    for name in ("demo", "example", "log", "console"):
        assert f"\n    {name} " in out, name


@pytest.mark.parametrize("argv", [["console"], ["frobnicate"], []])
def test_v0_an_unknown_or_missing_command_is_a_usage_error(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        command.main(argv)
    assert exit_.value.code == 2
    assert "usage: eventwf " in capsys.readouterr().err


def test_v0_demo_and_example_get_their_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(command._demo, "main", lambda *a: calls.append(("demo", *a)) or 0)
    monkeypatch.setattr(command._example, "main", lambda *a: calls.append(("example", *a)))
    assert command.main(["demo"]) == 0
    url = "postgresql://app@db.example:5432/app"
    assert command.main(["demo", "--host", "0.0.0.0", "--port", "0", "--db", url,
                         "--lease-ttl", "4"]) == 0
    assert command.main(["example", "--db", "x.db"]) == 0
    assert calls == [("demo", "eventwf-demo.db", "127.0.0.1", 8080, 1.5, 15.0),
                     ("demo", url, "0.0.0.0", 0, 1.5, 4.0),
                     ("example", "x.db")]


def test_v0_log_hands_the_rest_to_the_log_tool(log: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert command.main(["log", log, "verify"]) == 0
    assert "INTACT" in capsys.readouterr().out
    assert command.main(["log", "--json", log, "workflow", "job-404"]) == 1
    assert "no workflow 'job-404'" in capsys.readouterr().err
    for argv in (["log"], ["log", log], ["log", log, "frobnicate"]):
        with pytest.raises(SystemExit) as exit_:
            command.main(argv)
        assert exit_.value.code == 2, argv
        assert "usage: eventwf log " in capsys.readouterr().err


def test_v0_log_help_names_every_command_with_the_installed_name(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        command.main(["log", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: eventwf log ")
    assert all(name in out for name in COMMANDS) and "backup" in COMMANDS


def test_v0_python_m_eventwf_and_the_tools_shim_are_the_same_tool(log: str) -> None:
    runs = [subprocess.run([sys.executable, "-m", module, *argv, log, "stats", "--json"],
                           cwd=ROOT, capture_output=True, text=True, check=False)
            for module, argv in (("eventwf", ["log"]), ("tools.eventlog", []))]
    assert [r.returncode for r in runs] == [0, 0], runs
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout
    shim = subprocess.run([sys.executable, "-m", "tools.eventlog", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert shim.stdout.startswith("usage: python -m tools.eventlog ")


# -- V1, V20: a PostgreSQL URL ---------------------------------------------------------------


def test_v20_commands_for_sqlite_files_refuse_a_url_and_keep_the_password(tmp_path: Path
                                                                          ) -> None:
    url = "postgresql://app:s3cret@db.example:5432/app"
    copy = cli(url, "backup", str(tmp_path / "out.db"))
    assert copy.code == 2 and "pg_dump" in copy.err and "SQLite" in copy.err
    rebuild = cli(url, "rebuild-projections")
    assert rebuild.code == 2 and "PostgreSQL" in rebuild.err and "projections" in rebuild.err
    assert "s3cret" not in copy.err + rebuild.err
    assert not (tmp_path / "out.db").exists()


def test_v20_check_on_a_server_that_cannot_be_reached_is_exit_1_without_the_password(
        ) -> None:
    pytest.importorskip("psycopg")
    check = cli("postgresql://app:s3cret@127.0.0.1:1/app", "check",
                "tests.eventlog_factory:jobs")
    assert check.code == 1 and "app:***@127.0.0.1:1" in check.err
    assert "s3cret" not in check.out + check.err


def test_v20_a_server_that_cannot_be_reached_is_exit_1_without_the_password() -> None:
    pytest.importorskip("psycopg")
    shown = cli("postgresql://app:s3cret@127.0.0.1:1/app", "stats")
    assert shown.code == 1 and "app:***@127.0.0.1:1" in shown.err
    assert "s3cret" not in shown.err


# -- V19: backup ------------------------------------------------------------------------------


def _rows(path: str, until: int | None = None) -> list[tuple[Any, ...]]:
    return query(path, "SELECT position, stream, stream_position, time_us, type, data, hash "
                 "FROM events WHERE position <= ? ORDER BY position",
                 until if until is not None else 1 << 62)


def test_v19_backup_copies_the_log_and_the_copy_verifies_intact(log: str,
                                                                tmp_path: Path) -> None:
    before = digest(log)
    out = tmp_path / "copy.db"
    made = cli(log, "backup", str(out))
    assert made.code == 0, made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]  # no partial, no -wal
    assert made.out.startswith(f"backed up {log} to {out}: positions 1-{head(log)}, ")
    assert _rows(str(out)) == _rows(log)
    assert cli(str(out), "verify").code == 0
    assert digest(log) == before  # the source is only read
    again = cli(log, "--json", "backup", str(tmp_path / "json.db"))
    assert again.code == 0 and again.last()["record"] == "backup"
    assert again.last()["head"] == head(log)


@pytest.mark.parametrize("existing", ["", "-wal", "-shm", "-journal"])
def test_v19_backup_never_overwrites(log: str, tmp_path: Path, existing: str) -> None:
    out = tmp_path / "copy.db"
    Path(str(out) + existing).write_bytes(b"keep me")
    refused = cli(log, "backup", str(out))
    assert refused.code == 2 and "already exists" in refused.err, refused
    assert refused.err.startswith(f"eventlog: {out}{existing} already exists")
    assert Path(str(out) + existing).read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"copy.db{existing}"]


def test_v19_backup_errors_say_what_is_wrong(log: str, tmp_path: Path) -> None:
    missing = cli(str(tmp_path / "nope.db"), "backup", str(tmp_path / "out.db"))
    assert missing.code == 2 and "no such file" in missing.err
    (tmp_path / "text.db").write_text("hello")
    assert cli(str(tmp_path / "text.db"), "backup", str(tmp_path / "out.db")).code == 1
    nowhere = cli(log, "backup", str(tmp_path / "no" / "dir" / "out.db"))
    assert nowhere.code == 2 and "cannot write the backup" in nowhere.err
    assert not (tmp_path / "out.db").exists()


def test_v19_a_log_sqlite_cannot_read_is_damaged_and_leaves_no_copy(log: str,
                                                                     tmp_path: Path) -> None:
    data = Path(log).read_bytes()
    cut = tmp_path / "cut.db"
    cut.write_bytes(data[: len(data) // 2])  # a truncated file: pages are missing
    copy = tmp_path / "copy" / "out.db"
    copy.parent.mkdir()
    refused = cli(str(cut), "backup", str(copy))
    assert refused.code == 1 and "run `verify`" in refused.err, refused
    assert list(copy.parent.iterdir()) == []


def test_v19_a_copy_of_the_file_alone_loses_what_the_wal_holds_and_backup_does_not(
        tmp_path: Path) -> None:
    """The README's warning, shown: an open engine's commits sit in its -wal."""
    db = str(tmp_path / "live.db")

    async def main() -> None:
        async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Counter]) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            await engine.wait_workflow(await agent.run_workflow("Counter", {"n": 20}))
            shutil.copyfile(db, tmp_path / "cp.db")  # what `cp app.db` would take
            backup(db, str(tmp_path / "backup.db"))

    trio.run(main)
    # far below SQLite's 1,000-page auto-checkpoint: the workflow's commits were in the -wal
    copied = _rows(str(tmp_path / "cp.db"))
    assert len(copied) < len(_rows(db)) and copied == _rows(db, len(copied))
    assert not any(stream.startswith("wf:") for _, stream, *_ in copied)
    saved = _rows(str(tmp_path / "backup.db"))  # (a callback may be logged after it)
    assert saved == _rows(db, len(saved)) and "workflow.completed" in [r[4] for r in saved]


class Counter(eventwf.AgentWorkflow[TestAgent]):
    """``n`` durable steps; then, if asked, waits for ``more`` and takes ``n`` more."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        total = 0
        for i in range(event.payload["n"]):
            total += await step.do(f"add {i}", lambda i=i: i)
        if event.payload.get("more"):
            await step.wait_for_event("more", type="more", timeout="1 hour")
            for i in range(event.payload["n"]):
                total += await step.do(f"again {i}", lambda i=i: i)
        return total


@pytest.mark.realtime
async def test_v19_backups_taken_while_an_engine_writes_are_consistent_prefixes(
        tmp_path: Path) -> None:
    db = str(tmp_path / "live.db")
    copies: list[tuple[str, int]] = []
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Counter]) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await engine.wait_workflow(await agent.run_workflow("Counter", {"n": 10}))
        committed = head(db)
        ids = [await agent.run_workflow("Counter", {"n": 150, "more": True}) for _ in range(4)]
        for i in range(5):  # while the four workflows commit their first 150 steps each
            target = str(tmp_path / f"copy-{i}.db")
            report = await trio.to_thread.run_sync(backup, db, target)
            copies.append((target, report.head))
        for workflow_id in ids:
            await agent.send_workflow_event("Counter", workflow_id, {"type": "more",
                                                                     "payload": None})
        for workflow_id in ids:
            assert (await engine.wait_workflow(workflow_id)).status == "complete"
    final = head(db)
    for target, copied in copies:
        assert committed <= copied < final
        assert _rows(target) == _rows(db, copied)  # the log as of one commit
        assert cli(target, "verify").code == 0  # events and projections agree
        async with eventwf.open_engine(target) as reopened:  # no code: all left untouched
            assert reopened is not None
        assert cli(target, "verify").code == 0
