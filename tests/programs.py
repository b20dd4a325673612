"""Seeded random workflow programs, their interpreter and a pure model of their results.

A program is a list of commands; :class:`ProgramWorkflow` runs one. The crash tests run
them through ``eventwf.testing.CrashReplay``, which counts the step bodies that run.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

import eventwf
from eventwf import Retries

_FAILS: dict[tuple[str, str], int] = {}


class ProgramAgent(eventwf.Agent):
    initial_state: Any = {}


class ProgramWorkflow(eventwf.AgentWorkflow[ProgramAgent]):
    """Interprets ``event.payload["program"]``."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out: list[Any] = []
        wid = self.workflow_id
        for index, command in enumerate(event.payload["program"]):
            op, arg = command[0], command[1]
            name = f"{op}-{index}"
            if op == "do":
                out.append(await step.do(name, _body(arg)))
            elif op == "flaky":
                out.append(await step.do(name, _flaky(wid, name, arg), retries=Retries(
                    limit=6, delay="1 second", backoff="constant")))
            elif op == "fail":
                try:
                    await step.do(name, _failing(arg), retries=Retries(limit=0))
                except ValueError as exc:
                    out.append(f"caught {exc}")
            elif op == "sleep":
                await step.sleep(name, arg)
            elif op == "wait":
                got = await step.wait_for_event(name, type=arg, timeout="2 days")
                out.append(got.payload)
            elif op == "state":
                await step.merge_agent_state({f"{wid}-{index}": arg})
            elif op == "progress":
                await self.report_progress({"index": index})
            elif op == "now":
                await step.now()
        await step.report_complete(len(out))
        return out


def _body(value: int) -> Any:
    def body() -> int:
        return value

    return body


def _flaky(wid: str, name: str, fails: int) -> Any:
    async def body() -> str:
        seen = _FAILS.get((wid, name), 0)
        if seen < fails:
            _FAILS[wid, name] = seen + 1
            raise ConnectionError(f"{name} attempt {seen + 1}")
        _FAILS.pop((wid, name), None)
        return f"{name} ok"

    return body


def _failing(message: str) -> Any:
    def body() -> None:
        raise ValueError(message)

    return body


def reset() -> None:
    """Forget the failures the flaky bodies counted (before every run of a log)."""
    _FAILS.clear()


commands = st.one_of(
    st.tuples(st.just("do"), st.integers(0, 1000)),
    st.tuples(st.just("flaky"), st.integers(1, 2)),
    st.tuples(st.just("fail"), st.sampled_from(["bad input", "nope"])),
    st.tuples(st.just("sleep"), st.sampled_from([1, 60, 3600])),
    st.tuples(st.just("wait"), st.sampled_from(["go", "pay"])),
    st.tuples(st.just("state"), st.integers(0, 9)),
    st.tuples(st.just("progress"), st.just(0)),
    st.tuples(st.just("now"), st.just(0)),
)
programs = st.lists(commands, min_size=2, max_size=7)


def expected_output(program: list[tuple[str, Any]], payloads: dict[str, Any]) -> list[Any]:
    """The pure model: what ``run`` returns for a program (waits get ``payloads[type]``)."""
    out: list[Any] = []
    for index, (op, arg) in enumerate(program):
        name = f"{op}-{index}"
        if op == "do":
            out.append(arg)
        elif op == "flaky":
            out.append(f"{name} ok")
        elif op == "fail":
            out.append(f"caught {arg}")
        elif op == "wait":
            out.append(payloads[arg])
    return out
