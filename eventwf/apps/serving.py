"""``eventwf.serve``: the WebSocket server, with the web console on the same port.

The server layer (``eventwf/server/``) knows nothing of the console, which reads the log
through the log tool (a higher layer); this module joins the two: with ``console=True``
every plain HTTP request on the port goes to a ``ConsoleMount`` on the live engine
(specs/console.md CN11-CN14), and WebSocket upgrades to the agents as before.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import trio

from eventwf.apps.console.mount import ConsoleMount
from eventwf.engine import Engine
from eventwf.server.websocket import Authenticate
from eventwf.server.websocket import serve as serve_sockets

__all__ = ["serve"]


async def serve(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    authenticate: Authenticate | None = None,
    max_message_size: int = 1_048_576,
    allowed_origins: Collection[str] | None = None,
    max_connections: int = 1000,
    console: bool = False,
    console_controls: bool = False,
    console_prefix: str = "",
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/agents/{AgentClass}/{name}`` until cancelled, and the console if asked.

    ``await nursery.start(serve, engine, host, 0)`` picks a free port and returns an
    object with ``.port``. ``authenticate(request)`` (sync or async) may refuse a
    WebSocket handshake (it gets an ``AgentRequest``) or, with the console, any console
    request (it gets an ``HttpRequest``: ``method``, ``path``, ``headers``, ``remote``;
    refused: 403). ``allowed_origins`` (exact ``scheme://host:port`` strings) refuses
    other browser origins; frames over ``max_message_size`` close that connection with
    1009. ``console=True`` serves the web console of the engine's SQLite log file on the
    same port (read-only); ``console_controls=True`` adds its controls (approve, reject,
    pause, resume, terminate, restart, send an event), which a browser may use only from
    an allowed origin (without ``allowed_origins``: this server's own).
    ``console_prefix="/console"`` serves the console under that path (its links and API
    calls too) and answers 404 to plain requests outside it; ``ValueError`` for a prefix
    that is not a plain path.
    """
    if console_controls and not console:
        raise ValueError("console_controls=True needs console=True")
    if console_prefix and not console:
        raise ValueError("console_prefix needs console=True")
    mount = (ConsoleMount(engine, authenticate=authenticate, allowed_origins=allowed_origins,
                          controls=console_controls, prefix=console_prefix)
             if console else None)
    await serve_sockets(engine, host, port, authenticate=authenticate,
                        max_message_size=max_message_size, allowed_origins=allowed_origins,
                        max_connections=max_connections, http=mount, task_status=task_status)
