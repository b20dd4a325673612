"""What replay answers for one durable command (replay.md R2, R5, R6, R15): a value,
never an action, so the step API carries it out and the replay machine stays pure."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from eventwf.model.events import ErrorInfo

__all__ = [
    "EXECUTE",
    "NOT_PATCHED",
    "PATCHED",
    "Decision",
    "Execute",
    "Raise",
    "Replayed",
    "ResumeAttempt",
    "ResumeBackoff",
    "ResumeSleep",
    "ResumeWait",
    "describe_command",
    "describe_task",
]


class Replayed(msgspec.Struct, frozen=True):
    """The command finished before: return ``value`` (for waits: ``(type, payload, time_us)``)."""

    value: Any


class Raise(msgspec.Struct, frozen=True):
    """The command failed before: raise ``error`` again (``timeout``: a wait timed out)."""

    error: ErrorInfo | None
    timeout: bool = False


class ResumeSleep(msgspec.Struct, frozen=True):
    """A timer was running: wait until ``wake_at_us``, but never longer than ``duration_us``."""

    wake_at_us: int
    duration_us: int


class ResumeBackoff(msgspec.Struct, frozen=True):
    """Attempt ``failed_attempt`` failed; the next begins at ``retry_at_us``."""

    failed_attempt: int
    retry_at_us: int
    delay_us: int


class ResumeAttempt(msgspec.Struct, frozen=True):
    """Attempt ``attempt`` had begun when the process stopped: run it again."""

    attempt: int


class ResumeWait(msgspec.Struct, frozen=True):
    """An event wait was in progress until ``timeout_at_us``."""

    event_type: str
    timeout_at_us: int
    timeout_us: int


class Execute(msgspec.Struct, frozen=True):
    """Past the end of its task's history: run the command for real (its number is the
    next one when its first event is logged)."""


EXECUTE: Final = Execute()

# ``step.patched(id)`` (R15): a logged marker command of this kind, named by the patch id;
# where the log was recorded before the patch, the call is answered False and issues nothing.
PATCHED: Final = "patched"
NOT_PATCHED: Final = Replayed(False)


Decision = Replayed | Raise | ResumeSleep | ResumeBackoff | ResumeAttempt | ResumeWait | Execute

_KIND_LABEL = {"sleep_until": "sleep_until", "wait": "wait_for_event"}


def describe_command(kind: str, name: str | None) -> str:
    label = _KIND_LABEL.get(kind, kind)
    return f"step.{label}({name!r})" if name is not None else f"step.{label}()"


def describe_task(task: tuple[int, ...]) -> str:
    """``run`` for the root task, else ``task 0.2`` (the 3rd task the 1st one started)."""
    return "run" if not task else "task " + ".".join(map(str, task))
