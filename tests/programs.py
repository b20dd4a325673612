"""Seeded random workflow programs, their interpreter and a pure model of their results.

A program is a list of commands; :class:`ProgramWorkflow` runs one. The crash tests run
them through ``eventwf.testing.CrashReplay``, which counts the step bodies that run.
"""

from __future__ import annotations

from typing import Any

import trio
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
        for index, command in enumerate(event.payload["program"]):
            await self._command(step, f"{command[0]}-{index}", command, out)
        await step.report_complete(len(out))
        return out

    async def _command(self, step: eventwf.AgentWorkflowStep, name: str, command: list[Any],
                       out: list[Any]) -> None:
        op, arg, wid = command[0], command[1], self.workflow_id
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
            await step.merge_agent_state({f"{wid}-{name}": arg})
        elif op == "progress":
            await self.report_progress({"step": name})
        elif op == "now":
            await step.now()
        elif op == "par":  # branches run concurrently, each in its own task (replay.md R14)
            results: list[list[Any]] = [[] for _ in arg]
            async with trio.open_nursery() as nursery:
                for b, branch in enumerate(arg):
                    nursery.start_soon(self._branch, step, f"{name}.{b}", branch, results[b])
            out.append(results)

    async def _branch(self, step: eventwf.AgentWorkflowStep, name: str,
                      branch: list[list[Any]], out: list[Any]) -> None:
        for j, command in enumerate(branch):
            await self._command(step, f"{name}.{j}", command, out)


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


simple_commands = st.one_of(
    st.tuples(st.just("do"), st.integers(0, 1000)),
    st.tuples(st.just("flaky"), st.integers(1, 2)),
    st.tuples(st.just("fail"), st.sampled_from(["bad input", "nope"])),
    st.tuples(st.just("sleep"), st.sampled_from([1, 60, 3600])),
    st.tuples(st.just("wait"), st.sampled_from(["go", "pay"])),
    st.tuples(st.just("state"), st.integers(0, 9)),
    st.tuples(st.just("progress"), st.just(0)),
    st.tuples(st.just("now"), st.just(0)),
)
# a concurrent group: two or three branches of simple commands, run in a nursery
parallel = st.tuples(st.just("par"), st.lists(st.lists(simple_commands.map(list), min_size=1,
                                                       max_size=3), min_size=2, max_size=3))
commands = st.one_of(simple_commands, parallel)
programs = st.lists(commands, min_size=2, max_size=7)


def expected_output(program: list[Any], payloads: dict[str, Any]) -> list[Any]:
    """The pure model: what ``run`` returns for a program (waits get ``payloads[type]``)."""
    out: list[Any] = []
    for index, (op, arg) in enumerate(program):
        _expect(f"{op}-{index}", op, arg, payloads, out)
    return out


def waits(program: list[Any]) -> list[str]:
    """The event types a program waits for, concurrent branches included."""
    found: list[str] = []
    for op, arg in program:
        if op == "wait":
            found.append(arg)
        elif op == "par":
            for branch in arg:
                found.extend(waits(branch))
    return found


def _expect(name: str, op: str, arg: Any, payloads: dict[str, Any], out: list[Any]) -> None:
    if op == "par":
        results: list[list[Any]] = []
        for b, branch in enumerate(arg):
            results.append([])
            for j, (sub_op, sub_arg) in enumerate(branch):
                _expect(f"{name}.{b}.{j}", sub_op, sub_arg, payloads, results[-1])
        out.append(results)
    elif op == "do":
        out.append(arg)
    elif op == "flaky":
        out.append(f"{name} ok")
    elif op == "fail":
        out.append(f"caught {arg}")
    elif op == "wait":
        out.append(payloads[arg])
