"""The PostgreSQL test infrastructure (tests/pg_cluster.py), and the two trio facts the
PostgreSQL backend relies on (specs/postgres.md PG3, PG4): psycopg's sync API from trio
through worker threads, and LISTEN with no thread, waiting on the connection's socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from tests import pg_cluster
from tests.pg_cluster import ENV_REQUIRE, ExternalServer, PgCluster, Unavailable

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e "
                              "'.[dev]' (PostgreSQL tests)")

ROOT = Path(__file__).resolve().parent.parent


def test_the_fixture_gives_a_database_that_works(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE fixture_works (id int PRIMARY KEY, note text)")
        conn.commit()
        with conn.transaction():
            conn.execute("INSERT INTO fixture_works VALUES (1, 'kept')")
        with pytest.raises(ZeroDivisionError), conn.transaction():
            conn.execute("INSERT INTO fixture_works VALUES (2, 'rolled back')")
            raise ZeroDivisionError
        rows = conn.execute("SELECT id, note FROM fixture_works ORDER BY id").fetchall()
    assert rows == [(1, "kept")]


def test_fresh_databases_are_independent(pg_server: PgCluster | ExternalServer) -> None:
    first, second = pg_server.new_database(), pg_server.new_database()
    try:
        assert first != second
        with psycopg.connect(first, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_here (x int)")
        with psycopg.connect(second, autocommit=True) as conn:
            found = conn.execute("SELECT to_regclass('only_here')").fetchone()
        assert found == (None,)
    finally:
        pg_server.drop_database(first)
        pg_server.drop_database(second)


def test_missing_binaries_skip_naming_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Unavailable) as caught:
        pg_cluster.open_server({}, binaries="/nonexistent/postgresql/*/bin")
    message = str(caught.value)
    assert "/nonexistent/postgresql/*/bin/initdb" in message
    assert "apt-get install postgresql" in message and pg_cluster.ENV_URL in message
    monkeypatch.delenv(ENV_REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL tests skipped: no PostgreSQL"):
        pg_cluster.unavailable(message)
    monkeypatch.setenv(ENV_REQUIRE, "1")  # CI: a skip would hide that nothing ran
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL tests required"):
        pg_cluster.unavailable(message)


@pytest.mark.realtime
async def test_psycopg_sync_calls_run_in_worker_threads_under_trio(postgres_url: str) -> None:
    """PG3: a call blocked in the server (waiting for a lock) blocks only its thread: the
    event loop goes on and, through another thread, releases what the first one waits for
    (were the loop blocked, this would deadlock and fail_after would fire)."""
    holder = psycopg.connect(postgres_url, autocommit=True)
    waiter = psycopg.connect(postgres_url, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(42)")
        got: list[object] = []

        def wait_for_lock() -> None:
            waiter.execute("SELECT pg_advisory_lock(42)")
            got.append(waiter.execute("SELECT pg_advisory_unlock(42)").fetchone())

        def waiting() -> bool:
            row = holder.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                 (waiter.info.backend_pid,)).fetchone()
            return row == ("Lock",)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, wait_for_lock)
                while not await trio.to_thread.run_sync(waiting):  # the loop is free
                    await trio.sleep(0.005)
                await trio.to_thread.run_sync(holder.execute, "SELECT pg_advisory_unlock(42)")
        assert got == [(True,)]
    finally:
        holder.close()
        waiter.close()


def _listener(url: str, channel: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
    return conn


async def _next_notifies(conn: psycopg.Connection) -> list[psycopg.Notify]:
    """Wait (no thread) until the socket is readable, then read what arrived."""
    while True:
        await trio.lowlevel.wait_readable(conn.fileno())
        got = list(conn.notifies(timeout=0))  # consumes the input, never blocks
        if got:
            return got


@pytest.mark.realtime
async def test_listen_without_a_thread_wakes_on_a_notify_after_commit(postgres_url: str
                                                                      ) -> None:
    """PG4: LISTEN on the trio thread: wait_readable on the connection's socket, then the
    notifies; a NOTIFY sent in a transaction arrives when it commits, in order."""
    listener = _listener(postgres_url, "eventwf_log")
    sender = psycopg.connect(postgres_url)
    received: list[str] = []
    try:
        async def listen() -> None:
            while len(received) < 3:
                received.extend(n.payload for n in await _next_notifies(listener))

        def send(payloads: list[str]) -> None:
            with sender.transaction():
                for payload in payloads:
                    sender.execute("SELECT pg_notify('eventwf_log', %s)", (payload,))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await trio.to_thread.run_sync(send, ["shard 3"])
                await trio.to_thread.run_sync(send, ["shard 7", "shard 9"])
        assert received == ["shard 3", "shard 7", "shard 9"]
    finally:
        listener.close()
        sender.close()


@pytest.mark.realtime
async def test_listen_with_the_low_level_api(postgres_url: str) -> None:
    """PG4, the libpq way (psycopg older than 3.2 has no ``notifies(timeout=)``):
    ``pgconn.consume_input()`` then ``pgconn.notifies()`` until it returns None."""
    listener = _listener(postgres_url, "eventwf_inbox")
    sender = psycopg.connect(postgres_url, autocommit=True)
    try:
        with trio.fail_after(10):
            await trio.to_thread.run_sync(sender.execute, "NOTIFY eventwf_inbox, 'hello'")
            got = []
            while not got:
                await trio.lowlevel.wait_readable(listener.fileno())
                listener.pgconn.consume_input()
                while (notify := listener.pgconn.notifies()) is not None:
                    got.append(bytes(notify.extra).decode())
        assert got == ["hello"]
    finally:
        listener.close()
        sender.close()


_KILLED_SESSION = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.pg_cluster import PgCluster, find_bindir
cluster = PgCluster(find_bindir())
print(cluster.root, flush=True)
sys.stdin.readline()
"""


@pytest.mark.realtime
def test_a_killed_test_session_leaves_no_server_behind(
        pg_server: PgCluster | ExternalServer) -> None:
    """A SIGKILLed test process cannot clean up; its watchdog stops the server and deletes
    the directory (the server itself runs in a session of its own, so nothing else would)."""
    if not isinstance(pg_server, PgCluster):
        pytest.skip(f"{pg_cluster.ENV_URL} is set: no throwaway cluster to check")
    session = subprocess.Popen([sys.executable, "-c", _KILLED_SESSION, str(ROOT)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert session.stdout is not None
    root = Path(session.stdout.readline().strip())
    pid = int((root / "data" / "postmaster.pid").read_text().split("\n", 1)[0])
    os.kill(pid, 0)  # the server runs
    session.send_signal(signal.SIGKILL)
    session.wait()
    deadline = time.monotonic() + 30
    while root.exists() or _alive(pid):
        assert time.monotonic() < deadline, f"server {pid} or {root} outlived its session"
        time.sleep(0.01)
    assert session.stdin is not None
    session.stdin.close()
    session.stdout.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that init has not reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
