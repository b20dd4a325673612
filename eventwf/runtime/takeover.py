"""The lease task: take, renew and give up shards; resume what a gained shard holds.

Theory of operation (specs/postgres.md PG12, PG12a, PG17). Only when several engines share
a log (PostgreSQL); on SQLite this does nothing. At open, and every ``lease_ttl / 3`` (at
most a second) after, the engine says it is alive, renews the leases it holds in one statement, and
computes its fair share, ``ceil(shards / live engines)``: below it, it takes free or
expired shards; above it, it gives the excess up (after dropping their work, so nothing
of theirs is in flight). A lease the renewal did not return, or whose own deadline passed
(the renewals failed for too long), is lost: its agents and runs are dropped from memory,
logging nothing. A gained shard is recovered as a reopened engine recovers a log
(``recovery.resume_shards``). A clean close gives every lease up at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection

import trio

from eventwf.errors import StorageError
from eventwf.runtime.notifications import wait_real
from eventwf.runtime.recovery import resume_shards
from eventwf.runtime.runtime import Runtime
from eventwf.runtime.skew import SkewWatch

__all__ = ["Takeover"]

logger = logging.getLogger("eventwf")


class Takeover:
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt
        self._own = rt.ownership
        self._own.on_lost = self.lose
        self.skew = SkewWatch()

    @property
    def period(self) -> float:
        """Seconds between rounds: a third of the lease (PG12), and at most one second, so
        that an expired shard is taken within a second of its expiry (takeover within
        ``lease_ttl`` plus about a second) at one short statement a second per engine."""
        return min(self._own.ttl / 3, 1.0)

    def start(self) -> None:
        """Take this engine's first shards and resume them (at open, before serving)."""
        if not self._own.everything:
            self.tick()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Renew, rebalance and watch the leases until cancelled."""
        task_status.started()
        if self._own.everything:
            return
        while True:
            # real time, whatever trio's clock is: leases live in the database's time, and
            # under a MockClock a trio.sleep would renew at every jump (PG3a)
            await wait_real(trio.sleep_forever, self.period)
            try:
                self.tick()
            except StorageError as exc:
                logger.warning("renewing the shard leases failed (%s); trying again in "
                               "%.1f s", exc, self.period)
                if expired := self._own.expired():
                    self.lose(expired)

    def tick(self) -> None:
        """One round: renew, drop what was lost, take or give up shards to the fair share."""
        own, sharding = self._own, self._own.sharding
        assert sharding is not None
        if expired := own.expired():
            logger.warning("the leases of shard(s) %s ran out before a renewal; their work "
                           "stops here", expired)
            self.lose(expired)
        sent, before_us = time.monotonic(), self._rt.clock.now_us()
        live, database_us = sharding.heartbeat(own.owner, own.ttl)
        if self._rt.clock.system:  # PG19: the time halfway through the round trip
            self.skew.observe((before_us + self._rt.clock.now_us()) // 2, database_us,
                              time.monotonic())
        held = list(own.held.values())
        kept = sharding.renew(own.owner, held, own.ttl)
        own.held_now(kept, sent)
        if lost := {lease.shard for lease in held} - {lease.shard for lease in kept}:
            logger.warning("another engine took shard(s) %s; their work stops here",
                           sorted(lost))
            self.lose(lost)
        share = math.ceil(sharding.shards / live)
        if len(own.held) > share:
            excess = sorted(own.held)[share:]
            leases = [own.held[shard] for shard in excess]
            self.lose(excess)
            sharding.release(own.owner, leases)
        elif len(own.held) < share:
            sent = time.monotonic()
            won = sharding.take(own.owner, own.ttl, share - len(own.held))
            own.held_now(won, sent)
            if won:
                self.gain({lease.shard for lease in won})

    def gain(self, shards: Collection[int]) -> None:
        started, taken = resume_shards(self._rt, shards)
        logger.info("took %d shard(s); %d workflow run(s) resumed", len(shards), started)
        if taken:
            self.lose(taken)

    def lose(self, shards: Collection[int]) -> None:
        """Stop working ``shards``: forget their leases and claims, drop their agents,
        runs and summaries from memory (logging nothing: another engine owns them)."""
        lost = set(shards)
        own = self._own
        own.drop(lost)

        def in_lost(agent_class: str, name: str) -> bool:
            return own.shard(agent_class, name) in lost

        self._rt.runs.drop_where(in_lost)
        kept = self._rt.agents.drop_where(in_lost)
        self._rt.summaries.forget_where(in_lost, keep=kept)

    def close(self) -> None:
        """A clean close: give every lease up at once and leave the live engines."""
        own, sharding = self._own, self._own.sharding
        if sharding is None:
            return
        try:
            sharding.release(own.owner, list(own.held.values()))
            sharding.leave(own.owner)
        except StorageError as exc:
            logger.warning("could not give the shard leases up (%s); they expire in %g s",
                           exc, own.ttl)
        own.drop(list(own.held))
