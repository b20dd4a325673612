"""HTTP for the console: one GET request per connection, parsed with h11.

Routes (specs/console.md CN3-CN7): ``/`` the listing, ``/workflows/<id>``,
``/agents/<Class>/<name>[?at=N]``, ``/log[?n=N]``, ``/log/verify``, the same data as
JSON under ``/api/...``, and the two files of ``/static/``, all under the mount's prefix
when it has one (CN19). Each request opens the log (a file, or a PostgreSQL URL: CN15)
read-only in a worker thread, reads what it needs through the views and closes it again
(CN1): nothing is held open between requests, so a running engine is never blocked. An
unknown workflow or agent is a 404, a bad parameter a 400, each naming the value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import trio

from eventwf.apps.console import html, views
from eventwf.errors import StorageError
from eventwf.logtool.render import to_json
from eventwf.logtool.source import LogSource, NotFound, ToolError

__all__ = ["Console", "Response", "error", "route", "send_response", "strip_prefix"]

logger = logging.getLogger("eventwf")
MAX_HEAD = 16_384
_HTML = b"text/html; charset=utf-8"
_JSON = b"application/json"
_STATIC = {"console.js": b"text/javascript; charset=utf-8",
           "console.css": b"text/css; charset=utf-8"}
_HEADERS = [
    (b"cache-control", b"no-store"), (b"connection", b"close"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; "
     b"connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; "
     b"form-action 'self'"),
]
_REASONS = {200: b"OK", 400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 409: b"Conflict", 413: b"Content Too Large",
            415: b"Unsupported Media Type", 500: b"Internal Server Error"}

Response = tuple[int, bytes, bytes]  # status, content type, body


class BadRequest(ValueError):
    """A query parameter the console cannot use (a 400)."""


def _int(query: dict[str, str], name: str, default: int | None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not a whole number") from None


def _page(path: str, query: dict[str, str], log: LogSource, api: bool,
          site: html.Site, db: str, clients: views.Clients | None) -> Any:
    """The records (``api``) or the HTML page for one path; NotFound if it names nothing."""
    parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
    match parts:
        case []:
            data: Any = views.overview(log, query, _int(query, "limit", views.PAGE) or 0)
            return data if api else site.overview_page(data)
        case ["workflows", workflow_id]:
            records = views.workflow(log, workflow_id)
            return records if api else site.workflow_page(records)
        case ["agents", agent_class, name]:
            records = views.agent(log, agent_class, name, _int(query, "at", None), clients)
            return records if api else site.agent_page(records)
        case ["log"]:
            records = views.tail(log, query, _int(query, "n", 50) or 50,
                                 _int(query, "after", None))
            return records if api else site.log_page(records)
        case ["log", "verify"]:
            records = views.verify(db)  # the URL with its password: log.path has none
            return records if api else site.verify_page(records)
    raise NotFound(f"no page {path!r}")


def strip_prefix(path: str, prefix: str) -> str | None:
    """``path`` below the mount ``prefix`` (``"/"`` for the prefix itself), or None if
    it is outside it (CN19)."""
    if not prefix:
        return path
    if path == prefix:
        return "/"
    return path[len(prefix):] if path.startswith(prefix + "/") else None


def route(db: str, target: str, *, controls: bool = False, prefix: str = "",
          clients: views.Clients | None = None) -> Response:
    """The whole response to ``GET target`` (blocking: run it in a worker thread);
    ``controls``: workflow pages show the control buttons (CN13); ``prefix``: the
    console is mounted under that path (CN19), and every link it makes starts with it.
    ``db`` is a log file or a PostgreSQL URL (CN15); ``clients`` tells an agent's
    connected clients (a console in the live engine, CN18)."""
    split = urlsplit(target)
    path, query = strip_prefix(split.path, prefix), dict(parse_qsl(split.query))
    site = html.Site(prefix, controls=controls)
    if path is None:
        return error(404, f"no page {split.path!r} (the console is under {prefix}/)", False)
    api = path == "/api" or path.startswith("/api/")
    if api:
        path = path[len("/api"):] or "/"
    elif path.startswith("/static/"):
        name = path[len("/static/"):]
        if name not in _STATIC:
            return error(404, f"no file {name!r}", api)
        body = resources.files("eventwf").joinpath(f"apps/console/page/{name}").read_bytes()
        return 200, _STATIC[name], body
    try:
        with views.open_log(db) as log:
            result = _page(path, query, log, api, site, db, clients)
    except NotFound as exc:
        return error(404, str(exc), api, site)
    except (BadRequest, ValueError) as exc:
        return error(400, str(exc), api, site)
    except (ToolError, StorageError) as exc:
        return error(500, str(exc), api, site)
    if api:
        return 200, _JSON, to_json(result)
    return 200, _HTML, result


def error(status: int, message: str, api: bool, site: html.Site | None = None) -> Response:
    """A 4xx/5xx response naming the problem, as JSON (``api``) or an HTML page."""
    if api:
        return status, _JSON, to_json({"error": message})
    return status, _HTML, (site or html.Site("")).error_page(status, message)


class Console:
    """Serves one connection: reads a request, answers it in a worker thread, closes."""

    def __init__(self, db: str, answer: Callable[[str, str], Response] = route) -> None:
        self.db = db
        self.answer = answer
        self.limiter = trio.CapacityLimiter(4)  # concurrent readers of the log

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            with trio.move_on_after(10):
                conn, request = await _read_request(stream)
                target = request.target.decode("ascii", "replace")
                if request.method not in (b"GET", b"HEAD"):
                    response: Response = 405, b"text/plain", b"the console is read-only: use GET\n"
                else:
                    response = await trio.to_thread.run_sync(
                        self.answer, self.db, target, limiter=self.limiter)
                await send_response(stream, conn, request, response)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a client that went away or spoke bad HTTP: only its connection ends
        except Exception:  # one failed request must not stop the console
            logger.exception("console: a request failed")
        finally:
            await trio.aclose_forcefully(stream)


async def _read_request(stream: trio.abc.Stream) -> tuple[h11.Connection, h11.Request]:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Request):
            return conn, event
        if event is not h11.NEED_DATA:
            raise h11.RemoteProtocolError("the connection closed before a request")
        conn.receive_data(bytes(await stream.receive_some(MAX_HEAD)))


async def send_response(stream: trio.abc.Stream, conn: h11.Connection, request: h11.Request,
                        response: Response) -> None:
    """One whole response (no body for HEAD); the connection closes after it."""
    status, kind, body = response
    headers = [(b"content-type", kind), (b"content-length", b"%d" % len(body)), *_HEADERS]
    if status == 405:
        headers.append((b"allow", b"GET, HEAD"))
    out = conn.send(h11.Response(status_code=status, reason=_REASONS[status],
                                 headers=headers)) or b""
    if request.method != b"HEAD":
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(out)
