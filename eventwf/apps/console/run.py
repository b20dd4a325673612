"""Running the console: ``serve_console`` (until cancelled) and ``eventwf console``."""

from __future__ import annotations

import os
import signal
import sys

import trio

from eventwf.apps.console.site import Console
from eventwf.apps.console.views import open_log
from eventwf.errors import StorageError
from eventwf.logtool.source import ToolError
from eventwf.store import is_url

__all__ = ["ConsoleServer", "main", "serve_console"]


class ConsoleServer:
    """What ``nursery.start(serve_console, ...)`` returns: where the console listens."""

    def __init__(self, host: str, port: int) -> None:
        self.port = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"


async def serve_console(db: str, host: str = "127.0.0.1", port: int = 8081, *,
                        task_status: trio.TaskStatus[ConsoleServer] = trio.TASK_STATUS_IGNORED,
                        ) -> None:
    """Serve the read-only console of the log ``db`` (a file, or a PostgreSQL URL) until
    cancelled (``port=0``: a free port). The log is opened read-only per request
    (specs/console.md CN1, CN15)."""
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
            with open_log(db) as log:
                shown = log.path  # a URL without its password
            print(f"eventwf console: open {server.url} in your browser (log: {shown}, "
                  "read-only; Ctrl-C to stop)", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def _refusal(db: str) -> str | None:
    """Why ``db`` cannot be served (CN10, CN15), or None: a file must exist; a URL must
    be a PostgreSQL one that opens read-only as an eventwf log (its password unsaid)."""
    if not is_url(db):
        if "://" in db:
            return f"{db.split('://', 1)[0]}:// is not a log: give a file or a postgresql:// URL"
        return None if os.path.isfile(db) else f"{db}: no such file"
    try:
        open_log(db).close()
    except (ToolError, StorageError) as exc:
        return str(exc)
    return None


def main(db: str, host: str, port: int) -> int:
    """``eventwf console PATH_OR_URL``: 0 after Ctrl-C, 2 for a log it cannot serve, 1
    when it cannot listen (CN10)."""
    refusal = _refusal(db)
    if refusal is not None:
        print(f"eventwf console: {refusal}", file=sys.stderr)
        return 2
    try:
        trio.run(_run, db, host, port)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"eventwf console: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0
