"""A WebSocket connection's outbound queue: FIFO, bounded by bytes, stale states give way.

Theory of operation (protocol.md P10): every queued message costs its encoded length plus
``MESSAGE_OVERHEAD`` (its str object, its entry, its deque slot), so a flood of tiny
messages costs what it weighs. A message is queued when the queue is empty (any one
message can go) or when it fits in the budget. When it does not fit, the state messages
still queued give way first: a client needs the latest state, not every one, so every
queued state but the newest is dropped, and the newest keeps its place, so nothing is
reordered and the positions a client sees only grow. If the message still does not fit,
``put`` says so and the connection is too slow. States arrive in log order; a state at or
below the newest position already queued is stale, and is not queued.

Sans-I/O: the connection's sender task drains it; nothing here awaits.
"""

from __future__ import annotations

from collections import deque

__all__ = ["MESSAGE_OVERHEAD", "Outbox"]

MESSAGE_OVERHEAD = 128


class _Entry:
    __slots__ = ("cost", "is_state", "text")

    def __init__(self, text: str, cost: int, is_state: bool) -> None:
        self.text: str | None = text  # None once dropped
        self.cost = cost
        self.is_state = is_state


class Outbox:
    """The messages waiting for one client, at most ``budget`` bytes (see the module doc)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0  # bytes of the messages queued (dropped ones excluded)
        self.position = -1  # the log position of the newest state queued or sent
        self.dropped_states = 0
        self._entries: deque[_Entry] = deque()
        self._states: deque[_Entry] = deque()  # the queued state entries, oldest first
        self._holes = 0  # dropped entries still in _entries

    def __len__(self) -> int:
        return len(self._entries) - self._holes

    def put(self, text: str, size: int, *, position: int | None = None) -> bool:
        """Queue ``text`` (``size`` bytes encoded; a state message at ``position`` if given).

        False if it does not fit even after the stale states gave way: the caller then
        disconnects the client (1013). A stale state returns True and is not queued.
        """
        if position is not None and position <= self.position:
            return True
        cost = size + MESSAGE_OVERHEAD
        if self.size and self.size + cost > self.budget:
            self._drop_states(keep=0 if position is not None else 1)
            if self.size and self.size + cost > self.budget:
                return False
        entry = _Entry(text, cost, position is not None)
        self._entries.append(entry)
        self.size += cost
        if position is not None:
            self._states.append(entry)
            self.position = position
        return True

    def get(self) -> str | None:
        """The next message to send, or None when the queue is empty."""
        while self._entries:
            entry = self._entries.popleft()
            if entry.text is None:
                self._holes -= 1
                continue
            self.size -= entry.cost
            if entry.is_state:
                self._states.popleft()
            return entry.text
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._states.clear()
        self.size = self._holes = 0

    def _drop_states(self, keep: int) -> None:
        """Drop the queued states but the newest ``keep``; compact when half are holes."""
        while len(self._states) > keep:
            entry = self._states.popleft()
            entry.text = None
            self.size -= entry.cost
            self._holes += 1
            self.dropped_states += 1
        if self._holes > 64 and self._holes * 2 > len(self._entries):
            self._entries = deque(e for e in self._entries if e.text is not None)
            self._holes = 0
