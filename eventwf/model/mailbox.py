"""A run's mailbox: the events it received and has not consumed yet (replay.md S8, S8a).

Why a module of its own: the replay machine matches the code's commands against the
log; which received event a ``wait_for_event`` takes is a separate question, with its own
invariants. Events are held by stream position and queued per type, oldest first; a wait
of one task *reserves* the event it is about to consume (its append is queued) so that a
concurrent wait of another task (R14) cannot take it too, and *releases* it when the
consumption was not logged. Values in, values out: no I/O, no clock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["Mailbox"]


class Mailbox:
    """The unconsumed events of one run, by stream position and by type (oldest first)."""

    __slots__ = ("_by_type", "_held", "_reserved")

    def __init__(self) -> None:
        self._held: dict[int, tuple[str, Any, int]] = {}
        self._by_type: dict[str, deque[int]] = {}
        self._reserved: set[int] = set()  # taken by a wait whose consumption is not fed yet

    def receive(self, position: int, event_type: str, payload: Any, time_us: int) -> None:
        """The event logged at stream ``position`` arrived: hold it, last of its type."""
        self._held[position] = (event_type, payload, time_us)
        self._by_type.setdefault(event_type, deque()).append(position)

    def holds(self, position: int, event_type: str) -> bool:
        """Whether the event at ``position`` is held, unconsumed, as an ``event_type`` event."""
        held = self._held.get(position)
        return held is not None and held[0] == event_type

    def take(self, position: int) -> tuple[str, Any, int]:
        """The logged consumption of the held event at ``position``: it leaves the mailbox
        (and its reservation, if a wait had reserved it); its type, payload and time."""
        event_type, payload, time_us = self._held.pop(position)
        self._reserved.discard(position)
        if position in self._by_type[event_type]:  # not when a wait reserved it
            self._by_type[event_type].remove(position)
        return event_type, payload, time_us

    def buffered(self, event_type: str, received_by_us: int | None = None
                 ) -> tuple[int, Any, int] | None:
        """The oldest unconsumed event of ``event_type`` (stream position, payload, time),
        if it was received no later than ``received_by_us`` (a wait's deadline: S8a)."""
        queue = self._by_type.get(event_type)
        if not queue:
            return None
        position = queue[0]
        _, payload, time_us = self._held[position]
        if received_by_us is not None and time_us > received_by_us:
            return None
        return position, payload, time_us

    def reserve(self, position: int) -> None:
        """A wait is consuming the buffered event at ``position`` (its append is queued):
        no other wait of a concurrent task may take it too."""
        event_type = self._held[position][0]
        self._by_type[event_type].remove(position)
        self._reserved.add(position)

    def release(self, position: int) -> None:
        """The consumption of ``position`` was not logged: the event is buffered again."""
        if position in self._reserved and position in self._held:
            self._reserved.discard(position)
            event_type = self._held[position][0]
            queue = self._by_type.setdefault(event_type, deque())
            queue.append(position)
            ordered = sorted(queue)
            queue.clear()
            queue.extend(ordered)
