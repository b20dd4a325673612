"""The WebSocket server: one endpoint per agent, state sync, broadcasts and RPC.

Theory of operation: each connection has a bounded outbound queue drained by its own
sender task, so a slow client never stalls the agent, the writer or other clients; when
a queue overflows, that client is disconnected (1013, "client too slow") rather than
silently skipping states, because every state message carries the log position it
reflects and a client that reconnects gets the current state. Inbound frames are parsed
as JSON objects; RPC goes only to ``@eventwf.callable`` methods; anything malformed closes
that connection alone with a clear reason. See specs/protocol.md.
"""

from __future__ import annotations

import inspect
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import unquote

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_server_stream,
)

from ._agents import AgentHost
from ._validation import check_agent_name
from .agent import Agent, is_callable
from .engine import Engine
from .errors import EventwfError

__all__ = ["Connection", "SocketHandler", "serve"]

logger = logging.getLogger("eventwf")
_JSON = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder()
_ids = itertools.count(1)

OUTBOUND_LIMIT = 1024
CLOSE_TOO_SLOW = (1013, "outbound queue full: client too slow")
CLOSE_SHUTDOWN = (1001, "server shutting down")
# After an overflow, a send already in flight gets this long to finish (so the close frame
# can follow it); a client that reads nothing at all is then cut off at the TCP level.
SLOW_GRACE = 10.0


class Connection:
    """One client of one agent, as the agent's hooks see it."""

    def __init__(self, ws: WebSocketConnection, request: WebSocketRequest, agent: Agent) -> None:
        self.id = f"c{next(_ids)}"
        self.agent = agent
        self.path = request.path
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in request.headers}
        self.remote = str(request.remote)
        self._ws = ws
        self._queue: deque[str] = deque()
        self._wake = trio.Event()
        self._send_scope: trio.CancelScope | None = None
        self.close_reason: tuple[int, str] | None = None
        self.aborted = False  # cut off without a close frame (it stopped reading entirely)

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.path}>"

    # -- what the agent host calls (synchronous, never blocks) ---------------------------

    def push_state(self, state: Any, position: int) -> None:
        self._push(_encode_state(state, position))

    def push_message(self, message: Any) -> None:
        self._push(_JSON.encode(message).decode())

    def send(self, message: Any) -> None:
        """Queue a JSON-encodable message for this client (not logged)."""
        self.push_message(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this connection (after what is already queued is sent)."""
        self._stop(code, reason)

    def _push(self, data: str) -> None:
        if self.close_reason is not None:
            return
        if len(self._queue) >= OUTBOUND_LIMIT:
            self._queue.clear()
            self._stop(*CLOSE_TOO_SLOW)
            if self._send_scope is not None:  # a send is stuck: bound how long it may take
                self._send_scope.deadline = trio.current_time() + SLOW_GRACE
            return
        self._queue.append(data)
        self._wake.set()

    def _stop(self, code: int, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = (code, reason)
            self._wake.set()

    # -- the task ------------------------------------------------------------------------

    async def sender(self) -> None:
        """Send queued messages until the connection is closed (by either side).

        One cancel scope covers the loop (not one per message: this is the fan-out's hot
        path); only an overflow gives it a deadline, ``SLOW_GRACE`` from then.
        """
        try:
            with trio.CancelScope() as scope:
                self._send_scope = scope
                while True:
                    while self._queue:
                        await self._ws.send_message(self._queue.popleft())
                    if self.close_reason is not None:
                        return
                    self._wake = trio.Event()
                    await self._wake.wait()
            self.aborted = scope.cancelled_caught  # the grace ran out: cut it off
        except ConnectionClosed:
            return
        finally:
            self._send_scope = None


def _state_message(state: Any, position: int) -> str:
    return _JSON.encode({"type": "state", "state": state, "position": position}).decode()


# A state change is pushed to every client in one synchronous loop: encode it once. The
# (object, position) key is unique to one logged change; a connection's first state is
# encoded afresh (``_serve``), so a position-0 initial state is never served from here.
_last_state: list[Any] = [None, -1, ""]


def _encode_state(state: Any, position: int) -> str:
    if _last_state[0] is not state or _last_state[1] != position:
        _last_state[:] = [state, position, _state_message(state, position)]
    return str(_last_state[2])


class SocketHandler:
    """Handles WebSocket requests for ``/agents/{AgentClass}/{name}`` on one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        authenticate: Callable[[WebSocketRequest], bool | Awaitable[bool]] | None = None,
        allowed_origins: Collection[str] | None = None,
        max_connections: int = 1000,
    ) -> None:
        self.engine = engine
        self.authenticate = authenticate
        self.allowed_origins = None if allowed_origins is None else set(allowed_origins)
        self.max_connections = max_connections
        self.connections = 0

    async def __call__(self, request: WebSocketRequest) -> None:
        """Admit or refuse one handshake, then serve the connection until it ends."""
        try:
            agent = await self._admit(request)
            if agent is None:
                return
            ws = await request.accept()
        except ConnectionClosed:
            return
        self.connections += 1
        try:
            await self._serve(ws, request, agent)
        except Exception:  # one connection's failure must never stop the server
            logger.exception("connection to %s failed", request.path)
        finally:
            self.connections -= 1

    async def handle_stream(self, stream: trio.abc.Stream, *,
                            max_message_size: int = 1_048_576,
                            connect_timeout: float = 10) -> None:
        """Serve one WebSocket connection on an accepted stream, handshake included.

        For servers that share a port with HTTP: hand over a stream that yields the
        request bytes already read (the upgrade request) before the rest of the socket.
        The connection is closed (close frame first, see ``_close``) when this returns.
        """
        try:
            async with trio.open_nursery() as nursery:
                request = None
                with trio.move_on_after(connect_timeout):
                    request = await wrap_server_stream(nursery, stream,
                                                       max_message_size=max_message_size)
                if request is not None:
                    await self(request)
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def _admit(self, request: WebSocketRequest) -> Agent | None:
        """The agent this request may connect to, or None after refusing it."""
        try:
            refusal, agent = await self._check(request)
        except Exception as exc:  # a raising authenticate hook, a corrupt agent, ...
            logger.exception("refusing %s", request.path)
            refusal, agent = (500, f"cannot serve {request.path}: {type(exc).__name__}"), None
        if refusal is not None:
            await request.reject(refusal[0], body=refusal[1].encode())
        return agent

    async def _check(self, request: WebSocketRequest) -> tuple[tuple[int, str] | None,
                                                               Agent | None]:
        parts = request.path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[:2] != ["", "agents"] or not parts[2] or not parts[3]:
            return (404, "expected /agents/{AgentClass}/{name}"), None
        cls = self.engine._core.agent_classes.get(parts[2])
        if cls is None:
            return (404, f"unknown agent class {parts[2]!r}"), None
        try:
            name = check_agent_name(unquote(parts[3]))
        except ValueError as exc:
            return (400, str(exc)), None
        if self.connections >= self.max_connections:
            return (503, "too many connections"), None
        origin = dict(request.headers).get(b"origin")
        if self.allowed_origins is not None and origin is not None and \
                origin.decode("latin-1") not in self.allowed_origins:
            return (403, f"origin {origin.decode('latin-1')!r} is not allowed"), None
        if self.authenticate is not None:
            allowed = self.authenticate(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return (403, "authentication refused"), None
        try:
            return None, await self.engine.get_agent(cls, name)
        except EventwfError as exc:
            return (500, f"agent {parts[2]}/{name} is unavailable: {exc}"), None

    async def _serve(self, ws: WebSocketConnection, request: WebSocketRequest,
                     agent: Agent) -> None:
        host: AgentHost = agent._host
        connection = Connection(ws, request, agent)
        state = agent._core.agent_summary(host.agent_class, host.name)
        connection._push(_state_message(agent.state, 0 if state is None else state.state_position))
        host.connections.add(connection)
        try:
            await _call_hook(agent.on_connect, connection)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receiver, ws, connection, nursery.cancel_scope)
                await connection.sender()
                nursery.cancel_scope.cancel()
        finally:
            host.connections.discard(connection)
            if connection.close_reason is None and ws.closed is None:
                connection._stop(*CLOSE_SHUTDOWN)  # neither side closed it: we are stopping
            with trio.CancelScope(shield=True):
                await _close(ws, connection)
                await _call_hook(agent.on_close, connection)

    async def _receiver(self, ws: WebSocketConnection, connection: Connection,
                        scope: trio.CancelScope) -> None:
        try:
            while True:
                raw = await ws.get_message()
                if isinstance(raw, bytes):
                    connection._stop(1003, "binary frames are not supported: send JSON text")
                    return
                try:
                    message = _DECODE.decode(raw)
                except msgspec.DecodeError:
                    connection._stop(1007, "malformed message: not valid JSON")
                    return
                if not isinstance(message, dict):
                    connection._stop(1003, "malformed message: expected a JSON object")
                    return
                if message.get("type") == "rpc":
                    await self._rpc(connection, message)
                else:
                    await _call_hook(connection.agent.on_message, connection, message)
        except ConnectionClosed:
            scope.cancel()

    async def _rpc(self, connection: Connection, message: dict[str, Any]) -> None:
        call_id, method, args = message.get("id"), message.get("method"), message.get("args", [])
        if not isinstance(call_id, str) or not isinstance(method, str) or not isinstance(
                args, list):
            connection.push_message({"type": "rpc", "id": call_id, "success": False,
                                     "error": "malformed rpc: expected a str id, a str method "
                                              "and a list of args"})
            return
        fn = getattr(connection.agent, method, None) if not method.startswith("_") else None
        if fn is None or not is_callable(fn):
            connection.push_message({"type": "rpc", "id": call_id, "success": False,
                                     "error": f"method {method!r} is not callable"})
            return
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                result = await result
            _JSON.encode(result)
        except Exception as exc:  # the caller gets the error; the connection stays open
            connection.push_message({"type": "rpc", "id": call_id, "success": False,
                                     "error": f"{type(exc).__name__}: {exc}"})
            return
        connection.push_message({"type": "rpc", "id": call_id, "success": True,
                                 "result": result})


async def _close(ws: WebSocketConnection, connection: Connection) -> None:
    """Send the close frame (bounded: a stuck or shutting-down client gets little time)."""
    if connection.close_reason is None or ws.closed is not None:
        return
    if connection.aborted:
        timeout = 0.0
    elif connection.close_reason == CLOSE_SHUTDOWN:
        timeout = 0.25  # the reader task is cancelled too: no reply will be read
    else:
        timeout = 5.0
    with trio.move_on_after(timeout):  # on time-out aclose still drops the TCP connection
        await ws.aclose(*connection.close_reason)


async def _call_hook(hook: Callable[..., Awaitable[None]], *args: Any) -> None:
    try:
        await hook(*args)
    except Exception:
        logger.exception("%s raised; the connection goes on", getattr(hook, "__qualname__", hook))


async def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    authenticate: Callable[[WebSocketRequest], bool | Awaitable[bool]] | None = None,
    max_message_size: int = 1_048_576,
    allowed_origins: Collection[str] | None = None,
    max_connections: int = 1000,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/agents/{AgentClass}/{name}`` until cancelled.

    ``await nursery.start(serve, engine, host, 0)`` picks a free port and returns an
    object with ``.port``. ``authenticate(request)`` (sync or async) may refuse a
    handshake; ``allowed_origins`` (exact ``scheme://host:port`` strings) refuses other
    browser origins (a request without an ``Origin`` header is not from a browser and is
    not checked); frames over ``max_message_size`` close that connection with 1009.
    """
    handler = SocketHandler(engine, authenticate=authenticate, allowed_origins=allowed_origins,
                            max_connections=max_connections)
    await serve_websocket(handler, host, port, ssl_context=None,
                          max_message_size=max_message_size, connect_timeout=10,
                          disconnect_timeout=5, task_status=task_status)
