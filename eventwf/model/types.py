"""Public data types: what users pass in (``Retries``) and what they get back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from eventwf.model.status import WorkflowStatus
from eventwf.model.values import parse_duration

__all__ = [
    "BACKOFFS",
    "InstanceStatus",
    "ReceivedEvent",
    "Retries",
    "WorkflowEvent",
    "WorkflowInfo",
    "WorkflowPage",
    "WorkflowStatus",
]

BACKOFFS = ("constant", "linear", "exponential")


class Retries(msgspec.Struct, frozen=True):
    """How ``step.do`` retries: ``limit`` retries (attempts = limit + 1) spaced by ``delay``.

    The delay after attempt k is d (constant), ``d * k`` (linear) or ``d * 2**(k-1)``
    (exponential).
    Fields are checked when the object is built.
    """

    limit: int = 5
    delay: float | str | timedelta = "10 seconds"
    backoff: str = "exponential"

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"invalid Retries.limit {self.limit!r}: must be an int >= 0")
        parse_duration(self.delay, what="Retries.delay")
        if self.backoff not in BACKOFFS:
            raise ValueError(
                f"invalid Retries.backoff {self.backoff!r}: must be one of {', '.join(BACKOFFS)}"
            )

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = parse_duration(self.delay, what="Retries.delay")
        if self.backoff == "linear":
            return base * attempt
        if self.backoff == "exponential":
            return base * 2.0 ** (attempt - 1)
        return base


class WorkflowInfo(msgspec.Struct, frozen=True):
    """A workflow's tracking record, as its agent sees it."""

    workflow_id: str
    workflow_name: str
    agent_class: str
    agent_name: str
    status: WorkflowStatus
    metadata: dict[str, Any] | None
    error_name: str | None
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class WorkflowPage(msgspec.Struct, frozen=True):
    """One page of ``get_workflows``; pass ``next_cursor`` back for the next."""

    workflows: list[WorkflowInfo]
    total: int
    next_cursor: str | None


class InstanceStatus(msgspec.Struct, frozen=True):
    """The engine's view of one workflow: status, error message and ``run``'s return value."""

    status: WorkflowStatus
    error: str | None = None
    output: Any = None


class WorkflowEvent(msgspec.Struct, frozen=True):
    """The event ``run`` receives: the params, the workflow id and the start time."""

    payload: Any
    instance_id: str
    timestamp: datetime


class ReceivedEvent(msgspec.Struct, frozen=True):
    """What ``step.wait_for_event`` returns."""

    type: str
    payload: Any
    timestamp: datetime
