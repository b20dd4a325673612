"""How the pytest plugin runs an ``async def`` test: in ``trio.run`` under a clock, with
the ``eventwf_engine`` fixture open around it.

The plugin itself is the top-level module ``eventwf_pytest`` (registered by entry point),
which imports nothing of eventwf until a test asks for it; this module is what it then
calls. eventwf's own ``tests/conftest.py`` calls :func:`run_async_test` too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import trio
import trio.testing

from eventwf.testing.harness import TestEngine

__all__ = ["ENGINE_FIXTURE", "run_async_test"]

ENGINE_FIXTURE = "eventwf_engine"


def run_async_test(fn: Callable[..., Any], funcargs: Mapping[str, Any], *,
                   clock: trio.abc.Clock | None = None, mock_clock: bool = True) -> None:
    """Run the coroutine function ``fn`` with the fixtures it names, in ``trio.run``.

    The clock is ``clock``, else a new ``MockClock(autojump_threshold=0)`` (or trio's
    real clock when ``mock_clock`` is false). A :class:`TestEngine` passed as
    ``eventwf_engine`` is opened before the test and closed after it.
    """
    kwargs = {name: funcargs[name] for name in inspect.signature(fn).parameters
              if name in funcargs}
    engine = kwargs.get(ENGINE_FIXTURE)
    if clock is None and mock_clock:
        clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> None:
        if not isinstance(engine, TestEngine):
            await fn(**kwargs)
            return
        await engine.open()
        try:
            await fn(**kwargs)
        finally:
            await engine.close()

    trio.run(main, clock=clock)
