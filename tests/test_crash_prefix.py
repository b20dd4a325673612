"""Crash at every prefix: cut a real log after event k, reopen, finish (specs R1, R2, L8, L9).

For random programs, a reference run writes a full log. Then for every k the first k
events are copied to a new log (projections dropped), the engine reopens it and the
driver finishes the job. Every outcome must equal the model's, and no step whose outcome
was logged within the prefix may run again.
"""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import eventwf
from eventwf.model.codec import decode_event
from eventwf.model.events import EventReceived, StepFailed, StepSucceeded
from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.projections import agent_row, load_agents, load_workflows, workflow_row
from tests import programs as P
from tests.wfkit import virtual_wall

PAYLOADS = {"go": "G", "pay": 99}


def _engine(db: str) -> Any:
    return eventwf.open_engine(db, agents=[P.ProgramAgent], workflows={"PROG": P.ProgramWorkflow},
                               wall_clock=virtual_wall)


def _received(db: str, wid: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    with sqlite3.connect(db) as conn:
        for type_name, data in conn.execute(
                "SELECT type, data FROM events WHERE stream = ?", ("wf:" + wid,)):
            event = decode_event(type_name, data)
            if isinstance(event, EventReceived):
                counts[event.event_type] = counts.get(event.event_type, 0) + 1
    conn.close()
    return counts


async def _drive(db: str, plan: list[tuple[str, list[Any]]]) -> dict[str, Any]:
    """Start what is missing, send what is missing, let time pass, collect outputs."""
    outputs: dict[str, Any] = {}
    async with _engine(db) as engine:
        agent = await engine.get_agent(P.ProgramAgent, "p")
        for wid, program in plan:
            if await agent.get_workflow(wid) is None:
                await agent.run_workflow("PROG", {"program": program}, id=wid)
            have = _received(db, wid)
            for arg in P.waits(program):
                if have.get(arg, 0) > 0:
                    have[arg] -= 1
                else:
                    await agent.send_workflow_event(
                        "PROG", wid, {"type": arg, "payload": PAYLOADS[arg]})
        await trio.sleep(30 * 86400)
        for wid, _ in plan:
            info = await engine.wait_workflow(wid)
            status = await agent.get_workflow_status("PROG", wid)
            outputs[wid] = (info.status, status.output)
    return outputs


def _logged_steps(db: str, k: int) -> set[tuple[str, str]]:
    done: set[tuple[str, str]] = set()
    with sqlite3.connect(db) as conn:
        for stream, type_name, data in conn.execute(
                "SELECT stream, type, data FROM events WHERE position <= ?", (k,)):
            event = decode_event(type_name, data)
            if isinstance(event, StepSucceeded | StepFailed) and event.name is not None:
                done.add((stream[3:], event.name))
    conn.close()
    return done


def _projections_match_fold(db: str) -> None:
    store = SQLiteStore(db)
    try:
        folded = store.fold()
        live_wf = sorted(load_workflows(store.conn, unfinished=False))
        live_ag = sorted(load_agents(store.conn))
        assert live_wf == sorted(workflow_row(s) for s in folded.workflows.values())
        assert live_ag == sorted(agent_row(s) for s in folded.agents.values())
        assert folded.problems == []
    finally:
        store.close()


def _run(coro_fn: Any, *args: Any) -> Any:
    return trio.run(coro_fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(plan_programs=st.lists(P.programs, min_size=1, max_size=3))
# always one concurrent program (replay.md R14): steps, a wait, a sleep and retries in parallel
@example(plan_programs=[[("do", 1), ("par", [[("do", 2), ("wait", "go")],
                                            [("sleep", 60), ("flaky", 1)], [("state", 4)]]),
                         ("do", 3)]])
def test_crash_at_every_prefix_gives_the_same_outcome(tmp_path: Path,
                                                      plan_programs: list[Any]) -> None:
    # a directory of its own per example (id() of a freed list is reused: not a name)
    case = Path(tempfile.mkdtemp(prefix="case-", dir=tmp_path))
    plan = [(f"w{i}", [list(c) for c in prog]) for i, prog in enumerate(plan_programs)]
    expected = {wid: ("complete", P.expected_output(prog, PAYLOADS))
                for wid, prog in plan}
    full = str(case / "full.db")
    P.reset_ledger()
    assert _run(_drive, full, plan) == expected
    _projections_match_fold(full)
    with sqlite3.connect(full) as conn:
        total = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    for k in range(1, total + 1):
        cut = str(case / f"cut-{k}.db")
        P.copy_prefix(full, cut, k)
        P.reset_ledger()
        outputs = _run(_drive, cut, plan)
        assert outputs == expected, f"prefix {k} of {total}"
        rerun = set(P.LEDGER) & _logged_steps(cut, k)
        assert not rerun, f"prefix {k}: steps logged in the prefix ran again: {rerun}"
        _projections_match_fold(cut)


async def test_replaying_a_finished_log_twice_gives_identical_projections(db: str) -> None:
    plan = [("a", [["do", 1], ["wait", "go"], ["state", 3]]), ("b", [["flaky", 2], ["sleep", 60]])]
    P.reset_ledger()
    await _drive(db, plan)
    first = SQLiteStore(db)
    try:
        rows1 = (sorted(load_workflows(first.conn, unfinished=False)),
                 sorted(load_agents(first.conn)))
        first.rebuild_projections()
        rows2 = (sorted(load_workflows(first.conn, unfinished=False)),
                 sorted(load_agents(first.conn)))
        first.rebuild_projections()
        rows3 = (sorted(load_workflows(first.conn, unfinished=False)),
                 sorted(load_agents(first.conn)))
    finally:
        first.close()
    assert rows1 == rows2 == rows3
