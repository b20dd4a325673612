"""The workflow operations behind the Agent API: start, events, control, agent state.

Each function validates its input, checks the current fold to give the precise error
(not found, duplicate, finished), and appends; the writer re-checks the same rules at
commit time, so a race can only turn into a clear error, never a bad log.
"""

from __future__ import annotations

import logging
from typing import Any

from eventwf.errors import (
    DuplicateWorkflowError,
    EventwfError,
    TransitionError,
    WorkflowNotFoundError,
)
from eventwf.model.codec import encode_value, json_value, roundtrip_value
from eventwf.model.events import (
    BindingMigrated,
    Event,
    EventReceived,
    PauseRequested,
    WorkflowPaused,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowTerminated,
    workflow_stream,
)
from eventwf.model.status import RUNNABLE
from eventwf.model.values import (
    MAX_METADATA_BYTES,
    check_binding_name,
    check_event_type,
    check_metadata,
    check_workflow_id,
    new_workflow_id,
    shorten,
)
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.agent_host import AgentHost
from eventwf.runtime.runtime import Runtime
from eventwf.runtime.tracking import binding_of, lookup, tracked

__all__ = [
    "migrate_workflow_binding",
    "pause_workflow",
    "restart_workflow",
    "resume_workflow",
    "run_workflow",
    "send_workflow_event",
    "terminate_workflow",
]

logger = logging.getLogger("eventwf")


async def run_workflow(rt: Runtime, host: AgentHost, workflow_name: object, params: Any,
                       workflow_id: str | None, metadata: dict[str, Any] | None,
                       if_exists: str = "error") -> str:
    """Start a workflow and its record in one append. With ``if_exists="return"`` a start
    whose id this agent already tracks under this binding returns the id and starts
    nothing (an idempotent start); any other clash raises ``DuplicateWorkflowError``."""
    if if_exists not in ("error", "return"):
        raise ValueError(f"invalid if_exists {shorten(if_exists)}: must be 'error' or 'return'")
    binding = binding_of(rt, workflow_name)
    generated = workflow_id is None
    workflow_id = new_workflow_id() if workflow_id is None else check_workflow_id(workflow_id)
    metadata = check_metadata(metadata)
    if metadata is not None:
        metadata = json_value(metadata, "workflow metadata", limit=MAX_METADATA_BYTES)
    params = roundtrip_value(params, f"the params of workflow {workflow_id!r}")
    if generated:  # random: no log holds it, so neither this check nor the writer reads it
        rt.summaries.born(workflow_id)
    else:
        existing = rt.summaries.workflow(workflow_id)
        if existing is not None and (existing.tracked or not existing.finished):
            return _already(existing, host, binding, if_exists)
    event = WorkflowStarted(binding, host.agent_class, host.name, params, metadata)
    try:
        await rt.append([(workflow_stream(workflow_id), event)])
    except TransitionError as exc:  # started meanwhile (a concurrent start of this id)
        rt.summaries.unborn(workflow_id)
        existing = rt.summaries.workflow(workflow_id)
        if existing is not None and if_exists == "return":
            return _already(existing, host, binding, if_exists)
        raise DuplicateWorkflowError(str(exc)) from exc
    finally:
        rt.summaries.unborn(workflow_id)
    return workflow_id


def _already(existing: WorkflowSummary, host: AgentHost, binding: str, if_exists: str) -> str:
    """The id of a workflow already there, for an idempotent start; else the clash."""
    workflow_id = existing.workflow_id
    same = (existing.tracked and existing.workflow_name == binding
            and (existing.agent_class, existing.agent_name) == (host.agent_class, host.name))
    if if_exists == "return" and same:
        return workflow_id
    if not existing.tracked:
        raise DuplicateWorkflowError(f'Workflow with ID "{workflow_id}" is still '
                                     f'{existing.status}')
    if if_exists == "return":
        raise DuplicateWorkflowError(
            f'Workflow with ID "{workflow_id}" is already being tracked as a '
            f"{existing.workflow_name!r} workflow of agent {existing.agent_class}/"
            f"{existing.agent_name}, not this start's")
    raise DuplicateWorkflowError(f'Workflow with ID "{workflow_id}" is already being tracked')


async def send_workflow_event(rt: Runtime, workflow_name: str, workflow_id: str,
                              event: object) -> None:
    binding = binding_of(rt, workflow_name)
    if not isinstance(event, dict) or "type" not in event or set(event) - {"type", "payload"}:
        raise ValueError(f"invalid workflow event {event!r}: expected {{'type': str, 'payload': "
                         "...}")
    event_type = check_event_type(event["type"])
    payload = event.get("payload")
    encode_value(payload, f"the payload of event {event_type!r}")
    s = lookup(rt, workflow_id)
    if s is None or s.workflow_name != binding:
        raise WorkflowNotFoundError(f"no workflow {shorten(workflow_id)} under binding {binding!r}")
    if s.finished or s.status == "unknown":
        raise EventwfError(f"workflow {workflow_id!r} is {s.status}; it can no longer receive "
                           "events")
    await rt.append([(workflow_stream(workflow_id), EventReceived(event_type, payload))])


# -- queries -----------------------------------------------------------------------------


# -- control -----------------------------------------------------------------------------


async def _append_one(rt: Runtime, workflow_id: str, event: Event) -> None:
    await rt.append([(workflow_stream(workflow_id), event)])


async def terminate_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> None:
    s = tracked(rt, host, workflow_id)
    if s.finished:
        raise EventwfError(f"cannot terminate workflow {workflow_id!r}: it is already "
                           f"{s.status}")
    await _append_one(rt, workflow_id, WorkflowTerminated())


async def pause_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> None:
    error: TransitionError | None = None
    for _ in range(5):
        s = tracked(rt, host, workflow_id)
        if s.status in ("paused", "waitingForPause"):
            return
        if s.status not in ("running", "waiting", "queued"):
            raise EventwfError(f"cannot pause workflow {workflow_id!r}: it is {s.status}")
        event: Event = PauseRequested() if s.status == "running" else WorkflowPaused()
        try:
            await _append_one(rt, workflow_id, event)
            return
        except TransitionError as exc:  # the status moved under us: look again
            error = exc
    raise EventwfError(f"could not pause workflow {workflow_id!r}: {error}")


async def resume_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> None:
    s = tracked(rt, host, workflow_id)
    if s.status in ("queued", "running", "waiting"):
        return
    if s.status not in ("paused", "waitingForPause"):
        raise EventwfError(f"cannot resume workflow {workflow_id!r}: it is {s.status}")
    binding_of(rt, s.workflow_name)
    await _append_one(rt, workflow_id, WorkflowResumed())


async def restart_workflow(rt: Runtime, host: AgentHost, workflow_id: str,
                           reset_tracking: bool) -> None:
    s = tracked(rt, host, workflow_id)
    binding_of(rt, s.workflow_name)
    await _append_one(rt, workflow_id, WorkflowRestarted(bool(reset_tracking)))


async def migrate_workflow_binding(rt: Runtime, host: AgentHost, old_name: str,
                                   new_name: str) -> int:
    check_binding_name(old_name)
    new = binding_of(rt, new_name)
    ids = rt.store.workflow_ids(host.agent_class, host.name, old_name)
    if not ids or old_name == new:
        return len(ids) if old_name == new else 0
    await rt.append([(workflow_stream(i), BindingMigrated(old_name, new)) for i in ids])
    for workflow_id in ids:
        s = rt.summaries.workflow(workflow_id)
        if s is not None and s.status in RUNNABLE:
            rt.runs.ensure(s)
    logger.info("Migrated %d workflow(s) from '%s' to '%s'", len(ids), old_name, new)
    return len(ids)


async def set_state(rt: Runtime, host: AgentHost, state: Any) -> None:
    value = json_value(state, f"state of agent {host.agent_class}/{host.name}")
    await rt.append(rt.agents.state_items(host.agent, "set", value, None))


async def patch_state(rt: Runtime, host: AgentHost, patch: Any) -> None:
    """Log an RFC 7396 merge patch of the agent's state (applied as of its commit)."""
    if patch is None:
        raise ValueError(f"Agent.patch_state takes a merge patch, got None (it would delete "
                         f"the whole state of agent {host.agent_class}/{host.name}; use "
                         f"set_state)")
    value = json_value(patch, f"state patch of agent {host.agent_class}/{host.name}")
    await rt.append(rt.agents.state_items(host.agent, "patch", value, None))

