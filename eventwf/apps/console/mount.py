"""The console mounted in an application: ``eventwf.serve(engine, ..., console=True)``.

Every request on the server's port that is not a WebSocket upgrade comes here (the
server's front door, ``eventwf/server/front.py``), so the console's pages keep their
paths (``/``, ``/workflows/<id>``, ``/agents/<Class>/<name>``, ``/log``, ``/api/...``)
while ``/agents/...`` upgrades still reach the agents. Order of checks (specs/console.md
CN11-CN14): the ``authenticate`` hook first, on every request (a refusal is a 403 that
names nothing of the log); then ``GET``/``HEAD`` read the live engine's log file
read-only, as ``eventwf console`` does; ``POST`` is a control only when controls are
enabled (else 405), only from an allowed origin (else 403), only with a JSON body.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Collection
from urllib.parse import unquote, urlsplit

import h11
import trio

from eventwf.apps.console import controls as _controls
from eventwf.apps.console.site import Response, error, route, send_response
from eventwf.engine import Engine
from eventwf.errors import EventwfError
from eventwf.server.front import HttpRequest, peer
from eventwf.server.handshake import AgentRequest

__all__ = ["ConsoleMount"]

logger = logging.getLogger("eventwf")
Authenticate = Callable[[AgentRequest | HttpRequest], bool | Awaitable[bool]]
_READ_ONLY = (405, b"application/json",
              b'{"error":"the console is read-only: serve it with console_controls=True"}')


class ConsoleMount:
    """Answers the console's HTTP requests on a live engine's server."""

    def __init__(self, engine: Engine, *, authenticate: Authenticate | None = None,
                 allowed_origins: Collection[str] | None = None,
                 controls: bool = False) -> None:
        if engine.path == ":memory:" or "://" in engine.path:
            raise EventwfError(f"the console reads a SQLite log file; {engine.path!r} is not "
                               "one (serve without console=True)")
        self.engine = engine
        self.authenticate = authenticate
        self.allowed_origins = None if allowed_origins is None else set(allowed_origins)
        self.controls = controls
        self.limiter = trio.CapacityLimiter(4)  # concurrent readers of the log

    async def __call__(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request) -> None:
        """Answer one request (the front door closes the connection afterwards)."""
        seen = HttpRequest(request, peer(stream))
        with trio.move_on_after(10):
            response = await self._answer(stream, conn, seen)
            await send_response(stream, conn, request, response)

    async def _answer(self, stream: trio.abc.Stream, conn: h11.Connection,
                      seen: HttpRequest) -> Response:
        api = seen.path == "/api" or seen.path.startswith("/api/")
        if not await self._allowed(seen):
            return error(403, "authentication refused", api)
        if seen.method in ("GET", "HEAD"):
            return await trio.to_thread.run_sync(self._read, seen.raw_path,
                                                 limiter=self.limiter)
        if seen.method != "POST" or not self.controls:
            return _READ_ONLY if seen.method == "POST" else (
                405, b"application/json", b'{"error":"use GET, HEAD or POST"}')
        refusal = self._refuse_origin(seen)
        if refusal is not None:
            return error(403, refusal, True)
        parts = [unquote(p) for p in urlsplit(seen.raw_path).path.strip("/").split("/")]
        if len(parts) != 4 or parts[:2] != ["api", "workflows"]:
            return error(404, "controls are POST /api/workflows/<id>/<action>", True)
        kind = (seen.header(b"content-type") or "").split(";")[0].strip().lower()
        if kind not in ("", "application/json"):
            return error(415, f"a control's body is application/json, not {kind!r}", True)
        body = await _read_body(stream, conn)
        if body is None:
            return error(413, f"a control's body is at most {_controls.MAX_BODY} bytes", True)
        return await _controls.act(self.engine, parts[2], parts[3], body)

    def _read(self, target: str) -> Response:
        return route(self.engine.path, target, controls=self.controls)

    async def _allowed(self, seen: HttpRequest) -> bool:
        if self.authenticate is None:
            return True
        try:
            allowed = self.authenticate(seen)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception:  # a raising hook refuses, and says why in the log
            logger.exception("the authenticate hook raised on %r; refused", seen)
            return False
        return bool(allowed)

    def _refuse_origin(self, seen: HttpRequest) -> str | None:
        """Why a control POST's ``Origin`` is refused, or None (CN12).

        With ``allowed_origins`` the origin must be one of them; without, it must be
        this server's own (``http://`` + the ``Host`` header). A request without an
        ``Origin`` header does not come from a browser page, so no page can forge it.
        """
        origin = seen.header(b"origin")
        if origin is None:
            return None
        if self.allowed_origins is not None:
            ok = origin in self.allowed_origins
        else:
            ok = origin == f"http://{seen.header(b'host')}"
        return None if ok else f"origin {origin[:200]!r} may not use the controls"


async def _read_body(stream: trio.abc.Stream, conn: h11.Connection) -> bytes | None:
    """The request body (None when it is over ``MAX_BODY``)."""
    body = bytearray()
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > _controls.MAX_BODY:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        elif event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(16_384)))
        else:
            raise h11.RemoteProtocolError("the connection closed inside a request body")
