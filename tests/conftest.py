"""Async tests run under trio with MockClock(autojump_threshold=0) unless marked realtime."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

# PostgreSQL fixtures (pg_server, postgres_url, fresh_postgres_url): tests/pg_cluster.py.
pytest_plugins = ["tests.pg_cluster"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realtime: run with trio's real clock (subprocesses)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    fn = pyfuncitem.obj
    if not inspect.iscoroutinefunction(fn):
        return None
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    clock = None
    if pyfuncitem.get_closest_marker("realtime") is None:
        clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(functools.partial(fn, **kwargs), clock=clock)
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
