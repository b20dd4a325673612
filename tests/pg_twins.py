"""One engine run written twice, to an SQLite file and to a PostgreSQL database, for the
tests that ask the same question of both backends and compare the answers (the log tool:
tests/test_pg_logtool.py; the replay check: tests/test_pg_check.py; the console:
tests/test_console_pg.py). A pytest plugin (tests/conftest.py loads it), so that its
fixture is there without an import.

The answers differ by design in their *places*: log positions (concurrent commits of
different streams may land in another order on either backend), hashes (PostgreSQL chains
per stream), and the log's path. :func:`placeless` strips them before a comparison.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.eventlog_kit import build
from tests.pg_cluster import ExternalServer, PgCluster

__all__ = ["PLACES", "placeless", "twin_logs"]

# Keys whose values are places; so is any key ending in "position" or "positions".
PLACES = frozenset({"head", "at", "through", "delivered_through", "last_callback", "hash",
                    "path"})


@pytest.fixture(scope="module")
def twin_logs(pg_server: PgCluster | ExternalServer, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, str]]:
    """(the SQLite log, the PostgreSQL log) of the same run (tests/eventlog_factory.py's
    ``write_log`` under a mock clock), one pair per test module; the database is dropped
    after. Skips, with ``pg_server``'s reason, when no PostgreSQL server can be had."""
    sqlite = build(tmp_path_factory.mktemp("twins") / "app.db")
    url = pg_server.new_database()
    try:
        yield sqlite, build(url)
    finally:
        pg_server.drop_database(url)


def placeless(value: Any, places: frozenset[str] = PLACES) -> Any:
    """``value`` without the entries that name places (``places``, and keys ending in
    ``position`` or ``positions``), at any depth."""
    if isinstance(value, dict):
        return {k: placeless(v, places) for k, v in value.items()
                if k not in places and not k.endswith(("position", "positions"))}
    if isinstance(value, list):
        return [placeless(v, places) for v in value]
    return value
