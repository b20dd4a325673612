"""Async tests run under trio with MockClock(autojump_threshold=0) unless marked realtime
(the runner of the testing kit's pytest plugin, which also gives the eventwf_* fixtures)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventwf.testing.plugin import run_async_test

# PostgreSQL fixtures (pg_server, postgres_url, fresh_postgres_url): tests/pg_cluster.py.
pytest_plugins = ["tests.pg_cluster"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realtime: run with trio's real clock (subprocesses)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Every async test, through the testing kit's runner (eventwf.testing.plugin)."""
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    clock: Any = pyfuncitem.funcargs.get("eventwf_clock")
    run_async_test(fn, pyfuncitem.funcargs, clock=clock,
                   mock_clock=pyfuncitem.get_closest_marker("realtime") is None)
    return True


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "eventwf.db")


@pytest.fixture(scope="session")
def zygote() -> Iterator[Any]:
    """The fork server of the crash campaigns (tests/campaign/zygote.py), shared."""
    from tests.campaign.zygote import Zygote

    server = Zygote()
    try:
        yield server
    finally:
        server.close()
