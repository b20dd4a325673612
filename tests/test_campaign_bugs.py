"""Engine bugs the crash and fault campaign found (B1-B8), each as a focused test of the
correct behaviour; all are fixed (specs/guarantees.md lists them). A new bug goes here as
``xfail(strict=True)`` until it is fixed, with its symptom in ``checker.KNOWN_BUGS``.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

import eventwf
from eventwf.errors import StorageError
from tests.wfkit import virtual_wall

# -- B1 --------------------------------------------------------------------------------------

deliveries: list[str] = []
hook_returned: list[trio.Event] = []


class HookAgent(eventwf.Agent):
    initial_state: Any = {}

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str,
                                   result: Any) -> None:
        deliveries.append(workflow_id)
        if hook_returned:
            hook_returned[0].set()


class OneStep(eventwf.AgentWorkflow[HookAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("x", lambda: 1)


async def test_b1_a_clean_close_never_redelivers_a_callback(db: str) -> None:
    deliveries.clear()
    hook_returned[:] = [trio.Event()]
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        await agent.run_workflow("OneStep", id="w")
        await hook_returned[0].wait()  # the hook returned; leave the engine now
    hook_returned.clear()
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                   wall_clock=virtual_wall):
        await trio.sleep(5)
    assert deliveries == ["w"]


# -- B2 --------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (skipped without root to mount it), unmounted afterwards."""
    path = tmp_path / "disk"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"needs a tmpfs (mount -t tmpfs needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                               wall_clock=virtual_wall)


async def _one_finished_workflow(engine: eventwf.Engine) -> None:
    agent = await engine.get_agent(HookAgent, "a")
    await engine.wait_workflow(await agent.run_workflow("OneStep"))


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as handle:
        for size in (65536, 512, 1):
            try:
                while True:
                    handle.write(b"\xa5" * size)
            except OSError:
                pass


async def test_b2_closing_on_a_full_disk_releases_the_log(small_disk: Path) -> None:
    db = str(small_disk / "log.db")
    try:
        async with _open(db) as engine:
            await _one_finished_workflow(engine)
            _fill(small_disk / "balloon")
    except StorageError:
        pass  # refusing to close cleanly is fine; raising anything else is not
    finally:
        if (small_disk / "balloon").exists():
            os.remove(small_disk / "balloon")
    async with _open(db) as engine:
        assert engine.statistics().head > 0


async def test_b6_opening_on_a_full_disk_raises_storage_error(small_disk: Path) -> None:
    db = str(small_disk / "log.db")
    async with _open(db) as engine:
        await _one_finished_workflow(engine)
    _fill(small_disk / "balloon")
    with pytest.raises(StorageError):
        async with _open(db):
            pass  # pragma: no cover


# -- B3 --------------------------------------------------------------------------------------

class Nap(eventwf.AgentWorkflow[HookAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", 4136.605)  # due at trio time 4136.605 exactly
        return "woke"


class _Livelock(trio.abc.Instrument):
    """Cancels ``scope`` when the run loop keeps polling at one instant without blocking."""

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.spins = 0
        self.at = -1.0

    def before_io_wait(self, timeout: float) -> None:
        now = trio.current_time()
        self.spins = self.spins + 1 if (timeout == 0 and now == self.at) else 0
        self.at = now
        if self.spins > 20_000:
            self.scope.cancel()


async def test_b3_a_hibernated_timer_wakes_under_mockclock(db: str) -> None:
    status = "livelocked: the run loop spun at one instant and the sleep never ended"
    with trio.CancelScope() as guard:
        watchdog = _Livelock(guard)
        trio.lowlevel.add_instrument(watchdog)
        try:
            async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Nap],
                                           wall_clock=virtual_wall, hibernate_after=1) as engine:
                agent = await engine.get_agent(HookAgent, "a")
                info = await engine.wait_workflow(await agent.run_workflow("Nap"))
                status = info.status
        finally:
            trio.lowlevel.remove_instrument(watchdog)
    assert status == "complete"


# -- B4 --------------------------------------------------------------------------------------


class Waits(eventwf.AgentWorkflow[HookAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("one", lambda: 1)
        await step.wait_for_event("go", type="go", timeout="30 days")
        return "done"


async def _reopened(db: str, *ids: str) -> list[Any]:
    """The summaries of ``ids`` after opening the (damaged) log again."""
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Waits],
                                   wall_clock=virtual_wall, hibernate_after=None) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        return [await agent.get_workflow(wid) for wid in ids]


async def test_b4_a_row_with_invalid_utf8_text_quarantines_only_its_workflow(db: str) -> None:
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Waits],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        for wid in ("bad", "good"):
            await agent.run_workflow("Waits", id=wid)
        await trio.sleep(1)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    position, type_name, data, digest = conn.execute(
        "SELECT position, type, data, hash FROM events WHERE stream = 'wf:bad' AND "
        "type = 'step.succeeded'").fetchone()
    conn.close()
    raw = bytearray(Path(db).read_bytes())
    at = raw.find(type_name.encode() + data + digest)
    raw[at + 2] ^= 0x80  # "step..." -> "st\xe5p...": no longer UTF-8
    Path(db).write_bytes(bytes(raw))
    bad, good = await _reopened(db, "bad", "good")
    assert bad is not None and bad.status == "unknown"
    assert f"position {position}" in (bad.error_message or "")
    assert good is not None and good.status == "waiting"


# -- B5 --------------------------------------------------------------------------------------

_B5_SETTER = """
import os, signal, sys, trio
import eventwf
from eventwf.errors import StorageError
from tests.wfkit import TestAgent

async def main(db):
    async with eventwf.open_engine(db, agents=[TestAgent]) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        for n in range(1, 50):
            try:
                await agent.set_state({"n": n})
            except StorageError as exc:  # "nothing of it is in the log" (specs/log.md L10)
                print("FAILED", n, exc.fatal, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # the process dies before its next commit

trio.run(main, sys.argv[1])
"""


def test_b5_an_fsync_error_on_commit_is_reported_as_an_unknown_outcome(
        tmp_path: Path) -> None:
    """B5 (fixed): fdatasync -> EIO on COMMIT leaves the WAL frames written, so the commit may
    come back after a crash; the caller must be told the outcome is unknown (fatal), not that
    nothing landed, and the store refuses further commits until the log is reopened."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace (apt-get install strace) to fail one fdatasync with EIO")
    db = str(tmp_path / "log.db")

    async def create() -> None:
        async with eventwf.open_engine(db, agents=[HookAgent]):
            pass

    trio.run(create)
    # the 6th fdatasync of the WAL after the reopen is the commit of an early set_state
    result = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-P", db + "-wal", "-e", "trace=fdatasync",
         "-e", "inject=fdatasync:error=EIO:when=6", sys.executable, "-c", _B5_SETTER, db],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60)
    failed = [line.split() for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and failed[0][2] == "True", result.stdout + result.stderr[-2000:]
    n = int(failed[0][1])
    conn = sqlite3.connect(db)
    states = [msgspec.msgpack.decode(data)["state"]["n"] for (data,) in conn.execute(
        "SELECT data FROM events WHERE type = 'agent.state_set' ORDER BY position")]
    conn.close()
    assert states == list(range(1, len(states) + 1)) and len(states) in (n - 1, n)


# -- B7 --------------------------------------------------------------------------------------


async def test_b7_a_damaged_hash_quarantines_only_its_own_workflow(db: str) -> None:
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Waits],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        await agent.run_workflow("Waits", id="first")
        await trio.sleep(1)  # "first" is waiting: its last row is wait.started
        await agent.run_workflow("Waits", id="second")  # the very next row
        await trio.sleep(1)
    conn = sqlite3.connect(db)
    position, digest = conn.execute("SELECT position, hash FROM events WHERE stream = "
                                    "'wf:first' ORDER BY position DESC LIMIT 1").fetchone()
    (following,) = conn.execute("SELECT stream FROM events WHERE position = ?",
                                (position + 1,)).fetchone()
    assert following == "wf:second"
    with conn:  # one flipped bit in the stored hash of "first"'s last row
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET hash = ? WHERE position = ?",
                     (bytes([digest[0] ^ 1]) + digest[1:], position))
    conn.close()
    first, second = await _reopened(db, "first", "second")
    assert first is not None and first.status == "unknown"
    assert f"position {position} " in (first.error_message or "")
    assert second is not None and second.status == "waiting", second


# -- B8 --------------------------------------------------------------------------------------


class MergeTogether(eventwf.AgentWorkflow[HookAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("together", 1)  # every run wakes in the same instant
        await step.merge_agent_state({self.workflow_id: 1})
        return "merged"


async def test_b8_two_first_merges_in_one_instant_both_survive(db: str) -> None:
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[MergeTogether],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        ids = [await agent.run_workflow("MergeTogether", id=f"m{i}") for i in range(2)]
        for wid in ids:
            await engine.wait_workflow(wid)
        assert agent.state == {"m0": 1, "m1": 1}
