"""One attempt of a step's callable: called on the loop, awaited under its timeout.

Retries, back-off and what is logged are the step API's (``steps.py``); this is only the
call itself, with the test fault points before and after it.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from eventwf import faults
from eventwf.errors import WorkflowTimeoutError

__all__ = ["run_attempt", "warn_if_blocked"]

logger = logging.getLogger("eventwf")


async def run_attempt(name: str, fn: Callable[[], Any], timeout_s: float, attempt: int) -> Any:
    """Call ``fn`` once as attempt ``attempt`` of step ``name``: a sync callable runs on
    the loop (it cannot be interrupted: a warning says so if it outlasts its timeout),
    an awaitable it returns is awaited under the timeout; the fault points around it."""
    if faults.hit("step.before_call"):
        raise faults.FaultError(f"injected failure before step {name!r}")
    started = time.perf_counter()  # real time: trio's clock stands still meanwhile
    try:
        result = fn()  # a sync callable runs here, on the loop; it cannot be interrupted
    finally:
        warn_if_blocked(name, time.perf_counter() - started, timeout_s)
    if inspect.isawaitable(result):
        with trio.move_on_after(timeout_s):
            result = await result
            if faults.hit("step.after_call"):
                raise faults.FaultError(f"injected failure after step {name!r} ran")
            return result
    else:
        if faults.hit("step.after_call"):
            raise faults.FaultError(f"injected failure after step {name!r} ran")
        return result
    raise WorkflowTimeoutError(
        f"step {name!r} attempt {attempt} timed out after {timeout_s:g} seconds")


def warn_if_blocked(name: str, seconds: float, timeout_s: float) -> None:
    """A step callable held the event loop longer than its step's timeout (S12): the
    timeout could not stop it, and nothing else ran meanwhile. Warn, naming the cure."""
    if seconds > timeout_s:
        logger.warning(
            "step %r blocked the event loop for %.3g seconds, longer than its timeout of "
            "%.3g seconds (a sync callable cannot be interrupted, and no other workflow "
            "runs meanwhile): do blocking work in trio.to_thread.run_sync inside it",
            name, seconds, timeout_s)
