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
    (exponential), at most ``max_delay`` (None: no cap). ``jitter`` (0 to 1) shortens
    each delay by a random fraction of at most ``jitter`` of it, so retries of many
    workflows that failed together spread out; it never lengthens one. The random part is
    drawn once, when the failed attempt is logged with the time of the next one, so a
    replay waits for the logged time (replay.md S2a).
    Fields are checked when the object is built.
    """

    limit: int = 5
    delay: float | str | timedelta = "10 seconds"
    backoff: str = "exponential"
    max_delay: float | str | timedelta | None = None
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(f"invalid Retries.limit {self.limit!r}: must be an int >= 0")
        parse_duration(self.delay, what="Retries.delay")
        if self.backoff not in BACKOFFS:
            raise ValueError(
                f"invalid Retries.backoff {self.backoff!r}: must be one of {', '.join(BACKOFFS)}"
            )
        if self.max_delay is not None:
            parse_duration(self.max_delay, what="Retries.max_delay", allow_zero=False)
        jitter = self.jitter
        if (isinstance(jitter, bool) or not isinstance(jitter, int | float)
                or not 0 <= jitter <= 1):  # NaN fails the range too
            raise ValueError(
                f"invalid Retries.jitter {jitter!r}: must be a number from 0 to 1 (the largest "
                "fraction of a delay taken off at random)")

    def delay_after(self, attempt: int, draw: float = 0.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based); ``draw`` (0 to
        1, drawn by the caller) picks how much of the jitter is taken off."""
        base = parse_duration(self.delay, what="Retries.delay")
        if self.backoff == "linear":
            delay = base * attempt
        elif self.backoff == "exponential":
            delay = base * 2.0 ** min(attempt - 1, 1000)
        else:
            delay = base
        if self.max_delay is not None:
            delay = min(delay, parse_duration(self.max_delay, what="Retries.max_delay"))
        return delay * (1.0 - self.jitter * draw)


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
