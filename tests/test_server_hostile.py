"""The WebSocket server under hostile or heavy clients, over real sockets and processes.

Issue 19 (hardening, round 2), the server's items: the connection cap under concurrent
handshakes (P3), outbound queues bounded by bytes and answers that never echo a client's
text unbounded (P6, P10), state coalescing for bursts (P4, P10), deeply nested frames
(P9), the authenticate hook seeing the decided agent (P3).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    open_websocket_url,
    serve_websocket,
)

import eventwf
from tests.test_server import closed_with

pytestmark = pytest.mark.realtime
ROOT = Path(__file__).resolve().parent.parent


class Crowd(eventwf.Agent):
    initial_state: Any = {"n": 0}

    @eventwf.callable
    async def burst(self, count: int) -> int:
        for i in range(count):  # one hook, no await in between: all pushed at once
            await self.broadcast({"burst": i})
        return count

    @eventwf.callable
    def shout(self, text: str) -> None:
        raise ValueError(f"cannot shout {text!r}")


@asynccontextmanager
async def running(db: str, **options: Any) -> AsyncIterator[tuple[eventwf.Engine, str]]:
    async with eventwf.open_engine(db, agents=[Crowd]) as engine:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(eventwf.serve, engine, "127.0.0.1", 0, **options)
            server = await nursery.start(serve)
            yield engine, f"ws://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()


async def states_until(conn: eventwf.AgentConnection, position: int) -> list[int]:
    """The positions of the state messages ``conn`` gets, up to ``position``."""
    seen: list[int] = []
    with trio.fail_after(30):
        async for message in conn:
            if message["type"] == "state":
                seen.append(message["position"])
                if message["position"] >= position:
                    return seen
    raise AssertionError(f"closed ({conn.closed}) after positions {seen[-3:]}")


# -- item 2: the connection cap holds under concurrent handshakes --------------------------


def _start_server(db: str, max_connections: int) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.ws_process", "serve", db, str(max_connections)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    assert port.isdigit(), f"the server process did not start: {port!r}"
    return process, f"ws://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    assert process.wait(timeout=10) == 0


async def test_concurrent_handshakes_from_another_process_never_exceed_the_cap(
        db: str) -> None:  # P3
    cap, count = 20, 100
    process, url = _start_server(db, cap)
    try:
        flood = await trio.run_process(
            [sys.executable, "-m", "tests.ws_process", "flood", f"{url}/agents/Counter/c",
             str(count)], cwd=ROOT, capture_stdout=True)
        answer = json.loads(flood.stdout)
        assert answer == {"accepted": cap, "refused": {"503": count - cap}}, answer
    finally:
        _stop(process)


# -- item 3: a client that never reads cannot grow the server ------------------------------


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_a_client_that_never_reads_cannot_grow_the_server(db: str) -> None:  # P6, P10
    # Reproduces the report: RPCs with 500,000-character method names, whose errors echoed
    # them, from a client that reads nothing, grew the server by 146 MB.
    process, url = _start_server(db, 10)
    try:
        async with open_websocket_url(f"{url}/agents/Counter/c") as ws:
            assert json.loads(await ws.get_message())["type"] == "state"
            before = _peak_rss_mb(process.pid)
            name, calls = "m" * 500_000, 300
            with trio.fail_after(60):
                for i in range(calls):  # reads nothing meanwhile
                    await ws.send_message(json.dumps({"type": "rpc", "id": f"r{i}",
                                                      "method": name, "args": []}))
                await ws.send_message(json.dumps({"type": "rpc", "id": "last",
                                                  "method": "increment", "args": []}))
                answers: list[dict[str, Any]] = []
                while not answers or answers[-1]["id"] != "last":
                    message = json.loads(await ws.get_message())
                    if message["type"] == "rpc":
                        answers.append(message)
            grown = _peak_rss_mb(process.pid) - before
        assert grown < 40, f"the server's peak RSS grew by {grown:.0f} MB"
        assert len(answers) == calls + 1
        assert answers[-1] == {"type": "rpc", "id": "last", "success": True, "result": 1}
        for answer in answers[:-1]:
            assert answer["success"] is False and len(answer["error"]) < 200, answer
            assert answer["error"].startswith("method 'mmmm") and "500,000 characters" in \
                answer["error"]
    finally:
        _stop(process)


async def test_rpc_answers_bound_what_they_echo(db: str) -> None:  # P6
    async with running(db) as (_, url), open_websocket_url(f"{url}/agents/Crowd/c") as ws:
        await ws.get_message()  # the state
        for call in ({"id": "i" * 100_000, "method": "burst", "args": [0]},
                     {"id": ["not", "a", "str"], "method": "burst", "args": [0]},
                     {"id": "ok", "method": "shout", "args": ["s" * 100_000]}):
            await ws.send_message(json.dumps({"type": "rpc", **call}))
        answers = [json.loads(await ws.get_message()) for _ in range(3)]
    assert [a["id"] for a in answers] == [None, None, "ok"]
    assert "malformed rpc" in answers[0]["error"] and "malformed rpc" in answers[1]["error"]
    assert answers[2]["error"].startswith("ValueError: cannot shout 'ssss")
    assert max(len(json.dumps(a)) for a in answers) < 1200


# -- item 10: bursts keep a reading client ---------------------------------------------------


async def test_thousands_of_state_changes_in_one_commit_keep_a_reading_client(
        db: str) -> None:  # P4, P10
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Crowd, "c")
        async with eventwf.connect_agent(url, "Crowd", "c") as conn:
            commits = engine.statistics().commits
            async with trio.open_nursery() as nursery:
                for i in range(2_000):
                    nursery.start_soon(agent.set_state, {"n": i})
            assert engine.statistics().commits - commits == 1  # one group commit
            final = agent._rt.summaries.agent("Crowd", "c").state_position
            seen = await states_until(conn, final)
            assert seen == sorted(set(seen)) and seen[-1] == final  # in order, up to the last
            assert len(seen) == 2_000  # (small) every change; the first state came with connect
            assert conn.closed is None and conn.state == agent.state


async def test_states_over_the_byte_budget_coalesce_to_the_newest(db: str) -> None:  # P4, P10
    blob = "x" * 10_000
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Crowd, "c")
        async with eventwf.connect_agent(url, "Crowd", "c") as conn:
            commits = engine.statistics().commits
            async with trio.open_nursery() as nursery:  # 15 MB in one commit: over 8 MiB
                for i in range(1_500):
                    nursery.start_soon(agent.set_state, {"n": i, "blob": blob})
            assert engine.statistics().commits - commits == 1
            final = agent._rt.summaries.agent("Crowd", "c").state_position
            seen = await states_until(conn, final)
            assert seen == sorted(set(seen)) and seen[-1] == final
            assert len(seen) < 1_000  # the stale ones gave way (pushed with no await between)
            assert conn.closed is None and conn.state == agent.state


async def test_thousands_of_broadcasts_from_one_hook_reach_a_reading_client(
        db: str) -> None:  # P5, P10
    async with running(db) as (_, url), eventwf.connect_agent(url, "Crowd", "c") as conn:
        assert await conn.call("burst", 5_000) == 5_000
        got = []
        with trio.fail_after(30):
            async for message in conn:
                if "burst" not in message:
                    continue  # the first state
                got.append(message["burst"])
                if len(got) == 5_000:
                    break
        assert got == list(range(5_000)) and conn.closed is None


async def test_a_stalled_client_flooded_with_broadcasts_is_closed_with_1013(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:  # P10
    monkeypatch.setattr(eventwf.server.connection, "SLOW_GRACE", 120.0)  # it reads again: no 1006
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Crowd, "c")
        async with open_websocket_url(f"{url}/agents/Crowd/c") as stalled, \
                eventwf.connect_agent(url, "Crowd", "c") as reader:
            with trio.fail_after(60):  # 40 MB: the byte budget plus any socket buffers
                for i in range(400):
                    await agent.broadcast({"i": i, "blob": "y" * 100_000})
                    await trio.sleep(0.001)
                    for connection in agent._host.connections:
                        assert connection.queued_bytes <= eventwf.server.connection.OUTBOUND_BYTES
                got: list[int] = []
                async for message in reader:
                    if "i" in message:
                        got.append(message["i"])
                        if len(got) == 400:
                            break
                assert got == list(range(400))  # the reader got every one, in order
            close = await closed_with(stalled)  # what was in flight, then the close frame
            assert (close.code, close.reason) == (1013, "outbound queue full: client too slow")
            assert reader.closed is None


# -- item 12: deep frames -------------------------------------------------------------------


@pytest.mark.parametrize("depth", [129, 1_000, 100_000])
async def test_deeply_nested_frames_close_with_1007_and_no_traceback(
        db: str, depth: int, caplog: pytest.LogCaptureFixture) -> None:  # P9
    frame = '{"type": "x", "v": ' + "[" * depth + "]" * depth + "}"
    async with running(db) as (_, url), eventwf.connect_agent(url, "Crowd", "c") as good:
        async with open_websocket_url(f"{url}/agents/Crowd/c") as bad:
            await bad.get_message()
            await bad.send_message(frame)
            close = await closed_with(bad)
        assert close.code == 1007
        assert close.reason.startswith("malformed message: ") and "deeper than 128" in \
            close.reason
        assert await good.call("burst", 1) == 1  # the others are unaffected
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def test_frames_within_the_depth_limit_are_served(db: str) -> None:  # P9
    nested: Any = "core"
    for _ in range(127):
        nested = [nested]
    async with running(db) as (_, url), eventwf.connect_agent(url, "Crowd", "c") as conn:
        await conn.send({"type": "deep", "v": nested})  # reaches on_message
        assert await conn.call("burst", 1) == 1 and conn.closed is None


# -- low: the authenticate hook sees the agent that is served ------------------------------


async def test_the_authenticate_hook_sees_the_decided_agent(db: str) -> None:  # P3
    seen: list[tuple[str, str, str]] = []

    def authenticate(request: Any) -> bool:
        seen.append((request.path, request.agent_class, request.agent_name))
        return request.path != "/agents/Crowd/admin" and request.agent_class == "Crowd"

    async with running(db, authenticate=authenticate) as (engine, url):
        for path in ("/agents/Crowd/%61dmin", "/agents/%43rowd/admin"):  # 'a', 'C' encoded
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(url + path):
                    pass
            assert refused.value.status_code == 403
        with pytest.raises(ConnectionRejected) as refused:  # refused before naming classes
            async with open_websocket_url(f"{url}/agents/Secret/x"):
                pass
        assert refused.value.status_code == 403 and b"Secret" not in refused.value.body
        assert engine.statistics().live_agents == 0
        async with eventwf.connect_agent(url, "Crowd", "a name/with ü?") as conn:
            assert conn.state == {"n": 0}
    assert seen == [("/agents/Crowd/admin", "Crowd", "admin")] * 2 + [
        ("/agents/Secret/x", "Secret", "x"),
        ("/agents/Crowd/a%20name%2Fwith%20%C3%BC%3F", "Crowd", "a name/with ü?")]


async def test_names_that_are_not_utf8_are_refused_with_400(db: str) -> None:  # P2
    async with running(db) as (engine, url):
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(f"{url}/agents/Crowd/%FF"):
                pass
        assert refused.value.status_code == 400 and b"UTF-8" in refused.value.body
        assert engine.statistics().live_agents == 0


# -- the Python client reads the largest state the server sends -----------------------------


async def test_a_state_near_1_mib_reaches_the_python_client(db: str) -> None:  # P12
    state = {"xs": [-1] * 400_000}  # 400 KB logged, 1.2 MB as JSON
    assert len(msgspec.json.encode(state)) > 1024 * 1024
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Crowd, "big")
        await agent.set_state(state)
        async with eventwf.connect_agent(url, "Crowd", "big") as conn:
            assert conn.state == state


@pytest.mark.parametrize("frame", ["{not json", "[" * 5_000 + "]" * 5_000])
async def test_the_client_closes_on_a_frame_it_cannot_decode(frame: str) -> None:  # P12
    async def server(request: Any) -> None:
        ws = await request.accept()
        await ws.send_message('{"type": "state", "state": {"n": 1}, "position": 7}')
        await ws.send_message(frame)
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.get_message()

    async with trio.open_nursery() as nursery:
        listener = await nursery.start(functools.partial(
            serve_websocket, server, "127.0.0.1", 0, ssl_context=None))
        url = f"ws://127.0.0.1:{listener.port}"
        async with eventwf.connect_agent(url, "Any", "one") as conn:
            with trio.fail_after(5):
                assert [message async for message in conn] == []  # the first state: conn.state
            assert conn.closed.code == 1007 and (conn.state, conn.position) == ({"n": 1}, 7)
            with pytest.raises(eventwf.RpcError, match="1007"):
                await conn.call("anything")
        nursery.cancel_scope.cancel()
