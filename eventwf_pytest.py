"""The eventwf pytest plugin, registered by the ``pytest11`` entry point of the package.

It costs nothing to a project that does not use it: importing it imports only pytest,
and it touches only the tests that ask for it. An ``async def`` test that uses the
``eventwf_engine`` or ``eventwf_clock`` fixture, or carries ``@pytest.mark.eventwf``, is
run in ``trio.run`` under ``trio.testing.MockClock(autojump_threshold=0)`` (the
``eventwf_clock`` fixture), with ``eventwf_engine`` open on ``eventwf_path`` with the
``open_engine`` options of ``eventwf_options`` (override that fixture to register your
agents and workflows). Every other test is left to pytest and other plugins.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

_TRIO_FIXTURES = frozenset({"eventwf_engine", "eventwf_clock"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "eventwf: run this async test in trio under MockClock(autojump_threshold=0)")


def _ours(item: pytest.Function) -> bool:
    if not inspect.iscoroutinefunction(item.obj):
        return False
    return item.get_closest_marker("eventwf") is not None or \
        bool(_TRIO_FIXTURES & set(item.fixturenames))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not _ours(pyfuncitem):
        return None
    from eventwf.testing.plugin import run_async_test

    clock: Any = pyfuncitem.funcargs.get("eventwf_clock")
    run_async_test(pyfuncitem.obj, pyfuncitem.funcargs, clock=clock)
    return True


@pytest.fixture
def eventwf_clock() -> Any:
    """The ``trio.testing.MockClock(autojump_threshold=0)`` the test runs under."""
    import trio.testing

    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def eventwf_path(tmp_path: Path) -> str:
    """The log file of ``eventwf_engine``: ``eventwf.db`` in the test's ``tmp_path``."""
    return str(tmp_path / "eventwf.db")


@pytest.fixture
def eventwf_options() -> dict[str, Any]:
    """``open_engine`` keyword arguments of ``eventwf_engine``; override it to give your
    ``agents`` and ``workflows``."""
    return {}


@pytest.fixture
def eventwf_engine(eventwf_path: str, eventwf_options: dict[str, Any]) -> Any:
    """An ``eventwf.testing.TestEngine`` on ``eventwf_path``, open while the test runs:
    ``await eventwf_engine.restart()`` closes and reopens it mid-test."""
    from eventwf.testing.harness import TestEngine

    return TestEngine(eventwf_path, eventwf_options)
