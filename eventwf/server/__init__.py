"""The WebSocket server of agents: ``serve`` and the connection handed to agent hooks."""

from eventwf.server.connection import Connection as Connection
from eventwf.server.handshake import AgentRequest as AgentRequest
from eventwf.server.websocket import serve as serve

__all__ = ["AgentRequest", "Connection", "serve"]
