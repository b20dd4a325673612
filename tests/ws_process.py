"""Processes for tests/test_server_hostile.py: a server to measure, a handshake flood.

Usage: ``python -m tests.ws_process serve DB MAX_CONNECTIONS`` prints the port, then serves
``Counter`` until its stdin closes. ``python -m tests.ws_process flood URL N`` opens N
WebSocket handshakes to ``URL`` at once, holds the accepted ones until every handshake is
answered, and prints ``{"accepted": a, "refused": {status: count}}`` as JSON.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter as Tally
from typing import Any

import trio
from trio_websocket import ConnectionRejected, open_websocket_url

import eventwf


class Counter(eventwf.Agent):
    initial_state: Any = {"n": 0}

    @eventwf.callable
    async def increment(self) -> int:
        await self.set_state({"n": self.state["n"] + 1})
        return int(self.state["n"])


async def serve(db: str, max_connections: int) -> None:
    async with eventwf.open_engine(db, agents=[Counter]) as engine:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(eventwf.serve, engine, "127.0.0.1", 0,
                                      max_connections=max_connections)
            server = await nursery.start(serve)
            print(server.port, flush=True)
            stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
            while await stdin.receive_some():  # until the test closes our stdin
                pass
            nursery.cancel_scope.cancel()


async def flood(url: str, count: int) -> None:
    accepted = 0
    refused: Tally[int] = Tally()
    answered = trio.Event()

    def done() -> None:
        if accepted + sum(refused.values()) == count:
            answered.set()

    async def one() -> None:
        nonlocal accepted
        try:
            async with open_websocket_url(url):
                accepted += 1
                done()
                await answered.wait()  # hold the connection until everyone has an answer
        except ConnectionRejected as exc:
            refused[exc.status_code] += 1
            done()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    print(json.dumps({"accepted": accepted, "refused": refused}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        trio.run(serve, sys.argv[2], int(sys.argv[3]))
    else:
        trio.run(flood, sys.argv[2], int(sys.argv[3]))
