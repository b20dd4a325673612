"""One engine of several on one PostgreSQL database (used by tests/test_pg_multi.py).

Usage: python -m tests.pg_multi_worker URL LEDGER LEASE_TTL N_WORKFLOWS STEPS [N_ENGINES]
Opens an engine with ``lease_ttl=LEASE_TTL``, prints ``READY``, waits until it holds no
more than its fair share of the shards among N_ENGINES (so no later rebalancing moves its
agents away cleanly), then starts N_WORKFLOWS
workflows (on agents of shards it owns, so it runs them itself) and prints ``STARTED id``
for each once ``run_workflow`` returned (acknowledged); then serves until killed. Every
step body appends ``pid workflow step start-time`` to LEDGER as it starts, and takes ~0.2 s,
so a SIGKILL or SIGSTOP finds work in flight.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import trio

import eventwf


class MultiAgent(eventwf.Agent):
    initial_state: Any = {}


class MultiWorkflow(eventwf.AgentWorkflow[MultiAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        total = 0
        for i in range(event.payload["steps"]):
            total += await step.do(f"s{i}", _body(self.workflow_id, f"s{i}", i))
        return total


LEDGER_FD = -1


def _body(wid: str, name: str, value: int) -> Any:
    async def body() -> int:
        os.write(LEDGER_FD, f"{os.getpid()} {wid} {name} {time.time():.6f}\n".encode())
        await trio.sleep(0.2)
        return value

    return body


async def main(url: str, ttl: float, count: int, steps: int, engines: int) -> None:
    async with eventwf.open_engine(url, agents=[MultiAgent], workflows=[MultiWorkflow],
                                   lease_ttl=ttl) as engine:
        print("READY", flush=True)
        ownership = engine.runtime.ownership
        assert ownership.sharding is not None
        share = -(-ownership.sharding.shards // engines)
        while count and not 0 < len(ownership.held) <= share:
            await trio.sleep(0.05)
        started = 0
        candidate = 0
        while started < count:
            name = f"a{os.getpid()}-{candidate}"
            candidate += 1
            if not ownership.owns("MultiAgent", name):
                if candidate % 512 == 0:
                    await trio.sleep(0.05)  # no shard yet: wait for the lease task
                continue
            try:
                agent = await engine.get_agent(MultiAgent, name)
                wid = await agent.run_workflow("MultiWorkflow", {"steps": steps},
                                               id=f"w{os.getpid()}-{started}")
            except eventwf.errors.AgentMovedError:
                continue  # the shard moved meanwhile (rebalancing): try another agent
            print(f"STARTED {wid}", flush=True)
            started += 1
        await trio.sleep_forever()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    LEDGER_FD = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    trio.run(main, sys.argv[1], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             int(sys.argv[6]) if len(sys.argv) > 6 else 1)
