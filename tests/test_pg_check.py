"""``check_replay`` and ``eventwf log URL check`` on PostgreSQL (specs/tools.md V20).

The same engine run (tests/eventlog_factory.write_log) is written to an SQLite file and to
a PostgreSQL database; the check must give the same verdicts on both (ok with the code
that wrote the log, diverged with changed workflow code), and must leave the database as
it found it: every table's rows unchanged. Skips, with the fixture's reason, when no
PostgreSQL server can be had.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import trio
import trio.testing

import eventwf
from tests import eventlog_factory
from tests.eventlog_factory import write_log
from tests.eventlog_kit import cli

_TABLES = ("events", "workflows", "agents", "meta")


def _contents(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every eventwf table, in a fixed order."""
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT * FROM eventwf.{table} "  # noqa: S608 - fixed names
                                    "ORDER BY 1, 2").fetchall() for table in _TABLES}


def _verdicts(log: str, factory: str) -> tuple[int, list[dict[str, Any]]]:
    result = cli(log, "--json", "check", f"tests.eventlog_factory:{factory}")
    records = [r for r in result.records() if r["record"] == "check"]
    return result.code, records


@pytest.mark.parametrize(("factory", "code", "verdict"), [("jobs", 0, "ok"),
                                                          ("jobs_changed", 1, "diverged")])
def test_check_gives_the_verdicts_it_gives_on_sqlite_and_writes_nothing(
        twin_logs: tuple[str, str], factory: str, code: int, verdict: str) -> None:
    sqlite, url = twin_logs
    before = _contents(url)
    on_sqlite, on_pg = _verdicts(sqlite, factory), _verdicts(url, factory)
    assert on_pg == on_sqlite
    assert on_pg[0] == code and [r["verdict"] for r in on_pg[1]] == [verdict]
    assert _contents(url) == before


def test_check_replay_on_a_url_writes_nothing(twin_logs: tuple[str, str]) -> None:
    _, url = twin_logs
    before = _contents(url)
    [result] = trio.run(lambda: eventwf.check_replay(url, **eventlog_factory.jobs_changed()))
    assert (result.workflow_id, result.verdict) == ("job-live", "diverged")
    assert _contents(url) == before


def test_check_of_a_database_without_a_log_says_so_without_its_password(
        fresh_postgres_url: str) -> None:
    result = cli(fresh_postgres_url, "check", "tests.eventlog_factory:jobs")
    assert result.code == 1 and "no eventwf log" in result.err
    password = urlsplit(fresh_postgres_url).password
    assert password and password not in result.err


def test_check_runs_beside_the_engine_that_has_the_database_open(fresh_postgres_url: str
                                                                 ) -> None:
    url = fresh_postgres_url
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(write_log, url, clock=clock)

    async def beside() -> list[eventwf.ReplayCheck]:
        async with eventwf.open_engine(url, agents=[eventlog_factory.TestAgent],
                                       workflows={"Job": eventlog_factory.JobChanged}):
            return await eventwf.check_replay(url, agents=[eventlog_factory.TestAgent],
                                              workflows={"Job": eventlog_factory.Job})

    [result] = trio.run(beside, clock=clock)
    assert (result.workflow_id, result.verdict) == ("job-live", "ok")
