"""One writer per log file, however its path is spelled (specs/log.md L11, L11a).

The lock is on the file (device and inode): a symlink, a hard link, a relative or a
dotted path to a held log is refused, in this process and from another one; and every
connection opens the log by one name, so a hard link never reads past the WAL of the name
the writer used.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import eventwf
from eventwf.errors import LogLockedError
from eventwf.model import events as ev
from eventwf.model.codec import encode_event, event_type
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore
from tests.wfkit import TestAgent, virtual_wall

ROOT = Path(__file__).resolve().parent.parent


def _spell(real: Path, how: str) -> str:
    """Another path to the file ``real``."""
    if how == "symlink":
        link = real.with_name("link.db")
        link.symlink_to(real.name)
        return str(link)
    if how == "hardlink":
        hard = real.with_name("hard.db")
        os.link(real, hard)
        return str(hard)
    if how == "relative":
        return os.path.relpath(real)
    return str(real.parent / ".." / real.parent.name / real.name)  # dotted


SPELLINGS = ["symlink", "hardlink", "relative", "dotted"]


@pytest.mark.parametrize("how", SPELLINGS)
def test_l11_a_second_writer_in_this_process_is_refused_however_the_path_is_spelled(
        tmp_path: Path, how: str) -> None:
    real = tmp_path / "log.db"
    holder = SQLiteStore(str(real))
    try:
        with pytest.raises(LogLockedError, match=rf"pid {os.getpid()} .*\(this process\)"):
            SQLiteStore(_spell(real, how))
        row = PendingRow("wf:a", 0, 1, event_type(ev.WorkflowRunning()),
                         encode_event(ev.WorkflowRunning()))
        assert holder.commit([row]) == [1]  # the refusal did not disturb the holder
    finally:
        holder.close()
    reopened = SQLiteStore(_spell(real, how) if how in ("relative", "dotted") else str(real))
    assert reopened.head == 1
    reopened.close()


_HOLD = """
import sys
from eventwf.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
print("held", flush=True)
sys.stdin.read()
store.close()
"""


@pytest.mark.parametrize("how", SPELLINGS)
def test_l11_a_writer_in_another_process_is_refused_however_the_path_is_spelled(
        tmp_path: Path, how: str) -> None:
    real = tmp_path / "log.db"
    SQLiteStore(str(real)).close()
    other = _spell(real, how)
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(real)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "held\n"
        with pytest.raises(LogLockedError, match=f"by pid {child.pid} on "):
            SQLiteStore(other)
    finally:
        child.communicate("")
    SQLiteStore(other).close()  # the holder is gone: the lock is free


class Counted(eventwf.AgentWorkflow[TestAgent]):
    """Runs one step, then waits for an event that never comes."""

    runs: list[str] = []

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("effect", lambda: Counted.runs.append(self.workflow_id) or 1)
        await step.wait_for_event("hold", type="never")


def _engine(path: str) -> Any:
    return eventwf.open_engine(path, agents=[TestAgent], workflows=[Counted],
                               wall_clock=virtual_wall)


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
async def test_l11_a_second_engine_in_this_process_runs_no_logged_step_again(
        tmp_path: Path, how: str) -> None:
    real = tmp_path / "log.db"
    Counted.runs = []
    async with _engine(str(real)) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("Counted", id="w")
        while (info := await agent.get_workflow("w")) is None or info.status != "waiting":
            await trio.sleep(0.01)  # MockClock: until the step ran and the wait began
        other = _spell(real, how)
        with pytest.raises(LogLockedError, match="already open for writing"):
            async with _engine(other):
                pass
    assert Counted.runs == ["w"]
    async with _engine(other) as engine:  # after the close, that path opens the same log
        info = await (await engine.get_agent(TestAgent, "a")).get_workflow("w")
        assert info is not None and info.status == "waiting"
    assert Counted.runs == ["w"]


_CRASH = """
import os, sys
from eventwf.model import events as ev
from eventwf.model.codec import encode_event, event_type
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
event = ev.WorkflowRunning()
for version in range(5):
    store.commit([PendingRow("wf:x", version, 1, event_type(event), encode_event(event))])
os.kill(os.getpid(), 9)
"""


def _killed_writer(path: str) -> None:
    done = subprocess.run([sys.executable, "-c", _CRASH, path], cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL


@pytest.mark.parametrize("link", ["before the crash", "after the crash"])
def test_l11a_a_hard_link_reads_the_wal_its_writer_left(tmp_path: Path, link: str) -> None:
    """SQLite names the WAL after the path: the log's home name finds it from any link."""
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    SQLiteStore(str(a)).close()
    make: Callable[[], None] = lambda: os.link(a, b)  # noqa: E731
    if link == "before the crash":
        make()
    _killed_writer(str(a))
    assert (tmp_path / "a.db-wal").stat().st_size > 0  # the commits are in a's WAL only
    if link == "after the crash":
        make()
    reader = SQLiteStore(str(b), readonly=True)
    assert reader.head == 5 and reader.path == str(a)
    reader.close()
    store = SQLiteStore(str(b))
    assert store.head == 5 and len(store.read_stream("wf:x")) == 5
    store.close()
    assert not (tmp_path / "b.db-wal").exists()


def _posix_locks(path: str) -> list[list[str]]:
    """This process's POSIX locks on ``path`` (kind, mode, range), from /proc/locks, whose
    lines read ``N: POSIX ADVISORY WRITE PID MAJOR:MINOR:INODE START END``: matched on
    the pid and the whole device:inode, not the inode alone (another process's lock on
    another file of that inode number, on another device, is not ours)."""
    st = os.stat(path)
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pid = str(os.getpid())
    found = []
    with open("/proc/locks") as handle:
        for line in handle:
            fields = line.split(":", 1)[1].split()
            if fields[0] == "POSIX" and fields[3] == pid and fields[4] == file_id:
                found.append([fields[0], fields[2], *fields[5:7]])
    return found


@pytest.mark.skipif(not os.path.exists("/proc/locks"), reason="needs Linux's /proc/locks")
async def test_inspecting_a_log_in_the_process_that_writes_it_keeps_its_locks(db: str) -> None:
    # closing any descriptor of a file drops every POSIX lock this process holds on it,
    # SQLite's included (a plain open()/close() of the log here did): the log tool's own
    # reads keep such descriptors open until the engine lets the file go
    import eventwf
    from eventwf.logtool.source import LogSource, read_header

    async with eventwf.open_engine(db) as engine:
        before = _posix_locks(db)
        assert before, "SQLite holds a POSIX lock on the log while it is open"
        read_header(db)
        LogSource(db).conn.close()
        assert _posix_locks(db) == before
        assert engine.statistics().head >= 0
