"""``eventwf log URL COMMAND`` on PostgreSQL gives what it gives on SQLite (specs/tools.md V20).

The same engine run (tests/eventlog_factory.write_log: retried steps, a sleep, waits, agent
state changes, pause/resume/restart/terminate, a divergence) writes one log to an SQLite
file and one to a PostgreSQL database under the same mock clock; each command runs through
the CLI entry on both and the JSON outputs are compared, minus what differs by design:
hashes (PostgreSQL chains per stream), sizes, the path, and log positions (concurrent
commits of different streams may land in another order on either backend, so records are
compared without positions, in stream order). Skips, with the fixture's reason, when no
PostgreSQL server can be had.
"""

from __future__ import annotations

import io
import json
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import trio
import trio.testing

from eventwf.logtool import listing
from eventwf.logtool.pgsource import PgLogSource
from eventwf.logtool.render import Output
from tests.eventlog_kit import Result, build, cli
from tests.pg_twins import placeless


def _both(twin_logs: tuple[str, str], *argv: str) -> tuple[Result, Result]:
    sqlite, url = twin_logs
    on_sqlite, on_pg = cli(sqlite, "--json", *argv), cli(url, "--json", *argv)
    password = urlsplit(url).password
    assert not password or password not in on_pg.out + on_pg.err
    return on_sqlite, on_pg


def _by_stream(records: list[dict[str, Any]]) -> list[Any]:
    """Rows in stream order (stream, version), without their places."""
    ordered = sorted(records, key=lambda r: (r.get("stream", ""), r.get("stream_position", 0)))
    return placeless(ordered)  # type: ignore[no-any-return]


def test_the_pg_log_holds_the_same_events(twin_logs: tuple[str, str]) -> None:
    """The premise of the comparisons: the same events at the same times, stream by stream."""
    on_sqlite, on_pg = _both(twin_logs, "export")
    assert (on_sqlite.code, on_pg.code) == (0, 0), on_pg.err
    assert len(on_pg.records()) == len(on_sqlite.records()) > 50
    assert [r["position"] for r in on_pg.records()] == list(range(1, 58))
    assert _by_stream(on_pg.records()) == _by_stream(on_sqlite.records())


@pytest.mark.parametrize("argv", [
    ("streams",), ("streams", "--kind", "wf"), ("show", "job-1"), ("show", "alice"),
    ("show", "TestAgent/alice", "--from-version", "2"), ("tail", "-n", "100"),
    ("tail", "-n", "3", "--stream", "wf:job-ctl"), ("workflow", "job-1"),
    ("workflow", "job-ctl"), ("workflow", "job-live"), ("agent", "TestAgent", "alice"),
    ("agent", "TestAgent", "alice", "--history"),
    ("export", "--stream", "job-fail"), ("export", "--format", "golden"),
    ("show", "nope"), ("workflow", "nope"), ("agent", "TestAgent", "nobody"),
])
def test_reading_commands_print_what_they_print_on_sqlite(twin_logs: tuple[str, str],
                                                          argv: tuple[str, ...]) -> None:
    on_sqlite, on_pg = _both(twin_logs, *argv)
    assert on_pg.code == on_sqlite.code, on_pg.err
    assert bool(on_pg.err) == bool(on_sqlite.err), on_pg.err
    sqlite, pg = on_sqlite.records(), on_pg.records()
    if argv[0] in ("tail", "export"):  # in position order: compare in stream order
        sqlite, pg = _by_stream(sqlite), _by_stream(pg)
    assert placeless(pg) == placeless(sqlite)


def _position_of(log: str, stream: str, version: int) -> int:
    rows = cli(log, "--json", "show", stream).records()
    return int(next(r["position"] for r in rows if r["stream_position"] == version))


def test_agent_at_a_position_is_the_state_then(twin_logs: tuple[str, str]) -> None:
    """``--at`` the same event of alice's stream (its position may differ) on both."""
    runs = [cli(log, "--json", "agent", "TestAgent", "alice", "--history", "--at",
                str(_position_of(log, "agent:TestAgent/alice", 3))) for log in twin_logs]
    assert [r.code for r in runs] == [0, 0], runs[1].err
    assert placeless(runs[1].records()) == placeless(runs[0].records())
    assert runs[1].records() != cli(twin_logs[1], "--json", "agent", "TestAgent", "alice",
                                    "--history").records()


def test_stats_counts_as_on_sqlite_and_sizes_its_tables(twin_logs: tuple[str, str]) -> None:
    on_sqlite, on_pg = _both(twin_logs, "stats")
    assert (on_sqlite.code, on_pg.code) == (0, 0), on_pg.err
    sqlite, pg = on_sqlite.last(), on_pg.last()
    assert set(pg["files"]) == {"events", "projections"} and pg["pages"] == {}
    same = ("events", "head", "data_bytes", "first_time_us", "last_time_us", "recent",
            "by_type", "by_kind", "workflows", "agents", "callbacks_pending")
    assert {k: pg[k] for k in same} == {k: sqlite[k] for k in same}
    text = cli(twin_logs[1], "stats")
    assert text.code == 0 and "tables " in text.out and "pages" not in text.out


def test_verify_proves_the_pg_log_intact(twin_logs: tuple[str, str]) -> None:
    on_sqlite, on_pg = _both(twin_logs, "verify")
    assert (on_sqlite.code, on_pg.code) == (0, 0), on_pg.out
    sqlite, pg = on_sqlite.last(), on_pg.last()
    assert pg["intact"] and pg["projections_checked"] and pg["warnings"] == []
    same = ("events", "head", "streams", "workflows", "agents")
    assert {k: pg[k] for k in same} == {k: sqlite[k] for k in same}
    assert cli(twin_logs[1], "verify").out.splitlines()[-1].startswith("INTACT")


@pytest.mark.parametrize("command", [("backup", "/tmp/never.db"),
                                     ("rebuild-projections",)])
def test_commands_for_sqlite_files_refuse_a_url_naming_why(twin_logs: tuple[str, str],
                                                           command: tuple[str, ...]) -> None:
    result = cli(twin_logs[1], *command)
    assert result.code == 2 and "PostgreSQL database" in result.err
    assert urlsplit(twin_logs[1]).password not in result.err
    assert not Path("/tmp/never.db").exists()


def test_a_database_without_a_log_is_exit_1_without_its_password(fresh_postgres_url: str
                                                                 ) -> None:
    result = cli(fresh_postgres_url, "streams")
    assert result.code == 1 and "no eventwf log" in result.err
    password = urlsplit(fresh_postgres_url).password
    assert password and password not in result.err and ":***@" in result.err


def _tamper(url: str, position: int) -> None:
    """Change one row's data as a superuser with the append-only trigger disabled."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE eventwf.events DISABLE TRIGGER events_append_only")
        conn.execute("UPDATE eventwf.events SET time_us = time_us + 1 WHERE position = %s",
                     (position,))
        conn.execute("ALTER TABLE eventwf.events ENABLE TRIGGER events_append_only")


def test_verify_names_a_tampered_row(fresh_postgres_url: str) -> None:
    url = build(fresh_postgres_url)
    assert cli(url, "verify").code == 0
    _tamper(url, 12)
    result = cli(url, "--json", "verify")
    verdict = result.last()
    assert result.code == 1 and not verdict["intact"]
    assert (verdict["verdict"], verdict["position"]) == ("broken chain", 12)
    text = cli(url, "verify")
    assert text.code == 1 and "DAMAGED at position 12: broken chain" in text.out
    shown = cli(url, "--json", "export").records()
    assert [r["position"] for r in shown if "problem" in r] == [12]


def test_verify_names_a_projection_row_that_is_not_the_log(fresh_postgres_url: str) -> None:
    url = build(fresh_postgres_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE eventwf.workflows SET status = 'running' "
                     "WHERE workflow_id = 'job-1'")
    result = cli(url, "--json", "verify")
    verdict = result.last()
    assert result.code == 1 and verdict["verdict"] == "projection mismatch"
    assert verdict["stream"] == "wf:job-1" and "column status" in verdict["message"]


def test_follow_prints_the_rows_after_a_position(twin_logs: tuple[str, str]) -> None:
    out = io.StringIO()
    with PgLogSource(twin_logs[1]) as log:
        head = log.head()
        code = trio.run(partial(listing.follow, log, Output(json=True, stream=out), head - 3,
                                stop=lambda: True))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and [r["position"] for r in rows] == [head - 2, head - 1, head]
