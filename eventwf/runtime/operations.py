"""The workflow operations behind the Agent API: start, events, queries, control.

Each function validates its input, checks the current fold to give the precise error
(not found, duplicate, finished), and appends; the writer re-checks the same rules at
commit time, so a race can only turn into a clear error, never a bad log.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

import msgspec

from eventwf.errors import (
    DuplicateWorkflowError,
    EventwfError,
    TransitionError,
    UnknownWorkflowError,
    WorkflowNotFoundError,
)
from eventwf.model.codec import encode_value, json_value, roundtrip_value
from eventwf.model.events import (
    BindingMigrated,
    Event,
    EventReceived,
    PauseRequested,
    TrackingDeleted,
    WorkflowPaused,
    WorkflowRestarted,
    WorkflowResumed,
    WorkflowStarted,
    WorkflowTerminated,
    workflow_stream,
)
from eventwf.model.status import RUNNABLE, STATUSES
from eventwf.model.types import InstanceStatus, WorkflowInfo, WorkflowPage
from eventwf.model.values import (
    MAX_METADATA_BYTES,
    check_binding_name,
    check_event_type,
    check_metadata,
    check_workflow_id,
    created_before_us,
    is_binding_name,
    is_workflow_id,
    metadata_filter,
    new_workflow_id,
    shorten,
    status_filter,
    utc_from_us,
)
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.agent_host import AgentHost
from eventwf.runtime.runtime import Runtime
from eventwf.store.interface import TrackingQuery

__all__ = [
    "delete_workflow",
    "delete_workflows",
    "get_workflow",
    "get_workflow_status",
    "get_workflows",
    "info",
    "migrate_workflow_binding",
    "pause_workflow",
    "restart_workflow",
    "resume_workflow",
    "run_workflow",
    "send_workflow_event",
    "terminate_workflow",
]

logger = logging.getLogger("eventwf")
DELETE_BATCH = 1000  # tracking records dropped per append by delete_workflows
_BAD_CURSOR = "Invalid pagination cursor. The cursor may be malformed or corrupted."
_MAX_CURSOR = 512  # characters; the cursors we make are under 200


def info(s: WorkflowSummary) -> WorkflowInfo:
    return WorkflowInfo(
        workflow_id=s.workflow_id, workflow_name=s.workflow_name, agent_class=s.agent_class,
        agent_name=s.agent_name, status=s.status,
        metadata=s.metadata, error_name=s.error_name, error_message=s.error_message,
        created_at=utc_from_us(s.created_us), updated_at=utc_from_us(s.updated_us),
        completed_at=None if s.completed_us is None else utc_from_us(s.completed_us),
    )


def _binding(rt: Runtime, workflow_name: object) -> str:
    """The binding a name (or a registered workflow class) names."""
    if isinstance(workflow_name, type):
        names = [b for b, cls in rt.workflow_classes.items() if cls is workflow_name]
        if len(names) == 1:
            return names[0]
        if names:
            raise ValueError(f"workflow class {workflow_name.__qualname__} is registered under "
                             f"{len(names)} bindings ({', '.join(sorted(names))}): pass the "
                             "binding name")
    if not isinstance(workflow_name, str) or workflow_name not in rt.workflow_classes:
        known = ", ".join(sorted(rt.workflow_classes)) or "none"
        shown = workflow_name.__qualname__ if isinstance(workflow_name, type) else \
            shorten(workflow_name)
        raise UnknownWorkflowError(
            f"Workflow binding {shown} is not registered with this engine "
            f"(registered: {known})")
    return workflow_name


def _lookup(rt: Runtime, workflow_id: object) -> WorkflowSummary | None:
    """The workflow with this id; None for an id no workflow can have (never a raw error)."""
    return rt.summaries.workflow(workflow_id) if is_workflow_id(workflow_id) else None


def _own(rt: Runtime, host: AgentHost, workflow_id: object) -> WorkflowSummary | None:
    s = _lookup(rt, workflow_id)
    if s is None or not s.tracked or (s.agent_class, s.agent_name) != (host.agent_class, host.name):
        return None
    return s


def tracked(rt: Runtime, host: AgentHost, workflow_id: object) -> WorkflowSummary:
    s = _own(rt, host, workflow_id)
    if s is None:
        raise WorkflowNotFoundError(f"Workflow {shorten(workflow_id)} not found in tracking table "
                                    f"of agent {host.agent_class}/{host.name}")
    return s


# -- starting and events ---------------------------------------------------------------


async def run_workflow(rt: Runtime, host: AgentHost, workflow_name: object, params: Any,
                       workflow_id: str | None, metadata: dict[str, Any] | None,
                       if_exists: str = "error") -> str:
    """Start a workflow and its record in one append. With ``if_exists="return"`` a start
    whose id this agent already tracks under this binding returns the id and starts
    nothing (an idempotent start); any other clash raises ``DuplicateWorkflowError``."""
    if if_exists not in ("error", "return"):
        raise ValueError(f"invalid if_exists {shorten(if_exists)}: must be 'error' or 'return'")
    binding = _binding(rt, workflow_name)
    workflow_id = new_workflow_id() if workflow_id is None else check_workflow_id(workflow_id)
    metadata = check_metadata(metadata)
    if metadata is not None:
        metadata = json_value(metadata, "workflow metadata", limit=MAX_METADATA_BYTES)
    params = roundtrip_value(params, f"the params of workflow {workflow_id!r}")
    existing = rt.summaries.workflow(workflow_id)
    if existing is not None and (existing.tracked or not existing.finished):
        return _already(existing, host, binding, if_exists)
    event = WorkflowStarted(binding, host.agent_class, host.name, params, metadata)
    try:
        await rt.append([(workflow_stream(workflow_id), event)])
    except TransitionError as exc:  # started meanwhile (a concurrent start of this id)
        existing = rt.summaries.workflow(workflow_id)
        if existing is not None and if_exists == "return":
            return _already(existing, host, binding, if_exists)
        raise DuplicateWorkflowError(str(exc)) from exc
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
    binding = _binding(rt, workflow_name)
    if not isinstance(event, dict) or "type" not in event or set(event) - {"type", "payload"}:
        raise ValueError(f"invalid workflow event {event!r}: expected {{'type': str, 'payload': "
                         "...}")
    event_type = check_event_type(event["type"])
    payload = event.get("payload")
    encode_value(payload, f"the payload of event {event_type!r}")
    s = _lookup(rt, workflow_id)
    if s is None or s.workflow_name != binding:
        raise WorkflowNotFoundError(f"no workflow {shorten(workflow_id)} under binding {binding!r}")
    if s.finished or s.status == "unknown":
        raise EventwfError(f"workflow {workflow_id!r} is {s.status}; it can no longer receive "
                           "events")
    await rt.append([(workflow_stream(workflow_id), EventReceived(event_type, payload))])


# -- queries -----------------------------------------------------------------------------


def get_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> WorkflowInfo | None:
    s = _own(rt, host, workflow_id)
    return None if s is None else info(s)


def _filter(host: AgentHost, status: object, workflow_name: object, metadata: object,
            created_before: object = None) -> TrackingQuery | None:
    """The query's WHERE clause, every input checked (T10-T12); None if nothing can match."""
    statuses = status_filter(status, STATUSES)
    if workflow_name is not None and not isinstance(workflow_name, str):
        raise ValueError(f"invalid workflow_name {shorten(workflow_name)}: must be a str")
    pairs = metadata_filter(metadata)
    before = None if created_before is None else created_before_us(created_before)
    if workflow_name is not None and not is_binding_name(workflow_name):
        return None  # no workflow can have this name (and SQLite could not bind some)
    return TrackingQuery(host.agent_class, host.name, statuses=statuses,
                         workflow_name=workflow_name, metadata=pairs, created_before_us=before)


class _Cursor(msgspec.Struct, forbid_unknown_fields=True):
    """A keyset position: the created time (µs) and id of the last record of a page."""

    c: int
    i: str


_CURSOR_DECODER = msgspec.json.Decoder(_Cursor)


def _cursor(created_us: int, workflow_id: str) -> str:
    raw = msgspec.json.encode(_Cursor(created_us, workflow_id))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: object) -> tuple[int, str]:
    """A cursor this engine could have made, or ``ValueError(_BAD_CURSOR)`` (T3, T10).

    The typed decode stops at the first unexpected token, so no nesting depth or number
    size reaches a recursive parser or SQLite.
    """
    if not isinstance(cursor, str) or not 0 < len(cursor) <= _MAX_CURSOR:
        raise ValueError(_BAD_CURSOR)
    try:
        data = _CURSOR_DECODER.decode(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise ValueError(_BAD_CURSOR) from None
    if not -(1 << 63) <= data.c < 1 << 63 or not is_workflow_id(data.i):
        raise ValueError(_BAD_CURSOR)
    return data.c, data.i


def get_workflows(rt: Runtime, host: AgentHost, *, status: object, workflow_name: object,
                  metadata: object, limit: object, order: object, cursor: object) -> WorkflowPage:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"invalid limit {shorten(limit)}: must be an int from 1 to 100")
    if order not in ("asc", "desc"):
        raise ValueError(f"invalid order {shorten(order)}: must be 'asc' or 'desc'")
    limit = min(limit, 100)
    where = _filter(host, status, workflow_name, metadata)
    after = None if cursor is None else _decode_cursor(cursor)
    if where is None:
        return WorkflowPage([], 0, None)
    store = rt.store
    rows = store.query_workflows(where, ascending=order == "asc", limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _cursor(rows[-1].created_us, rows[-1].workflow_id) if more and rows else None
    return WorkflowPage([info(s) for s in rows], store.count_workflows(where), next_cursor)


def get_workflow_status(rt: Runtime, workflow_name: str, workflow_id: str) -> InstanceStatus:
    binding = _binding(rt, workflow_name)
    s = _lookup(rt, workflow_id)
    if s is None or s.workflow_name != binding:
        raise WorkflowNotFoundError(f"no workflow {shorten(workflow_id)} under binding {binding!r}")
    return InstanceStatus(s.status, s.error_message, s.output)


# -- tracking records --------------------------------------------------------------------


async def delete_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> bool:
    """Drop a tracking record; False if there is none. A quarantined workflow's record
    stays (nothing is appended to its stream, T6a): ``TransitionError`` says so."""
    s = _own(rt, host, workflow_id)
    if s is None:
        return False
    try:
        await rt.append([(workflow_stream(workflow_id), TrackingDeleted())])
    except TransitionError:
        s = _own(rt, host, workflow_id)
        if s is not None and s.status == "unknown":
            raise
        return False  # deleted meanwhile
    return True


async def delete_workflows(rt: Runtime, host: AgentHost, *, status: object, workflow_name: object,
                           metadata: object, created_before: object) -> int:
    """Drop the matching records a batch of ``DELETE_BATCH`` at a time (one append each, so
    a million records never make one transaction); returns how many were dropped.
    Quarantined workflows' records stay (T6a); a warning counts them."""
    where = _filter(host, status, workflow_name, metadata, created_before)
    if where is None:
        return 0
    dropped = races = 0
    kept: set[str] = set()  # quarantined: nothing is appended to their streams
    while True:
        ids = []
        for s in rt.store.query_workflows(where, ascending=True, limit=DELETE_BATCH + len(kept)):
            if s.status == "unknown":
                kept.add(s.workflow_id)
            else:
                ids.append(s.workflow_id)
        if not ids:
            if kept:
                logger.warning("delete_workflows left %d quarantined workflow(s) of agent %s/%s "
                               "tracked (%s): their logs must be repaired first", len(kept),
                               host.agent_class, host.name, ", ".join(sorted(kept)[:5]))
            return dropped
        try:
            await rt.append([(workflow_stream(i), TrackingDeleted()) for i in ids])
        except TransitionError:
            races += 1  # one of them changed meanwhile: select again
            if races == 5:
                raise EventwfError(f"delete_workflows kept racing with other deletions after "
                                   f"dropping {dropped}; try again") from None
            continue
        dropped += len(ids)


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
    _binding(rt, s.workflow_name)
    await _append_one(rt, workflow_id, WorkflowResumed())


async def restart_workflow(rt: Runtime, host: AgentHost, workflow_id: str,
                           reset_tracking: bool) -> None:
    s = tracked(rt, host, workflow_id)
    _binding(rt, s.workflow_name)
    await _append_one(rt, workflow_id, WorkflowRestarted(bool(reset_tracking)))


async def migrate_workflow_binding(rt: Runtime, host: AgentHost, old_name: str,
                                   new_name: str) -> int:
    check_binding_name(old_name)
    new = _binding(rt, new_name)
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

