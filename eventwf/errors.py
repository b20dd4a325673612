"""Every error eventwf raises, in one place.

All of them subclass :class:`EventwfError` except :class:`NonRetryableError`, which user
step code raises to stop retries. Messages name the offending value and, where there is
one, the fix.
"""

from __future__ import annotations

__all__ = [
    "AgentMovedError",
    "CorruptLogError",
    "DuplicateWorkflowError",
    "EventwfError",
    "LogLockedError",
    "NonDeterminismError",
    "NonRetryableError",
    "PayloadTooLargeError",
    "ReplayCheckError",
    "RequestsWithdrawnError",
    "RpcError",
    "SchemaVersionError",
    "StepFailedError",
    "StorageError",
    "StreamsTakenError",
    "TelemetryUnavailableError",
    "TransitionError",
    "UnexpectedStatusError",
    "UnknownWorkflowError",
    "WorkflowNotFoundError",
    "WorkflowRejectedError",
    "WorkflowTimeoutError",
]


class EventwfError(Exception):
    """Base class of every error raised by eventwf itself."""


class NonRetryableError(Exception):
    """Raised by step code to fail its step at once, without further attempts.

    The failure is logged and raised into ``run``; a replay raises it again.
    """


class WorkflowRejectedError(EventwfError):
    """Raised by ``AgentWorkflow.wait_for_approval`` when the approval event says no."""

    def __init__(self, reason: str | None = None, workflow_id: str | None = None) -> None:
        self.reason = reason
        self.workflow_id = workflow_id
        super().__init__(f"Workflow rejected: {reason}" if reason else "Workflow rejected")

    def __reduce__(self) -> tuple[type[WorkflowRejectedError], tuple[str | None, str | None]]:
        return (type(self), (self.reason, self.workflow_id))


class WorkflowTimeoutError(EventwfError):
    """A step attempt, an event wait or ``wait_workflow`` ran out of time."""


class DuplicateWorkflowError(EventwfError):
    """``run_workflow`` was given an id that is already tracked or still running."""


class UnknownWorkflowError(EventwfError):
    """A workflow binding name that is not registered with the engine."""


class WorkflowNotFoundError(EventwfError):
    """No workflow (or no tracking record) exists under the given id."""


class RpcError(EventwfError):
    """A WebSocket RPC call failed; the message is the server's."""


class NonDeterminismError(EventwfError):
    """Replay met a step that the log says came in another order or under another name.

    The workflow runs nothing further and is left ``paused`` with this error recorded;
    fix the code and call ``resume_workflow`` (or restart/terminate it).
    """


class CorruptLogError(EventwfError):
    """An event that cannot be verified or decoded, or a broken sequence.

    Always names the log position; the bad bytes are never rewritten or skipped silently.
    """

    def __init__(self, message: str, *, position: int | None = None) -> None:
        self.position = position
        super().__init__(message)


class SchemaVersionError(EventwfError):
    """The log was written by a newer eventwf; this version refuses to write to it."""


class LogLockedError(EventwfError):
    """Another engine (in this or another process) already has the log open for writing."""


class StorageError(EventwfError):
    """The database failed to commit (disk full, I/O error); nothing was acknowledged.

    ``fatal`` is True when the engine cannot tell what the log now holds (or it disagrees
    with memory): the engine then stops, and reopening the log replays the truth.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class StreamsTakenError(StorageError):
    """Raised by a PostgreSQL store's commit when another engine appended to some of the
    batch's streams first (specs/postgres.md PG9a): nothing of the batch was committed.
    Not fatal: the engine drops the work of those streams' shards (ownership lost) and
    retries the rest. ``streams`` names the streams taken."""

    def __init__(self, message: str, streams: tuple[str, ...]) -> None:
        super().__init__(message)
        self.streams = streams


class RequestsWithdrawnError(StorageError):
    """Raised by a PostgreSQL store's commit when an inbox request the batch consumes
    (specs/postgres.md PG15) is no longer queued as this engine's: its requester withdrew
    it, or another engine took it over. Nothing of the batch was committed. Not fatal: the
    writer answers the appends of those requests ("withdrawn; nothing was logged") and
    retries the rest. ``request_ids`` names the requests missing."""

    def __init__(self, message: str, request_ids: tuple[int, ...]) -> None:
        super().__init__(message)
        self.request_ids = request_ids


class AgentMovedError(EventwfError):
    """Raised to a caller whose request touched an agent (or one of its workflows) that
    another engine now owns (PostgreSQL, several engines: specs/postgres.md PG9a). Nothing
    of the request was logged here; ask again (``get_agent``) to reach the new owner. The
    durable ``Agent`` methods do that themselves (PG15); ``delete_workflows`` and an
    ``@callable`` method raise it."""


class PayloadTooLargeError(EventwfError, ValueError):
    """A step result, event payload, parameter or agent state is over its size limit."""


class StepFailedError(EventwfError):
    """Stands in for a logged step failure whose exception class cannot be imported.

    ``error_type`` is the original ``module.QualName`` and ``message`` its text.
    """

    def __init__(self, error_type: str, message: str) -> None:
        self.error_type = error_type
        self.message = message
        super().__init__(f"{error_type}: {message}")


class AgentUnavailableError(EventwfError):
    """``connect_agent`` was refused by the server: an unknown agent class or a bad name
    (404/400), authentication refused (403), the connection cap reached (503), or the
    agent could not be loaded (500). ``status`` is the HTTP status, the message the
    server's reason."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransitionError(EventwfError):
    """An operation the workflow's (or agent's) current state does not allow.

    The log is checked before every append, so such an operation changes nothing.
    """


class MailboxFullError(TransitionError):
    """An outside event for a workflow that already holds the limit of undelivered events.

    Raised by ``send_workflow_event`` (and approve/reject) when the append is decided, so
    concurrent senders never pass the limit together; nothing is logged.
    """


class UnexpectedStatusError(EventwfError, AssertionError):
    """``eventwf.testing.wait_for_status`` saw the workflow settle in another status: a
    terminal one (``complete``, ``errored``, ``terminated``), a quarantine (``unknown``) or
    a pause on a divergence, none of which will turn into the awaited status by itself.

    An ``AssertionError`` too, so a test reports it as a failed expectation. ``seen`` is
    the status reached, ``expected`` the one awaited.
    """

    def __init__(self, message: str, *, workflow_id: str, expected: str, seen: str) -> None:
        super().__init__(message)
        self.workflow_id, self.expected, self.seen = workflow_id, expected, seen


class ReplayCheckError(EventwfError, AssertionError):
    """A check of ``eventwf.testing`` found a workflow that does not survive a crash or a
    replay: another outcome after a crash, a logged step body run again, a diverged or
    failed replay. The message names the workflow, the log position and, for a crash, the
    log file kept for inspection (``eventwf log PATH show``)."""


class TelemetryUnavailableError(EventwfError, ImportError):
    """Raised by ``open_engine`` when telemetry is asked for (``telemetry=True`` or a
    provider given) but ``opentelemetry-api`` cannot be imported: install the ``otel``
    extra, or pass ``telemetry=False``."""
