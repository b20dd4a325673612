"""HTTP and WebSocket on one port: the page over HTTP, each board over WebSocket.

Each TCP connection's request head is read and parsed with h11. A WebSocket upgrade for
``/agents/DemoAgent/<board>`` is admitted here first (a plain board name, a place among
the live boards: specs/demo.md M1, M2), then handed, with the bytes already read, to the
WebSocket server's ``SocketHandler``; a refused one is answered here, so it never
reaches the engine. Anything else gets the page (``GET /``) or a 404.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import h11
import trio

from eventwf.apps.demo.boards import Boards
from eventwf.server.front import ReplayStream, is_upgrade, read_head
from eventwf.server.websocket import SocketHandler

__all__ = ["Site", "page"]

logger = logging.getLogger("eventwf")
BOARD_PATH = b"/agents/DemoAgent/"
BOARD_NAME = re.compile(rb"[A-Za-z0-9_-]{1,64}\Z")  # as is: one spelling per board
_TEXT = b"text/plain; charset=utf-8"
_HEADERS = [
    (b"cache-control", b"no-store"), (b"connection", b"close"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; "
     b"style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]
_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            503: b"Service Unavailable"}


def board_of(target: bytes) -> tuple[int, bytes] | str:
    """The board an upgrade request's target names, or the refusal (status, body)."""
    path = target.split(b"?", 1)[0]
    if not path.startswith(BOARD_PATH):
        return 404, b"expected /agents/DemoAgent/<board>\n"
    name = path[len(BOARD_PATH):]
    if not BOARD_NAME.match(name):
        return 400, b"a board name is 1-64 letters, digits, '_' or '-'\n"
    return name.decode()


def page() -> bytes:
    return resources.files("eventwf").joinpath("apps/demo/page/index.html").read_bytes()


class Site:
    """Serves the page over HTTP and the boards over WebSocket, on one port."""

    def __init__(self, sockets: SocketHandler, boards: Boards, page: bytes) -> None:
        self.sockets = sockets
        self.boards = boards
        self.page = page

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            first = None
            with trio.move_on_after(10):
                first = await read_head(stream)
            if first is None:
                return  # no request within 10 seconds
            conn, request, head = first
            if is_upgrade(request):
                await self._upgrade(stream, conn, request, head)
            else:
                await self._respond(stream, conn, request)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a client that went away or spoke bad HTTP: only its connection ends
        except Exception:  # never let one connection stop the server
            logger.exception("demo: an HTTP connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _upgrade(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request, head: bytes) -> None:
        """Admit the board (no await before the place is taken), then serve the socket."""
        board = board_of(request.target)
        if isinstance(board, tuple):
            await _answer(stream, conn, request, *board)
            return
        if not self.boards.enter(board):
            body = b"%d boards are open, the demo's limit; try again later\n" % self.boards.limit
            await _answer(stream, conn, request, 503, body)
            return
        try:
            await self.sockets.handle_stream(ReplayStream(stream, head))
        finally:
            self.boards.leave(board)

    async def _respond(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request) -> None:
        path = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            await _answer(stream, conn, request, 405, b"use GET\n", [(b"allow", b"GET, HEAD")])
        elif path == b"/":
            await _answer(stream, conn, request, 200, self.page, kind=b"text/html; charset=utf-8")
        else:
            await _answer(stream, conn, request, 404, b"not found\n")


async def _answer(stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request,
                  status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None, *,
                  kind: bytes = _TEXT) -> None:
    """One whole response (no body for HEAD); the connection closes after it."""
    headers = [(b"content-type", kind), (b"content-length", b"%d" % len(body)), *_HEADERS,
               *(extra or [])]
    out = conn.send(h11.Response(status_code=status, reason=_REASONS[status],
                                 headers=headers)) or b""
    if request.method != b"HEAD":
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
