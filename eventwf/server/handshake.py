"""Deciding which agent a WebSocket handshake asks for, once (protocol.md P2, P3).

The path ``/agents/{AgentClass}/{name}`` is percent-decoded here and nowhere else:
routing, the ``authenticate`` hook and the connection all use this decision, so a hook
that refuses ``/agents/Counter/admin`` also refuses ``/agents/Counter/%61dmin``.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from trio_websocket import WebSocketRequest

from eventwf.model.values import check_agent_name, shorten
from eventwf.server.front import Address, address

__all__ = ["AgentRequest", "close_reason", "decide"]


class AgentRequest:
    """A handshake for ``/agents/{AgentClass}/{name}``, as ``authenticate`` sees it.

    ``agent_class`` and ``agent_name`` are the percent-decoded path segments the server
    routes by; ``path`` is the canonical ``/agents/{class}/{name}`` (each segment
    ``quote(…, safe="")``) followed by the request's ``?query``, so
    ``/agents/Counter/%61lice`` is seen as ``/agents/Counter/alice``. ``raw_path``,
    ``headers`` (a list of ``(bytes, bytes)``) are the handshake's own; ``remote`` is the
    client's ``(host, port)`` (None when the server cannot know it, e.g. not over TCP).
    """

    __slots__ = ("agent_class", "agent_name", "headers", "path", "query", "raw_path", "remote")

    def __init__(self, request: WebSocketRequest, agent_class: str, agent_name: str,
                 query: str, remote: Address | None) -> None:
        self.agent_class = agent_class
        self.agent_name = agent_name
        self.query = query
        self.path = (f"/agents/{quote(agent_class, safe='')}/{quote(agent_name, safe='')}"
                     + (f"?{query}" if query else ""))
        self.raw_path: str = request.path
        self.headers: list[tuple[bytes, bytes]] = list(request.headers)
        self.remote = remote

    def __repr__(self) -> str:
        return f"<AgentRequest {self.path[:200]}>"


def decide(request: WebSocketRequest,
           remote: Address | None = None) -> AgentRequest | tuple[int, str]:
    """The agent a handshake asks for, or the HTTP refusal (404, 400) of a bad path.

    ``remote`` is the client's address when the caller knows it better than
    trio-websocket (which sees only the stream it was given: behind the server's front
    door, a wrapper); by default it is read from the request.

    Nothing here names registered classes: that waits until ``authenticate`` agreed.
    """
    path, _, query = request.path.partition("?")
    parts = path.split("/")
    if len(parts) != 4 or parts[:2] != ["", "agents"] or not parts[2] or not parts[3]:
        return 404, "expected /agents/{AgentClass}/{name}"
    try:
        agent_class, name = (unquote(part, errors="strict") for part in parts[2:])
    except UnicodeDecodeError:
        return 400, "the agent class and name must be percent-encoded UTF-8"
    try:
        check_agent_name(name)
    except ValueError as exc:
        return 400, shorten(str(exc), 300, quote=False)
    return AgentRequest(request, agent_class, name, query,
                        address(request.remote) if remote is None else remote)


def close_reason(code: int, text: str) -> tuple[int, str]:
    """A close frame's (code, reason), the reason cut to the 123 bytes a frame allows."""
    data = text.encode()
    return code, text if len(data) <= 123 else data[:120].decode(errors="ignore") + "…"
