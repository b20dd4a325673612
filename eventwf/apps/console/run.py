"""Running the console: ``serve_console`` (until cancelled) and ``eventwf console``."""

from __future__ import annotations

import os
import signal
import sys

import trio

from eventwf.apps.console.site import Console

__all__ = ["ConsoleServer", "main", "serve_console"]


class ConsoleServer:
    """What ``nursery.start(serve_console, ...)`` returns: where the console listens."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve_console(db: str, host: str = "127.0.0.1", port: int = 8081, *,
                        task_status: trio.TaskStatus[ConsoleServer] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """Serve the read-only console of the log file ``db`` until cancelled (``port=0``: a
    free port). The file is opened read-only per request (specs/console.md CN1)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    try:
        console = Console(db)
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, console.handle, listeners)
            task_status.started(ConsoleServer(host, bound))
    finally:
        for listener in listeners:
            await trio.aclose_forcefully(listener)


async def _run(db: str, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_console, db, host, port)
            print(f"eventwf console: open {server.url} in your browser (log: {db}, "
                  "read-only; Ctrl-C to stop)", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(db: str, host: str, port: int) -> int:
    """``eventwf console PATH``: 0 after Ctrl-C, 2 for a log it cannot serve (CN10)."""
    if "://" in db:
        print(f"eventwf console: {db.split('://', 1)[0]}:// logs are not supported yet; "
              "give the path of a SQLite log file", file=sys.stderr)
        return 2
    if not os.path.isfile(db):
        print(f"eventwf console: {db}: no such file", file=sys.stderr)
        return 2
    try:
        trio.run(_run, db, host, port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"eventwf console: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0
