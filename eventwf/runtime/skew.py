"""How far this engine's clock is from the database's (PG19): a warning, not a correction.

Each engine stamps its rows with its own clock, and a durable timer resumed on another
engine (after a takeover) waits by that engine's clock, so hosts whose clocks differ move
such timers by the difference. The lease task reads the database's clock every round
(with its heartbeat); beyond :data:`WARN_ABOVE_S` the engine says so, at most every
:data:`WARN_EVERY_S`, naming the cure: keep the hosts' clocks synchronised (NTP).
"""

from __future__ import annotations

import logging

__all__ = ["WARN_ABOVE_S", "WARN_EVERY_S", "SkewWatch"]

logger = logging.getLogger("eventwf")

WARN_ABOVE_S = 1.0
WARN_EVERY_S = 600.0


class SkewWatch:
    """The last skew seen (seconds, positive: this engine is ahead) and when it last
    warned (a monotonic time)."""

    def __init__(self) -> None:
        self.skew_s: float | None = None
        self._warned_at: float | None = None

    def observe(self, engine_us: int, database_us: int, now: float) -> None:
        """One reading: the engine's clock and the database's, taken together; ``now`` is
        the monotonic time of it (for the warning's rate)."""
        self.skew_s = (engine_us - database_us) / 1_000_000
        if abs(self.skew_s) <= WARN_ABOVE_S:
            return
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY_S:
            return
        self._warned_at = now
        logger.warning(
            "this engine's clock is %+.1f s from the database's: a durable timer another "
            "engine resumes after a takeover moves by the difference between their clocks; "
            "keep the engines' hosts synchronised (NTP)", self.skew_s)
