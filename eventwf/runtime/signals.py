"""The signals that stop a workflow run: ``BaseException`` subclasses, so user code's
``except Exception`` cannot swallow them (replay.md R9), and how to find one in the
exception group a nursery of the run raised (R14)."""

from __future__ import annotations

from eventwf.errors import NonDeterminismError

__all__ = ["Diverged", "Hibernate", "Stopped", "StorageFault", "signal_in"]


class Stopped(BaseException):
    """The run must stop here (paused at a step boundary, or replaced)."""


class Hibernate(BaseException):
    """The run waits long enough to drop its coroutine; the engine replays it on wake."""


class Diverged(BaseException):
    """Replay contradicted the log; carries the ``NonDeterminismError`` to record."""

    def __init__(self, error: NonDeterminismError) -> None:
        super().__init__(str(error))
        self.error = error


class StorageFault(BaseException):
    """The run cannot go on for now (an append failed in storage, its agent could not be
    loaded): it stops and is retried later, backing off."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def signal_in(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The engine's own stop signal inside ``group`` (raised by one of the run's tasks),
    the most binding first; None when it holds only the workflow's own errors."""
    for kind in (StorageFault, Stopped, Diverged, Hibernate):
        match, _ = group.split(kind)
        if match is not None:
            first = match.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            return first
    return None
