"""The console mounted in an application: ``eventwf.serve(engine, ..., console=True)``.

Every request on the server's port that is not a WebSocket upgrade comes here (the
server's front door, ``eventwf/server/front.py``), so the console's pages keep their
paths (``/``, ``/workflows/<id>``, ``/agents/<Class>/<name>``, ``/log``, ``/api/...``),
under ``console_prefix`` when one is given (CN19: then every other plain request is a
404), while ``/agents/...`` upgrades still reach the agents. Order of checks (specs/console.md
CN11-CN14): the ``authenticate`` hook first, on every request (a refusal is a 403 that
names nothing of the log); then ``GET``/``HEAD`` read the live engine's log file
read-only, as ``eventwf console`` does; ``POST`` is a control only when controls are
enabled (else 405), only from an allowed origin (else 403), only with a JSON body.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import unquote, urlsplit

import h11
import trio

from eventwf.apps.console import controls as _controls
from eventwf.apps.console.site import Response, error, route, send_response, strip_prefix
from eventwf.engine import Engine
from eventwf.errors import EventwfError
from eventwf.server.front import HttpRequest, peer
from eventwf.server.handshake import AgentRequest

__all__ = ["ConsoleMount", "check_prefix"]

logger = logging.getLogger("eventwf")
Authenticate = Callable[[AgentRequest | HttpRequest], bool | Awaitable[bool]]
_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_READ_ONLY = (405, b"application/json",
              b'{"error":"the console is read-only: serve it with console_controls=True"}')


def check_prefix(prefix: str) -> str:
    """The mount's path prefix (CN19): "" (the root) or ``/segment[/segment...]`` of
    unreserved characters, without a trailing slash; ``ValueError`` naming another."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix) or any(
            not segment.strip(".") for segment in prefix.split("/")[1:]):
        raise ValueError(f"console_prefix {prefix!r} is not a path like '/console' (letters, "
                         "digits, '.', '_', '~', '-' in each segment, no trailing '/')")
    return prefix


class ConsoleMount:
    """Answers the console's HTTP requests on a live engine's server."""

    def __init__(self, engine: Engine, *, authenticate: Authenticate | None = None,
                 allowed_origins: Collection[str] | None = None,
                 controls: bool = False, prefix: str = "") -> None:
        if engine.path == ":memory:" or "://" in engine.path:
            raise EventwfError(
                f"a mounted console reads its engine's SQLite log file; {engine.path!r} is "
                "not one (serve without console=True; for PostgreSQL run `eventwf console "
                "URL` beside the engines)")
        self.prefix = check_prefix(prefix)
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
        path = strip_prefix(urlsplit(seen.raw_path).path, self.prefix)
        api = path is not None and (path == "/api" or path.startswith("/api/"))
        if not await self._allowed(seen):
            return error(403, "authentication refused", api)
        if path is None:
            return error(404, f"no page {seen.path[:200]!r}", False)
        if seen.method in ("GET", "HEAD"):
            return await trio.to_thread.run_sync(self._read, seen.raw_path,
                                                 limiter=self.limiter)
        if seen.method != "POST" or not self.controls:
            return _READ_ONLY if seen.method == "POST" else (
                405, b"application/json", b'{"error":"use GET, HEAD or POST"}')
        refusal = self._refuse_origin(seen)
        if refusal is not None:
            return error(403, refusal, True)
        parts = [unquote(p) for p in path.strip("/").split("/")]
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
        return route(self.engine.path, target, controls=self.controls, prefix=self.prefix,
                     clients=self._clients_from_thread)

    def _clients_from_thread(self, agent_class: str, name: str) -> list[dict[str, Any]]:
        """The agent's clients, asked of the engine in trio from the reading thread."""
        return trio.from_thread.run_sync(self._clients, agent_class, name)

    def _clients(self, agent_class: str, name: str) -> list[dict[str, Any]]:
        """Who is connected to the agent now (CN18): id, address, path and what waits to
        be sent to it; never its headers (they may carry credentials)."""
        return [{"id": getattr(c, "id", "?"), "remote": _address(getattr(c, "remote", None)),
                 "path": str(getattr(c, "path", "?")),
                 "queued_bytes": int(getattr(c, "queued_bytes", 0))}
                for c in self.engine.runtime.agents.connections(agent_class, name)]


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


def _address(remote: object) -> str | None:
    """A client's ``host:port``, or None where the server does not know it (trio-websocket
    names a stream that is not a socket by its repr, e.g. behind the front door)."""
    text = str(remote)
    return None if remote is None or text.startswith("<") else text
