"""Agent state fan-out: N WebSocket clients, S state changes per second.

The server runs in this process; the clients in others (``python -m tools.bench.fanout
URL N CHANGES``, two by default, as clients sit on other machines in real use and one
Python process decoding 500 sockets' frames would measure itself, not the server), which
check that every client got every change in order and report the delivery latencies
(server wall time in the state to client receipt, same machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import eventwf
from tools.bench.common import percentile

__all__ = ["bench_fanout"]


class Ticker(eventwf.Agent):
    initial_state: Any = {"seq": 0, "sent": 0.0}


async def _clients(url: str, count: int, changes: int) -> dict[str, Any]:
    latencies: list[float] = []
    problems = 0

    async def client(ready: trio.Event, connected: list[int]) -> None:
        nonlocal problems
        async with eventwf.connect_agent(url, "Ticker", "t") as conn:
            connected.append(1)
            if len(connected) == count:
                ready.set()
            expected = conn.state["seq"] + 1
            async for message in conn:
                if message.get("type") != "state":
                    continue
                state = message["state"]
                if state["seq"] == 0:
                    continue
                latencies.append((time.time() - state["sent"]) * 1000)
                if state["seq"] != expected:
                    problems += 1
                expected = state["seq"] + 1
                if state["seq"] >= changes:
                    return

    ready = trio.Event()
    connected: list[int] = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(client, ready, connected)
        await ready.wait()
        print("READY", flush=True)
    return {"received": len(latencies), "out_of_order_or_missing": problems,
            "latencies_ms": [round(x, 2) for x in latencies]}


async def _serve(count: int, rate: float, seconds: float, processes: int) -> dict[str, Any]:
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
                         f"ws://127.0.0.1:{server.port}", str(share), str(changes)],
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
                        chunks.append(chunk)
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
            "clients": count, "client_processes": processes, "changes": changes,
            "expected_deliveries": count * changes, "received": received,
            "out_of_order_or_missing": problems,
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
            "max_ms": round(max(latencies, default=0.0), 1)}


def bench_fanout(count: int, rate: float = 20.0, seconds: float = 10.0,
                 processes: int = 2) -> dict[str, Any]:
    return trio.run(_serve, count, rate, seconds, processes)


if __name__ == "__main__":
    print(json.dumps(trio.run(_clients, sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
