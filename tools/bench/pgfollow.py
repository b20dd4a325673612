"""Notifications and following on PostgreSQL: wake-up latency and the follower's lag.

    python -m tools.bench.pgfollow [--url URL] [--count N] [--json]

Wake-up: a commit on one session, then the post-commit ``pg_notify`` (``NotifySender``),
heard by a ``ListenSession`` waited on with ``trio.lowlevel.wait_readable`` (no thread):
the time from the commit's return to the listener holding the notification, ``--count``
times (20 ms apart, beyond the 10 ms coalescing window), p50/p99/max.

Lag: an engine (``open_engine`` on the URL, ``serve``) with one WebSocket client of an
agent it does not own; another writer (a plain session appending that agent's state
events as an engine does) commits a state, then notifies as an engine does after a
commit; the time from the commit's return to the client holding the state message, with
the notification and without (the follower's 100 ms poll alone). Without ``--url`` a
throwaway cluster with PostgreSQL's durable defaults is started and deleted after.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from typing import Any

import psycopg
import trio

import eventwf
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import AgentStateSet, agent_stream
from eventwf.store.interface import PendingRow
from eventwf.store.postgres import log, schema, sql
from eventwf.store.postgres.notify import LOG_CHANNEL, ListenSession, NotifySender
from eventwf.store.postgres.sql import create_schema
from tools.bench.common import machine
from tools.pgserver import NoServer, open_server


def _figures(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"count": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 3),
            "max_ms": round(ordered[-1] * 1000, 3)}


async def wake_up(url: str, count: int) -> dict[str, float]:
    """Commit, notify after it, and time until the listener holds the notification."""
    writer = psycopg.connect(url, autocommit=True)
    sender = NotifySender(url)
    session = ListenSession(url, [LOG_CHANNEL])
    samples: list[float] = []
    try:
        writer.execute("CREATE TABLE IF NOT EXISTS bench_wake (n int)")
        for n in range(count):
            with writer.transaction():
                writer.execute("INSERT INTO bench_wake VALUES (%s)", (n,))
            start = time.perf_counter()
            sender.send([(LOG_CHANNEL, "log")])
            while not session.drain():
                await trio.lowlevel.wait_readable(session.fileno())
            samples.append(time.perf_counter() - start)
            await trio.sleep(0.02)
    finally:
        session.close()
        sender.close()
        writer.close()
    return _figures(samples)


class Tracked(eventwf.Agent):
    initial_state: Any = {"n": 0}


class _OtherWriter:
    """Appends the agent's state events as another engine would (chained, far positions)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        found = schema.get_meta(self.conn, "genesis")
        assert found is not None
        self.heads = log.Heads(bytes.fromhex(found))

    def set_state(self, stream: str, state: Any) -> None:
        event = AgentStateSet(state)
        version = log.stream_head(self.conn, stream) + 1
        row = PendingRow(stream, version, int(time.time() * 1e6), event_type(event),
                         encode_event(event))
        values, heads = self.heads.chain(self.conn, [row])
        with self.conn.transaction(), self.conn.cursor() as cur:
            sql.insert_rows(cur, values)
        self.heads.advance(heads)


async def follower_lag(url: str, count: int) -> dict[str, dict[str, float]]:
    """The time from another writer's commit to a client of this engine holding the state."""
    out: dict[str, dict[str, float]] = {}
    async with eventwf.open_engine(url, agents=[Tracked]) as engine, trio.open_nursery() as n:
        server = await n.start(functools.partial(eventwf.serve, engine, "127.0.0.1", 0))
        await engine.get_agent(Tracked, "a")
        engine.runtime.agents.owns = lambda cls, name: False  # as if another engine owned it
        other = _OtherWriter(url)
        sender = NotifySender(url)
        stream = agent_stream("Tracked", "a")
        try:
            async with eventwf.connect_agent(f"ws://127.0.0.1:{server.port}", "Tracked",
                                             "a") as client:
                for notified in (True, False):
                    samples = []
                    for i in range(count):
                        other.set_state(stream, {"n": i})
                        start = time.perf_counter()
                        if notified:
                            sender.send([(LOG_CHANNEL, "log")])
                        async for message in client:
                            if message["type"] == "state" and message["state"] == {"n": i}:
                                break
                        samples.append(time.perf_counter() - start)
                        await trio.sleep(0.02)
                    out["notified" if notified else "polling only"] = _figures(samples)
        finally:
            sender.close()
            other.conn.close()
        n.cancel_scope.cancel()
    return out


async def measure(url: str, count: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        create_schema(conn)
    return {"wake_up": await wake_up(url, count),
            "follower_lag": await follower_lag(url, max(count // 4, 10))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.pgfollow",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a database to use (default: a throwaway cluster)")
    parser.add_argument("--count", type=int, default=200, help="notifications (default 200)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        with open_server(args.url) as server:
            result = trio.run(measure, server.new_database(), args.count)
    except NoServer as exc:
        parser.error(str(exc))
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result))
    else:
        for name, figures in [("wake-up after a commit", result["wake_up"]),
                              *((f"follower lag, {k}", v)
                                for k, v in result["follower_lag"].items())]:
            print(f"{name:34} n={figures['count']:<4} p50 {figures['p50_ms']:8.3f} ms  "
                  f"p99 {figures['p99_ms']:8.3f} ms  max {figures['max_ms']:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
