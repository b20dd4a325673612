"""Recovery: open a log holding N unfinished workflows (10 logged steps each) and finish
them all; the time from opening to the last completion."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import eventwf

__all__ = ["bench_recovery"]

_gate_open = False


class RecoveryAgent(eventwf.Agent):
    pass


class TenSteps(eventwf.AgentWorkflow[RecoveryAgent]):
    """Ten quick steps, then one that blocks until the engine is reopened."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        for i in range(10):
            await step.do(f"s{i}", _value(i))
        return await step.do("gate", _gate)


def _value(i: int) -> Any:
    async def fn() -> int:
        return i

    return fn


async def _gate() -> str:
    while not _gate_open:
        await trio.sleep(3600)
    return "done"


def _engine(path: str) -> Any:
    return eventwf.open_engine(path, agents=[RecoveryAgent], workflows=[TenSteps])


async def _prepare(path: str, count: int) -> None:
    async with _engine(path) as engine:
        agent = await engine.get_agent(RecoveryAgent, "r")
        async def start(n: int) -> None:
            await agent.run_workflow("TenSteps", id=f"w{n}")

        async with trio.open_nursery() as nursery:
            for n in range(count):
                nursery.start_soon(start, n)
        target = engine.statistics().events + count * 11  # running + 10 steps each
        while engine.statistics().events < target:
            await trio.sleep(0.05)


async def _recover(path: str, count: int) -> float:
    start = time.perf_counter()
    async with _engine(path) as engine:
        for n in range(count):
            await engine.wait_workflow(f"w{n}")
        return time.perf_counter() - start


def bench_recovery(count: int) -> dict[str, Any]:
    global _gate_open
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "recover.db")
        _gate_open = False
        trio.run(_prepare, path, count)
        _gate_open = True
        seconds = trio.run(_recover, path, count)
    return {
        "benchmark": f"recovery: open {count:,} unfinished workflows (10 logged steps each), "
                     "finish them",
        "workflows": count,
        "seconds": round(seconds, 2),
        "replayed_steps_per_s": round(count * 10 / seconds),
        "target_seconds": 10 if count >= 10_000 else None,
    }
