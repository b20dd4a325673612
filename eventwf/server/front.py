"""One port for WebSocket and plain HTTP: the front door of ``serve(..., http=...)``.

Theory of operation: each TCP connection's request head is read and parsed with h11 (at
most ``MAX_HEAD`` bytes, within ``HEAD_TIMEOUT`` seconds). A WebSocket upgrade is handed,
with the bytes already read, to the WebSocket server (``ReplayStream`` yields them first);
any other request goes to the application's HTTP handler with its h11 connection, which
still holds whatever of the body was read with the head. The connection is closed after
either. ``HttpRequest`` is what an ``authenticate`` hook sees of a plain HTTP request.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import h11
import trio

__all__ = ["Address", "HttpHandler", "HttpRequest", "Listening", "ReplayStream", "address",
           "front_door", "is_upgrade", "peer", "read_head", "serve_front"]

logger = logging.getLogger("eventwf")
MAX_HEAD = 16_384  # bytes of request head a client may send
HEAD_TIMEOUT = 10.0  # seconds a client gets to send its request head

Address = tuple[str, int]  # a TCP client: (host, port)
HttpHandler = Callable[[trio.abc.Stream, h11.Connection, h11.Request], Awaitable[None]]
StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]


class HttpRequest:
    """A plain HTTP request, as an ``authenticate`` hook sees it (beside ``AgentRequest``).

    ``method`` is ``"GET"``, ``"POST"``...; ``path`` the percent-decoded path and
    ``query`` the raw query string; ``raw_path`` the request target as sent; ``headers``
    a list of ``(bytes, bytes)`` (names lower-case), ``remote`` the client's
    ``(host, port)`` (None when the server cannot know it). ``agent_class``
    and ``agent_name`` are None: the request names no agent, so a hook written for
    handshakes can tell the two apart by them (or with ``isinstance``).
    """

    __slots__ = ("agent_class", "agent_name", "headers", "method", "path", "query",
                 "raw_path", "remote")

    def __init__(self, request: h11.Request, remote: Address | None) -> None:
        self.method = request.method.decode("ascii", "replace")
        self.raw_path = request.target.decode("ascii", "replace")
        path, _, self.query = self.raw_path.partition("?")
        self.path = unquote(path)
        self.headers: list[tuple[bytes, bytes]] = list(request.headers)
        self.remote = remote
        self.agent_class: str | None = None
        self.agent_name: str | None = None

    def header(self, name: bytes) -> str | None:
        """The value of header ``name`` (lower-case bytes), or None."""
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.raw_path[:200]}>"


class ReplayStream(trio.abc.Stream):
    """A stream that yields ``head`` (bytes already read from ``stream``) first.

    ``stream`` is the wrapped stream: :func:`peer` looks through the wrapper, so the
    client's address is known behind the front door too.
    """

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self.stream = stream
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            await trio.lowlevel.checkpoint()
            size = len(self._head) if max_bytes is None else max_bytes
            data, self._head = self._head[:size], self._head[size:]
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


async def read_head(stream: trio.abc.Stream) -> tuple[h11.Connection, h11.Request, bytes]:
    """The first request on a connection, with every byte read so far."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    head = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return conn, event, bytes(head)
        if event is not h11.NEED_DATA:
            raise h11.RemoteProtocolError("the connection closed before a request")
        data = bytes(await stream.receive_some(MAX_HEAD))
        head += data
        conn.receive_data(data)


def is_upgrade(request: h11.Request) -> bool:
    """Whether ``request`` asks for a WebSocket."""
    headers = {name: value.lower() for name, value in request.headers}
    return headers.get(b"upgrade") == b"websocket" and b"upgrade" in headers.get(
        b"connection", b"")


async def front_door(sockets: StreamHandler, http: HttpHandler,
                     stream: trio.abc.Stream) -> None:
    """Serve one connection: an upgrade to ``sockets``, anything else to ``http``."""
    try:
        first = None
        with trio.move_on_after(HEAD_TIMEOUT):
            first = await read_head(stream)
        if first is None:
            return  # no request in time
        conn, request, head = first
        if is_upgrade(request):
            await sockets(ReplayStream(stream, head))
        else:
            await http(stream, conn, request)
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # a client that went away or spoke bad HTTP: only its connection ends
    except Exception:  # one connection's failure must never stop the server
        logger.exception("an HTTP connection failed")
    finally:
        await trio.aclose_forcefully(stream)


class Listening:
    """What ``nursery.start(serve, ...)`` returns when HTTP shares the port: ``.port``."""

    def __init__(self, listeners: list[trio.SocketListener]) -> None:
        self.listeners = listeners
        self.port: int = listeners[0].socket.getsockname()[1]


async def serve_front(sockets: StreamHandler, http: HttpHandler, host: str, port: int, *,
                      task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED,
                      ) -> None:
    """Listen on ``host:port`` (0: a free port) and serve every connection with
    :func:`front_door` until cancelled."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, functools.partial(front_door, sockets, http),
                            listeners)
        task_status.started(Listening(listeners))


def peer(stream: trio.abc.Stream) -> Address | None:
    """The client's ``(host, port)`` on ``stream``: a TCP socket, or one wrapped in TLS or
    in a ``ReplayStream``; None for another kind of stream (a Unix socket, a test's
    memory stream). An IPv6 address's flow info and scope id are left out."""
    while isinstance(stream, ReplayStream | trio.SSLStream):
        stream = stream.stream if isinstance(stream, ReplayStream) else stream.transport_stream
    if isinstance(stream, trio.SocketStream):
        return address(stream.socket.getpeername())
    return None


def address(name: object) -> Address | None:
    """``(host, port)`` of a socket address or a trio-websocket ``Endpoint``; None for
    anything else (a Unix socket's path, the ``repr`` trio-websocket gives a stream that
    is not a socket)."""
    if isinstance(name, tuple) and len(name) >= 2 and isinstance(name[0], str) and \
            isinstance(name[1], int):
        return name[0], name[1]
    host, port = getattr(name, "address", None), getattr(name, "port", None)
    if host is not None and isinstance(port, int):
        return str(host), port
    return None
