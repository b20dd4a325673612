"""Following a PostgreSQL log (specs/postgres.md PG7, PG18): the horizon reader from where
it was opened (``eventwf.store.postgres.follow``), and an engine's follower pushing the
agent states another writer committed to its WebSocket clients
(``eventwf.runtime.follower``, ``Agents.push_followed``).

The other writer here is a plain session appending agent events the way another engine's
store does (chained, positions drawn from the identity, expected versions), one
transaction at a time or held open."""

from __future__ import annotations

import functools
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

import eventwf  # noqa: E402
from eventwf.logtool import listing  # noqa: E402
from eventwf.logtool.pgsource import PgLogSource  # noqa: E402
from eventwf.logtool.render import Output  # noqa: E402
from eventwf.model.codec import encode_event, event_type  # noqa: E402
from eventwf.model.events import AgentStateSet, agent_stream  # noqa: E402
from eventwf.runtime.agents import host_of  # noqa: E402
from eventwf.store.interface import PendingRow  # noqa: E402
from eventwf.store.postgres import log, schema  # noqa: E402 - needs psycopg
from eventwf.store.postgres.follow import FollowedRows, HorizonReader  # noqa: E402
from eventwf.store.postgres.sql import create_schema, insert_rows  # noqa: E402

pytestmark = pytest.mark.realtime
class OtherWriter:
    """Appends agent state events as another engine would (chained, expected versions)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)
        genesis = schema.get_meta(self.conn, "genesis")
        assert genesis is not None
        self.genesis = bytes.fromhex(genesis)
        self.held: list[psycopg.Connection] = []

    def rows(self, conn: Any, agent_class: str, name: str, state: Any) -> list[Any]:
        stream = agent_stream(agent_class, name)
        event = AgentStateSet(state)
        version = log.stream_head(conn, stream) + 1
        row = PendingRow(stream, version, 1_000, event_type(event), encode_event(event))
        values, _ = log.Heads(self.genesis).chain(conn, [row])
        return values

    def set_state(self, agent_class: str, name: str, state: Any) -> int:
        """Commit a new state of the agent; its log position."""
        values = self.rows(self.conn, agent_class, name, state)
        with self.conn.transaction(), self.conn.cursor() as cur:
            return insert_rows(cur, values)[0]

    def hold_state(self, agent_class: str, name: str, state: Any) -> tuple[Any, int]:
        """Insert a new state in a transaction left open; (its connection, position)."""
        conn = psycopg.connect(self.url)
        self.held.append(conn)
        values = self.rows(conn, agent_class, name, state)
        with conn.cursor() as cur:
            return conn, insert_rows(cur, values)[0]

    def close(self) -> None:
        for conn in [*self.held, self.conn]:
            conn.close()


@pytest.fixture
def url(fresh_postgres_url: str) -> str:
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        create_schema(conn, shards=8)
    return fresh_postgres_url


@pytest.fixture
def other(url: str) -> Iterator[OtherWriter]:
    writer = OtherWriter(url)
    yield writer
    writer.close()


# -- the horizon reader ---------------------------------------------------------------------

def test_the_reader_starts_at_the_horizon_and_never_skips_a_row_committed_late(
        url: str, other: OtherWriter) -> None:
    """PG7, PG18: rows committed before it opened are the past; a row whose transaction
    is open while a later position commits is read once its transaction ends, in
    transaction order, each row once."""
    before = other.set_state("T", "a", 0)
    with psycopg.connect(url, autocommit=True) as conn:
        reader = HorizonReader(conn)
        held, p1 = other.hold_state("T", "b", 1)
        p2 = other.set_state("T", "a", 2)
        assert before < p1 < p2
        assert reader.read() == []  # p2 waits behind the open transaction of p1
        held.commit()
        assert [row.position for row in reader.read()] == [p1, p2]
        assert reader.read() == []


def test_a_prefix_reads_one_kind_of_stream_and_the_cursor_passes_the_rest(
        url: str, other: OtherWriter) -> None:
    """A follower of agent streams skips workflow rows in the database, and its cursor
    moves up to the horizon after a short read, so they are never scanned again."""
    with psycopg.connect(url, autocommit=True) as conn:
        reader = HorizonReader(conn, prefix="agent:", batch=2)
        start = reader.cursor
        positions = [other.set_state("T", "a", n) for n in range(3)]
        with conn.transaction():  # a workflow-like row of another stream
            conn.execute("INSERT INTO eventwf.events (stream, stream_position, time_us, "
                         "type, data, hash) VALUES ('wf:x', 0, 1, 't', '', %s)", (bytes(16),))
        first = reader.read()
        assert reader.more  # a full batch: read again
        rest = reader.read()
        assert [r.position for r in first + rest] == positions
        assert not reader.more
        assert reader.cursor.tx > max(r.tx for r in first + rest) > start.tx
        assert reader.read() == []


def test_followed_rows_are_decoded_and_checked_against_their_stream(
        url: str, other: OtherWriter) -> None:
    """PG5: each followed row is checked against the previous row of its stream (read
    from the log on first sight); a changed row is reported, not raised."""
    with psycopg.connect(url, autocommit=True) as conn:
        reader = HorizonReader(conn)
        good = other.set_state("T", "a", {"n": 1})
        values = other.rows(other.conn, "T", "a", {"n": 2})
        with other.conn.transaction(), other.conn.cursor() as cur:
            bad = insert_rows(cur, [values[0]._replace(hash=bytes(16))])[0]  # a wrong hash
        followed = FollowedRows(conn).check(reader.read())
        assert [f.position for f in followed] == [good, bad]
        assert followed[0].record is not None and followed[0].problem is None
        assert followed[0].record.event == AgentStateSet({"n": 1})
        assert followed[1].record is None
        assert "fails its checksum" in str(followed[1].problem)


async def test_tail_follow_prints_a_row_committed_late_in_commit_order(
        url: str, other: OtherWriter) -> None:
    """The log tool's ``tail --follow`` on PostgreSQL follows the horizon: a row whose
    transaction is open while a later position commits is printed once it commits,
    before the later one, and nothing is printed twice."""
    other.set_state("T", "a", 0)
    out = io.StringIO()
    rows: list[int] = []
    with PgLogSource(url) as source:
        head = source.head()
        polls: list[int] = []
        held: Any = None

        def stop() -> bool:  # after each poll of the follower
            nonlocal held
            polls.append(out.getvalue().count("\n"))
            if len(polls) == 1:
                held, late = other.hold_state("T", "b", 1)
                rows.extend([late, other.set_state("T", "a", 2)])
            elif len(polls) == 2:
                held.commit()
            return len(polls) == 3

        with trio.fail_after(10):
            code = await listing.follow(source, Output(json=True, stream=out), head,
                                        interval=0.05, stop=stop)
    printed = [json.loads(line)["position"] for line in out.getvalue().splitlines()]
    assert code == 0 and polls[:2] == [0, 0]  # nothing while the earlier one is open
    assert rows[0] < rows[1] and printed == rows


# -- the engine's follower ------------------------------------------------------------------

class Counter(eventwf.Agent):
    initial_state: Any = {"n": 0}

    @eventwf.callable
    async def increment(self) -> int:
        await self.set_state({"n": self.state["n"] + 1})
        return int(self.state["n"])


@asynccontextmanager
async def serving(url: str) -> AsyncIterator[tuple[eventwf.Engine, str]]:
    async with eventwf.open_engine(url, agents=[Counter]) as engine:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(eventwf.serve, engine,
                                                           "127.0.0.1", 0))
            yield engine, f"ws://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()


async def states(conn: eventwf.AgentConnection, count: int) -> list[tuple[Any, int]]:
    """The next ``count`` state messages: (state, position)."""
    out: list[tuple[Any, int]] = []
    async for message in conn:
        if message["type"] == "state":
            out.append((message["state"], message["position"]))
            if len(out) == count:
                break
    return out


async def read_twice(engine: eventwf.Engine) -> None:
    """Wait until the follower has read the log twice more (it polls while clients are
    connected), so everything committed before this call has been read."""
    follower = engine.runtime.follower
    assert follower is not None
    target = follower.reads + 2
    while follower.reads < target:
        await trio.sleep(0.01)


class Recorder:
    """A client of an agent that records every push (``agent_host.Connection``)."""

    def __init__(self) -> None:
        self.states: list[int] = []

    def push_state(self, state: Any, position: int) -> None:
        self.states.append(position)

    def push_message(self, message: Any) -> None:
        pass


async def test_clients_receive_another_writers_states_in_order_once_each(
        fresh_postgres_url: str) -> None:
    """PG18: states another writer commits reach this engine's WebSocket clients of that
    agent, in order, with growing positions, once each, including a state whose
    transaction stayed open while a later position (another agent's) committed."""
    with trio.fail_after(30):
        async with serving(fresh_postgres_url) as (engine, ws_url):
            await engine.get_agent(Counter, "x")
            await engine.get_agent(Counter, "y")
            engine.runtime.agents.owns = lambda cls, name: False  # another engine writes them
            other = OtherWriter(fresh_postgres_url)
            try:
                async with eventwf.connect_agent(ws_url, "Counter", "x") as x, \
                        eventwf.connect_agent(ws_url, "Counter", "y") as y:
                    p1 = other.set_state("Counter", "x", {"n": 1})
                    held, p2 = other.hold_state("Counter", "x", {"n": 2})
                    p3 = other.set_state("Counter", "y", {"n": 30})
                    await read_twice(engine)  # it read past p3's commit, not past p2
                    held.commit()
                    p4 = other.set_state("Counter", "x", {"n": 3})
                    got_x = await states(x, 3)
                    got_y = await states(y, 1)
                    await read_twice(engine)
            finally:
                other.close()
            agent = await engine.get_agent(Counter, "x")
            assert agent.state == {"n": 3}  # the host's view follows the log
    assert p1 < p2 < p3 < p4
    assert got_x == [({"n": 1}, p1), ({"n": 2}, p2), ({"n": 3}, p4)]
    assert got_y == [({"n": 30}, p3)]


async def test_the_follower_never_pushes_this_engines_own_commits_again(
        fresh_postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """PG18: the engine pushes its own commits at commit; its follower reads them too and
    skips them (their versions are known: no push, no "ownership lost"), so each
    position is pushed once."""
    caplog.set_level(logging.WARNING, logger="eventwf")
    with trio.fail_after(30):
        async with serving(fresh_postgres_url) as (engine, ws_url):
            agent = await engine.get_agent(Counter, "x")
            recorder = Recorder()
            host_of(agent).connections.add(recorder)
            async with eventwf.connect_agent(ws_url, "Counter", "x") as client:
                for _ in range(5):
                    await client.call("increment")
                await read_twice(engine)
            follower = engine.runtime.follower
            assert follower is not None
            assert follower.pushed == 0
    assert len(recorder.states) == 5
    assert recorder.states == sorted(set(recorder.states))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_another_writer_on_an_owned_agent_is_logged_as_ownership_lost(
        fresh_postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """PG18 with the single-engine lock: every agent is this engine's, so another writer's
    state of it means the ownership was lost: a warning, and nothing pushed."""
    caplog.set_level(logging.WARNING, logger="eventwf")
    with trio.fail_after(30):
        async with serving(fresh_postgres_url) as (engine, _):
            agent = await engine.get_agent(Counter, "x")
            recorder = Recorder()
            host_of(agent).connections.add(recorder)
            other = OtherWriter(fresh_postgres_url)
            try:
                position = other.set_state("Counter", "x", {"n": 9})
                await read_twice(engine)
            finally:
                other.close()
            assert agent.state == {"n": 0}
    assert recorder.states == []
    assert any("ownership was lost" in r.getMessage() and str(position) in r.getMessage()
               for r in caplog.records)
