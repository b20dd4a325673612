"""Engine bugs the crash and fault campaign found, each as a focused test of the correct
behaviour, marked ``xfail(strict=True)`` until it is fixed (specs/guarantees.md lists them).

When one of these starts passing, strict xfail fails the suite on purpose: remove the
marker, and remove the bug's entry from ``tests/campaign/checker.KNOWN_BUGS`` (and the
workaround noted where the campaigns avoid it).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
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


@pytest.mark.xfail(strict=True, reason=(
    "BUG B1: leaving open_engine right after an agent hook returned drops the hook's "
    "CallbacksDelivered mark: AgentHost._dispatch (eventwf/_agents.py) queues the mark with "
    "the writer, the close cancels Writer.run (eventwf/_writer.py) whose finally fails the "
    "queued request, so the next open delivers the callback again, although no crash "
    "happened (specs/agents.md C4)"))
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


def _tmpfs(path: Path) -> None:
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"needs a tmpfs (mount -t tmpfs needs root): {result.stderr.strip()}")


def _fill(path: Path) -> None:
    with open(path, "wb", buffering=0) as handle:
        for size in (65536, 512, 1):
            try:
                while True:
                    handle.write(b"\xa5" * size)
            except OSError:
                pass


@pytest.mark.xfail(strict=True, reason=(
    "BUG B2: closing an engine while the disk is full raises a raw sqlite3.OperationalError "
    "('database or disk is full', from Store._mark_verified's COMMIT) or OSError (from "
    "anchor.write_anchor) out of open_engine, and Store.close (eventwf/_store/store.py) then "
    "skips conn.close() and WriterLock.release(): once space is back, reopening the log in "
    "the same process raises LogLockedError naming this very process"))
async def test_b2_closing_on_a_full_disk_releases_the_log(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _tmpfs(disk)
    db = str(disk / "log.db")
    try:
        try:
            async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                           wall_clock=virtual_wall) as engine:
                agent = await engine.get_agent(HookAgent, "a")
                await engine.wait_workflow(await agent.run_workflow("OneStep"))
                _fill(disk / "balloon")
        except StorageError:
            pass  # refusing to close cleanly is fine; raising anything else is not
        finally:
            if (disk / "balloon").exists():
                os.remove(disk / "balloon")
        async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                       wall_clock=virtual_wall) as engine:
            assert engine.statistics().head > 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.xfail(strict=True, reason=(
    "BUG B6: opening a log on a full disk (or with an I/O error) lets a raw "
    "sqlite3.OperationalError ('disk I/O error', 'database or disk is full') escape from "
    "open_engine: Store.__init__ (eventwf/_store/store.py) wraps only the genesis read into "
    "StorageError, not connect()/create_schema() (eventwf/_store/schema.py) nor the "
    "verification mark; callers cannot tell a storage failure from a bug"))
async def test_b6_opening_on_a_full_disk_raises_storage_error(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    _tmpfs(disk)
    db = str(disk / "log.db")
    try:
        async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                       wall_clock=virtual_wall) as engine:
            agent = await engine.get_agent(HookAgent, "a")
            await engine.wait_workflow(await agent.run_workflow("OneStep"))
        _fill(disk / "balloon")
        with pytest.raises(StorageError):
            async with eventwf.open_engine(db, agents=[HookAgent], workflows=[OneStep],
                                           wall_clock=virtual_wall):
                pass  # pragma: no cover
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


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


@pytest.mark.xfail(strict=True, reason=(
    "BUG B3: the hibernation wake-up loop can spin forever without blocking: Clock.now_us "
    "(eventwf/_clock.py) truncates with int(), so at trio time Clock.trio_time(W) it may "
    "read W-1 us; Wakeups.run (eventwf/_timers.py) then finds nothing due, sets "
    "move_on_at(trio_time(W)), a deadline already reached, and loops. Under "
    "MockClock(autojump_threshold=0) time never advances again: the engine livelocks at "
    "100% CPU (here: a hibernated 4136.605 s sleep); in real time it busy-waits until the "
    "clock ticks over"))
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


@pytest.mark.xfail(strict=True, reason=(
    "BUG B4: one flipped bit that makes a TEXT column (events.type or events.stream) invalid "
    "UTF-8 stops the whole engine from opening: read_stream (eventwf/_store/log.py) lets "
    "sqlite3.OperationalError('Could not decode to UTF-8 column ...') escape from "
    "start_runner during recovery (and would crash the writer when a hibernated workflow is "
    "woken), instead of quarantining only that workflow with CorruptLogError naming the "
    "position (specs/replay.md R7, specs/log.md L4)"))
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
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Waits],
                                   wall_clock=virtual_wall, hibernate_after=None) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        bad, good = await agent.get_workflow("bad"), await agent.get_workflow("good")
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


@pytest.mark.xfail(strict=True, reason=(
    "BUG B5: an fsync failure on COMMIT (fdatasync -> EIO, SQLITE_IOERR_FSYNC) is reported as "
    "a clean failure (StorageError with fatal=False: 'could not commit ...'), but SQLite has "
    "already written the transaction's WAL frames; Store._landed (eventwf/_store/store.py) "
    "reads max(position) through the same connection, whose rolled-back WAL index cannot see "
    "them. If the process dies before its next commit overwrites them, WAL recovery on the "
    "next open brings the 'failed' transaction back: an operation its caller was told failed "
    "is in the log (specs/log.md L10; plan R4: treat IOERR_FSYNC as an unknown outcome)"))
def test_b5_a_commit_reported_failed_after_an_fsync_error_never_reappears(
        tmp_path: Path) -> None:
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
    assert failed and failed[0][2] == "False", result.stdout + result.stderr[-2000:]
    n = int(failed[0][1])
    conn = sqlite3.connect(db)
    states = [msgspec.msgpack.decode(data)["state"]["n"] for (data,) in conn.execute(
        "SELECT data FROM events WHERE type = 'agent.state_set' ORDER BY position")]
    conn.close()
    assert n not in states, (f"set_state n={n} raised StorageError (not fatal), yet after the "
                             f"process died the log holds it: {states}")


# -- B7 --------------------------------------------------------------------------------------


@pytest.mark.xfail(strict=True, reason=(
    "BUG B7: a damaged hash column at position p also quarantines the workflow that owns "
    "position p+1, although that row is intact: read_stream (eventwf/_store/log.py) checks "
    "each row against the previous row's *stored* hash, so p+1 'fails its checksum' too "
    "(tools.eventlog verify, like log.scan, continues from the stored hash and reports the "
    "one damaged row once). R7: a corrupt event quarantines only its own workflow"))
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
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[Waits],
                                   wall_clock=virtual_wall, hibernate_after=None) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        first, second = await agent.get_workflow("first"), await agent.get_workflow("second")
    assert first is not None and first.status == "unknown"
    assert f"position {position} " in (first.error_message or "")
    assert second is not None and second.status == "waiting", second


# -- B8 --------------------------------------------------------------------------------------


class MergeTogether(eventwf.AgentWorkflow[HookAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("together", 1)  # every run wakes in the same instant
        await step.merge_agent_state({self.workflow_id: 1})
        return "merged"


@pytest.mark.xfail(strict=True, reason=(
    "BUG B8: concurrent first merges lose data: on an agent whose state was never logged, "
    "state_items (eventwf/_agents.py, called by Core.agent_state_items for "
    "step.merge_agent_state) decides from the *committed* fold that the state is unset and "
    "prepends AgentStateReset(initial_state) to its AgentStateMerged; the writer stages both "
    "requests against the fold in order, so two workflows merging in the same instant both "
    "do, and the second Reset wipes the first workflow's merge from the agent's state "
    "(specs/agents.md A5: merges are shallow merges into the current state). Found by the "
    "fsync-EIO campaign (F5-eio), whose retries lined two first merges up"))
async def test_b8_two_first_merges_in_one_instant_both_survive(db: str) -> None:
    async with eventwf.open_engine(db, agents=[HookAgent], workflows=[MergeTogether],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(HookAgent, "a")
        ids = [await agent.run_workflow("MergeTogether", id=f"m{i}") for i in range(2)]
        for wid in ids:
            await engine.wait_workflow(wid)
        assert agent.state == {"m0": 1, "m1": 1}
