"""Pure fold of an agent's events: its state and its callback outbox cursor.

Like the workflow fold (``_fold``), it reads no clock, database or global: an event that
cannot apply raises :class:`TransitionError` and changes nothing, so the writer checks
every append against it before it commits.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventwf.errors import TransitionError
from eventwf.model.events import (
    AgentCreated,
    AgentStateMerged,
    AgentStatePatched,
    AgentStateReset,
    AgentStateSet,
    CallbackScheduled,
    CallbacksDelivered,
    Recorded,
    StreamClaimed,
)
from eventwf.model.merge_patch import merge_patch

__all__ = ["AgentSummary", "apply_agent", "quarantine_agent"]

_replace = msgspec.structs.replace


class AgentSummary(msgspec.Struct, frozen=True, gc=False):
    """An agent's folded state and its callback outbox cursor."""

    agent_class: str
    name: str
    state: Any = None
    has_state: bool = False  # False: the state is the class's current initial_state
    head: int = 0
    delivered_through: int = 0  # global position of the last delivered callback
    last_callback: int = 0  # global position of the last scheduled callback
    corrupt_position: int | None = None
    state_position: int = 0  # global position of the event that set the current state

    @property
    def callbacks_pending(self) -> bool:
        return self.last_callback > self.delivered_through


def apply_agent(summary: AgentSummary | None, rec: Recorded) -> AgentSummary:
    """The agent after ``rec``; ``TransitionError`` for an event that cannot apply."""
    event = rec.event
    if isinstance(event, AgentCreated):
        if summary is not None:
            raise TransitionError(f"agent {event.agent_class}/{event.name} already exists")
        return AgentSummary(event.agent_class, event.name, head=rec.stream_position)
    if summary is None:
        raise TransitionError(
            f"{type(event).__name__} for agent stream {rec.stream!r} before it exists"
        )
    if isinstance(event, StreamClaimed):  # another engine's fence (PG13): only the head moves
        return _replace(summary, head=rec.stream_position)
    if summary.corrupt_position is not None:
        raise TransitionError(
            f"agent {summary.agent_class}/{summary.name} is quarantined (corrupt event at log "
            f"position {summary.corrupt_position})"
        )
    head = rec.stream_position
    if isinstance(event, CallbackScheduled):  # the common cases first, without a dict
        return _replace(summary, head=head, last_callback=rec.position)
    if isinstance(event, AgentStateSet | AgentStateReset):
        return _replace(summary, head=head, state=event.state, has_state=True,
                        state_position=rec.position)
    if isinstance(event, CallbacksDelivered):
        through = event.through
        if through < summary.delivered_through or through > rec.position:
            raise TransitionError(
                f"callbacks of agent {summary.agent_class}/{summary.name} delivered through "
                f"{through}, but the cursor is at {summary.delivered_through}"
            )
        return _replace(summary, head=head, delivered_through=through)
    if isinstance(event, AgentStateMerged):
        base = summary.state if summary.has_state else event.initial
        if not isinstance(base, dict):
            raise TransitionError(
                f"merge into agent {summary.agent_class}/{summary.name} needs a dict state; "
                f"it is {type(base).__name__ if summary.has_state else 'unset'}"
            )
        return _replace(summary, head=head, state={**base, **event.partial}, has_state=True,
                        state_position=rec.position)
    if isinstance(event, AgentStatePatched):
        base = summary.state if summary.has_state else event.initial
        return _replace(summary, head=head, state=merge_patch(base, event.patch),
                        has_state=True, state_position=rec.position)
    raise TransitionError(f"{type(event).__name__} does not belong on an agent stream")


def quarantine_agent(
    summary: AgentSummary | None, agent_class: str, name: str, position: int
) -> AgentSummary:
    """The summary of an agent whose event at ``position`` cannot be read."""
    if summary is None:
        summary = AgentSummary(agent_class, name)
    if summary.corrupt_position is not None:
        return summary
    return _replace(summary, corrupt_position=position)
