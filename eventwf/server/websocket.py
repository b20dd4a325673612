"""The WebSocket server: one endpoint per agent, state sync, broadcasts and RPC.

Theory of operation: a handshake is decided once (``AgentRequest``: the agent class and
name it asks for, percent-decoded) and checked before it reaches the agent, the
connection slot taken before any ``await``. An admitted client gets a ``Connection``
(``connection.py``: its outbound queue, bounded by bytes, and its sender task) and a
receiver task here. Inbound frames must be JSON objects of JSON data; RPC goes only to
``@eventwf.callable`` methods; answers never echo a client's text unbounded
(``inbound.py``). One connection's failure never stops the server. See specs/protocol.md.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    serve_websocket,
    wrap_server_stream,
)

from eventwf.agent import Agent
from eventwf.engine import Engine
from eventwf.errors import EventwfError
from eventwf.model.values import shorten
from eventwf.runtime.agents import host_of
from eventwf.server.connection import CLOSE_INTERNAL, CLOSE_SHUTDOWN, Connection
from eventwf.server.front import Address, HttpHandler, HttpRequest, peer, serve_front
from eventwf.server.handshake import AgentRequest, decide
from eventwf.server.inbound import answer_rpc, parse_frame

__all__ = ["AgentRequest", "Authenticate", "SocketHandler", "serve"]

logger = logging.getLogger("eventwf")

# A hook sees an ``AgentRequest`` for a handshake, an ``HttpRequest`` for plain HTTP (the
# console of ``eventwf.serve(..., console=True)``).
Authenticate = Callable[[AgentRequest | HttpRequest], bool | Awaitable[bool]]


class SocketHandler:
    """Handles WebSocket requests for ``/agents/{AgentClass}/{name}`` on one engine."""

    def __init__(
        self,
        engine: Engine,
        *,
        authenticate: Authenticate | None = None,
        allowed_origins: Collection[str] | None = None,
        max_connections: int = 1000,
    ) -> None:
        self.engine = engine
        self.authenticate = authenticate
        self.allowed_origins = None if allowed_origins is None else set(allowed_origins)
        self.max_connections = max_connections
        self.connections = 0  # open connections and admitted handshakes

    async def __call__(self, request: WebSocketRequest, remote: Address | None = None) -> None:
        """Admit or refuse one handshake, then serve the connection until it ends.

        ``remote``: the client's ``(host, port)`` when the caller knows it better than
        trio-websocket does (``handle_stream``: it gets a wrapped stream). The checks that
        need no ``await`` (path, name, origin, the connection cap) come first, and a slot
        is taken in the same step, so concurrent handshakes can never admit more than
        ``max_connections``.
        """
        decided = self._screen(request, remote)
        if not isinstance(decided, AgentRequest):
            await _refuse(request, decided)
            return
        self.connections += 1
        try:
            agent = await self._admit(request, decided)
            if agent is not None:
                await self._serve(await request.accept(), decided, agent)
        except ConnectionClosed:
            return
        except Exception:  # one connection's failure must never stop the server
            logger.exception("connection to %s failed", decided.path[:200])
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
                    await self(request, peer(stream))
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    def _screen(self, request: WebSocketRequest,
                remote: Address | None) -> AgentRequest | tuple[int, str]:
        """The checks that need no ``await``: the agent asked for, the origin, the cap."""
        decided = decide(request, remote)
        if not isinstance(decided, AgentRequest):
            return decided
        origin = dict(decided.headers).get(b"origin")
        if self.allowed_origins is not None and origin is not None and \
                origin.decode("latin-1") not in self.allowed_origins:
            return 403, f"origin {shorten(origin.decode('latin-1'), 200)} is not allowed"
        if self.connections >= self.max_connections:
            return 503, "too many connections"
        return decided

    async def _admit(self, request: WebSocketRequest, decided: AgentRequest) -> Agent | None:
        """The agent this request may connect to, or None after refusing it."""
        try:
            refusal, agent = await self._check(decided)
        except Exception as exc:  # a raising authenticate hook, a corrupt agent, ...
            logger.exception("refusing %s", decided.path[:200])
            refusal, agent = (500, f"cannot serve {shorten(decided.path, 300, quote=False)}: "
                                   f"{type(exc).__name__}"), None
        if refusal is not None:
            await _refuse(request, refusal)
        return agent

    async def _check(self, decided: AgentRequest) -> tuple[tuple[int, str] | None,
                                                           Agent | None]:
        """Authenticate first (so a refused client learns no class names), then the agent."""
        if self.authenticate is not None:
            allowed = self.authenticate(decided)
            if inspect.isawaitable(allowed):
                allowed = await allowed
            if not allowed:
                return (403, "authentication refused"), None
        cls = self.engine.runtime.agent_classes.get(decided.agent_class)
        if cls is None:
            return (404, f"unknown agent class {shorten(decided.agent_class, 200)}"), None
        try:
            return None, await self.engine.get_agent(cls, decided.agent_name)
        except EventwfError as exc:
            return (500, f"agent {decided.agent_class}/{shorten(decided.agent_name, 200)} is "
                         f"unavailable: {shorten(str(exc), 500, quote=False)}"), None

    async def _serve(self, ws: WebSocketConnection, decided: AgentRequest,
                     agent: Agent) -> None:
        host = host_of(agent)
        connection = Connection(ws, decided, agent, self.engine.runtime.clock.now_us())
        summary = self.engine.runtime.summaries.agent(host.agent_class, host.name)
        connection.push_state(agent.state, 0 if summary is None else summary.state_position)
        host.connections.add(connection)
        try:
            await _call_hook(agent.on_connect, connection)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._receiver, ws, connection, nursery.cancel_scope)
                await connection.sender()
                nursery.cancel_scope.cancel()
        except Exception:  # a bug: say so to the client and the log, keep serving others
            logger.exception("connection %s to %s failed", connection.id, decided.path[:200])
            connection.close(*CLOSE_INTERNAL)
        finally:
            host.connections.discard(connection)
            if connection.close_reason is None and ws.closed is None:
                connection.close(*CLOSE_SHUTDOWN)  # neither side closed it: we are stopping
            with trio.CancelScope(shield=True):
                await _close(ws, connection)
                await _call_hook(agent.on_close, connection)

    async def _receiver(self, ws: WebSocketConnection, connection: Connection,
                        scope: trio.CancelScope) -> None:
        try:
            while True:
                message = parse_frame(await ws.get_message())
                if isinstance(message, tuple):
                    connection.close(*message)
                    return
                if message.get("type") == "rpc":
                    await answer_rpc(connection, message)
                else:
                    await _call_hook(connection.agent.on_message, connection, message)
        except ConnectionClosed:
            scope.cancel()


async def _refuse(request: WebSocketRequest, refusal: tuple[int, str]) -> None:
    await request.reject(refusal[0], body=refusal[1].encode())


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
    authenticate: Authenticate | None = None,
    max_message_size: int = 1_048_576,
    allowed_origins: Collection[str] | None = None,
    max_connections: int = 1000,
    http: HttpHandler | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/agents/{AgentClass}/{name}`` until cancelled.

    ``await nursery.start(serve, engine, host, 0)`` picks a free port and returns an
    object with ``.port``. ``authenticate(request)`` (sync or async) gets an
    ``AgentRequest`` (the agent asked for, decided) and may refuse the handshake;
    ``allowed_origins`` (exact ``scheme://host:port`` strings) refuses other browser
    origins (a request without an ``Origin`` header is not from a browser and is not
    checked); frames over ``max_message_size`` close that connection with 1009.
    ``http(stream, conn, request)``, if given, answers every request on the port that is
    not a WebSocket upgrade (``eventwf.serve(..., console=True)`` passes the console);
    without it such a request is refused as before.
    """
    handler = SocketHandler(engine, authenticate=authenticate, allowed_origins=allowed_origins,
                            max_connections=max_connections)
    if http is None:
        await serve_websocket(handler, host, port, ssl_context=None,
                              max_message_size=max_message_size, connect_timeout=10,
                              disconnect_timeout=5, task_status=task_status)
        return

    async def sockets(stream: trio.abc.Stream) -> None:
        await handler.handle_stream(stream, max_message_size=max_message_size)

    await serve_front(sockets, http, host, port, task_status=task_status)
