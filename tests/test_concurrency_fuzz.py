"""A realtime fuzz of concurrent public calls on one engine, on both backends (``-m slow``).

Six callers poke thirty workflows at random for a few seconds: events, approvals,
rejections, pause, resume, terminate, restart and agent state, each call cancelled at a
random moment (often before its append commits). On PostgreSQL the writer commits in a
worker thread, so memory and callers race commits in flight: this found the two races
of specs/postgres.md PG20 (a run refused by a terminate in its own batch quarantined its
workflow; a restart read during its commit left the workflow queued). After the pokes
stop and timers settle: nothing was logged at warning level or above by the engine (the
agents' default error hook aside), no workflow is left queued or running, no received
event was consumed twice, the log verifies, and a reopened engine reports the same
finished workflows."""

from __future__ import annotations

import collections
import logging
import random
from typing import Any

import pytest
import trio

import eventwf
from eventwf.model.events import EventConsumed
from eventwf.store import open_store


class Poked(eventwf.Agent):
    initial_state: Any = {"n": 0}


class Program(eventwf.AgentWorkflow[Poked]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out: list[Any] = []
        for i, cmd in enumerate(event.payload):
            if cmd == "wait":
                try:
                    got = await step.wait_for_event(f"w{i}", type="e", timeout=0.3)
                    out.append(got.payload)
                except eventwf.WorkflowTimeoutError:
                    out.append("timeout")
            elif cmd == "approval":
                try:
                    out.append(await self.wait_for_approval(step, timeout=0.5,
                                                            step_name=f"a{i}"))
                except eventwf.EventwfError as exc:
                    out.append(type(exc).__name__)
            elif cmd == "sleep":
                await step.sleep(f"s{i}", 0.05)
            else:
                out.append(await step.do(f"d{i}", lambda i=i: i))
        return out


def _call(op: str, agent: Any, wid: str, agents: list[Any], rnd: random.Random) -> Any:
    """The awaitable of one public call."""
    if op == "send":
        return agent.send_workflow_event("Program", wid,
                                         {"type": "e", "payload": rnd.randint(0, 99)})
    if op == "state":
        return rnd.choice(agents).set_state({"n": rnd.randint(0, 9)})
    return getattr(agent, f"{op}_workflow")(wid)


async def _poke(agents: list[Any], wids: list[tuple[Any, str]], rnd: random.Random,
                seconds: float) -> None:
    end = trio.current_time() + seconds
    while trio.current_time() < end:
        await trio.sleep(rnd.random() * 0.02)
        if not wids:
            continue
        agent, wid = rnd.choice(wids)
        op = rnd.choice(["send", "send", "send", "approve", "reject", "pause", "resume",
                         "terminate", "restart", "state"])
        with trio.move_on_after(rnd.choice([0.0002, 0.002, 0.05, 2])):
            try:
                await _call(op, agent, wid, agents, rnd)
            except eventwf.EventwfError:
                pass  # refused (finished, not waiting...): the refusal is the contract


async def _start(agents: list[Any], wids: list[tuple[Any, str]], rnd: random.Random) -> None:
    for _ in range(30):
        agent = rnd.choice(agents)
        program = [rnd.choice(["wait", "wait", "approval", "sleep", "step", "step"])
                   for _ in range(rnd.randint(1, 5))]
        with trio.move_on_after(rnd.choice([0.0005, 0.01, 1])):
            wids.append((agent, await agent.run_workflow("Program", program)))
        await trio.sleep(rnd.random() * 0.05)


def _consumed_twice(db: str, wids: list[str]) -> list[Any]:
    store = open_store(db, readonly=True)
    try:
        taken = collections.Counter(
            (wid, r.event.received) for wid in wids for r in store.read_stream("wf:" + wid)
            if isinstance(r.event, EventConsumed))
    finally:
        store.close()
    return [key for key, count in taken.items() if count > 1]


def _verify(db: str) -> list[Any]:
    if db.startswith("postgres"):
        from eventwf.logtool.pgverify import verify
    else:
        from eventwf.logtool.verify import verify
    return list(verify(db).problems)


@pytest.mark.slow
@pytest.mark.realtime
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_concurrent_cancelled_calls_leave_a_consistent_engine(
        any_db: str, seed: int, caplog: pytest.LogCaptureFixture) -> None:
    db, rnd = any_db, random.Random(seed)
    caplog.set_level(logging.WARNING, logger="eventwf")
    wids: list[tuple[Any, str]] = []
    async with eventwf.open_engine(db, agents=[Poked], workflows=[Program]) as engine:
        agents = [await engine.get_agent(Poked, f"a{i}") for i in range(3)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_start, agents, wids, rnd)
            for _ in range(6):
                nursery.start_soon(_poke, agents, wids, rnd, 5.0)
        await trio.sleep(1.5)  # sleeps, timeouts and queued runs settle
        before = {wid: (await agent.get_workflow(wid)).status for agent, wid in wids}
    async with eventwf.open_engine(db, agents=[Poked], workflows=[Program]) as engine:
        after = {}
        for agent, wid in wids:
            again = await engine.get_agent(Poked, agent.name)
            after[wid] = (await again.get_workflow(wid)).status
    noise = [r.getMessage() for r in caplog.records
             if not r.getMessage().startswith("Workflow error [")]
    assert noise == []
    assert [w for w, s in before.items() if s in ("queued", "running")] == []
    assert _consumed_twice(db, list(before)) == []
    assert _verify(db) == []
    finished = ("complete", "errored", "terminated")
    assert {w: s for w, s in before.items() if s in finished} == \
        {w: s for w, s in after.items() if before[w] in finished}
