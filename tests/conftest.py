"""Async tests run under trio with MockClock(autojump_threshold=0) unless marked realtime
(the runner of the testing kit's pytest plugin, which also gives the eventwf_* fixtures)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventwf.testing.plugin import run_async_test

# PostgreSQL fixtures (pg_server, postgres_url, fresh_postgres_url): tests/pg_cluster.py;
# the same log on SQLite and PostgreSQL (twin_logs): tests/pg_twins.py.
pytest_plugins = ["tests.pg_cluster", "tests.pg_twins"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "realtime: run with trio's real clock (subprocesses)")
    config.addinivalue_line("markers", "sqlite_only: an any_db test that reads the SQLite "
                            "file itself (runs on SQLite alone)")


BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that uses ``any_db`` runs once per backend (SQLite alone if ``sqlite_only``)."""
    if "any_db" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("any_db", BACKENDS[:1] if only else BACKENDS, indirect=True)


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


@pytest.fixture
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where an engine test's log lives, per backend: a SQLite file, or a fresh PostgreSQL
    database (``fresh_postgres_url``: skipped, saying why, without a server; CI requires
    one). A module runs its engine tests on both by defining ``db`` as this fixture."""
    if request.param == "sqlite":
        return str(tmp_path / "eventwf.db")
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture(scope="session")
def zygote() -> Iterator[Any]:
    """The fork server of the crash campaigns (tests/campaign/zygote.py), shared."""
    from tests.campaign.zygote import Zygote

    server = Zygote()
    try:
        yield server
    finally:
        server.close()
