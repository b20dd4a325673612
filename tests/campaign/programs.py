"""Seeded random workflow programs, the workflow that interprets them, and a pure model.

A plan is a list of workflows; each has a program (a list of ``[op, arg]`` commands) and
the outside events a client must send it (some before the workflow waits, some after).
Ops and the model's expectation of what ``run`` appends to its output:

====================  ===========================================  ========================
op, arg               what the workflow does                       output
====================  ===========================================  ========================
``do, v``             ``step.do`` returning v                      v
``svc, amount``       ``step.do`` charging the fake service with   the service's receipt
                      the step's idempotency key                   for that key (O6)
``flaky, k``          fails its first k attempts, retried          ``"ok after k"``
``fail, msg``         ``NonRetryableError``, caught by ``run``     ``"caught msg"``
``exhaust, k``        fails every attempt (k retries), caught      ``"gave up after k+1"``
``sleep, s``          ``step.sleep`` s seconds                     -
``wait, type``        ``wait_for_event``; the j-th wait of a type  ``"type:j"``
                      gets the j-th event sent of that type
``timeout, s``        waits for an event never sent, times out     ``"timeout"``
``approval, yes|no``  ``wait_for_approval``; a rejection makes     the approval metadata
                      ``run`` raise ``RuntimeError``                ``{"i": index}``
``state, v``          ``merge_agent_state({"<wid>.<index>": v})``  -
``now, 0``            ``step.now()``                               -
``raise, msg``        (last only) ``run`` raises ``ValueError``    workflow errored
====================  ===========================================  ========================

Step bodies record every execution in the campaign ledger *before* returning.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import trio

import eventwf
from eventwf import NonRetryableError, Retries, WorkflowRejectedError, WorkflowTimeoutError

from .ledger import Ledger
from .service import Service

__all__ = [
    "BINDING",
    "SERVICE",
    "CampaignAgent",
    "CampaignWorkflow",
    "Expected",
    "Plan",
    "PlanWorkflow",
    "Runtime",
    "Send",
    "expected",
    "expected_agent_states",
    "make_plan",
]

BINDING = "Campaign"
WAIT_TIMEOUT = "30 days"  # far beyond any clock jump of the campaigns
SERVICE = "<service receipt>"  # the model's placeholder for a receipt (checked by O6)


@dataclass
class Runtime:
    """What step bodies and hooks of this process use (set by the workload session)."""

    run: str
    ledger: Ledger
    service: Service
    head: Callable[[], int] = lambda: -1
    body_delay: float = 0.0
    retry_delay: float = 0.01


RUNTIME: Runtime | None = None


def _runtime() -> Runtime:
    if RUNTIME is None:
        raise RuntimeError("the campaign runtime is not set up in this process")
    return RUNTIME


def _record(wid: str, name: str) -> tuple[Runtime, eventwf.StepContext]:
    rt = _runtime()
    ctx = eventwf.step_context()
    rt.ledger.execution(rt.run, wid, name, ctx.idempotency_key, ctx.attempt, rt.head())
    return rt, ctx


def _body(wid: str, name: str, value: int) -> Callable[[], Any]:
    async def body() -> int:
        rt, _ = _record(wid, name)
        if rt.body_delay:
            await trio.sleep(rt.body_delay)
        return value

    return body


def _charge(wid: str, name: str, amount: int) -> Callable[[], Any]:
    def body() -> str:
        rt, ctx = _record(wid, name)
        return rt.service.charge(ctx.idempotency_key, amount, rt.run)

    return body


def _flaky(wid: str, name: str, fails: int) -> Callable[[], Any]:
    async def body() -> str:
        rt, ctx = _record(wid, name)
        if rt.body_delay:
            await trio.sleep(rt.body_delay)
        if ctx.attempt <= fails:  # deterministic across crashes: the attempt is durable
            raise ConnectionError(f"{name} attempt {ctx.attempt} failed")
        return f"ok after {fails}"

    return body


def _failing(wid: str, name: str, message: str, retryable: bool) -> Callable[[], Any]:
    def body() -> None:
        _record(wid, name)
        if retryable:
            raise ConnectionError(message)
        raise NonRetryableError(message)

    return body


class CampaignAgent(eventwf.Agent):
    initial_state: Any = {}

    async def _delivered(self, kind: str, workflow_id: str, value: Any) -> None:
        rt = _runtime()
        rt.ledger.callback(rt.run, workflow_id, kind, json.dumps(value, sort_keys=True))

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str, r: Any) -> None:
        await self._delivered("complete", workflow_id, r)

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, e: str) -> None:
        await self._delivered("error", workflow_id, e)


class CampaignWorkflow(eventwf.AgentWorkflow[CampaignAgent]):
    """Interprets ``event.payload["program"]``."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        wid = self.workflow_id
        delay = _runtime().retry_delay
        out: list[Any] = []
        for index, (op, arg) in enumerate(event.payload["program"]):
            name = f"{op}-{index}"
            if op == "do":
                out.append(await step.do(name, _body(wid, name, arg)))
            elif op == "svc":
                out.append(await step.do(name, _charge(wid, name, arg)))
            elif op == "flaky":
                out.append(await step.do(name, _flaky(wid, name, arg), retries=Retries(
                    limit=arg, delay=delay, backoff="constant")))
            elif op == "fail":
                try:
                    await step.do(name, _failing(wid, name, arg, False))
                except NonRetryableError as exc:
                    out.append(f"caught {exc}")
            elif op == "exhaust":
                try:
                    await step.do(name, _failing(wid, name, "down", True), retries=Retries(
                        limit=arg, delay=delay, backoff="linear"))
                except ConnectionError:
                    out.append(f"gave up after {arg + 1}")
            elif op == "sleep":
                await step.sleep(name, arg)
            elif op == "wait":
                got = await step.wait_for_event(name, type=arg, timeout=WAIT_TIMEOUT)
                out.append(got.payload["v"])
            elif op == "timeout":
                try:
                    await step.wait_for_event(name, type="never", timeout=arg)
                except WorkflowTimeoutError:
                    out.append("timeout")
            elif op == "approval":
                try:
                    out.append(await self.wait_for_approval(step, timeout=WAIT_TIMEOUT,
                                                            step_name=name))
                except WorkflowRejectedError:
                    raise RuntimeError(f"rejected at {index}") from None
            elif op == "state":
                await step.merge_agent_state({f"{wid}.{index}": arg})
            elif op == "now":
                await step.now()
            elif op == "raise":
                raise ValueError(arg)
            else:
                raise AssertionError(f"unknown op {op!r}")
        return out


# -- plans -----------------------------------------------------------------------------------


@dataclass
class Send:
    """One outside event the client sends: the j-th of its type for this workflow."""

    type: str  # an event type, or "approval"
    j: int
    delay: float  # seconds to wait before sending it (after the previous send)
    decision: str = ""  # approvals: "yes" or "no"
    index: int = -1  # approvals: the program index (its metadata)

    @property
    def key(self) -> str:
        return f"{self.type}/{self.j}"


@dataclass
class PlanWorkflow:
    id: str
    agent: str
    program: list[list[Any]]
    sends: list[Send] = field(default_factory=list)


@dataclass
class Plan:
    seed: int
    workflows: list[PlanWorkflow]

    def dump(self, path: str) -> None:
        data = {"seed": self.seed, "workflows": [
            {"id": w.id, "agent": w.agent, "program": w.program,
             "sends": [vars(s) for s in w.sends]} for w in self.workflows]}
        with open(path, "w") as handle:
            json.dump(data, handle)

    @classmethod
    def load(cls, path: str) -> Plan:
        with open(path) as handle:
            data = json.load(handle)
        return cls(data["seed"], [
            PlanWorkflow(w["id"], w["agent"], w["program"], [Send(**s) for s in w["sends"]])
            for w in data["workflows"]])

    def by_id(self) -> dict[str, PlanWorkflow]:
        return {w.id: w for w in self.workflows}


_SHAPES = ("linear",) * 4 + ("sleep",) * 2 + ("wait",) * 2 + ("approval", "failing")


def _linear(rng: random.Random) -> list[Any]:
    op = rng.choice(("do", "do", "svc", "state", "now", "flaky"))
    if op == "do":
        return ["do", rng.randint(0, 999)]
    if op == "svc":
        return ["svc", rng.randint(1, 99)]
    if op == "state":
        return ["state", rng.randint(0, 9)]
    if op == "flaky":
        return ["flaky", rng.randint(1, 2)]
    return ["now", 0]


def make_plan(
    seed: int,
    count: int,
    *,
    sleeps: tuple[float, ...] = (0.01, 0.05, 0.2, 0.5),
    timeouts: tuple[float, ...] = (0.05, 0.2),
    send_delay: float = 0.4,
    prefix: str = "w",
) -> Plan:
    """``count`` seeded random workflows: 40% linear, 20% sleeping, 20% waiting for events,
    10% approvals (a quarter rejected) and 10% failing or retrying; at most 12 commands."""
    rng = random.Random(seed)
    workflows = []
    for n in range(count):
        shape = rng.choice(_SHAPES)
        program = [_linear(rng) for _ in range(rng.randint(1, 4))]
        extra: list[list[Any]] = []
        if shape == "sleep":
            extra = [["sleep", rng.choice(sleeps)] for _ in range(rng.randint(1, 2))]
        elif shape == "wait":
            extra = [["wait", rng.choice(("go", "pay"))] for _ in range(rng.randint(1, 3))]
            if rng.random() < 0.3:
                extra.append(["timeout", rng.choice(timeouts)])
        elif shape == "approval":
            extra = [["approval", "no" if rng.random() < 0.25 else "yes"]]
        elif shape == "failing":
            extra = [rng.choice((["fail", "bad input"], ["exhaust", 1], ["flaky", 2]))]
        for command in extra:
            program.insert(rng.randint(0, len(program)), command)
        program += [_linear(rng) for _ in range(rng.randint(0, 3))]
        if shape == "failing" and rng.random() < 0.5:
            program.append(["raise", f"boom {n}"])
        program = program[:12]
        workflows.append(PlanWorkflow(f"{prefix}{n:04d}", f"a{n % 2}", program,
                                      _sends(rng, program, send_delay)))
    return Plan(seed, workflows)


def _sends(rng: random.Random, program: list[list[Any]], send_delay: float) -> list[Send]:
    """The events the client must send: one per wait, in program order, up to a rejection
    (a finished workflow takes no events). About a third go out before the wait begins."""
    seen: dict[str, int] = {}
    out = []
    for index, (op, arg) in enumerate(program):
        if op not in ("wait", "approval"):
            continue
        kind = arg if op == "wait" else "approval"
        j = seen.get(kind, 0)
        seen[kind] = j + 1
        delay = 0.0 if rng.random() < 0.33 else round(rng.uniform(0, send_delay), 3)
        out.append(Send(kind, j, delay, decision=arg if op == "approval" else "",
                        index=index))
        if op == "approval" and arg == "no":
            break
    return out


# -- the pure model --------------------------------------------------------------------------


@dataclass
class Expected:
    status: str  # complete | errored
    output: list[Any] | None = None
    error: str | None = None
    merges: dict[str, Any] = field(default_factory=dict)  # agent state entries it adds


def expected(workflow: PlanWorkflow) -> Expected:
    """What the workflow must end with, whatever crashed or failed on the way."""
    out: list[Any] = []
    merges: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for index, (op, arg) in enumerate(workflow.program):
        if op == "do":
            out.append(arg)
        elif op == "svc":
            out.append(SERVICE)
        elif op == "flaky":
            out.append(f"ok after {arg}")
        elif op == "fail":
            out.append(f"caught {arg}")
        elif op == "exhaust":
            out.append(f"gave up after {arg + 1}")
        elif op == "wait":
            j = seen.get(arg, 0)
            seen[arg] = j + 1
            out.append(f"{arg}:{j}")
        elif op == "timeout":
            out.append("timeout")
        elif op == "approval":
            if arg == "no":
                return Expected("errored", error=f"rejected at {index}", merges=merges)
            out.append({"i": index})
        elif op == "state":
            merges[f"{workflow.id}.{index}"] = arg
        elif op == "raise":
            return Expected("errored", error=arg, merges=merges)
    return Expected("complete", output=out, merges=merges)


def expected_agent_states(plan: Plan, skip: AbstractSet[str] = frozenset()
                          ) -> dict[str, dict[str, Any]]:
    """Each workflow agent's final state: every merge its workflows made (keys are unique)."""
    states: dict[str, dict[str, Any]] = {}
    for workflow in plan.workflows:
        if workflow.id in skip:
            continue
        merges = expected(workflow).merges
        if merges:
            states.setdefault(workflow.agent, {}).update(merges)
    return states
