"""OpenTelemetry for an engine: a span per run execution and per ``step.do`` attempt,
and metrics that observe ``Engine.statistics()``. The only module that imports
``opentelemetry``; ``telemetry.open_telemetry`` imports it only when telemetry is on.

Spans. A run execution (the task that runs ``AgentWorkflow.run`` once: a start, a resume,
a wake from hibernation, a reopen after a crash; each replays the log before it goes on)
is a span ``workflow <binding>`` with the workflow id, binding, agent, run number,
execution number, the workflow's first start time and how many logged commands it
replayed. A workflow's executions are not one trace (no process lives as long as a
workflow): every execution links to the same span context, derived from the workflow id
and its creation time, so a backend can gather them; search by ``eventwf.workflow.id``
does the same. Each ``step.do`` attempt is a child span ``step <name>`` with its attempt
number and outcome (``ok``, ``error`` or ``cancelled``), current while the step's
callable runs, so the callable's own spans nest under it. Times come from the engine's
clock (under ``MockClock`` spans follow the mock time).

Metrics (meter ``eventwf``; each observation carries ``eventwf.log``, the log's path):
counters read from the engine's statistics when a reader collects, the histogram of
events per commit recorded per commit, gauges for what is live now (``_OBSERVED``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from opentelemetry import context, metrics, trace

from eventwf.runtime.telemetry import AttemptScope, EngineStatistics, RunSubject, RunTrace

__all__ = ["OtelTelemetry"]

_SCOPE = "eventwf"
Figures = Callable[[], EngineStatistics]

# (instrument name, EngineStatistics field, unit, description); counters, then gauges
_COUNTERS = (
    ("eventwf.steps.completed", "steps_completed", "{step}", "step.do steps that logged a result"),
    ("eventwf.steps.failed", "steps_failed", "{step}", "step.do steps that logged a final failure"),
    ("eventwf.step_attempts.failed", "attempts_failed", "{attempt}",
     "step.do attempts that failed and were retried"),
    ("eventwf.commits", "commits", "{commit}", "log transactions committed"),
    ("eventwf.events.committed", "events", "{event}", "events committed to the log"),
    ("eventwf.hibernations", "hibernations", "{workflow}", "runs dropped until woken"),
)
_GAUGES = (
    ("eventwf.writer.queue_depth", "writer_queue_depth", "{append}",
     "appends waiting for the next commit"),
    ("eventwf.workflows.live", "live_workflows", "{workflow}", "workflow runs with a task"),
    ("eventwf.workflows.hibernated", "hibernated_workflows", "{workflow}",
     "waiting workflows whose run was dropped until a timer or an event wakes them"),
    ("eventwf.timers.pending", "pending_timers", "{timer}",
     "wake-ups scheduled for hibernated workflows"),
    ("eventwf.agents.live", "live_agents", "{agent}", "agent objects in memory"),
    ("eventwf.websocket.clients", "websocket_clients", "{client}",
     "WebSocket clients connected to the engine's agents"),
)


class _Instruments:
    """The instruments of one meter, shared by every engine reporting there (an SDK keeps
    the first callbacks of an instrument name, so each engine adds a source instead)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.sources: dict[int, tuple[Figures, dict[str, str]]] = {}
        self.events_per_commit = meter.create_histogram(
            "eventwf.commit.events", unit="{event}", description="events per commit")
        for name, field, unit, description in _COUNTERS:
            meter.create_observable_counter(name, [self._observer(field)], unit, description)
        for name, field, unit, description in _GAUGES:
            meter.create_observable_gauge(name, [self._observer(field)], unit, description)

    def _observer(self, field: str) -> Callable[[metrics.CallbackOptions],
                                               Iterable[metrics.Observation]]:
        def observe(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
            return [metrics.Observation(getattr(figures(), field), attributes)
                    for figures, attributes in list(self.sources.values())]
        return observe


_INSTRUMENTS: dict[int, tuple[metrics.Meter, _Instruments]] = {}  # by id(meter)


def _instruments(meter: metrics.Meter) -> _Instruments:
    entry = _INSTRUMENTS.get(id(meter))
    if entry is None or entry[0] is not meter:
        entry = _INSTRUMENTS[id(meter)] = (meter, _Instruments(meter))
    return entry[1]


class OtelTelemetry:
    """Telemetry through OpenTelemetry (the global providers unless given others)."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 meter_provider: metrics.MeterProvider | None = None) -> None:
        self._tracer = trace.get_tracer(_SCOPE, tracer_provider=tracer_provider)
        self._instruments = _instruments(metrics.get_meter(_SCOPE,
                                                           meter_provider=meter_provider))
        self._attributes: dict[str, str] = {}

    def run(self, subject: RunSubject) -> RunTrace:
        return _RunSpan(self._tracer, subject)

    def committed(self, events: int) -> None:
        self._instruments.events_per_commit.record(events, self._attributes)

    def watch(self, figures: Figures, log: str) -> None:
        self._attributes = {"eventwf.log": log}
        self._instruments.sources[id(self)] = (figures, self._attributes)

    def close(self) -> None:
        self._instruments.sources.pop(id(self), None)


def workflow_span_context(workflow_id: str, created_us: int) -> trace.SpanContext:
    """The span context every execution of one workflow links to: derived from its id
    and creation time, so it is the same in every process and never reused."""
    digest = hashlib.sha256(f"{workflow_id}/{created_us}".encode()).digest()
    return trace.SpanContext(int.from_bytes(digest[:16]) or 1, int.from_bytes(digest[16:24]) or 1,
                             is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat()


class _RunSpan:
    """One run execution's span and the attributes its attempt spans repeat."""

    def __init__(self, tracer: trace.Tracer, subject: RunSubject) -> None:
        summary = subject.summary
        self._tracer = tracer
        self._clock = subject.clock
        self._common: dict[str, Any] = {
            "eventwf.workflow.id": summary.workflow_id,
            "eventwf.workflow.name": summary.workflow_name,
            "eventwf.agent": f"{summary.agent_class}/{summary.agent_name}",
        }
        link = trace.Link(workflow_span_context(summary.workflow_id, summary.created_us),
                          {"eventwf.link": "workflow"})
        self._span = tracer.start_span(
            f"workflow {summary.workflow_name}", links=[link],
            start_time=self._clock.now_us() * 1000,
            attributes={**self._common, "eventwf.workflow.run": summary.run,
                        "eventwf.workflow.created_at": _iso(summary.created_us),
                        "eventwf.execution": subject.epoch,
                        "eventwf.replayed_commands": subject.replayed_commands})
        self._context = trace.set_span_in_context(self._span)

    def attempt(self, step: str, attempt: int) -> AttemptScope:
        return _AttemptSpan(self, step, attempt)

    def start_attempt(self, step: str, attempt: int) -> trace.Span:
        return self._tracer.start_span(
            f"step {step}", context=self._context, start_time=self._clock.now_us() * 1000,
            attributes={**self._common, "eventwf.step.name": step,
                        "eventwf.step.attempt": attempt})

    def end_span(self, span: trace.Span) -> None:
        span.end(end_time=self._clock.now_us() * 1000)

    def end(self, outcome: str) -> None:
        self._span.set_attribute("eventwf.outcome", outcome)
        if outcome in ("errored", "crashed", "diverged"):
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, outcome))
        self.end_span(self._span)


class _AttemptSpan:
    """``with`` one attempt: its span is current while the step's callable runs."""

    __slots__ = ("_attempt", "_run", "_span", "_step", "_token")

    def __init__(self, run: _RunSpan, step: str, attempt: int) -> None:
        self._run, self._step, self._attempt = run, step, attempt

    def __enter__(self) -> object:
        self._span = self._run.start_attempt(self._step, self._attempt)
        self._token = context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        context.detach(self._token)
        span = self._span
        if error is None:
            span.set_attribute("eventwf.outcome", "ok")
        elif isinstance(error, Exception):
            span.set_attribute("eventwf.outcome", "error")
            span.record_exception(error)
            span.set_status(trace.Status(trace.StatusCode.ERROR,
                                         f"{type(error).__name__}: {error}"))
        else:  # cancelled (the run was stopped) or the engine closed
            span.set_attribute("eventwf.outcome", "cancelled")
        self._run.end_span(span)
