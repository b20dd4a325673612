"""The WebSocket server and the Python client over real sockets (specs/protocol.md P1-P12)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
)

import eventwf

pytestmark = pytest.mark.realtime


class Counter(eventwf.Agent):
    initial_state: Any = {"n": 0}

    def __init__(self) -> None:
        self.connects: list[str] = []
        self.closes: list[str] = []
        self.messages: list[Any] = []

    @eventwf.callable
    async def increment(self, by: int = 1) -> int:
        await self.set_state({**self.state, "n": self.state["n"] + by})
        return int(self.state["n"])

    @eventwf.callable
    def fail(self) -> None:
        raise ValueError("nope")

    @eventwf.callable
    async def shout(self, text: str) -> None:
        await self.broadcast({"shout": text})

    @eventwf.callable
    async def start(self) -> str:
        return await self.run_workflow("Bump")

    async def secret(self) -> str:  # not @callable: clients may not call it
        return "leaked"

    async def on_connect(self, connection: Any) -> None:
        self.connects.append(connection.id)

    async def on_close(self, connection: Any) -> None:
        self.closes.append(connection.id)

    async def on_message(self, connection: Any, message: Any) -> None:
        self.messages.append(message)
        connection.send({"echo": message})


class Bump(eventwf.AgentWorkflow[Counter]):
    async def run(self, event: Any, step: Any) -> None:
        await step.merge_agent_state({"workflow": "running"})
        await self.broadcast_to_clients({"from": "workflow"})
        await step.merge_agent_state({"workflow": "done"})


@asynccontextmanager
async def running(db: str, **options: Any) -> AsyncIterator[tuple[eventwf.Engine, str]]:
    async with eventwf.open_engine(db, agents=[Counter], workflows=[Bump]) as engine:
        async with trio.open_nursery() as nursery:
            serve = functools.partial(eventwf.serve, engine, "127.0.0.1", 0, **options)
            server = await nursery.start(serve)
            yield engine, f"ws://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()


async def next_message(conn: eventwf.AgentConnection, **match: Any) -> Any:
    """The next message (from iteration) whose keys equal ``match``."""
    with trio.fail_after(5):
        async for message in conn:
            if all(message.get(k) == v for k, v in match.items()):
                return message
    raise AssertionError(f"connection ended before a message matching {match}")


async def closed_with(ws: WebSocketConnection) -> CloseReason:
    """Read until the server closes the connection; its close reason."""
    with trio.fail_after(5):
        while True:
            try:
                await ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason is not None
                return exc.reason


async def test_state_syncs_across_two_clients_with_positions(db: str) -> None:  # P4, P12
    async with running(db) as (_, url):
        async with eventwf.connect_agent(url, "Counter", "c") as a, \
                eventwf.connect_agent(url, "Counter", "c") as b:
            assert a.state == b.state == {"n": 0}
            assert a.position == b.position == 0  # never logged: still initial_state
            assert await a.call("increment") == 1
            first = await next_message(b, type="state", state={"n": 1})
            assert first["state"] == {"n": 1} and first["position"] > 0
            assert await b.call("increment", 2) == 3
            second = await next_message(a, type="state", state={"n": 3})
            assert second["position"] > first["position"]
            assert a.state == b.state == {"n": 3}
        async with eventwf.connect_agent(url, "Counter", "c") as c:  # a reconnect
            assert c.state == {"n": 3} and c.position == second["position"]


async def test_rpc_only_reaches_callable_methods(db: str) -> None:  # P6, P7
    async with running(db) as (_, url):
        async with eventwf.connect_agent(url, "Counter", "c") as conn:
            assert await conn.call("increment", 5) == 5
            for name in ("secret", "_host", "set_state", "run_workflow", "nothing"):
                with pytest.raises(eventwf.RpcError, match=f"method '{name}' is not callable"):
                    await conn.call(name)
            with pytest.raises(eventwf.RpcError, match="ValueError: nope"):
                await conn.call("fail")
            with pytest.raises(eventwf.RpcError, match="TypeError"):
                await conn.call("increment", 1, 2, 3)
            assert await conn.call("increment") == 6  # the connection stayed open
            assert conn.closed is None


async def test_messages_broadcasts_and_workflow_state_reach_clients(db: str) -> None:
    # P5, P8, P4 (a workflow's durable step.merge_agent_state reaches clients)
    async with running(db) as (engine, url):
        async with eventwf.connect_agent(url, "Counter", "c") as a, \
                eventwf.connect_agent(url, "Counter", "c") as b:
            await a.send({"hello": "there"})
            assert await next_message(a, echo={"hello": "there"})
            await a.call("shout", "hi")
            assert await next_message(b, shout="hi")
            workflow_id = await b.call("start")
            assert await next_message(a, **{"from": "workflow"})
            done = await next_message(a, type="state", state={"n": 0, "workflow": "done"})
            await engine.wait_workflow(workflow_id, timeout=5)
            assert b.state == done["state"] and b.position == done["position"]
        agent = await engine.get_agent(Counter, "c")
        assert agent.messages == [{"hello": "there"}]


async def test_client_errors_are_plain_exceptions(db: str) -> None:  # P12
    async with running(db) as (_, url):
        with pytest.raises(KeyError):  # the body's own exception, not an ExceptionGroup
            async with eventwf.connect_agent(url, "Counter", "c"):
                raise KeyError("mine")
        async with eventwf.connect_agent(url, "Counter", "c") as conn:
            await conn.send("a JSON string is not an object")
            with trio.fail_after(5):
                async for _ in conn:
                    pass
            assert conn.closed.code == 1003
            with pytest.raises(eventwf.RpcError, match="connection closed"):
                await conn.call("increment")
            with pytest.raises(eventwf.EventwfError, match="connection closed"):
                await conn.send({})


async def test_hooks_run_once_per_connection(db: str) -> None:  # P11
    async with running(db) as (engine, url):
        async with eventwf.connect_agent(url, "Counter", "c"):
            pass
        async with open_websocket_url(f"{url}/agents/Counter/c") as ws:
            await ws.send_message("not json")
            await closed_with(ws)
        agent = await engine.get_agent(Counter, "c")
        with trio.fail_after(5):
            while len(agent.closes) < 2:
                await trio.sleep(0.01)
        await trio.sleep(0.1)
        assert len(agent.connects) == len(set(agent.connects)) == 2
        assert sorted(agent.closes) == sorted(agent.connects)


async def rejected(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return info.value


async def test_unknown_paths_classes_and_names_are_refused(db: str) -> None:  # P2
    async with running(db) as (engine, url):
        assert (await rejected(f"{url}/elsewhere")).status_code == 404
        assert (await rejected(f"{url}/agents/Counter")).status_code == 404
        refusal = await rejected(f"{url}/agents/Nobody/x")
        assert refusal.status_code == 404 and b"unknown agent class 'Nobody'" in refusal.body
        refusal = await rejected(f"{url}/agents/Counter/bad%00name")
        assert refusal.status_code == 400 and b"control characters" in refusal.body
        assert engine.statistics().live_agents == 0  # nothing reached an agent
        async with eventwf.connect_agent(url, "Counter", "a name/with ü") as conn:
            assert conn.state == {"n": 0}  # and the server is still up


async def test_connect_agent_raises_an_eventwf_error_for_a_refused_agent(db: str) -> None:
    # P12, issue 16 item 8: not a raw trio_websocket ConnectionRejected
    async with running(db) as (engine, url):
        with pytest.raises(eventwf.AgentUnavailableError,
                           match="unknown agent class 'Nobody'") as info:
            async with eventwf.connect_agent(url, "Nobody", "x"):
                pass
        assert info.value.status == 404 and isinstance(info.value, eventwf.EventwfError)
        with pytest.raises(eventwf.AgentUnavailableError, match="control characters") as info:
            async with eventwf.connect_agent(url, "Counter", "bad\x00name"):
                pass
        assert info.value.status == 400
    with pytest.raises(eventwf.AgentUnavailableError, match="handshake failed"):
        async with eventwf.connect_agent(url, "Counter", "c"):  # the server is gone
            pass


async def test_the_first_state_is_not_delivered_twice(db: str) -> None:  # P12, issue 16 item 8
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Counter, "c")
        await agent.set_state({"n": 5})
        async with eventwf.connect_agent(url, "Counter", "c") as conn:
            assert conn.state == {"n": 5}
            await agent.set_state({"n": 6})
            with trio.fail_after(10):
                async for message in conn:
                    assert message["type"] == "state" and message["state"] == {"n": 6}
                    assert message["position"] > 0 and conn.state == {"n": 6}
                    break


async def test_authenticate_hook_refuses_handshakes(db: str) -> None:  # P3
    seen: list[str] = []

    async def authenticate(request: WebSocketRequest) -> bool:
        seen.append(request.path)
        return dict(request.headers).get(b"authorization") == b"Bearer secret"

    async with running(db, authenticate=authenticate) as (engine, url):
        assert (await rejected(f"{url}/agents/Counter/c")).status_code == 403
        wrong = [(b"Authorization", b"Bearer guess")]
        assert (await rejected(f"{url}/agents/Counter/c", wrong)).status_code == 403
        assert engine.statistics().live_agents == 0
        good = [(b"Authorization", b"Bearer secret")]
        async with eventwf.connect_agent(url, "Counter", "c", extra_headers=good) as conn:
            assert conn.state == {"n": 0}
        assert seen == ["/agents/Counter/c"] * 3


async def test_a_raising_authenticate_hook_refuses_with_500(db: str) -> None:  # P3
    def authenticate(request: WebSocketRequest) -> bool:
        raise RuntimeError("auth backend down")

    async with running(db, authenticate=authenticate) as (_, url):
        for _ in range(2):  # the server survives it
            assert (await rejected(f"{url}/agents/Counter/c")).status_code == 500


async def test_origin_allow_list_and_connection_limit(db: str) -> None:  # P3
    options = {"allowed_origins": ["http://app.example"], "max_connections": 1}
    async with running(db, **options) as (_, url):
        evil = [(b"Origin", b"http://evil.example")]
        refusal = await rejected(f"{url}/agents/Counter/c", evil)
        assert refusal.status_code == 403 and b"evil.example" in refusal.body
        good = [(b"Origin", b"http://app.example")]
        async with eventwf.connect_agent(url, "Counter", "c", extra_headers=good):
            assert (await rejected(f"{url}/agents/Counter/c", good)).status_code == 503
        async with eventwf.connect_agent(url, "Counter", "c"):  # no Origin: not a browser
            pass


@pytest.mark.parametrize(("frame", "code", "reason"), [
    ("{not json", 1007, "malformed message: not valid JSON"),
    ("[1, 2]", 1003, "malformed message: expected a JSON object"),
    (b"\x00\x01", 1003, "binary frames are not supported: send JSON text"),
    ("x" * 2000, 1009, None),
])
async def test_bad_frames_close_only_the_offender(db: str, frame: Any, code: int,
                                                  reason: str | None) -> None:  # P9
    async with running(db, max_message_size=1000) as (_, url):
        async with eventwf.connect_agent(url, "Counter", "c") as good, \
                open_websocket_url(f"{url}/agents/Counter/c") as bad:
            await bad.send_message(frame)
            close = await closed_with(bad)
            assert close.code == code
            if reason is not None:
                assert close.reason == reason
            assert await good.call("increment") == 1
            assert await next_message(good, type="state", state={"n": 1})


async def test_clients_are_closed_with_1001_when_the_server_stops(db: str) -> None:
    server_scope = trio.CancelScope()

    async def serve(engine: eventwf.Engine, task_status: trio.TaskStatus[Any]) -> None:
        with server_scope:
            await eventwf.serve(engine, "127.0.0.1", 0, task_status=task_status)

    async with eventwf.open_engine(db, agents=[Counter]) as engine:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, engine)
            async with open_websocket_url(f"ws://127.0.0.1:{server.port}/agents/Counter/c") as ws:
                await ws.get_message()
                server_scope.cancel()  # the server stops; this test goes on
                close = await closed_with(ws)
    assert (close.code, close.reason) == (1001, "server shutting down")


async def test_200_clients_each_receive_every_state_in_order(db: str) -> None:  # P4, P10
    clients, updates = 200, 30
    received: list[list[tuple[int, int]]] = [[] for _ in range(clients)]

    async def client(url: str, i: int, ready: trio.MemorySendChannel[None]) -> None:
        async with eventwf.connect_agent(url, "Counter", "crowd") as conn:
            received[i].append((conn.state["n"], conn.position))  # the first state: not iterated
            await ready.send(None)
            async for message in conn:
                if message["type"] == "state":
                    received[i].append((message["state"]["n"], message["position"]))
                    if message["state"]["n"] == updates:
                        return

    async with running(db) as (engine, url):
        agent = await engine.get_agent(Counter, "crowd")
        send_ready, ready = trio.open_memory_channel[None](clients)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(clients):
                    nursery.start_soon(client, url, i, send_ready)
                for _ in range(clients):
                    await ready.receive()
                for n in range(1, updates + 1):
                    await agent.set_state({"n": n})
    for states in received:
        assert [n for n, _ in states] == list(range(updates + 1)), states
        positions = [p for _, p in states]
        assert positions[0] == 0 and positions == sorted(set(positions)), positions


async def states_until(conn: eventwf.AgentConnection, last: int) -> list[int]:
    seen = []
    async for message in conn:
        if message["type"] == "state":
            seen.append(message["state"]["n"])
            if seen[-1] == last:
                break
    return seen


async def test_a_stalled_client_blocks_nobody_and_catches_up_on_the_latest_state(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:  # P4, P10
    # h19 item 10 changed this test: a client that only gets states is no longer cut off
    # (it needs the latest state, not every one); one flooded with broadcasts still is
    # (tests/test_server_hostile.py). The readers' assertions are the same as before.
    budget = 64 * 100_000  # the old limit of 64 messages, these messages' weight
    monkeypatch.setattr(eventwf.server.connection, "OUTBOUND_BYTES", budget)
    monkeypatch.setattr(eventwf.server.connection, "SLOW_GRACE", 120.0)
    updates, blob = 200, "x" * 100_000  # 20 MB: more than the socket buffers hold
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Counter, "c")
        async with open_websocket_url(f"{url}/agents/Counter/c") as stalled, \
                eventwf.connect_agent(url, "Counter", "c") as a, \
                eventwf.connect_agent(url, "Counter", "c") as b:
            with trio.fail_after(60):  # `stalled` reads nothing while the states go out
                for n in range(1, updates + 1):
                    await agent.set_state({"n": n, "blob": blob})
                    # the readers get each state while `stalled` blocks (under MockClock a
                    # fixed sleep is no time at all: the socket transfers need polls)
                    while a.state["n"] != n or b.state["n"] != n:
                        await trio.sleep(0.001)
                    assert all(c.queued_bytes <= budget for c in agent._host.connections)
            with trio.fail_after(60):  # generous: only a hang should trip it (2 busy cores)
                for conn in (a, b):  # the first state (n=0) came with connect, not iterated
                    assert await states_until(conn, updates) == list(range(1, updates + 1))
            seen: list[tuple[int, int]] = []
            with trio.fail_after(60):  # now it reads: what was in flight, then the newest
                while not seen or seen[-1][0] != updates:
                    message = msgspec.json.decode(await stalled.get_message())
                    seen.append((message["state"]["n"], message["position"]))
            assert [n for n, _ in seen] == sorted({n for n, _ in seen})
            assert [p for _, p in seen] == sorted({p for _, p in seen})
            assert stalled.closed is None  # still connected
        with trio.fail_after(5):
            while len(agent.closes) < 3:
                await trio.sleep(0.01)


async def test_a_client_that_never_reads_again_is_cut_off(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:  # P10
    monkeypatch.setattr(eventwf.server.connection, "OUTBOUND_BYTES", 64 * 100_000)
    monkeypatch.setattr(eventwf.server.connection, "SLOW_GRACE", 0.2)
    async with running(db) as (engine, url):
        agent = await engine.get_agent(Counter, "c")
        async with open_websocket_url(f"{url}/agents/Counter/c") as stalled:
            for _ in range(300):  # the socket buffers fill up, then the queue overflows
                await agent.broadcast({"blob": "y" * 100_000})
                await trio.sleep(0.001)
            with trio.fail_after(5):
                while not agent.closes:  # the server let go of it without its help
                    await trio.sleep(0.05)
            assert (await closed_with(stalled)).code == 1006  # no close frame could be sent


@pytest.mark.parametrize("console", [False, True])
async def test_hooks_and_connections_see_the_clients_address(db: str, console: bool) -> None:
    # P3: with the console mounted the front door wraps the socket; the address is still
    # the client's own (host, port), not the wrapper's repr
    seen: list[Any] = []

    def authenticate(request: Any) -> bool:
        seen.append(request.remote)
        return True

    async with running(db, authenticate=authenticate, console=console) as (engine, url):
        async with open_websocket_url(f"{url}/agents/Counter/c") as ws:
            with trio.fail_after(5):
                assert msgspec.json.decode(await ws.get_message())["type"] == "state"
            client = ("127.0.0.1", ws.local.port)  # type: ignore[union-attr]
            connections = list(engine.runtime.agents.connections("Counter", "c"))
            assert [c.remote for c in connections] == [client]
            assert connections[0].connected_us > 0
        assert seen == [client]
        if console:  # a console request is seen from the client's address too
            stream = await trio.open_tcp_stream("127.0.0.1", int(url.rsplit(":", 1)[1]))
            await stream.send_all(b"GET /api/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            with trio.fail_after(5):
                while await stream.receive_some():
                    pass
            port = stream.socket.getsockname()[1]
            await stream.aclose()
            assert seen[1:] == [("127.0.0.1", port)]
