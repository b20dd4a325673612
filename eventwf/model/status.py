"""The status of a workflow: one type, defined once, and the sets the engine acts on.

The values are Cloudflare's instance statuses (API.md "Status values"); unlike the
original, the engine knows the truth, so the status is exact (replay.md W1).
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["ACTIVE", "RUNNABLE", "STATUSES", "STOPPED", "TERMINAL", "WorkflowStatus"]

WorkflowStatus = Literal[
    "queued",
    "running",
    "paused",
    "errored",
    "terminated",
    "complete",
    "waiting",
    "waitingForPause",
    "unknown",
]
STATUSES: Final[tuple[WorkflowStatus, ...]] = get_args(WorkflowStatus)

# A finished run: its outcome is logged and nothing more happens to it.
TERMINAL: Final[frozenset[WorkflowStatus]] = frozenset({"complete", "errored", "terminated"})
# A run that is not finished (a quarantined one, ``unknown``, is neither).
ACTIVE: Final[frozenset[WorkflowStatus]] = frozenset(
    {"queued", "running", "waiting", "waitingForPause", "paused"})
# A run that has (or should have) a task executing it.
RUNNABLE: Final[frozenset[WorkflowStatus]] = ACTIVE - {"paused"}
# A run whose task must stop.
STOPPED: Final[frozenset[WorkflowStatus]] = TERMINAL | {"paused", "unknown"}
