"""A stateful model test of the engine's public operations (issue 13, replay.md R12).

Hypothesis drives one engine on one log: it starts workflows of several shapes (waits with
timeouts, sleeps, approvals, retried and failing steps), sends events (several at once to
one workflow, before and after waits begin), approves and rejects, pauses, resumes,
terminates and restarts, closes and reopens the engine, and jumps the clock past
deadlines while the engine is open and while it is closed, with hibernation on (every wait
hibernates) and off. A pure model (tests/engine_model.py) predicts every status, output,
error and refusal. After every rule: the engine is alive, it agrees with the model, no
received event was consumed twice, ``verify`` finds the log intact and the projections
equal to a rebuild from the log, and the summaries in memory equal the projection rows;
the last step reopens the log. The PR tier runs in the default suite, a long one under
``-m slow``.

Both machines run on PostgreSQL too (``test_postgres``, a fresh database of the session's
server per example; skipped, saying why, without one): the log is read through the log
tool's sources (``tests/model_log.py``), and the trio run's clock is a ``ManualClock``, so
the engine commits in its worker thread as in production (``OnPostgres``).
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import eventwf
from tests import model_log
from tests.engine_model import TERMINAL, US, Model, Refused
from tests.pg_cluster import ExternalServer, PgCluster
from tests.trio_thread import ManualClock, TrioThread
from tests.wfkit import virtual_wall


class ModelAgent(eventwf.Agent):
    initial_state: Any = {}


class Program(eventwf.AgentWorkflow[ModelAgent]):
    """Runs the commands of tests/engine_model.py given as its params."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        out: list[Any] = []
        for index, cmd in enumerate(event.payload):
            out.append(await self._command(step, index, cmd))
        return out

    async def _command(self, step: eventwf.AgentWorkflowStep, index: int | str,
                       cmd: list[Any]) -> Any:
        kind = cmd[0]
        if kind == "wait":
            try:
                got = await step.wait_for_event(f"w{index}", type=cmd[1], timeout=cmd[2])
            except eventwf.WorkflowTimeoutError:
                return "timeout"
            return got.payload
        if kind == "approval":
            return await self.wait_for_approval(step, timeout=cmd[1], step_name=f"a{index}")
        if kind == "sleep":
            await step.sleep(f"s{index}", cmd[1])
            return "slept"
        if kind == "par":  # branches in a nursery of run, each its own task (R14)
            results: list[Any] = [None] * len(cmd[1])

            async def branch(b: int, sub: list[Any]) -> None:
                results[b] = await self._command(step, f"{index}.{b}", sub)

            async with trio.open_nursery() as nursery:
                for b, sub in enumerate(cmd[1]):
                    nursery.start_soon(branch, b, sub)
            return results
        if kind == "flaky":
            fails, limit, delay = cmd[1:]

            def attempt() -> int:
                number = eventwf.step_context().attempt
                if number <= fails:
                    raise RuntimeError(f"attempt {number} fails")
                return number

            return await step.do(f"d{index}", attempt, retries=eventwf.Retries(
                limit=limit, delay=delay, backoff="constant"))
        raise ValueError("this command fails the run")


SECONDS = st.sampled_from([5, 60, 3600])
WAIT = st.tuples(st.just("wait"), st.sampled_from(["a", "a", "b"]), SECONDS)
COMMAND = st.one_of(  # waits twice as likely: events and their races are the point
    WAIT, WAIT,
    st.tuples(st.just("approval"), SECONDS),
    st.tuples(st.just("sleep"), SECONDS),
    st.tuples(st.just("flaky"), st.integers(0, 3), st.integers(0, 2), SECONDS),
    st.tuples(st.just("fail")),
    # concurrent sleeps and at most one retried step (two failing at one instant would
    # fail the run with both errors; the model names one)
    st.tuples(st.just("par"), st.tuples(
        st.lists(st.tuples(st.just("sleep"), SECONDS), min_size=1, max_size=2),
        st.lists(st.tuples(st.just("flaky"), st.integers(0, 3), st.integers(0, 2), SECONDS),
                 max_size=1)).map(lambda parts: [*parts[0], *parts[1]])),
)
PROGRAMS = st.one_of(
    st.lists(COMMAND, min_size=1, max_size=4),
    st.lists(WAIT, min_size=2, max_size=4),  # a mailbox: several waits, one type or two
)
JUMPS = st.sampled_from([1, 4, 30, 61, 400, 3000, 7200])
MARGIN_US = 10_000  # no deadline may fall this close to the clock after a jump


class EngineMachine(RuleBasedStateMachine):
    hibernate_after: float | None = None
    lease_ttl = 15.0  # the default (PostgreSQL only)
    workflows = Bundle("workflows")

    def __init__(self) -> None:
        super().__init__()
        self.loop = TrioThread(self._clock())
        self.db = self._new_log()
        self.model = Model()
        self.engine: eventwf.Engine | None = None
        self.agent: ModelAgent | None = None
        self.died: BaseException | None = None
        self._closing: trio.Event | None = None
        self._closed: trio.Event | None = None
        self.count = 0
        self.payloads = 0

    def _clock(self) -> trio.testing.MockClock | ManualClock:
        """The clock of the trio run (both jump only when the rules say)."""
        return trio.testing.MockClock()

    def _new_log(self) -> str:
        """Where this example's log lives: here a file in a temporary directory of its own."""
        self._tmp = tempfile.TemporaryDirectory(prefix="eventwf-model-")
        return str(Path(self._tmp.name) / "model.db")

    def _drop_log(self) -> None:
        self._tmp.cleanup()

    # -- the engine in the trio thread ---------------------------------------------------

    async def _serve(self, task_status: trio.TaskStatus[eventwf.Engine]) -> None:
        self._closing, self._closed = trio.Event(), trio.Event()
        started = False
        try:
            async with eventwf.open_engine(
                    self.db, agents=[ModelAgent], workflows=[Program], wall_clock=virtual_wall,
                    hibernate_after=self.hibernate_after, lease_ttl=self.lease_ttl) as engine:
                task_status.started(engine)
                started = True
                await self._closing.wait()
        except BaseException as exc:
            if not started:
                raise  # the open failed: nursery.start raises it to the rule
            self.died = exc  # the engine stopped by itself: the invariant reports it
        finally:
            self._closed.set()

    async def _open(self) -> None:
        assert self.loop.nursery is not None
        self.engine = await self.loop.nursery.start(self._serve)
        self.agent = await self.engine.get_agent(ModelAgent, "m")

    async def _close(self) -> None:
        assert self._closing is not None and self._closed is not None
        self._closing.set()
        await self._closed.wait()
        self.engine = self.agent = None

    def run(self, fn: Any, *args: Any) -> Any:
        async def settled() -> Any:
            try:
                return await fn(*args)
            finally:
                await self._settle()

        return self.loop.call(settled)

    async def _settle(self) -> None:
        """Until every task waits and the writer has no commit in its worker thread (on
        PostgreSQL under a real clock): a task waiting for a thread counts as blocked."""
        while True:
            await self.loop.settle()
            writer = None if self.engine is None else self.engine.runtime.writer
            committing = None if writer is None else writer.in_flight
            if committing is None:
                return
            await committing.wait()

    def attempt(self, op: Any, *args: Any) -> str | None:
        """Run an operation of the agent; None if it succeeded, else its error class."""
        try:
            self.run(op, *args)
        except eventwf.EventwfError as exc:
            return type(exc).__name__
        return None

    def expect(self, outcome: str | None, apply: Any, *args: Any) -> None:
        """The model's verdict on the operation ``apply`` describes, against ``outcome``."""
        try:
            apply(*args)
        except Refused as refused:
            assert outcome == refused.kind, (outcome, refused.kind, args)
            return
        assert outcome is None, (outcome, args)

    # -- rules ---------------------------------------------------------------------------

    @initialize(target=workflows, program=PROGRAMS)
    def open(self, program: list[tuple[Any, ...]]) -> str:
        self.run(self._open)
        return self.start(program)

    @rule(target=workflows, program=PROGRAMS)
    def start(self, program: list[tuple[Any, ...]]) -> str:
        wid = f"w{self.count}"
        self.count += 1
        assert self.agent is not None
        self.run(functools.partial(self.agent.run_workflow, "Program",
                                   [list(cmd) for cmd in program], id=wid))
        self.model.start(wid, program)
        return wid

    def _payload(self) -> int:
        self.payloads += 1
        return self.payloads

    @rule(wid=workflows, types=st.lists(st.sampled_from(["a", "b", "a"]), min_size=1,
                                         max_size=3))
    def send(self, wid: str, types: list[str]) -> None:
        """One event, or several at once (concurrent sends; the log decides their order)."""
        events = [(event_type, self._payload()) for event_type in types]
        head = self._stream_head(wid)
        outcomes: list[str | None] = []

        async def one(event_type: str, payload: int) -> None:
            assert self.agent is not None
            try:
                await self.agent.send_workflow_event(
                    "Program", wid, {"type": event_type, "payload": payload})
                outcomes.append(None)
            except eventwf.EventwfError as exc:
                outcomes.append(type(exc).__name__)

        async def all_at_once() -> None:
            async with trio.open_nursery() as nursery:
                for event_type, payload in events:
                    nursery.start_soon(one, event_type, payload)

        self.run(all_at_once)
        logged = self._received_since(wid, head)
        # the sends are checked before any commits: all are taken, or all refused
        if any(outcomes):
            assert not logged and set(outcomes) == {"EventwfError"}, (logged, outcomes)
            self.expect("EventwfError", self.model.send, wid, events)
        else:
            assert sorted(logged, key=repr) == sorted(events, key=repr), (logged, events)
            self.expect(None, self.model.send, wid, logged)

    @rule(wid=workflows, metadata=st.sampled_from([None, {"by": "alice"}]))
    def approve(self, wid: str, metadata: Any) -> None:
        assert self.agent is not None
        outcome = self.attempt(functools.partial(self.agent.approve_workflow, wid,
                                                 metadata=metadata))
        payload = {"approved": True, "reason": None, "metadata": metadata}
        self.expect(outcome, self.model.send, wid, [("approval", payload)])

    @rule(wid=workflows)
    def reject(self, wid: str) -> None:
        assert self.agent is not None
        outcome = self.attempt(functools.partial(self.agent.reject_workflow, wid,
                                                 reason="no"))
        self.expect(outcome, self.model.send, wid,
                    [("approval", {"approved": False, "reason": "no"})])

    @rule(wid=workflows, op=st.sampled_from(["pause", "resume", "terminate", "restart"]))
    def control(self, wid: str, op: str) -> None:
        assert self.agent is not None
        outcome = self.attempt(getattr(self.agent, f"{op}_workflow"), wid)
        self.expect(outcome, getattr(self.model, op), wid)

    @rule(seconds=JUMPS)
    def jump(self, seconds: float) -> None:
        seconds = self._off_boundaries(seconds)
        self.run(self.loop.jump, seconds)
        self.model.jump(seconds)

    @rule(seconds=JUMPS)
    def close_jump_reopen(self, seconds: float) -> None:
        seconds = self._off_boundaries(seconds)
        self.run(self._close)
        self.run(self.loop.jump, seconds)
        self.model.jump(seconds)
        self.run(self._open)

    @precondition(lambda self: self.count > 0)
    @rule(data=st.data(), seconds=JUMPS, event_type=st.sampled_from(["a", "b", "approval"]))
    def reopen_and_send_at_once(self, data: st.DataObject, seconds: float,
                                event_type: str) -> None:
        """Close, let time pass, reopen and send at once, racing the timers that fell due
        meanwhile. An event received after a wait's deadline is never taken by it (S8a),
        so the waits' outcomes are certain; only the send may find its workflow finished
        by such a timer (refused) or not yet (taken, and buffered)."""
        wid = data.draw(st.sampled_from(sorted(self.model.workflows)))
        seconds = self._off_boundaries(seconds)
        payload: Any = self._payload()
        if event_type == "approval":
            payload = {"approved": True, "reason": None, "metadata": payload}
        self.run(self._close)
        self.run(self.loop.jump, seconds)
        outcome: list[str | None] = []

        async def reopen_and_send() -> None:
            await self._open()
            assert self.agent is not None
            try:
                await self.agent.send_workflow_event("Program", wid,
                                                     {"type": event_type, "payload": payload})
                outcome.append(None)
            except eventwf.EventwfError as exc:
                outcome.append(type(exc).__name__)

        self.run(reopen_and_send)
        finished_before = self.model.workflows[wid].status in TERMINAL
        self.model.jump(seconds)
        finished_by_timer = not finished_before and self.model.workflows[wid].status in TERMINAL
        if finished_by_timer and outcome[0] is None:
            return  # the send was checked before the timer ended the run: it changed nothing
        self.expect(outcome[0], self.model.send, wid, [(event_type, payload)])

    # -- helpers -------------------------------------------------------------------------

    def _off_boundaries(self, seconds: float) -> float:
        """``seconds``, nudged so that no pending deadline lands next to the new time (which
        side of a boundary a float clock lands on is not behaviour)."""
        target = self.model.now + round(seconds * US)
        deadlines = self.model.deadlines()
        while any(abs(deadline - target) < MARGIN_US for deadline in deadlines):
            target += 3 * MARGIN_US
        return (target - self.model.now) / US

    def _stream_head(self, wid: str) -> int:
        return model_log.stream_head(self.db, wid)

    def _received_since(self, wid: str, head: int) -> list[tuple[str, Any]]:
        return model_log.received_since(self.db, wid, head)

    def _observed(self, wid: str) -> tuple[str, Any, str | None]:
        assert self.agent is not None
        info = self.run(self.agent.get_workflow, wid)
        status = self.run(self.agent.get_workflow_status, "Program", wid)
        assert info is not None and info.status == status.status
        output = status.output if info.status == "complete" else None
        return info.status, output, info.error_name if info.status == "errored" else None

    def _predicted(self, wid: str) -> tuple[str, Any, str | None]:
        wf = self.model.workflows[wid]
        return wf.status, wf.output, wf.error_name

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def engine_agrees_with_the_model(self) -> None:
        assert self.died is None, f"the engine died: {self.died!r}"
        if self.agent is None:
            return
        for wid in self.model.workflows:
            assert self._observed(wid) == self._predicted(wid), wid

    @invariant()
    def no_received_event_is_consumed_twice(self) -> None:
        taken = model_log.consumptions(self.db)
        assert len(taken) == len(set(taken)), taken

    @invariant()
    def the_log_verifies_and_projections_equal_a_rebuild(self) -> None:
        report = model_log.verify(self.db)
        assert report.intact and report.projections_checked, report.problems[:3]

    @invariant()
    def memory_equals_the_projection_rows(self) -> None:
        if self.engine is None:
            return
        rt = self.engine.runtime

        async def compare() -> None:
            for wid in self.model.workflows:
                assert rt.summaries.workflow(wid) == rt.store.load_workflow(wid), wid

        self.loop.call(compare)

    def teardown(self) -> None:
        try:
            if self.died is None and self.engine is not None:
                self.run(self._close)
                self.run(self._open)  # a log the engine opened once opens again
                self.engine_agrees_with_the_model()
                self.run(self._close)
        finally:
            self.loop.close()
            self._drop_log()


class Hibernating(EngineMachine):
    hibernate_after = 0.5  # every wait of the programs hibernates


class InMemory(EngineMachine):
    hibernate_after = None


def _settings(examples: int, steps: int, *, derandomize: bool) -> settings:
    return settings(max_examples=examples, stateful_step_count=steps, deadline=None,
                    derandomize=derandomize, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


# The PR tier runs the same examples every time (a CI run must not depend on luck); the
# long tier explores new ones on every run (and prints the seed of a failure).
PR = _settings(100, 25, derandomize=True)
LONG = _settings(400, 50, derandomize=False)

TestHibernating = Hibernating.TestCase
TestHibernating.settings = PR
TestInMemory = InMemory.TestCase
TestInMemory.settings = PR


@pytest.mark.slow
class TestLongHibernating(Hibernating.TestCase):  # type: ignore[misc,name-defined]
    settings = LONG


@pytest.mark.slow
class TestLongInMemory(InMemory.TestCase):  # type: ignore[misc,name-defined]
    settings = LONG


# -- the same machines on PostgreSQL -------------------------------------------------------

class OnPostgres(EngineMachine):
    """A machine whose log is a fresh database of the session's server, dropped after.

    Its clock is a :class:`ManualClock`, not a ``MockClock``: the engine runs as it does in
    production, each commit in a worker thread while the engine goes on (``_settle`` waits
    for it). Its lease rounds are then timed by the manual clock, which stands still
    between jumps, while the lease lives in real time: a lease of an hour outlasts any
    example (one engine holds every shard; nothing here is about takeover)."""

    server: ClassVar[PgCluster | ExternalServer]
    lease_ttl = 3600.0

    def _clock(self) -> ManualClock:
        return ManualClock()

    def _new_log(self) -> str:
        return self.server.new_database()

    def _drop_log(self) -> None:
        self.server.drop_database(self.db)


def on_postgres(machine: type[EngineMachine], server: PgCluster | ExternalServer
                ) -> type[EngineMachine]:
    """``machine`` with its log in a fresh database of ``server`` per example."""
    return type(f"Pg{machine.__name__}", (OnPostgres, machine), {"server": server})


# A database per example costs more than a file, and every commit is a round trip: fewer
# examples keep the PR tier's PostgreSQL share of the default suite near 30 s.
PG_PR = _settings(10, 20, derandomize=True)
PG_LONG = _settings(200, 50, derandomize=False)
MACHINES = pytest.mark.parametrize("machine", [Hibernating, InMemory],
                                   ids=["hibernating", "in-memory"])


@MACHINES
def test_postgres(machine: type[EngineMachine], pg_server: PgCluster | ExternalServer) -> None:
    run_state_machine_as_test(on_postgres(machine, pg_server), settings=PG_PR)


@pytest.mark.slow
@MACHINES
def test_long_postgres(machine: type[EngineMachine], pg_server: PgCluster | ExternalServer
                       ) -> None:
    run_state_machine_as_test(on_postgres(machine, pg_server), settings=PG_LONG)
