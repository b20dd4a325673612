"""Named fault points for crash and fault campaigns.

Arm them with ``EVENTWF_FAULT="point:nth:action[,point:nth:action…]"`` (read at import)
or :func:`arm`. ``nth`` counts hits of that point from 1; ``action`` is ``kill``
(SIGKILL this process), ``raise`` (the caller raises its own I/O error), ``exit`` (hard
``os._exit(70)``) or ``sleep:<ms>``. When nothing is armed a hit costs one global lookup.
"""

from __future__ import annotations

import os
import signal
import time

__all__ = ["POINTS", "FaultError", "arm", "disarm", "hit", "hits"]

POINTS = frozenset({
    "append.before_commit",   # rows inserted, COMMIT not yet issued
    "append.after_commit",    # COMMIT returned, nobody acknowledged yet
    "step.before_call",       # a step.do attempt is about to run its callable
    "step.after_call",        # the callable returned; its outcome is not logged yet
    "sleep.after_record",     # a durable timer was logged; the sleep has not begun
    "event.after_consume",    # a wait took its event (logged), run() has not seen it
    "callback.after_hook",    # an agent hook returned; its delivery is not logged yet
    "open.after_recover",     # the engine resumed its workflows, before serving
})


class FaultError(OSError):
    """Raised where an armed ``raise`` fault has no more specific error to imitate."""


class _Fault:
    __slots__ = ("action", "count", "nth")

    def __init__(self, nth: int, action: str) -> None:
        self.nth, self.action, self.count = nth, action, 0


_armed: dict[str, _Fault] | None = None
_hits: dict[str, int] = {}


def arm(point: str, nth: int, action: str) -> None:
    """Arm ``point`` to act on its ``nth`` hit (counting from now)."""
    global _armed
    if point not in POINTS:
        raise ValueError(f"unknown fault point {point!r}; known: {', '.join(sorted(POINTS))}")
    if nth < 1:
        raise ValueError(f"invalid fault count {nth!r}: must be >= 1")
    if action not in ("kill", "raise", "exit") and not action.startswith("sleep:"):
        raise ValueError(f"invalid fault action {action!r}: kill, raise, exit or sleep:<ms>")
    if _armed is None:
        _armed = {}
    _armed[point] = _Fault(nth, action)


def disarm() -> None:
    global _armed
    _armed = None
    _hits.clear()


def hits() -> dict[str, int]:
    """How often each point was hit while anything was armed."""
    return dict(_hits)


def hit(point: str) -> bool:
    """Count a hit; True if the caller must raise its I/O error now (action ``raise``)."""
    if _armed is None:
        return False
    _hits[point] = _hits.get(point, 0) + 1
    fault = _armed.get(point)
    if fault is None:
        return False
    fault.count += 1
    if fault.count != fault.nth:
        return False
    if fault.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault.action == "exit":
        os._exit(70)
    if fault.action.startswith("sleep:"):
        time.sleep(int(fault.action[6:]) / 1000)
        return False
    return True


def _from_environment(spec: str) -> None:
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, nth, action = item.split(":", 2)
        arm(point, int(nth), action)


if os.environ.get("EVENTWF_FAULT"):
    _from_environment(os.environ["EVENTWF_FAULT"])
