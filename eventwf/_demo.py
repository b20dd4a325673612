"""The demo app, ``python -m eventwf demo``: a live task board in the browser.

Each task is a durable workflow: three steps of (simulated) work with a real durable
sleep after each, a human approval gate, then a last step. Its progress is written into
the agent's state with ``step.merge_agent_state``, so every open tab sees it, and a
restarted demo shows it and carries on where it was.

The agent's state maps task id to task: a shallow merge of ``{task_id: task}`` changes
one task without touching the others, so concurrent workflows never overwrite each other.

HTTP and WebSocket share one port. Each TCP connection's request head is read and parsed
with h11: a WebSocket upgrade is handed, with the bytes already read, to the WebSocket
server's ``SocketHandler``; anything else gets the page (``GET /``) or a 404.
"""

from __future__ import annotations

import logging
import random
import signal
import sys
from importlib import resources
from typing import Any

import h11
import trio

from .agent import Agent, callable
from .engine import Engine, open_engine
from .errors import EventwfError, WorkflowRejectedError, WorkflowTimeoutError
from .server import SocketHandler
from .workflow import AgentWorkflow

__all__ = ["DemoAgent", "DemoServer", "DemoTask", "main", "serve_demo"]

logger = logging.getLogger("eventwf")
STAGES = ["Collect sources", "Analyse", "Draft report", "Approval", "Publish"]
MAX_TITLE = 120
MAX_ACTIVE = 25
MAX_HEAD = 16_384  # bytes of request head an HTTP client may send


class DemoAgent(Agent):
    """A task board; its state is ``{task_id: task}``."""

    initial_state: Any = {}
    step_seconds: float = 1.5  # the durable sleep after each step (the CLI may change it)

    @callable
    async def start_task(self, title: str) -> str:
        """Start a task workflow; its card appears with the workflow's first state write."""
        if not isinstance(title, str) or not 0 < len(title.strip()) <= MAX_TITLE:
            raise ValueError(f"a task needs a title of 1-{MAX_TITLE} characters")
        active = [t for t in self.state.values() if t["status"] in ("running", "waiting")]
        if len(active) >= MAX_ACTIVE:
            raise ValueError(f"{MAX_ACTIVE} tasks are already in progress; finish some first")
        return await self.run_workflow(
            "DemoTask", {"title": title.strip(), "seconds": self.step_seconds})

    @callable
    async def approve(self, task_id: str) -> None:
        self._waiting(task_id)
        await self.approve_workflow(task_id, reason="Approved in the browser")

    @callable
    async def reject(self, task_id: str) -> None:
        self._waiting(task_id)
        await self.reject_workflow(task_id, reason="Rejected in the browser")

    @callable
    async def run_again(self, task_id: str) -> None:
        """Restart a rejected or expired task from its first step."""
        task = self.state.get(task_id)
        if task is None or task["status"] not in ("rejected", "expired"):
            raise ValueError("only a rejected or expired task can run again")
        await self.restart_workflow(task_id)

    def _waiting(self, task_id: str) -> None:
        task = self.state.get(task_id)
        if task is None or task["status"] != "waiting":
            raise ValueError("this task is not waiting for approval")

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, error: str) -> None:
        if "rejected" not in error:
            logger.warning("task %s failed: %s", workflow_id, error)


def _work(stage: str, title: str) -> dict[str, Any]:
    """The (simulated) work of one step; its result is logged once and never recomputed."""
    words = len(title.split())
    if stage == "collect":
        return {"detail": f"Found {words + random.randint(3, 9)} sources"}
    if stage == "analyse":
        return {"detail": f"{random.randint(8, 24)} findings, {random.randint(2, 5)} themes"}
    if stage == "draft":
        return {"detail": f"Draft of {random.randint(6, 14) * 100} words is ready"}
    return {"detail": f"Published “{title}”"}


class DemoTask(AgentWorkflow[DemoAgent]):
    async def run(self, event: Any, step: Any) -> dict[str, Any]:
        pace = float(event.payload["seconds"])
        task: dict[str, Any] = {
            "id": self.workflow_id, "title": event.payload["title"], "status": "running",
            "stage": 0, "stages": STAGES, "progress": 0, "detail": "Starting",
            "created": (await step.now()).isoformat(), "finished": None,
        }
        await self._show(step, task)
        for i, stage in enumerate(("collect", "analyse", "draft")):
            result = await step.do(stage, lambda stage=stage: _work(stage, task["title"]))
            await step.sleep(f"{stage}: wait", pace)
            await self._show(step, task, stage=i + 1, progress=25 * (i + 1), **result)
        await self._show(step, task, status="waiting", detail="Waiting for approval")
        try:
            await self.wait_for_approval(step, timeout="7 days")
        except WorkflowRejectedError as exc:
            await self._finish(step, task, "rejected", exc.reason or "Rejected")
            return {"approved": False}
        except WorkflowTimeoutError:
            await self._finish(step, task, "expired", "Nobody approved it within 7 days")
            return {"approved": False}
        await self._show(step, task, status="running", stage=4, progress=85,
                         detail="Approved; publishing")
        result = await step.do("publish", lambda: _work("publish", task["title"]))
        await step.sleep("publish: wait", pace)
        await self._finish(step, task, "done", result["detail"], stage=5, progress=100)
        return {"approved": True}

    async def _show(self, step: Any, task: dict[str, Any], **changes: Any) -> None:
        task.update(changes)
        await step.merge_agent_state({self.workflow_id: dict(task)})

    async def _finish(self, step: Any, task: dict[str, Any], status: str, detail: str,
                      **changes: Any) -> None:
        finished = (await step.now()).isoformat()
        await self._show(step, task, status=status, detail=detail, finished=finished, **changes)


# -- one port for HTTP and WebSocket ----------------------------------------------------


class ReplayStream(trio.abc.Stream):
    """A stream that yields ``head`` (bytes already read from ``stream``) first."""

    def __init__(self, stream: trio.abc.Stream, head: bytes) -> None:
        self._stream = stream
        self._head = head

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._head:
            await trio.lowlevel.checkpoint()
            size = len(self._head) if max_bytes is None else max_bytes
            data, self._head = self._head[:size], self._head[size:]
            return data
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _read_head(stream: trio.abc.Stream) -> tuple[h11.Connection, h11.Request, bytes]:
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


def _is_upgrade(request: h11.Request) -> bool:
    headers = {name: value.lower() for name, value in request.headers}
    return headers.get(b"upgrade") == b"websocket" and b"upgrade" in headers.get(
        b"connection", b"")


class Site:
    """Serves the page over HTTP and ``/agents/...`` over WebSocket, on one port."""

    def __init__(self, sockets: SocketHandler, page: bytes) -> None:
        self.sockets = sockets
        self.page = page

    async def handle(self, stream: trio.abc.Stream) -> None:
        try:
            first = None
            with trio.move_on_after(10):
                first = await _read_head(stream)
            if first is None:
                return  # no request within 10 seconds
            conn, request, head = first
            if _is_upgrade(request):
                await self.sockets.handle_stream(ReplayStream(stream, head))
            else:
                await self._respond(stream, conn, request)
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # a client that went away or spoke bad HTTP: only its connection ends
        except Exception:  # never let one connection stop the server
            logger.exception("demo: an HTTP connection failed")
        finally:
            await trio.aclose_forcefully(stream)

    async def _respond(self, stream: trio.abc.Stream, conn: h11.Connection,
                       request: h11.Request) -> None:
        path = request.target.split(b"?", 1)[0]
        text = b"text/plain; charset=utf-8"
        if request.method not in (b"GET", b"HEAD"):
            status, reason, kind, body = 405, b"Method Not Allowed", text, b"use GET\n"
        elif path == b"/":
            status, reason, kind, body = 200, b"OK", b"text/html; charset=utf-8", self.page
        else:
            status, reason, kind, body = 404, b"Not Found", text, b"not found\n"
        headers = [
            (b"content-type", kind), (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"), (b"connection", b"close"),
            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", b"default-src 'none'; script-src 'unsafe-inline'; "
             b"style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
             b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
        ]
        if status == 405:
            headers.append((b"allow", b"GET, HEAD"))
        out = conn.send(h11.Response(status_code=status, reason=reason, headers=headers)) or b""
        if request.method != b"HEAD":
            out += conn.send(h11.Data(data=body)) or b""
        out += conn.send(h11.EndOfMessage()) or b""
        await stream.send_all(out)


def page() -> bytes:
    return resources.files("eventwf").joinpath("demo_page/index.html").read_bytes()


def allowed_origins(host: str, port: int) -> set[str] | None:
    """Browser origins that may open the WebSocket (None: any, for a wildcard bind)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only names the wildcard
        return None
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    return {f"http://{f'[{n}]' if ':' in n and '[' not in n else n}:{port}" for n in names}


class DemoServer:
    """What ``nursery.start(serve_demo, ...)`` returns."""

    def __init__(self, engine: Engine, host: str, port: int) -> None:
        self.engine = engine
        self.port = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve_demo(db: str, host: str = "127.0.0.1", port: int = 8080, *,
                     task_status: trio.TaskStatus[DemoServer] = trio.TASK_STATUS_IGNORED,
                     ) -> None:
    """Run the demo on ``db`` until cancelled (``port=0`` picks a free port)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        async with open_engine(db, agents=[DemoAgent], workflows=[DemoTask]) as engine:
            bound = listeners[0].socket.getsockname()[1]
            sockets = SocketHandler(engine, allowed_origins=allowed_origins(host, bound))
            site = Site(sockets, page())
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, site.handle, listeners)
                task_status.started(DemoServer(engine, host, bound))
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _run(db: str, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_demo, db, host, port)
            print(f"eventwf demo: open {server.url} in your browser "
                  f"(log: {db}; Ctrl-C to stop)", flush=True)
            async for _ in signals:
                print("\nstopping...", flush=True)
                nursery.cancel_scope.cancel()
                break


def _problem(exc: BaseException) -> BaseException | None:
    """An OSError or EventwfError that stopped the start, found inside exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        found = [p for e in exc.exceptions if (p := _problem(e)) is not None]
        return found[0] if found else None
    return exc if isinstance(exc, OSError | EventwfError) else None


def main(db: str, host: str, port: int, step_seconds: float) -> int:
    DemoAgent.step_seconds = step_seconds
    try:
        trio.run(_run, db, host, port)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        problem = _problem(exc)
        if problem is None:
            raise
        print(f"eventwf demo: cannot start: {problem}", file=sys.stderr)
        return 1
    print(f"Goodbye. Unfinished tasks carry on from {db} the next time you start the demo.")
    return 0
