"""Crash at every prefix: cut a real log after event k, reopen, finish (specs R1, R2, L8, L9).

For random programs, ``eventwf.testing.CrashReplay`` writes a full reference log, then for
every k copies the first k events to a new log (projections dropped), reopens it and
finishes the job. Every outcome must equal the model's, no step whose outcome was logged
within the prefix may run again (the kit counts bodies by name and occurrence), and the
rebuilt projections must equal the fold of the events.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.projections import agent_row, load_agents, load_workflows, workflow_row
from eventwf.testing import CrashReplay, Outcome, Start
from tests import programs as P

PAYLOADS = {"go": "G", "pay": 99}


def _starts(plan: list[tuple[str, list[Any]]]) -> list[Start]:
    """Each program started under its id, sent the events its waits take."""
    return [Start("PROG", {"program": program}, id=wid,
                  events=[{"type": arg, "payload": PAYLOADS[arg]} for arg in P.waits(program)])
            for wid, program in plan]


def _replay(plan: list[tuple[str, list[Any]]], directory: Path) -> CrashReplay:
    return CrashReplay(P.ProgramAgent, {"PROG": P.ProgramWorkflow}, _starts(plan),
                       agent_name="p", directory=directory, before_run=P.reset,
                       after_run=_projections_match_fold)


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
    expected = {wid: Outcome("complete", P.expected_output(prog, PAYLOADS),
                             None)
                for wid, prog in plan}
    replay = _replay(plan, case)
    assert replay.reference() == expected
    _projections_match_fold(replay.reference_path)
    assert replay.crash_everywhere() == replay.events


def test_replaying_a_finished_log_twice_gives_identical_projections(tmp_path: Path) -> None:
    plan = [("a", [["do", 1], ["wait", "go"], ["state", 3]]), ("b", [["flaky", 2], ["sleep", 60]])]
    replay = _replay(plan, tmp_path)
    replay.reference()
    first = SQLiteStore(replay.reference_path)
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
