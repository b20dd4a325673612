"""Rebuilding the PostgreSQL projections while another engine writes (specs/postgres.md
PG9e): a commit that lands while the log is being folded must not be overwritten by the
fold's older rows. The interleaving is forced: the other writer commits right after the
fold, and the rebuild goes on once that writer either finished or waits for a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

from eventwf.model.agent_fold import AgentSummary, apply_agent  # noqa: E402
from eventwf.model.codec import encode_event  # noqa: E402
from eventwf.model.events import AgentCreated, Recorded  # noqa: E402
from eventwf.store import PendingRow, open_store  # noqa: E402
from eventwf.store.postgres import PostgresStore, rebuild  # noqa: E402
from eventwf.store.rows import agent_row  # noqa: E402


def _create(store: PostgresStore, name: str, time_us: int) -> None:
    """Commit agent ``name``'s first event with its projection row, as the engine does."""
    event = AgentCreated(agent_class="T", name=name)
    stream = f"agent:T/{name}"

    def project(positions: Sequence[int]) -> tuple[list[Any], list[AgentSummary]]:
        rec = Recorded(positions[0], stream, 0, time_us, event)
        return [], [apply_agent(None, rec)]

    store.commit([PendingRow(stream, 0, time_us, "agent.created", encode_event(event))],
                 project=project)


def _waits_for_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
    return row is not None and row[0] == "Lock"


def test_a_commit_made_during_a_rebuild_keeps_its_projection_row(
        fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = fresh_postgres_url
    writer = open_store(url)
    assert isinstance(writer, PostgresStore)
    writer.open_checks()
    _create(writer, "a", 1)
    folded_before: list[Any] = []
    other = threading.Thread(target=_create, args=(writer, "b", 2))
    real_fold = rebuild.fold_log

    def fold_then_let_the_other_engine_commit(conn: Any, genesis: bytes) -> Any:
        folded = real_fold(conn, genesis)
        folded_before.append(sorted(folded.agents))
        other.start()
        deadline = time.monotonic() + 30
        while other.is_alive() and not _waits_for_a_lock(url, writer.conn.info.backend_pid):
            assert time.monotonic() < deadline, "the other commit neither ended nor waited"
            time.sleep(0.005)
        return folded

    monkeypatch.setattr(rebuild, "fold_log", fold_then_let_the_other_engine_commit)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rebuild.rebuild_projections(conn, writer.genesis)
        other.join(timeout=30)
        assert not other.is_alive()
        assert folded_before == [[("T", "a")]]  # the fold did not see b
        monkeypatch.undo()
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute("SELECT * FROM eventwf.agents ORDER BY agent_name").fetchall()
            folded = rebuild.fold_log(conn, writer.genesis)
        # b's row is there, and every row is what a fold of the whole log gives
        assert [tuple(r) for r in rows] == [agent_row(folded.agents[key])
                                             for key in sorted(folded.agents)]
        assert sorted(folded.agents) == [("T", "a"), ("T", "b")]
    finally:
        writer.close()
