"""Random interleavings of agent and workflow operations: the live projections always equal
a rebuild from the log (specs/log.md L9, specs/agents.md)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventwf
from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.projections import agent_row, load_agents, load_workflows, workflow_row
from tests.wfkit import virtual_wall


class Owner(eventwf.Agent):
    initial_state = {"seen": 0}


class Job(eventwf.AgentWorkflow[Owner]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        kind = event.payload
        await step.do("first", lambda: 1)
        if kind == "sleepy":
            await step.sleep("nap", "1 hour")
        elif kind == "approval":
            await self.wait_for_approval(step, timeout="1 day")
        elif kind == "failing":
            raise ValueError("failing job")
        await step.merge_agent_state({"last": self.workflow_id})
        await step.report_complete(kind)
        return kind


IDS = [f"j{i}" for i in range(4)]
AGENTS = ["x", "y"]
ops = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(AGENTS), st.sampled_from(IDS),
              st.sampled_from(["plain", "sleepy", "approval", "failing"]),
              st.sampled_from([None, {"team": "a"}, {"team": "b", "n": 1}])),
    st.tuples(st.sampled_from(["approve", "reject", "pause", "resume", "terminate", "restart",
                               "keep-restart", "delete"]),
              st.sampled_from(AGENTS), st.sampled_from(IDS)),
    st.tuples(st.just("delete-all"), st.sampled_from(AGENTS),
              st.sampled_from([None, "complete", ["errored", "terminated"]])),
    st.tuples(st.just("set-state"), st.sampled_from(AGENTS), st.integers(0, 5)),
    st.tuples(st.just("send"), st.sampled_from(AGENTS), st.sampled_from(IDS)),
    st.tuples(st.just("advance"), st.sampled_from([0, 1, 600, 3600, 90000])),
    st.tuples(st.just("reopen"),),
)


async def _apply(agent: Owner, op: tuple[Any, ...]) -> None:
    name, wid = op[0], op[2] if len(op) > 2 else None
    try:
        if name == "start":
            await agent.run_workflow("Job", op[3], id=op[2], metadata=op[4])
        elif name == "approve":
            await agent.approve_workflow(wid)
        elif name == "reject":
            await agent.reject_workflow(wid, reason="no")
        elif name in ("pause", "resume", "terminate"):
            await getattr(agent, f"{name}_workflow")(wid)
        elif name == "restart":
            await agent.restart_workflow(wid)
        elif name == "keep-restart":
            await agent.restart_workflow(wid, reset_tracking=False)
        elif name == "delete":
            await agent.delete_workflow(wid)
        elif name == "delete-all":
            await agent.delete_workflows(status=op[2])
        elif name == "set-state":
            await agent.set_state({"seen": op[2]})
        elif name == "send":
            await agent.send_workflow_event("Job", wid, {"type": "approval",
                                                         "payload": {"approved": True}})
    except eventwf.EventwfError:
        pass  # an operation the current state refuses: refused cleanly is what we test


async def _scenario(db: str, operations: list[tuple[Any, ...]]) -> None:
    async with AsyncExitStack() as stack:
        engine = await stack.enter_async_context(eventwf.open_engine(
            db, agents=[Owner], workflows=[Job], wall_clock=virtual_wall))
        for op in operations:
            if op[0] == "reopen":
                await stack.aclose()
                engine = await stack.enter_async_context(eventwf.open_engine(
                    db, agents=[Owner], workflows=[Job], wall_clock=virtual_wall))
            elif op[0] == "advance":
                await trio.sleep(op[1])
            else:
                await _apply(await engine.get_agent(Owner, op[1]), op)
        await trio.sleep(2 * 86400)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(operations=st.lists(ops, min_size=1, max_size=25))
def test_rebuilt_projections_equal_the_live_ones(tmp_path: Path,
                                                 operations: list[tuple[Any, ...]]) -> None:
    db = str(tmp_path / f"p{abs(hash(tuple(map(str, operations))))}.db")
    trio.run(_scenario, db, operations, clock=trio.testing.MockClock(autojump_threshold=0))
    store = SQLiteStore(db)
    try:
        live = (sorted(load_workflows(store.conn, unfinished=False)),
                sorted(load_agents(store.conn)))
        folded = store.fold()
        rebuilt = (sorted(workflow_row(s) for s in folded.workflows.values()),
                   sorted(agent_row(s) for s in folded.agents.values()))
        assert folded.problems == []
    finally:
        store.close()
    assert live == rebuilt
