"""A process that runs workflows on a log until it is killed (used by test_sigkill.py).

Usage: python -m tests.crash_worker DB LEDGER N_WORKFLOWS STEPS [LEASE_TTL]
(DB a SQLite file or a PostgreSQL URL; LEASE_TTL, seconds, how soon a reopened engine
takes over the shards a killed one held on PostgreSQL.)
Every step body appends "pid workflow step" to LEDGER before returning; on open the
process appends "pid OPEN head" (the log position it found).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import trio

import eventwf


class CrashAgent(eventwf.Agent):
    initial_state: Any = {}


class CrashWorkflow(eventwf.AgentWorkflow[CrashAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        total = 0
        for i in range(event.payload["steps"]):
            total += await step.do(f"s{i}", _body(self.workflow_id, f"s{i}", i))
            if i % 3 == 2:
                await step.sleep(f"z{i}", 0.02)
        await step.merge_agent_state({self.workflow_id: total})
        return total


LEDGER_FD = -1


def _note(line: str) -> None:
    os.write(LEDGER_FD, f"{os.getpid()} {line}\n".encode())


def _body(wid: str, name: str, value: int) -> Any:
    async def body() -> int:
        _note(f"{wid} {name}")
        await trio.sleep(0.002)
        return value

    return body


async def main(db: str, count: int, steps: int, lease_ttl: float) -> None:
    async with eventwf.open_engine(db, agents=[CrashAgent], workflows=[CrashWorkflow],
                                   lease_ttl=lease_ttl) as engine:
        _note(f"OPEN {engine.statistics().head}")
        agent = await engine.get_agent(CrashAgent, "crash")
        for n in range(count):  # an idempotent start: a killed process's start may land late
            await agent.run_workflow("CrashWorkflow", {"steps": steps}, id=f"w{n}",
                                     if_exists="return")
        for n in range(count):
            await engine.wait_workflow(f"w{n}")
        print("DONE", flush=True)


if __name__ == "__main__":
    LEDGER_FD = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    trio.run(main, sys.argv[1], int(sys.argv[3]), int(sys.argv[4]),
             float(sys.argv[5]) if len(sys.argv) > 5 else 15.0)
