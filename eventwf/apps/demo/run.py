"""Running the demo: ``serve_demo`` (until cancelled) and the ``python -m eventwf demo`` command."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Collection

import trio

from eventwf.apps.demo.board import DemoAgent, DemoTask
from eventwf.apps.demo.boards import Boards
from eventwf.apps.demo.site import Site, page
from eventwf.engine import Engine, open_engine
from eventwf.errors import EventwfError
from eventwf.server.websocket import SocketHandler
from eventwf.store.location import without_password

__all__ = ["MAX_BOARDS", "DemoServer", "allowed_origins", "main", "serve_demo"]

MAX_BOARDS = 64  # boards in memory at once (specs/demo.md M1)
EVICT_EVERY = 60.0  # seconds between sweeps of idle boards (M3)


def allowed_origins(host: str, port: int) -> set[str] | None:
    """Browser origins that may open the WebSocket (None: any, for a wildcard bind)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - only names the wildcard
        return None
    names = {host, "127.0.0.1", "localhost", "[::1]"}
    return {f"http://{f'[{n}]' if ':' in n and '[' not in n else n}:{port}" for n in names}


class DemoServer:
    """What ``nursery.start(serve_demo, ...)`` returns."""

    def __init__(self, engine: Engine, boards: Boards, host: str, port: int) -> None:
        self.engine = engine
        self.boards = boards
        self.port = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve_demo(db: str, host: str = "127.0.0.1", port: int = 8080, *,
                     max_boards: int = MAX_BOARDS, evict_every: float = EVICT_EVERY,
                     lease_ttl: float = 15.0,
                     task_status: trio.TaskStatus[DemoServer] = trio.TASK_STATUS_IGNORED,
                     ) -> None:
    """Run the demo on ``db`` until cancelled (``port=0`` picks a free port); several demo
    servers may share one PostgreSQL database (``lease_ttl``: how soon a dead one's boards
    move to another)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        async with open_engine(db, agents=[DemoAgent], workflows=[DemoTask],
                               lease_ttl=lease_ttl) as engine:
            runtime = engine.runtime  # the demo owns every board object: it may evict them (A8)

            def evict(keep: Collection[str]) -> set[str]:
                return runtime.agents.evict_idle(DemoAgent.__name__, keep,
                                                 runtime.runs.agent_streams())

            boards = Boards(evict, max_boards)
            bound = listeners[0].socket.getsockname()[1]
            sockets = SocketHandler(engine, allowed_origins=allowed_origins(host, bound))
            site = Site(sockets, boards, page())
            async with trio.open_nursery() as nursery:
                nursery.start_soon(boards.sweep_every, evict_every)
                await nursery.start(trio.serve_listeners, site.handle, listeners)
                task_status.started(DemoServer(engine, boards, host, bound))
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _run(db: str, host: str, port: int, lease_ttl: float) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve_demo, db, host, port, lease_ttl=lease_ttl))
            print(f"eventwf demo: open {server.url} in your browser "
                  f"(log: {without_password(db)}; Ctrl-C to stop)", flush=True)
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


def main(db: str, host: str, port: int, step_seconds: float, lease_ttl: float = 15.0) -> int:
    DemoAgent.step_seconds = step_seconds
    try:
        trio.run(_run, db, host, port, lease_ttl)
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        problem = _problem(exc)
        if problem is None:
            raise
        print(f"eventwf demo: cannot start: {problem}", file=sys.stderr)
        return 1
    print(f"Goodbye. Unfinished tasks carry on from {without_password(db)} the next time you "
          "start the demo.")
    return 0
