"""The PostgreSQL SQL layer (eventwf/store/postgres/sql.py and shard_sql.py) against a
throwaway cluster: specs/postgres.md PG1-PG14. Each test has a fresh database."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

from eventwf.store.postgres import shard_sql  # noqa: E402 - needs psycopg
from eventwf.store.postgres import sql as pg_sql  # noqa: E402
from eventwf.store.postgres.sql import LogCursor, NewEvent, VersionConflict  # noqa: E402

GENESIS = bytes(16)
INSERTS = [pytest.param(pg_sql.insert_by_copy, id="copy"),
           pytest.param(pg_sql.insert_by_executemany, id="executemany"),
           pytest.param(pg_sql.insert_rows, id="default")]


@pytest.fixture
def url(fresh_postgres_url: str) -> str:
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        pg_sql.create_schema(conn, shards=8)
    return fresh_postgres_url


@pytest.fixture
def connect(url: str) -> Iterator[Callable[[], psycopg.Connection]]:
    """Open autocommit connections to the test's database; all closed after the test."""
    opened: list[psycopg.Connection] = []

    def open_one() -> psycopg.Connection:
        opened.append(psycopg.connect(url, autocommit=True))
        return opened[-1]

    yield open_one
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect: Callable[[], psycopg.Connection]) -> psycopg.Connection:
    return connect()


def rows(stream: str, first: int, count: int, prev: bytes | None = None,
         type_name: str = "step.succeeded") -> list[NewEvent]:
    """``count`` chained rows of ``stream`` from version ``first``."""
    out = []
    prev = GENESIS if prev is None else prev
    for version in range(first, first + count):
        data = f"{stream}#{version}".encode()
        prev = pg_sql.stream_hash(prev, stream, version, 1_000 + version, type_name, data)
        out.append(NewEvent(stream, version, 1_000 + version, type_name, data, prev))
    return out


def versions(conn: psycopg.Connection, stream: str) -> list[int]:
    return [e.stream_position for e in pg_sql.read_stream(conn, stream)]


# -- schema (PG1, PG2) ---------------------------------------------------------------------

def test_the_schema_is_made_once_whoever_makes_it(url: str,
                                                  connect: Callable[[], psycopg.Connection]
                                                  ) -> None:
    """PG1: engines opening one database at once all succeed and agree on its genesis and
    shard count (the first one's: a later, different ``shards`` does not change it)."""
    infos: list[pg_sql.SchemaInfo] = []
    conns = [connect() for _ in range(4)]
    barrier = threading.Barrier(4)

    def make(c: psycopg.Connection) -> None:
        barrier.wait()
        infos.append(pg_sql.create_schema(c, shards=64))

    threads = [threading.Thread(target=make, args=(c,)) for c in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(infos) == 4 and len(set(infos)) == 1
    assert infos[0].shards == 8  # made by the fixture with 8
    assert len(shard_sql.leases(conns[0])) == 8


def test_a_newer_schema_is_refused_and_left_alone(conn: psycopg.Connection) -> None:
    conn.execute("UPDATE eventwf.meta SET value = '2' WHERE key = 'schema_version'")
    with pytest.raises(pg_sql.SchemaVersionTooNew, match="version '2', not one this eventwf"):
        pg_sql.create_schema(conn)
    assert conn.execute("SELECT value FROM eventwf.meta WHERE key = 'schema_version'"
                        ).fetchone() == ("2",)


@pytest.mark.parametrize("statement", [
    "UPDATE eventwf.events SET data = '\\x00'", "DELETE FROM eventwf.events",
    "TRUNCATE eventwf.events"])
def test_the_events_table_is_append_only(conn: psycopg.Connection, statement: str) -> None:
    """PG2: the database refuses every change to a logged row."""
    pg_sql.commit_batch(conn, rows("wf:a", 0, 2))
    with pytest.raises(psycopg.errors.RestrictViolation, match="append-only"):
        conn.execute(statement)
    assert versions(conn, "wf:a") == [0, 1]


# -- appends with expected versions (PG6, PG9) ---------------------------------------------

@pytest.mark.parametrize("insert", INSERTS)
def test_appends_with_the_right_versions_commit_and_return_positions(
        conn: psycopg.Connection, insert: pg_sql.Insert) -> None:
    a0, b0 = rows("wf:a", 0, 2), rows("agent:T/x", 0, 1)
    first = pg_sql.commit_batch(conn, a0 + b0, insert=insert)
    then = pg_sql.commit_batch(conn, rows("wf:a", 2, 3, prev=a0[-1].hash), insert=insert)
    assert len(first) == 3 and len(then) == 3
    assert first == sorted(first) and then == sorted(then) and then[0] > first[-1]
    stored = pg_sql.read_stream(conn, "wf:a")
    assert [e.stream_position for e in stored] == [0, 1, 2, 3, 4]
    assert [e.position for e in stored] == first[:2] + then
    assert pg_sql.stream_heads(conn, ["wf:a", "agent:T/x", "wf:none"]) == {
        "wf:a": pg_sql.Head(4, stored[-1].hash), "agent:T/x": pg_sql.Head(0, b0[0].hash),
        "wf:none": pg_sql.Head(-1, None)}


@pytest.mark.parametrize("insert", INSERTS)
def test_a_wrong_expected_version_raises_version_conflict_and_commits_nothing(
        conn: psycopg.Connection, insert: pg_sql.Insert) -> None:
    """PG9: the stream another writer appended to is named, with the version expected and
    the one found; nothing of the batch (other streams, ``then``'s rows) is committed."""
    pg_sql.commit_batch(conn, rows("wf:a", 0, 2))
    conn.execute("CREATE TABLE side (note text)")

    def then(c: psycopg.Connection) -> None:
        c.execute("INSERT INTO side VALUES ('projection row')")

    stale = rows("wf:b", 0, 2) + rows("wf:a", 1, 2)  # wf:a's head is 1, not 0
    with pytest.raises(VersionConflict) as caught:
        pg_sql.commit_batch(conn, stale, insert=insert, then=then)
    assert caught.value.conflicts == (("wf:a", 0, 1),)
    assert "'wf:a' expected version 0, found 1" in str(caught.value)
    assert versions(conn, "wf:b") == [] and versions(conn, "wf:a") == [0, 1]
    assert conn.execute("SELECT count(*) FROM side").fetchone() == (0,)
    pg_sql.commit_batch(conn, rows("wf:b", 0, 2), insert=insert)  # the rest, without wf:a
    assert versions(conn, "wf:b") == [0, 1]


def test_a_batch_that_skips_a_version_is_refused_before_it_is_sent(
        conn: psycopg.Connection) -> None:
    batch = rows("wf:a", 0, 1) + rows("wf:a", 2, 1)
    with pytest.raises(ValueError, match="'wf:a' jumps from version 0 to 2 within one batch"):
        pg_sql.commit_batch(conn, batch)
    assert versions(conn, "wf:a") == []


def _waiting_for_a_lock(observer: psycopg.Connection, pid: int) -> bool:
    row = observer.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
    return row == ("Lock",)


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


@pytest.mark.parametrize("first_commits", [True, False], ids=["commits", "rolls-back"])
def test_two_writers_racing_on_one_stream_never_both_win(
        connect: Callable[[], psycopg.Connection], first_commits: bool) -> None:
    """PG9: B appends version 0 while A's version 0 is not yet committed: B waits for A,
    then loses if A committed (VersionConflict) or wins if A rolled back."""
    a, b, observer = connect(), connect(), connect()
    outcome: list[object] = []

    def append_b() -> None:
        try:
            outcome.append(pg_sql.commit_batch(b, rows("wf:race", 0, 1, type_name="b")))
        except VersionConflict as exc:
            outcome.append(exc)

    with a.transaction() as tx, a.cursor() as cur:
        pg_sql.insert_by_copy(cur, rows("wf:race", 0, 1, type_name="a"))
        racer = threading.Thread(target=append_b)
        racer.start()
        _wait(lambda: _waiting_for_a_lock(observer, b.info.backend_pid), "B to wait for A")
        if not first_commits:
            raise psycopg.Rollback(tx)
    racer.join(timeout=30)
    stored = pg_sql.read_stream(observer, "wf:race")
    assert [(e.stream_position, e.type) for e in stored] == [(0, "a" if first_commits else "b")]
    if first_commits:
        assert isinstance(outcome[0], VersionConflict)
        assert outcome[0].conflicts == (("wf:race", -1, 0),)
    else:
        assert isinstance(outcome[0], list)


def test_many_writers_racing_on_one_stream_one_wins(
        connect: Callable[[], psycopg.Connection]) -> None:
    """PG9: eight engines append version 0 of one stream at once, 20 times: one wins each."""
    conns = [connect() for _ in range(8)]
    for round_ in range(20):
        stream = f"wf:race-{round_}"
        barrier = threading.Barrier(len(conns))
        won: list[int] = []
        lost: list[int] = []

        def append(i: int, c: psycopg.Connection, stream: str, barrier: threading.Barrier,
                   won: list[int], lost: list[int]) -> None:
            barrier.wait()
            try:
                pg_sql.commit_batch(c, rows(stream, 0, 1, type_name=f"w{i}"))
                won.append(i)
            except VersionConflict:
                lost.append(i)

        threads = [threading.Thread(target=append, args=(i, c, stream, barrier, won, lost))
                   for i, c in enumerate(conns)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(won) == 1 and len(lost) == 7
        assert [e.type for e in pg_sql.read_stream(conns[0], stream)] == [f"w{won[0]}"]


# -- the horizon (PG7) -------------------------------------------------------------------

def test_the_horizon_never_skips_a_row_committed_late(
        connect: Callable[[], psycopg.Connection]) -> None:
    """PG7: A holds position p1 open while B commits p2 > p1. A reader ordered by position
    alone would see [p2] and move past p1 for ever; the horizon read shows nothing until A
    ends, then both, A's first."""
    a, b, reader = connect(), connect(), connect()
    with a.transaction(), a.cursor() as cur:
        (p1,) = pg_sql.insert_by_copy(cur, rows("wf:slow", 0, 1))
        (p2,) = pg_sql.commit_batch(b, rows("wf:fast", 0, 1))
        assert p2 > p1
        naive = reader.execute("SELECT position FROM eventwf.events WHERE position > 0"
                               ).fetchall()
        assert naive == [(p2,)]  # the hazard: a position cursor would now stand at p2
        assert pg_sql.read_horizon(reader, LogCursor()) == []
    seen = pg_sql.read_horizon(reader, LogCursor())
    assert [(e.stream, e.position) for e in seen] == [("wf:slow", p1), ("wf:fast", p2)]
    assert seen[0].tx < seen[1].tx


def test_the_horizon_orders_by_transaction_not_by_position(
        connect: Callable[[], psycopg.Connection]) -> None:
    """PG7: a transaction's id and its rows' positions are drawn at different instants, so
    B (older id) can commit a later position while A (newer id, earlier position) is open.
    B's row is then below the horizon; a position cursor there would pass A's row for
    ever, the ``(tx, position)`` cursor does not."""
    a, b, reader = connect(), connect(), connect()
    b.execute("BEGIN")
    b.execute("SELECT pg_current_xact_id()")  # B's id first...
    with a.transaction(), a.cursor() as cur:
        (p_a,) = pg_sql.insert_by_copy(cur, rows("wf:a", 0, 1))  # ...A's position first
        (p_b,) = pg_sql.insert_by_copy(b.cursor(), rows("wf:b", 0, 1))
        b.execute("COMMIT")
        assert p_a < p_b
        seen = pg_sql.read_horizon(reader, LogCursor())
        assert [e.position for e in seen] == [p_b]  # B is below the horizon, A is not
        cursor = LogCursor(seen[0].tx, seen[0].position)
    assert [e.position for e in pg_sql.read_horizon(reader, cursor)] == [p_a]


def test_the_horizon_pages_on_from_its_cursor(connect: Callable[[], psycopg.Connection]
                                              ) -> None:
    conn, reader = connect(), connect()
    for i in range(5):
        pg_sql.commit_batch(conn, rows(f"wf:{i}", 0, 3))
    cursor, seen = LogCursor(), []
    while page := pg_sql.read_horizon(reader, cursor, limit=4):
        seen.extend(page)
        cursor = LogCursor(page[-1].tx, page[-1].position)
    assert [(e.stream, e.stream_position) for e in seen] == [
        (f"wf:{i}", v) for i in range(5) for v in range(3)]
    pg_sql.commit_batch(conn, rows("wf:later", 0, 1))
    assert [e.stream for e in pg_sql.read_horizon(reader, cursor)] == ["wf:later"]


# -- leases, claims (PG12, PG13) -----------------------------------------------------------

def _wait_for_database_clock(conn: psycopg.Connection, instant: datetime) -> None:
    """Until the database's clock is past ``instant`` (it sleeps exactly that long)."""
    while conn.execute("SELECT now() > %s", (instant,)).fetchone() != (True,):
        conn.execute("SELECT pg_sleep(GREATEST(0, EXTRACT(epoch FROM %s - clock_timestamp())) "
                     "+ 0.001)", (instant,))


def test_a_lease_is_taken_over_only_once_it_expires_by_the_database_clock(
        connect: Callable[[], psycopg.Connection]) -> None:
    a, b = connect(), connect()
    held = shard_sql.take_shards(a, "engine-a", [0, 1], ttl=0.3)
    assert [(lease.shard, lease.owner, lease.epoch) for lease in held] == [
        (0, "engine-a", 1), (1, "engine-a", 1)]
    assert shard_sql.take_shards(b, "engine-b", [0, 1, 2], ttl=0.3) == [
        lease for lease in shard_sql.leases(b) if lease.shard == 2]  # only the free one
    held = shard_sql.renew_leases(a, "engine-a", held, ttl=0.3)
    assert [lease.shard for lease in held] == [0, 1]
    assert shard_sql.take_shards(b, "engine-b", [0, 1], ttl=0.3) == []  # renewed: still a's
    _wait_for_database_clock(b, max(lease.expires_at for lease in held if lease.expires_at))
    assert shard_sql.renew_leases(a, "engine-a", held, ttl=0.3) == []  # expired: lost
    taken = shard_sql.take_shards(b, "engine-b", [0, 1], ttl=30)
    assert [(lease.shard, lease.owner, lease.epoch) for lease in taken] == [
        (0, "engine-b", 2), (1, "engine-b", 2)]
    assert shard_sql.renew_leases(a, "engine-a", held, ttl=30) == []


def test_engines_racing_for_an_expired_shard_one_wins(
        connect: Callable[[], psycopg.Connection]) -> None:
    conns = [connect() for _ in range(6)]
    barrier = threading.Barrier(len(conns))
    won: list[list[shard_sql.Lease]] = []

    def take(i: int, c: psycopg.Connection) -> None:
        barrier.wait()
        won.append(shard_sql.take_shards(c, f"engine-{i}", [5], ttl=30))

    threads = [threading.Thread(target=take, args=(i, c)) for i, c in enumerate(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    winners = [leases for leases in won if leases]
    assert len(winners) == 1 and winners[0][0].epoch == 1


def test_a_released_lease_is_taken_at_once(connect: Callable[[], psycopg.Connection]) -> None:
    a, b = connect(), connect()
    held = shard_sql.take_shards(a, "engine-a", [3], ttl=30)
    assert shard_sql.release_leases(b, "engine-b", held) == []  # not b's to release
    assert shard_sql.release_leases(a, "engine-a", held) == [3]
    assert [(x.owner, x.epoch) for x in shard_sql.take_shards(b, "engine-b", [3], ttl=30)] == [
        ("engine-b", 2)]


def test_a_claim_marker_fences_off_the_previous_owner(
        connect: Callable[[], psycopg.Connection]) -> None:
    """PG13: the new owner appends a claim to each stream it resumes; the old owner's
    next append (at the head it still holds) collides, whatever its clock says."""
    zombie, owner = connect(), connect()
    written = rows("wf:a", 0, 2) + rows("agent:T/x", 0, 1)
    pg_sql.commit_batch(zombie, written)
    claimed = shard_sql.claim_streams(owner, ["wf:a", "agent:T/x", "wf:new"], genesis=GENESIS,
                                   time_us=5_000, data=b'{"owner":"engine-b","epoch":2}')
    assert claimed == {"wf:a": 2, "agent:T/x": 1, "wf:new": 0}
    with pytest.raises(VersionConflict) as caught:
        pg_sql.commit_batch(zombie, rows("wf:a", 2, 1, prev=written[1].hash))
    assert caught.value.conflicts == (("wf:a", 1, 2),)
    stored = pg_sql.read_stream(owner, "wf:a")
    assert [e.type for e in stored] == ["step.succeeded", "step.succeeded", shard_sql.CLAIM_TYPE]
    assert stored[2].hash == pg_sql.stream_hash(stored[1].hash, "wf:a", 2, 5_000,
                                                shard_sql.CLAIM_TYPE, stored[2].data)


def test_the_shard_of_an_agent_is_stable() -> None:
    """A changed function would move every agent to another shard: pinned values."""
    assert [shard_sql.shard_of("Tasks", f"user-{i}", 256) for i in range(4)] == [231, 1, 0, 251]
    assert shard_sql.shard_of("Tasks", "user-0", 1) == 0


# -- an unknown commit outcome (PG10) ------------------------------------------------------

def test_an_unknown_outcome_is_settled_once_the_session_is_gone(
        connect: Callable[[], psycopg.Connection]) -> None:
    """PG10: a lookup while the lost session still runs could say "not landed" and the
    commit land after; ending the session first makes the answer final."""
    lost, engine = connect(), connect()
    batch = rows("wf:a", 0, 3)
    lost_pid = lost.info.backend_pid
    lost.execute("BEGIN")
    pg_sql.insert_by_copy(lost.cursor(), batch)  # COMMIT "sent", the answer never came
    pg_sql.settle_backend(engine, lost_pid)
    assert pg_sql.batch_landed(engine, batch[0]) is False
    with pytest.raises(psycopg.OperationalError):
        lost.execute("COMMIT")
    assert versions(engine, "wf:a") == []
    pg_sql.commit_batch(engine, batch)
    assert pg_sql.batch_landed(engine, batch[0]) is True
    other = rows("wf:a", 0, 1, type_name="someone.else")[0]
    with pytest.raises(VersionConflict):
        pg_sql.batch_landed(engine, other)
    pg_sql.settle_backend(engine, lost_pid)  # already gone: returns at once
    with pytest.raises(ValueError, match="own"):
        pg_sql.settle_backend(engine, engine.info.backend_pid)
