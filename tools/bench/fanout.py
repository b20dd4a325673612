"""Agent state fan-out: N WebSocket clients, S state changes per second.

The server runs in this process; the clients in others (``python -m tools.bench.fanout
URL N CHANGES KIND``, two by default, as clients sit on other machines in real use and
one Python process decoding 500 sockets' frames would measure itself, not the server),
which check that every client got every change in order and report the delivery
latencies (wall time before ``set_state``, so including its durable commit, to client
receipt; same machine). KIND ``raw`` is a minimal WebSocket client (what a browser page
does: read a frame, parse the JSON); ``eventwf`` is ``eventwf.connect_agent``, which adds
a reader task and a buffer per connection and so more load on the shared cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio
from trio_websocket import open_websocket_url

import eventwf
from tools.bench.common import percentile

__all__ = ["bench_fanout"]


_DECODE = msgspec.json.Decoder()


class Ticker(eventwf.Agent):
    initial_state: Any = {"seq": 0, "sent": 0.0}


async def _clients(url: str, count: int, changes: int, kind: str) -> dict[str, Any]:
    latencies: list[float] = []
    problems = 0

    def got(state: dict[str, Any], expected: int) -> int:
        """Record one state; the next expected sequence number."""
        nonlocal problems
        latencies.append((time.time() - state["sent"]) * 1000)
        if state["seq"] != expected:
            problems += 1
        return int(state["seq"]) + 1

    async def eventwf_client(ready: trio.Event, connected: list[int]) -> None:
        async with eventwf.connect_agent(url, "Ticker", "t") as conn:
            connected.append(1)
            if len(connected) == count:
                ready.set()
            expected = conn.state["seq"] + 1
            async for message in conn:
                if message.get("type") == "state" and message["state"]["seq"] > 0:
                    expected = got(message["state"], expected)
                    if expected > changes:
                        return

    async def raw_client(ready: trio.Event, connected: list[int]) -> None:
        async with open_websocket_url(f"{url}/agents/Ticker/t") as ws:
            expected = _DECODE.decode(await ws.get_message())["state"]["seq"] + 1
            connected.append(1)
            if len(connected) == count:
                ready.set()
            while expected <= changes:
                message = _DECODE.decode(await ws.get_message())
                if message.get("type") == "state" and message["state"]["seq"] > 0:
                    expected = got(message["state"], expected)

    client = raw_client if kind == "raw" else eventwf_client
    ready = trio.Event()
    connected: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(client, ready, connected)
        await ready.wait()
        print("READY", flush=True)
    return {"received": len(latencies), "out_of_order_or_missing": problems,
            "latencies_ms": [round(x, 2) for x in latencies]}


async def _serve(count: int, rate: float, seconds: float, processes: int,
                 kind: str) -> dict[str, Any]:
    changes = int(rate * seconds)
    shares = [count // processes + (i < count % processes) for i in range(processes)]
    outputs: list[bytes] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with eventwf.open_engine(str(Path(tmp) / "fan.db"), agents=[Ticker]) as engine:
            agent = await engine.get_agent(Ticker, "t")
            async with trio.open_nursery() as nursery:
                server = await nursery.start(eventwf.serve, engine, "127.0.0.1", 0)
                procs = []
                for share in shares:
                    proc = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "tools.bench.fanout",
                         f"ws://127.0.0.1:{server.port}", str(share), str(changes), kind],
                        stdout=subprocess.PIPE)
                    assert proc.stdout is not None
                    out = b""
                    while b"READY" not in out:
                        out += await proc.stdout.receive_some()
                    procs.append((proc, [out]))
                for n in range(1, changes + 1):
                    await agent.set_state({"seq": n, "sent": time.time()})
                    await trio.sleep(1 / rate)
                for proc, chunks in procs:
                    assert proc.stdout is not None
                    while chunk := await proc.stdout.receive_some():
                        chunks.append(bytes(chunk))
                    await proc.wait()
                    outputs.append(b"".join(chunks))
                nursery.cancel_scope.cancel()
    latencies: list[float] = []
    received = problems = 0
    for out in outputs:
        part = json.loads(out.decode().strip().splitlines()[-1])
        latencies += part["latencies_ms"]
        received += part["received"]
        problems += part["out_of_order_or_missing"]
    return {"benchmark": f"state fan-out: {count} WebSocket clients, {rate:g} changes/s",
            "clients": count, "client": kind, "client_processes": processes,
            "changes": changes,
            "expected_deliveries": count * changes, "received": received,
            "out_of_order_or_missing": problems,
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies, default=0.0), 1)}


def bench_fanout(count: int, rate: float = 20.0, seconds: float = 10.0,
                 processes: int = 2, kind: str = "raw") -> dict[str, Any]:
    return trio.run(_serve, count, rate, seconds, processes, kind)


if __name__ == "__main__":
    print(json.dumps(trio.run(_clients, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                              sys.argv[4])))
