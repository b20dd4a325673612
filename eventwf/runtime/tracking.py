"""The tracking records behind the Agent API: lookups, queries, deletion.

Each agent tracks the workflows it started (as in the original); a record is a projection
row of the log, queried through the store with every input checked (agents.md T3-T13), and
dropped by a logged ``TrackingDeleted``.
"""

from __future__ import annotations

import base64
import binascii
import logging

import msgspec

from eventwf.errors import (
    EventwfError,
    TransitionError,
    UnknownWorkflowError,
    WorkflowNotFoundError,
)
from eventwf.model.events import TrackingDeleted, workflow_stream
from eventwf.model.status import STATUSES
from eventwf.model.types import InstanceStatus, WorkflowInfo, WorkflowPage
from eventwf.model.values import (
    created_before_us,
    is_binding_name,
    is_workflow_id,
    metadata_filter,
    shorten,
    status_filter,
    utc_from_us,
)
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.agent_host import AgentHost
from eventwf.runtime.runtime import Runtime
from eventwf.store.interface import TrackingQuery

__all__ = [
    "DELETE_BATCH",
    "binding_of",
    "delete_workflow",
    "delete_workflows",
    "get_workflow",
    "get_workflow_status",
    "get_workflows",
    "info",
    "lookup",
    "own",
    "tracked",
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


def binding_of(rt: Runtime, workflow_name: object) -> str:
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


def lookup(rt: Runtime, workflow_id: object) -> WorkflowSummary | None:
    """The workflow with this id; None for an id no workflow can have (never a raw error)."""
    return rt.summaries.workflow(workflow_id) if is_workflow_id(workflow_id) else None


def own(rt: Runtime, host: AgentHost, workflow_id: object) -> WorkflowSummary | None:
    s = lookup(rt, workflow_id)
    if s is None or not s.tracked or (s.agent_class, s.agent_name) != (host.agent_class, host.name):
        return None
    return s


def tracked(rt: Runtime, host: AgentHost, workflow_id: object) -> WorkflowSummary:
    s = own(rt, host, workflow_id)
    if s is None:
        raise WorkflowNotFoundError(f"Workflow {shorten(workflow_id)} not found in tracking table "
                                    f"of agent {host.agent_class}/{host.name}")
    return s


# -- starting and events ---------------------------------------------------------------


def get_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> WorkflowInfo | None:
    s = own(rt, host, workflow_id)
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
    binding = binding_of(rt, workflow_name)
    s = lookup(rt, workflow_id)
    if s is None or s.workflow_name != binding:
        raise WorkflowNotFoundError(f"no workflow {shorten(workflow_id)} under binding {binding!r}")
    return InstanceStatus(s.status, s.error_message, s.output)


# -- deleting records --------------------------------------------------------------------


async def delete_workflow(rt: Runtime, host: AgentHost, workflow_id: str) -> bool:
    """Drop a tracking record; False if there is none. A quarantined workflow's record
    stays (nothing is appended to its stream, T6a): ``TransitionError`` says so."""
    s = own(rt, host, workflow_id)
    if s is None:
        return False
    try:
        await rt.append([(workflow_stream(workflow_id), TrackingDeleted())])
    except TransitionError:
        s = own(rt, host, workflow_id)
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
