"""The PostgreSQL store for one engine per database (eventwf/store/postgres/store.py):
specs/postgres.md "One engine per database" (PG20-PG25). The engine behaviour itself is
tested on both backends by the engine suites (``any_db``); these are what only
PostgreSQL has. Each test has a fresh database."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

import eventwf  # noqa: E402
from eventwf.errors import StorageError, StreamsTakenError  # noqa: E402
from eventwf.model.codec import encode_event, event_type  # noqa: E402
from eventwf.model.events import AgentCreated  # noqa: E402
from eventwf.model.workflow_fold import WorkflowSummary  # noqa: E402
from eventwf.store import PendingRow, open_store  # noqa: E402
from eventwf.store.postgres import PostgresStore  # noqa: E402
from eventwf.store.postgres.sql import stream_hash  # noqa: E402
from tests.wfkit import TestAgent, virtual_wall  # noqa: E402


def _rows(url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


async def _sleepy(event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> object:
    first = await step.do("one", lambda: 1)
    await step.sleep("nap", "1 hour")
    return first + await step.do("two", lambda: 2)


class Nap(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep
                  ) -> object:
        return await _sleepy(event, step)


def _open(url: str) -> Any:
    return eventwf.open_engine(url, agents=[TestAgent], workflows={"NAP": Nap},
                               wall_clock=virtual_wall)


async def test_rows_are_chained_per_stream_at_the_positions_the_engine_gave(
        fresh_postgres_url: str) -> None:  # PG5, PG20
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        ids = [await agent.run_workflow("NAP", id=f"w{i}") for i in range(2)]
        await trio.sleep(7200)
        for wid in ids:
            assert (await engine.wait_workflow(wid)).status == "complete"
        records = engine.runtime.store.read_stream("wf:w1")
    rows = _rows(fresh_postgres_url, "SELECT position, stream, stream_position, time_us, type, "
                 "data, hash FROM eventwf.events ORDER BY position")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # no refused commit, so no gap
    (genesis,) = _rows(fresh_postgres_url,
                       "SELECT value FROM eventwf.meta WHERE key = 'genesis'")[0]
    heads: dict[str, bytes] = {}
    for _, stream, version, time_us, type_name, data, digest in rows:
        prev = heads.get(str(stream), bytes.fromhex(str(genesis)))
        assert stream_hash(prev, str(stream), int(str(version)),
                           int(str(time_us)), str(type_name), bytes(data)) == bytes(digest)  # type: ignore[call-overload]
        heads[str(stream)] = bytes(digest)  # type: ignore[call-overload]
    w1 = [(r[0], r[2]) for r in rows if r[1] == "wf:w1"]
    assert [(rec.position, rec.stream_position) for rec in records] == w1


def _store_with_one_event(url: str) -> PostgresStore:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    store.open_checks()
    data = encode_event(AgentCreated(agent_class="T", name="a"))
    assert store.commit([PendingRow("agent:T/a", 0, 1, "agent.created", data)]) == [1]
    return store


def test_a_failed_commit_commits_nothing_and_positions_come_from_the_identity(
        fresh_postgres_url: str) -> None:  # PG6: a refused batch uses its positions up
    store = _store_with_one_event(fresh_postgres_url)
    try:
        data = encode_event(AgentCreated(agent_class="T", name="a"))
        with pytest.raises(StorageError) as err:  # text PostgreSQL cannot hold: refused
            store.commit([PendingRow("agent:T/b", 0, 2, "agent.created", data),
                          PendingRow("agent:T/c\x00", 0, 2, "agent.created", data)])
        assert not err.value.fatal and "could not commit 2 event(s)" in str(err.value)
        beyond = WorkflowSummary(workflow_id="w", workflow_name="N", agent_class="T",
                                 agent_name="b", status="queued", created_us=2**63,
                                 updated_us=0)
        with pytest.raises(StorageError) as err:  # refused by the server, after the insert
            store.commit([PendingRow("agent:T/b", 0, 2, "agent.created", data)], [beyond])
        assert not err.value.fatal and "out of range" in str(err.value)
        (position,) = store.commit([PendingRow("agent:T/b", 0, 3, "agent.created", data)])
        assert position > 2 and store.head == position  # the refused batches' gap
    finally:
        store.close()
    assert _rows(fresh_postgres_url, "SELECT position, stream FROM eventwf.events "
                 "ORDER BY position") == [(1, "agent:T/a"), (position, "agent:T/b")]


def test_a_stream_another_writer_took_commits_nothing_and_is_not_fatal(
        fresh_postgres_url: str) -> None:  # PG9a
    store = _store_with_one_event(fresh_postgres_url)
    try:
        data = encode_event(AgentCreated(agent_class="T", name="a"))
        with pytest.raises(StreamsTakenError) as err:  # version 0 of agent:T/a is taken
            store.commit([PendingRow("agent:T/x", 0, 2, "agent.created", data),
                          PendingRow("agent:T/a", 0, 2, "agent.created", data)])
        assert not err.value.fatal and err.value.streams == ("agent:T/a",)
        store.commit([PendingRow("agent:T/y", 0, 3, "agent.created", data)])  # goes on
    finally:
        store.close()
    assert _rows(fresh_postgres_url, "SELECT stream FROM eventwf.events ORDER BY position"
                 ) == [("agent:T/a",), ("agent:T/y",)]


async def test_a_projection_row_changed_by_hand_is_rebuilt_from_the_log(
        fresh_postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:  # PG23
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("NAP", id="w")
        await trio.sleep(1)
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE eventwf.workflows SET status = 'complete'")
    with caplog.at_level(logging.WARNING, logger="eventwf"):
        async with _open(fresh_postgres_url) as engine:
            assert "do not match their check value" in caplog.text
            agent = await engine.get_agent(TestAgent, "a")
            info = await agent.get_workflow("w")
            assert info is not None and info.status == "waiting"
            await trio.sleep(7200)
            assert (await engine.wait_workflow("w")).status == "complete"
            assert (await agent.get_workflow_status("NAP", "w")).output == 3


def test_a_read_only_store_reads_beside_a_writer(fresh_postgres_url: str) -> None:
    writer = _store_with_one_event(fresh_postgres_url)  # PG24
    try:
        reader = open_store(fresh_postgres_url, readonly=True)
        try:
            records = reader.read_stream("agent:T/a")
            assert [event_type(r.event) for r in records] == ["agent.created"]
            with pytest.raises(StorageError):
                reader.commit([PendingRow("agent:T/b", 0, 2, "agent.created", b"")])
        finally:
            reader.close()
    finally:
        writer.close()


def test_a_url_that_reaches_no_server_is_a_storage_error_without_its_password() -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nothing"  # PG25
    with pytest.raises(StorageError, match="cannot be opened") as err:
        open_store(url)
    assert "s3cret" not in str(err.value) and "someone:***@127.0.0.1:1" in str(err.value)


def test_a_lost_session_is_settled_and_the_store_goes_on(fresh_postgres_url: str) -> None:
    """PG10: the server ends the writer's session (an admin, a restart, a network drop)
    during a commit: the lost session is ended and gone before the batch is looked up, so
    "not landed" is final: a non-fatal error, and the store goes on with a new session."""
    store = _store_with_one_event(fresh_postgres_url)
    try:
        pid = store.conn.info.backend_pid
        _rows(fresh_postgres_url, "SELECT pg_terminate_backend(%s, 5000)", pid)
        data = encode_event(AgentCreated(agent_class="T", name="b"))
        with pytest.raises(StorageError, match="did not land") as err:
            store.commit([PendingRow("agent:T/b", 0, 2, "agent.created", data)])
        assert not err.value.fatal and store.conn.info.backend_pid != pid
        assert [r.stream_position for r in store.read_stream("agent:T/a")] == [0]
        (position,) = store.commit([PendingRow("agent:T/b", 0, 2, "agent.created", data)])
    finally:
        store.close()
    assert _rows(fresh_postgres_url, "SELECT position, stream FROM eventwf.events "
                 "ORDER BY position") == [(1, "agent:T/a"), (position, "agent:T/b")]


def test_engines_opening_a_new_database_at_once_all_open(fresh_postgres_url: str) -> None:
    """PG1: the projection tables are made under the schema lock too. Without it, two
    engines opening a new database at once collided in the catalogue ("duplicate key value
    violates unique constraint pg_type_typname_nsp_index"): found by two demo servers
    started together."""
    import threading

    stores: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one() -> None:
        barrier.wait()
        try:
            stores.append(open_store(fresh_postgres_url))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == [] and len(stores) == 4
    finally:
        for store in stores:
            store.close()


def _fillfactors(url: str) -> dict[str, list[str] | None]:
    return {str(name): options for name, options in _rows(
        url, "SELECT relname, reloptions FROM pg_class WHERE relnamespace = "
        "'eventwf'::regnamespace AND relname IN ('workflows', 'agents')")}


def test_projection_tables_leave_room_for_updates_in_place(fresh_postgres_url: str) -> None:
    """PG9d: both projections are made with a fill factor of 50, and tables made before
    (the default, 100) get it at the next open, rows and all kept."""
    _store_with_one_event(fresh_postgres_url).close()
    assert _fillfactors(fresh_postgres_url) == {"workflows": ["fillfactor=50"],
                                                "agents": ["fillfactor=50"]}
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE eventwf.workflows RESET (fillfactor)")
        conn.execute("ALTER TABLE eventwf.agents RESET (fillfactor)")
    assert _fillfactors(fresh_postgres_url) == {"workflows": None, "agents": None}
    store = open_store(fresh_postgres_url)
    try:
        assert [event_type(r.event) for r in store.read_stream("agent:T/a")] == [
            "agent.created"]
    finally:
        store.close()
    assert _fillfactors(fresh_postgres_url) == {"workflows": ["fillfactor=50"],
                                                "agents": ["fillfactor=50"]}
