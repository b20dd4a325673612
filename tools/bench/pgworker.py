"""One engine process of the multi-engine benchmarks (``pgscale.py`` starts and drives it).

    EVENTWF_BENCH_URL=postgresql://... python -m tools.bench.pgworker ROLE AGENTS N STEPS TTL

It opens an engine on the database (``lease_ttl=TTL`` when ``open_engine`` takes it),
prints ``{"ready": true}`` (or ``{"locked": MESSAGE}`` and exits 3 on ``LogLockedError``:
the database admits only one engine), then waits for a line on standard input. ``run``:
``N`` workflows of ``STEPS`` steps on each agent of ``AGENTS`` (comma-separated
indices), started together, then waited for; prints ``{"steps": n, "seconds": s}``.
``start``: the same with slow steps, printing ``{"started": [ids]}`` once every start is
acknowledged (the parent then SIGKILLs it). ``serve``: nothing but serving until standard
input closes (the survivor of a takeover). The URL comes by environment, not argv, since
it may hold a password.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import trio

import eventwf
from tools.bench.steps import BenchAgent, Steps

__all__ = ["URL_VARIABLE", "SlowSteps", "main"]

URL_VARIABLE = "EVENTWF_BENCH_URL"
STEP_SECONDS = 0.05  # a slow step: long enough that a workflow is in flight when killed


class SlowSteps(eventwf.AgentWorkflow[BenchAgent]):
    """``n`` durable steps of :data:`STEP_SECONDS` each."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        for i in range(event.payload["n"]):
            await step.do(f"s{i}", _pause(i))
        return event.payload["n"]


def _pause(i: int) -> Callable[[], Any]:
    async def fn() -> int:
        await trio.sleep(STEP_SECONDS)
        return i

    return fn


def _say(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


async def _start_all(engine: eventwf.Engine, agents: list[int], workflows: int, steps: int,
                     binding: str) -> list[str]:
    ids: list[str] = []

    async def start(index: int) -> None:
        agent = await engine.get_agent(BenchAgent, f"bench-{index}")
        for _ in range(workflows):
            ids.append(await agent.run_workflow(binding, {"n": steps}))

    async with trio.open_nursery() as nursery:
        for index in agents:
            nursery.start_soon(start, index)
    return ids


async def _work(role: str, agents: list[int], workflows: int, steps: int, ttl: float) -> int:
    url = os.environ[URL_VARIABLE]
    options: dict[str, Any] = {}
    if "lease_ttl" in inspect.signature(eventwf.open_engine).parameters:
        options["lease_ttl"] = ttl
    try:
        async with eventwf.open_engine(url, agents=[BenchAgent], workflows=[Steps, SlowSteps],
                                       **options) as engine:
            _say({"ready": True, "lease_ttl": options.get("lease_ttl")})
            if not await trio.to_thread.run_sync(sys.stdin.readline):
                return 0  # the parent gave up
            if role == "serve":
                await trio.to_thread.run_sync(sys.stdin.read)  # until the parent closes it
                return 0
            start = time.perf_counter()
            ids = await _start_all(engine, agents, workflows, steps,
                                   "SlowSteps" if role == "start" else "Steps")
            if role == "start":
                _say({"started": ids})
                await trio.sleep_forever()  # until SIGKILL
            for workflow_id in ids:
                await engine.wait_workflow(workflow_id)
            _say({"steps": len(ids) * steps, "seconds": time.perf_counter() - start})
    except eventwf.LogLockedError as exc:
        _say({"locked": str(exc)})
        return 3
    return 0


def main(argv: list[str]) -> int:
    role, agents, workflows, steps, ttl = argv
    indices = [int(part) for part in agents.split(",") if part]
    return trio.run(_work, role, indices, int(workflows), int(steps), float(ttl))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
