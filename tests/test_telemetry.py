"""Observability (docs/guides/observability.md): OpenTelemetry spans and metrics when asked
for, ``Engine.statistics()`` always, and nothing imported or done when it is off."""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import trio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import eventwf
from eventwf.errors import TelemetryUnavailableError
from eventwf.runtime.telemetry import NULL_TELEMETRY, open_telemetry
from tests.wfkit import TestAgent, virtual_wall

failures: dict[str, int] = {}


def _flaky(name: str, fails: int) -> str:
    """Fails ``fails`` times per name, then returns."""
    failures[name] = failures.get(name, 0) + 1
    if failures[name] <= fails:
        raise RuntimeError(f"{name} failed (attempt {failures[name]})")
    return f"{name} ok"


class Retried(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        retries = eventwf.Retries(limit=2, delay="1 second", backoff="constant")
        value = await step.do("flaky", functools.partial(_flaky, event.instance_id, 1),
                              retries=retries)
        if event.payload == "sleep":
            await step.sleep("nap", "1 hour")
        return value


class Steps(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        for k in range(event.payload):
            await step.do(f"step-{k}", functools.partial(int, k))
        if event.instance_id.startswith("nap"):
            await step.sleep("nap", "1 day")
        return event.payload


class Otel:
    """SDK providers with in-memory exporters, given to the engine (not set globally)."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def open(self, db: str, **kw: Any) -> Any:
        return eventwf.open_engine(db, agents=[TestAgent], workflows=[Retried, Steps],
                                   wall_clock=virtual_wall, tracer_provider=self.tracer_provider,
                                   meter_provider=self.meter_provider, **kw)

    def finished(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name.startswith(prefix)]

    def metrics(self, log: str) -> dict[str, Any]:
        """Each metric's data point for the log at ``log``: a value, or a histogram point."""
        out: dict[str, Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if point.attributes.get("eventwf.log") == log:
                            out[metric.name] = getattr(point, "value", point)
        return out


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    assert span.attributes is not None
    return dict(span.attributes)


async def test_a_retried_step_has_an_error_attempt_then_an_ok_one_under_its_run(db: str) -> None:
    otel = Otel()
    async with otel.open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Retried", id="retried-1")
        assert (await engine.wait_workflow(wid)).status == "complete"
    (run,) = otel.finished("workflow ")
    attempts = otel.finished("step ")
    assert [(_attrs(s)["eventwf.step.attempt"], _attrs(s)["eventwf.outcome"])
            for s in attempts] == [(1, "error"), (2, "ok")]
    for span in attempts:
        assert span.name == "step flaky"
        assert span.parent is not None and span.parent.span_id == run.context.span_id
        assert _attrs(span)["eventwf.step.name"] == "flaky"
        assert _attrs(span)["eventwf.workflow.id"] == wid
    assert attempts[0].events[0].name == "exception"  # the error is recorded on the span
    assert _attrs(run) | {"eventwf.workflow.created_at": "-"} == {
        "eventwf.workflow.id": wid, "eventwf.workflow.name": "Retried",
        "eventwf.agent": "TestAgent/a", "eventwf.workflow.run": 1,
        "eventwf.workflow.created_at": "-", "eventwf.execution": 1,
        "eventwf.replayed_commands": 0, "eventwf.outcome": "complete"}
    assert run.name == "workflow Retried"


async def test_each_run_execution_is_a_span_linked_to_the_same_workflow(db: str) -> None:
    otel = Otel()
    async with otel.open(db, hibernate_after=None) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        wid = await agent.run_workflow("Retried", "sleep", id="restarted-1")
        await trio.sleep(10)  # retried, then asleep for an hour: the engine closes
        assert (await agent.get_workflow(wid)).status == "waiting"  # type: ignore[union-attr]
    async with otel.open(db, hibernate_after=None) as engine:
        assert (await engine.wait_workflow(wid)).status == "complete"
    first, second = otel.finished("workflow ")
    assert [_attrs(s)["eventwf.outcome"] for s in (first, second)] == ["stopped", "complete"]
    assert {_attrs(s)["eventwf.workflow.id"] for s in (first, second)} == {wid}
    assert _attrs(first)["eventwf.workflow.created_at"] == \
        _attrs(second)["eventwf.workflow.created_at"]
    assert _attrs(second)["eventwf.replayed_commands"] == 2  # the step and the sleep
    assert first.context.trace_id != second.context.trace_id
    assert first.links[0].context == second.links[0].context  # the workflow's span context
    # the logged step is not attempted again after the reopen
    assert len(otel.finished("step ")) == 2


async def test_metrics_report_steps_commits_and_what_is_live(db: str) -> None:
    otel = Otel()
    async with otel.open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        for k in range(3):
            await engine.wait_workflow(await agent.run_workflow("Steps", 4, id=f"run-{k}"))
        await agent.run_workflow("Steps", 1, id="nap-1")
        await trio.sleep(120)  # asleep for a day: hibernated after a minute
        stats = engine.statistics()
        got = otel.metrics(engine.path)
    assert got["eventwf.steps.completed"] == stats.steps_completed == 3 * 4 + 1
    assert got["eventwf.commits"] == stats.commits
    assert got["eventwf.events.committed"] == stats.events
    assert got["eventwf.commit.events"].count == stats.commits
    assert got["eventwf.commit.events"].sum == stats.events
    assert got["eventwf.workflows.hibernated"] == stats.hibernated_workflows == 1
    assert got["eventwf.timers.pending"] == stats.pending_timers == 1
    assert got["eventwf.workflows.live"] == stats.live_workflows == 0
    assert got["eventwf.agents.live"] == stats.live_agents == 1
    assert got["eventwf.writer.queue_depth"] == 0
    assert got["eventwf.websocket.clients"] == 0
    assert got["eventwf.step_attempts.failed"] == got["eventwf.steps.failed"] == 0
    # a closed engine's figures are no longer observed (the histogram keeps what it had)
    assert set(otel.metrics(engine.path)) == {"eventwf.commit.events"}


async def test_statistics_count_steps_timers_and_clients_without_opentelemetry(
        db: str) -> None:
    failures.clear()
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Retried, Steps],
                                   wall_clock=virtual_wall, telemetry=False) as engine:
        assert engine.runtime.telemetry is NULL_TELEMETRY
        agent = await engine.get_agent(TestAgent, "a")
        await engine.wait_workflow(await agent.run_workflow("Retried", id="r-1"))
        await engine.wait_workflow(await agent.run_workflow("Steps", 5, id="s-1"))
        await agent.run_workflow("Retried", "sleep", id="r-2")
        await trio.sleep(120)
        stats = engine.statistics()
        assert (stats.steps_completed, stats.attempts_failed, stats.steps_failed) == (
            1 + 5 + 1, 2, 0)
        assert (stats.live_workflows, stats.hibernated_workflows, stats.pending_timers) == (
            0, 1, 1)
        assert stats.writer_queue_depth == 0 and stats.events >= stats.commits > 0
        async with trio.open_nursery() as nursery:
            server = await nursery.start(eventwf.serve, engine, "127.0.0.1", 0)
            url = f"ws://127.0.0.1:{server.port}"
            async with eventwf.connect_agent(url, "TestAgent", "a"), \
                    eventwf.connect_agent(url, "TestAgent", "a"):
                assert engine.statistics().websocket_clients == 2
            while engine.statistics().websocket_clients:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        await agent.terminate_workflow("r-2")
        assert engine.statistics().hibernated_workflows == 0  # it waits no more


def test_telemetry_must_be_true_false_or_none() -> None:
    with pytest.raises(ValueError, match="invalid telemetry 'yes'"):
        open_telemetry("yes")  # type: ignore[arg-type]


def test_asking_for_telemetry_without_opentelemetry_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "eventwf.runtime.otel", None)  # as if not installed
    with pytest.raises(TelemetryUnavailableError, match=r"pip install 'eventwf\[otel\]'"):
        open_telemetry(True)


_PROGRAM = """
import sys, trio, eventwf

class A(eventwf.Agent):
    pass

class W(eventwf.AgentWorkflow[A]):
    async def run(self, event, step):
        return await step.do("one", lambda: 1)

async def main():
    async with eventwf.open_engine(sys.argv[1], agents=[A], workflows=[W]) as engine:
        agent = await engine.get_agent(A, "a")
        await engine.wait_workflow(await agent.run_workflow("W"))
        print(type(engine.runtime.telemetry).__name__, engine.statistics().steps_completed)

{setup}
trio.run(main)
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""

_GLOBAL_PROVIDER = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
trace.set_tracer_provider(TracerProvider())
"""


def _program(db: str, setup: str) -> list[str]:
    code = textwrap.dedent(_PROGRAM).replace("{setup}", setup)
    done = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True,
                          check=True, timeout=120)
    return done.stdout.splitlines()


def test_an_engine_without_telemetry_imports_no_opentelemetry_module(db: str) -> None:
    assert _program(db, "") == ["NullTelemetry 1", "[]"]  # installed here, yet not imported


def test_a_global_sdk_provider_turns_telemetry_on_by_default(db: str) -> None:
    lines = _program(db, textwrap.dedent(_GLOBAL_PROVIDER))
    assert lines[0] == "OtelTelemetry 1"
    assert "opentelemetry.sdk.trace" in lines[1]
