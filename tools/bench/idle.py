"""Many workflows waiting for an event: memory per idle workflow and wake latency.

Runs in its own process (``python -m tools.bench.idle N``) so the resident memory it
reports belongs to this workload alone; prints one JSON object.
"""

from __future__ import annotations

import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import eventwf
from tools.bench.common import percentile, rss_mb

__all__ = ["bench_idle_in_subprocess"]


class IdleAgent(eventwf.Agent):
    pass


class WaitsForGo(eventwf.AgentWorkflow[IdleAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        got = await step.wait_for_event("go", type="go", timeout="1 day")
        return got.payload


async def _main(path: str, count: int, sample: int) -> dict[str, Any]:
    gc.collect()
    before = rss_mb()
    async with eventwf.open_engine(path, agents=[IdleAgent], workflows=[WaitsForGo]) as engine:
        agent = await engine.get_agent(IdleAgent, "idle")
        started = time.perf_counter()
        numbers = iter(range(count))

        async def starter() -> None:  # a fixed pool of starters, like a busy front end
            for n in numbers:
                await agent.run_workflow("WaitsForGo", None, id=f"w{n}")

        async with trio.open_nursery() as nursery:
            for _ in range(256):
                nursery.start_soon(starter)
        while engine.statistics().hibernations < count:
            await trio.sleep(0.05)
        start_seconds = time.perf_counter() - started
        gc.collect()
        idle = rss_mb()
        latencies = []
        for n in range(0, count, max(1, count // sample)):
            t0 = time.perf_counter()
            await agent.send_workflow_event("WaitsForGo", f"w{n}", {"type": "go", "payload": n})
            await engine.wait_workflow(f"w{n}")
            latencies.append((time.perf_counter() - t0) * 1000)
    return {
        "benchmark": f"{count:,} workflows waiting for an event (hibernated)",
        "workflows": count,
        "start_seconds": round(start_seconds, 1),
        "rss_mb_before": round(before, 1),
        "rss_mb_idle": round(idle, 1),
        "kb_per_idle_workflow": round((idle - before) * 1024 / count, 2),
        "wake_ms_p50": round(percentile(latencies, 50), 2),
        "wake_ms_p99": round(percentile(latencies, 99), 2),
        "wakes_measured": len(latencies),
    }


def bench_idle_in_subprocess(count: int, sample: int = 200) -> dict[str, Any]:
    import subprocess

    out = subprocess.run([sys.executable, "-m", "tools.bench.idle", str(count), str(sample)],
                         check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(trio.run(_main, str(Path(tmp) / "idle.db"), int(sys.argv[1]),
                                  int(sys.argv[2]))))
