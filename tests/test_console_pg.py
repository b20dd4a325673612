"""``eventwf console postgresql://...`` answers what it answers on SQLite (specs/console.md CN15).

The same engine run (tests/eventlog_factory.write_log) writes one log to an SQLite file
and one to a PostgreSQL database under the same mock clock; every console page is asked
of both through the console's own router (``site.route``, what each HTTP request runs)
and the JSON answers are compared, minus what differs by design (log positions, hashes,
the path: tests/pg_twins.py says why). Skips, with the fixture's reason, when no
PostgreSQL server can be had.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from eventwf.__main__ import main as eventwf_main
from eventwf.apps.console.site import route
from tests.pg_cluster import ExternalServer, PgCluster
from tests.pg_twins import PLACES, placeless

# Besides the log tool's places: the console's cursors and scan counts, and a page's time
# (the time of a position).
_PLACES = PLACES | {"next_after", "scanned", "after", "at_time", "at_time_us"}


def _answer(db: str, target: str) -> Any:
    status, kind, body = route(db, target)
    assert status == 200 and kind == b"application/json", (db, target, body[:300])
    return json.loads(body)


def _both(twin_logs: tuple[str, str], target: str) -> tuple[Any, Any]:
    sqlite, url = twin_logs
    return placeless(_answer(sqlite, target), _PLACES), placeless(_answer(url, target), _PLACES)


@pytest.mark.parametrize("query", [
    "", "?status=complete", "?status=errored", "?meta=team%3Da", "?meta=team%3D1",
    "?agent=TestAgent/alice&name=Job", "?agent=TestAgent", "?limit=1"])
def test_the_listing_is_the_same_on_postgresql(twin_logs: tuple[str, str], query: str) -> None:
    on_sqlite, on_pg = _both(twin_logs, "/api/" + query)
    assert on_pg == on_sqlite
    assert on_pg["counts"]["complete"] == 1


def test_cursor_pages_walk_the_same_workflows(twin_logs: tuple[str, str]) -> None:
    walked: list[list[str]] = []
    for db in twin_logs:
        ids: list[str] = []
        cursor = ""
        while True:
            page = _answer(db, f"/api/?limit=1&cursor={cursor}")
            ids += [w["workflow_id"] for w in page["workflows"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        walked.append(ids)
    assert walked[0] == walked[1] == ["job-live", "job-ctl", "job-fail", "job-1"]


@pytest.mark.parametrize("target", [
    "/api/workflows/job-1", "/api/workflows/job-ctl", "/api/workflows/job-live",
    "/api/agents/TestAgent/alice", "/api/log?workflow=job-1&n=500",
    "/api/log?agent=TestAgent/alice&n=500", "/api/log?workflow=job-ctl&type=workflow.paused"])
def test_workflow_agent_and_stream_pages_are_the_same(twin_logs: tuple[str, str],
                                                      target: str) -> None:
    on_sqlite, on_pg = _both(twin_logs, target)
    clients = {"record": "clients", "available": False, "clients": []}
    assert [r for r in on_pg if r.get("record") != "clients"] == [
        r for r in on_sqlite if r.get("record") != "clients"]
    if "agents" in target:
        assert {k: v for k, v in on_pg[-1].items() if k != "note"} == clients
        assert "log database" in on_pg[-1]["note"]


def test_tail_verify_and_pages_on_postgresql(twin_logs: tuple[str, str]) -> None:
    """The whole-log tail and its cursor, verify's verdict, and every HTML page; the
    URL's password never reaches a page."""
    sqlite, url = twin_logs
    head = _answer(url, "/api/")["head"]
    *rows, meta = _answer(url, f"/api/log?after={head - 3}")
    assert [r["position"] for r in rows] == [head - 2, head - 1, head]
    assert meta["next_after"] == head
    assert _answer(url, "/api/log/verify")[-1]["intact"] is True
    password = urlsplit(url).password
    for page in ("/", "/?meta=team%3Da", "/workflows/job-1", "/agents/TestAgent/alice",
                 "/log?type=step.succeeded", "/log/verify", "/workflows/nope"):
        status, kind, body = route(url, page)
        assert kind.startswith(b"text/html") and status == (404 if "nope" in page else 200)
        assert not password or password.encode() not in body
    assert route(url, "/workflows/" + quote("nope"))[0] == 404


def test_the_command_refuses_a_database_without_a_log(pg_server: PgCluster | ExternalServer,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    """CN10/CN15: status 2 naming the database, not its password."""
    url = pg_server.new_database()
    try:
        assert eventwf_main(["console", url]) == 2
        err = capsys.readouterr().err
        assert "eventwf console:" in err
        password = urlsplit(url).password
        assert not password or password not in err
    finally:
        pg_server.drop_database(url)
