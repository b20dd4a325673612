"""Which agents this engine may run now: its shard leases and the streams it has claimed.

Theory of operation (specs/postgres.md PG12-PG13). On SQLite one engine owns everything
(its file lock), and every question here answers "yes" at once. On PostgreSQL an agent
and its workflows belong to a shard, and this engine works a shard only while it holds
the shard's lease *by its own monotonic clock* (real time, ``time.monotonic``, even
under a test's ``MockClock``: leases live in the database's real time): each lease has a
deadline of the time the renewal was sent plus nine tenths of the lease's length, so the
engine stops before the
database lets another engine in, whatever its clock rate. Before it appends to, or
replays, a stream it did not write in this lease, it claims the stream (a
``stream.claimed`` row at the head), so a previous owner paused past its lease collides
at its next append instead of forking the stream. The lease task (``takeover.py``) takes,
renews and gives up the leases; the writer asks :meth:`owns` and :meth:`claim`.
"""

from __future__ import annotations

import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Collection, Iterable, Sequence

from eventwf.errors import AgentMovedError
from eventwf.model.codec import encode_event
from eventwf.model.events import StreamClaimed
from eventwf.store.interface import Lease, Sharding

__all__ = ["DRIFT", "Ownership", "moved"]

DRIFT = 0.9  # a lease is worked for this share of its length after its renewal was sent


def moved(agent_class: str, name: str) -> AgentMovedError:
    return AgentMovedError(f"agent {agent_class}/{name} moved to another engine; nothing of "
                           "this request was logged here")


class Ownership:
    def __init__(self, sharding: Sharding | None, ttl: float) -> None:
        self.sharding = sharding
        self.ttl = ttl
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.held: dict[int, Lease] = {}
        self.deadline: dict[int, float] = {}
        self._claimed: dict[str, int] = {}  # stream -> its shard
        self._released: set[int] = set()  # held shards taken after a clean release
        self.on_lost: Callable[[Collection[int]], None] = lambda shards: None

    @property
    def everything(self) -> bool:
        """One engine owns the whole log (SQLite): no leases, no claims."""
        return self.sharding is None

    def shard(self, agent_class: str, name: str) -> int:
        return 0 if self.sharding is None else self.sharding.shard_of(agent_class, name)

    def owns(self, agent_class: str, name: str) -> bool:
        """Whether this engine may run the agent (and its workflows) now."""
        if self.sharding is None:
            return True
        shard = self.sharding.shard_of(agent_class, name)
        return shard in self.held and time.monotonic() < self.deadline[shard]

    def left(self, agent_class: str, name: str) -> float:
        """Seconds this engine still owns the agent by its own clock, unless renewed (0:
        it does not own it now; infinite when it owns the whole log)."""
        if self.sharding is None:
            return math.inf
        deadline = self.deadline.get(self.sharding.shard_of(agent_class, name))
        return 0.0 if deadline is None else max(0.0, deadline - time.monotonic())

    def check(self, agent_class: str, name: str) -> None:
        """``AgentMovedError`` unless this engine owns the agent now."""
        if not self.owns(agent_class, name):
            raise moved(agent_class, name)

    # -- leases --------------------------------------------------------------------------

    def held_now(self, leases: Iterable[Lease], sent: float) -> None:
        """Leases the database gave or renewed (the statement was sent at ``sent``)."""
        for lease in leases:
            if lease.shard not in self.held and lease.released:
                self._released.add(lease.shard)
            self.held[lease.shard] = lease
            self.deadline[lease.shard] = sent + self.ttl * DRIFT

    def expired(self) -> list[int]:
        """Held shards whose own deadline has passed (stop working them)."""
        now = time.monotonic()
        return sorted(s for s in self.held if now >= self.deadline[s])

    def drop(self, shards: Collection[int]) -> None:
        """Stop counting ``shards`` as this engine's, and forget their claims."""
        for shard in shards:
            self.held.pop(shard, None)
            self.deadline.pop(shard, None)
            self._released.discard(shard)
        self._claimed = {s: h for s, h in self._claimed.items() if h not in shards}

    # -- claims --------------------------------------------------------------------------

    def needs_claim(self, stream: str, shard: int) -> bool:
        """Whether ``stream`` (of ``shard``) must be claimed before this engine replays it
        or appends to it: not when written in this lease, nor when the shard was taken
        after a clean release (its last holder stopped before it let go)."""
        return (self.sharding is not None and shard not in self._released
                and stream not in self._claimed)

    def wrote(self, stream: str, shard: int) -> None:
        """This engine appended to ``stream`` in its current lease: it is fenced."""
        if self.sharding is not None:
            self._claimed[stream] = shard

    def claim(self, streams: Sequence[tuple[str, int]], time_us: int) -> None:
        """Claim ``(stream, shard)`` pairs, one transaction per shard (each marker names
        its lease's epoch). ``StreamsTakenError`` when another engine appends meanwhile."""
        if self.sharding is None:
            return
        by_shard: dict[int, list[str]] = {}
        for stream, shard in streams:
            if self.needs_claim(stream, shard):
                by_shard.setdefault(shard, []).append(stream)
        for shard, names in sorted(by_shard.items()):
            lease = self.held.get(shard)
            data = encode_event(StreamClaimed(self.owner, -1 if lease is None else lease.epoch))
            for chunk in range(0, len(names), 500):
                part = names[chunk:chunk + 500]
                self.sharding.claim(part, data, time_us)
                for stream in part:
                    self._claimed[stream] = shard
