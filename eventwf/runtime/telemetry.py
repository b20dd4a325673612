"""Telemetry hooks: chosen once when an engine opens, a no-op unless OpenTelemetry is on.

Theory of operation: the runtime calls a few hooks (a run begins and ends, a ``step.do``
attempt begins and ends, a commit lands) on one ``Telemetry`` object made at open. Without
OpenTelemetry that object is ``NULL_TELEMETRY``: its hooks are empty methods and return
shared do-nothing objects, so a step allocates nothing for telemetry and nothing from
``opentelemetry`` is imported. Metrics are not counted through hooks at all: the
OpenTelemetry instruments observe the same figures as ``Engine.statistics()`` when a
reader collects them (``runtime/otel.py``), and only the events-per-commit histogram is
recorded as commits happen.

The choice (``open_telemetry``): ``telemetry=False`` is always the null object;
``telemetry=True``, or a ``tracer_provider``/``meter_provider`` given, is OpenTelemetry
(``TelemetryUnavailableError`` if ``opentelemetry-api`` is not installed); the default
``None`` is OpenTelemetry only if the program has already imported ``opentelemetry`` and
set a global SDK provider (a tracer or a meter provider that is not the API's own
placeholder), so an engine never imports the package on its own initiative.

Counting is always on and costs an integer increment where it happens (the writer counts
commits and events, the step API counts ``step.do`` outcomes in ``StepCounters``);
everything else is read when asked (``Runtime.statistics``), so ``Engine.statistics()``
and the exported metrics never disagree.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

import msgspec

from eventwf.errors import TelemetryUnavailableError
from eventwf.model.workflow_fold import WorkflowSummary

__all__ = ["NULL_RUN_TRACE", "NULL_TELEMETRY", "EngineStatistics", "NullTelemetry",
           "RunSubject", "RunTrace", "StepCounters", "Telemetry", "open_telemetry"]


class EngineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The engine's figures at one instant: counts since it opened, and gauges now.

    Counts since open: ``commits`` (log transactions), ``events`` (events committed),
    ``steps_completed`` / ``steps_failed`` (``step.do`` steps that logged a result or a
    final failure), ``attempts_failed`` (``step.do`` attempts that failed and were retried),
    ``hibernations``. Now: ``head`` (the log's last position), ``live_workflows`` (runs
    with a task), ``hibernated_workflows`` (waiting workflows whose run was dropped until
    a timer or an event wakes them), ``pending_timers`` (wake-ups scheduled for hibernated
    workflows; the timers of live runs are part of their task), ``writer_queue_depth``
    (appends waiting for the next commit), ``live_agents``, ``websocket_clients``
    (connected clients of every live agent).
    """

    commits: int
    events: int
    head: int
    live_workflows: int
    live_agents: int
    hibernations: int
    steps_completed: int
    steps_failed: int
    attempts_failed: int
    hibernated_workflows: int
    pending_timers: int
    writer_queue_depth: int
    websocket_clients: int


class StepCounters:
    """``step.do`` outcomes since the engine opened (one per engine, shared by its runs)."""

    __slots__ = ("attempts_failed", "steps_completed", "steps_failed")

    def __init__(self) -> None:
        self.steps_completed = 0
        self.steps_failed = 0
        self.attempts_failed = 0


Figures = Callable[[], EngineStatistics]


class WallClock(Protocol):
    """The engine's wall clock (``runtime/clock.py``): spans take their times from it."""

    def now_us(self) -> int: ...


class RunSubject(Protocol):
    """What a run span describes (``runner.WorkflowRunner``)."""

    workflow_id: str
    epoch: int

    @property
    def summary(self) -> WorkflowSummary: ...
    @property
    def clock(self) -> WallClock: ...
    @property
    def replayed_commands(self) -> int: ...


class AttemptScope(Protocol):
    """``with trace.attempt(name, attempt):`` around one ``step.do`` attempt."""

    def __enter__(self) -> object: ...
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RunTrace(Protocol):
    """The trace of one run execution: its step attempts, and its end."""

    def attempt(self, step: str, attempt: int) -> AttemptScope: ...
    def end(self, outcome: str) -> None: ...


class Telemetry(Protocol):
    """The hooks the runtime calls; one object per engine, chosen at open."""

    def run(self, subject: RunSubject) -> RunTrace:
        """A run execution begins (a start, a resume, a wake from hibernation, a reopen)."""
    def committed(self, events: int) -> None:
        """One commit of ``events`` events landed."""
    def watch(self, figures: Figures, log: str) -> None:
        """Report ``figures`` (read when metrics are collected) for the log at ``log``."""
    def close(self) -> None:
        """The engine closed: stop reporting its figures."""


class _NullScope:
    __slots__ = ()

    def __enter__(self) -> object:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None


_NULL_SCOPE = _NullScope()


class _NullRunTrace:
    __slots__ = ()

    def attempt(self, step: str, attempt: int) -> AttemptScope:
        return _NULL_SCOPE

    def end(self, outcome: str) -> None:
        pass


NULL_RUN_TRACE: RunTrace = _NullRunTrace()


class NullTelemetry:
    """No telemetry: every hook is empty and returns a shared object."""

    __slots__ = ()

    def run(self, subject: RunSubject) -> RunTrace:
        return NULL_RUN_TRACE

    def committed(self, events: int) -> None:
        pass

    def watch(self, figures: Figures, log: str) -> None:
        pass

    def close(self) -> None:
        pass


NULL_TELEMETRY: Telemetry = NullTelemetry()


def open_telemetry(enabled: bool | None, tracer_provider: Any = None,
                   meter_provider: Any = None) -> Telemetry:
    """The engine's telemetry, by the rule in this module's docstring."""
    if enabled is not None and not isinstance(enabled, bool):
        raise ValueError(f"invalid telemetry {enabled!r}: must be True, False or None")
    if enabled is False:
        return NULL_TELEMETRY
    if enabled is None and tracer_provider is None and meter_provider is None \
            and not _sdk_provider_set():
        return NULL_TELEMETRY
    try:
        otel = importlib.import_module("eventwf.runtime.otel")
    except ImportError as exc:
        raise TelemetryUnavailableError(
            f"telemetry={enabled!r} needs OpenTelemetry, which is not installed ({exc}); "
            "install it with pip install 'eventwf[otel]', or pass telemetry=False") from exc
    telemetry: Telemetry = otel.OtelTelemetry(tracer_provider, meter_provider)
    return telemetry


def _sdk_provider_set() -> bool:
    """Whether the program set a global OpenTelemetry provider (looked up only in modules
    it already imported: nothing is imported here)."""
    for module_name, getter in (("opentelemetry.trace", "get_tracer_provider"),
                                ("opentelemetry.metrics", "get_meter_provider")):
        module = sys.modules.get(module_name)
        if module is not None:
            provider = getattr(module, getter)()
            if not type(provider).__module__.startswith(module_name):
                return True  # not the API's proxy or no-op placeholder: an SDK's
    return False
