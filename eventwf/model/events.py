"""The event catalogue: every fact eventwf logs, as one msgspec tagged union.

Rules (see specs/events.md): tags are explicit and never renamed; fields are only added
with defaults; a field's type never changes. Events are frozen, named in the past tense,
and carry no wall-clock time of their own: the log row's ``time`` is the event time.
Times inside events (deadlines) are integer microseconds since the epoch.

Streams: ``wf:<workflow_id>`` holds one workflow's history (all its runs);
``agent:<AgentClass>/<name>`` holds an agent's state changes and its callback outbox.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

__all__ = [
    "AgentCreated",
    "AgentStateMerged",
    "AgentStatePatched",
    "AgentStateReset",
    "AgentStateSet",
    "AnyEvent",
    "BindingMigrated",
    "CallbackScheduled",
    "CallbacksDelivered",
    "ErrorInfo",
    "Event",
    "EventConsumed",
    "EventReceived",
    "PauseRequested",
    "Recorded",
    "SleepCompleted",
    "SleepStarted",
    "StepAttemptFailed",
    "StepFailed",
    "StepRetrying",
    "StepSucceeded",
    "StreamClaimed",
    "TrackingDeleted",
    "WaitStarted",
    "WaitTimedOut",
    "WorkflowBlocked",
    "WorkflowCompleted",
    "WorkflowErrored",
    "WorkflowPaused",
    "WorkflowRestarted",
    "WorkflowResumed",
    "WorkflowRunning",
    "WorkflowStarted",
    "WorkflowTerminated",
    "WorkflowWaiting",
    "agent_stream",
    "parse_stream",
    "workflow_stream",
]

class Event(msgspec.Struct, frozen=True, tag_field="t", omit_defaults=True):
    """Base of every logged fact."""


class ErrorInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """An exception as logged: ``module.QualName``, its text, its args when encodable."""

    type: str
    message: str
    args: list[Any] | None = None
    traceback: str = ""
    attrs: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.type.rsplit(".", 1)[-1]


# -- workflow stream ---------------------------------------------------------------------


class WorkflowStarted(Event, frozen=True, tag="workflow.started"):
    """An agent started a workflow; this is also its tracking record (status ``queued``)."""

    workflow_name: str
    agent_class: str
    agent_name: str
    params: Any = None
    metadata: dict[str, Any] | None = None


class WorkflowRunning(Event, frozen=True, tag="workflow.running"):
    """The engine began executing a queued run (status ``running``)."""


class StepSucceeded(Event, frozen=True, tag="step.succeeded"):
    """Durable command ``seq`` of the current run finished with ``value``.

    ``kind`` is ``do``, ``now``, ``random``, ``uuid4``, ``report_complete``,
    ``report_error``, ``send_event``, ``update_state``, ``merge_state``, ``patch_state``
    or ``reset_state``.
    """

    seq: int
    kind: str
    name: str | None = None
    value: Any = None
    attempt: int = 1
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)


class StepAttemptFailed(Event, frozen=True, tag="step.attempt_failed"):
    """Attempt ``attempt`` of ``step.do`` failed; the next starts at ``retry_at_us``."""

    seq: int
    name: str
    attempt: int
    error: ErrorInfo
    retry_at_us: int
    delay_us: int
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)
    concurrent: bool = False  # other tasks of the run still run: the status stays
    code: str = ""  # fingerprint of the code that logged it (replay.md R16)


class StepRetrying(Event, frozen=True, tag="step.retrying"):
    """The back-off ended and attempt ``attempt`` began (status back to ``running``)."""

    seq: int
    name: str
    attempt: int


class StepFailed(Event, frozen=True, tag="step.failed"):
    """``step.do`` failed for good; replay raises ``error`` again without running it."""

    seq: int
    kind: str
    name: str
    attempt: int
    error: ErrorInfo
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)


class SleepStarted(Event, frozen=True, tag="sleep.started"):
    """A durable timer: the workflow waits until ``wake_at_us`` (at most ``duration_us``)."""

    seq: int
    name: str
    wake_at_us: int
    duration_us: int
    until: bool = False
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)
    concurrent: bool = False  # other tasks of the run still run: the status stays
    code: str = ""  # fingerprint of the code that logged it (replay.md R16)


class SleepCompleted(Event, frozen=True, tag="sleep.completed"):
    """The timer of command ``seq`` fired."""

    seq: int


class WaitStarted(Event, frozen=True, tag="wait.started"):
    """``wait_for_event`` found no buffered event of ``event_type`` and began waiting."""

    seq: int
    name: str
    event_type: str
    timeout_at_us: int
    timeout_us: int
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)
    concurrent: bool = False  # other tasks of the run still run: the status stays
    code: str = ""  # fingerprint of the code that logged it (replay.md R16)


class EventReceived(Event, frozen=True, tag="event.received"):
    """An outside event for this workflow, buffered FIFO per type until a wait takes it."""

    event_type: str
    payload: Any = None


class EventConsumed(Event, frozen=True, tag="event.consumed"):
    """Wait ``seq`` took the event logged at stream position ``received``."""

    seq: int
    name: str
    event_type: str
    received: int
    task: tuple[int, ...] = ()  # the run's task that issued it (replay.md R14)


class WaitTimedOut(Event, frozen=True, tag="wait.timed_out"):
    """Wait ``seq`` reached its timeout; replay raises ``WorkflowTimeoutError`` again."""

    seq: int
    name: str
    event_type: str


class WorkflowWaiting(Event, frozen=True, tag="workflow.waiting"):
    """A replayed run went back to the timer or wait of command ``seq`` (status ``waiting``)."""

    seq: int
    code: str = ""  # fingerprint of the code that logged it (replay.md R16)


class WorkflowCompleted(Event, frozen=True, tag="workflow.completed"):
    """``run`` returned ``output`` (status ``complete``)."""

    output: Any = None


class WorkflowErrored(Event, frozen=True, tag="workflow.errored"):
    """``run`` raised (status ``errored``)."""

    error: ErrorInfo


class PauseRequested(Event, frozen=True, tag="workflow.pause_requested"):
    """Pause asked while a step runs (status ``waitingForPause`` until the step ends)."""


class WorkflowPaused(Event, frozen=True, tag="workflow.paused"):
    """The workflow stopped at a step boundary (status ``paused``)."""


class WorkflowResumed(Event, frozen=True, tag="workflow.resumed"):
    """Resume: a pending pause is cancelled, or a paused run is queued to replay."""


class WorkflowBlocked(Event, frozen=True, tag="workflow.blocked"):
    """Replay contradicted the log at command ``seq``; nothing more runs until resumed."""

    seq: int
    error: ErrorInfo


class WorkflowTerminated(Event, frozen=True, tag="workflow.terminated"):
    """Stopped for good by ``terminate_workflow`` (status ``terminated``)."""


class WorkflowRestarted(Event, frozen=True, tag="workflow.restarted"):
    """A new run from the start: step history and buffered events are left behind."""

    reset_tracking: bool = True


class TrackingDeleted(Event, frozen=True, tag="tracking.deleted"):
    """The agent dropped its tracking record; the workflow itself is untouched."""


class BindingMigrated(Event, frozen=True, tag="binding.migrated"):
    """The workflow's binding was renamed from ``old_name`` to ``new_name``."""

    old_name: str
    new_name: str


# -- agent stream ------------------------------------------------------------------------


class AgentCreated(Event, frozen=True, tag="agent.created"):
    """First use of an agent instance."""

    agent_class: str
    name: str


class AgentStateSet(Event, frozen=True, tag="agent.state_set"):
    """The agent's state became ``state`` (from ``set_state`` or a workflow)."""

    state: Any = None
    workflow_id: str | None = None


class AgentStateMerged(Event, frozen=True, tag="agent.state_merged"):
    """Shallow merge of ``partial`` into the agent's (dict) state, by a workflow.

    ``initial`` is the state to merge into when the agent has no logged state yet (its
    class's ``initial_state`` then), so two first merges in one commit both survive.
    """

    partial: dict[str, Any]
    workflow_id: str | None = None
    initial: Any = None


class AgentStatePatched(Event, frozen=True, tag="agent.state_patched"):
    """RFC 7396 merge ``patch`` applied to the agent's state as of this event.

    ``initial`` is the state patched when the agent has no logged state yet (as for a
    merge), so concurrent first patches compose.
    """

    patch: Any = None
    workflow_id: str | None = None
    initial: Any = None


class AgentStateReset(Event, frozen=True, tag="agent.state_reset"):
    """The agent's state went back to its initial state, logged as ``state``."""

    state: Any = None
    workflow_id: str | None = None


class CallbackScheduled(Event, frozen=True, tag="callback.scheduled"):
    """An ``on_workflow_<kind>`` callback is due (outbox; delivered after commit)."""

    kind: str
    workflow_name: str
    workflow_id: str
    value: Any = None


class CallbacksDelivered(Event, frozen=True, tag="callback.delivered"):
    """Every callback of this agent up to global position ``through`` was delivered."""

    through: int


class StreamClaimed(Event, frozen=True, tag="stream.claimed"):
    """An engine took the stream over (PostgreSQL, specs/postgres.md PG13): a previous owner
    that still appends at the version it knew collides with this marker. Every fold takes
    it as a no-op apart from the stream's head; replay skips it."""

    owner: str
    epoch: int


AnyEvent = (
    WorkflowStarted
    | WorkflowRunning
    | StepSucceeded
    | StepAttemptFailed
    | StepRetrying
    | StepFailed
    | SleepStarted
    | SleepCompleted
    | WaitStarted
    | EventReceived
    | EventConsumed
    | WaitTimedOut
    | WorkflowWaiting
    | WorkflowCompleted
    | WorkflowErrored
    | PauseRequested
    | WorkflowPaused
    | WorkflowResumed
    | WorkflowBlocked
    | WorkflowTerminated
    | WorkflowRestarted
    | TrackingDeleted
    | BindingMigrated
    | AgentCreated
    | AgentStateSet
    | AgentStateMerged
    | AgentStatePatched
    | AgentStateReset
    | CallbackScheduled
    | CallbacksDelivered
    | StreamClaimed
)

EVENT_TYPES: dict[str, type[Event]] = {
    str(cls.__struct_config__.tag): cls
    for cls in AnyEvent.__args__
}


class Recorded(msgspec.Struct, frozen=True, gc=False):
    """An event with its place in the log."""

    position: int
    stream: str
    stream_position: int
    time_us: int
    event: Event


def workflow_stream(workflow_id: str) -> str:
    return "wf:" + workflow_id


def agent_stream(agent_class: str, name: str) -> str:
    return f"agent:{agent_class}/{name}"


@functools.lru_cache(maxsize=65536)
def parse_stream(stream: str) -> tuple[str, str, str]:
    """``("wf", id, "")`` or ``("agent", class, name)``; ``("other", stream, "")`` otherwise."""
    if stream.startswith("wf:"):
        return ("wf", stream[3:], "")
    if stream.startswith("agent:") and "/" in stream:
        cls, _, name = stream[6:].partition("/")
        return ("agent", cls, name)
    return ("other", stream, "")
