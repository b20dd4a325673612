"""A Python client for an agent's WebSocket endpoint.

    async with eventwf.connect_agent("ws://127.0.0.1:8765", "MyAgent", "user-42") as conn:
        print(conn.state)                        # current, kept up to date
        result = await conn.call("approve", workflow_id)
        async for message in conn: ...          # state updates and broadcasts
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import msgspec
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from eventwf.errors import AgentUnavailableError, EventwfError, RpcError

__all__ = ["AgentConnection", "connect_agent"]

_JSON = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder()


class AgentConnection:
    """An open connection to one agent; iterate it for messages that are not RPC answers."""

    def __init__(self, ws: WebSocketConnection, buffer: int) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[str, tuple[trio.Event, list[Any]]] = {}
        self._send, self._receive = trio.open_memory_channel[Any](buffer)
        self._first_state = trio.Event()
        self.state: Any = None
        self.position: int = -1  # the log position the current state reflects

    async def call(self, method: str, *args: Any) -> Any:
        """Call an ``@eventwf.callable`` method; ``RpcError`` carries the server's message."""
        call_id = f"r{next(self._ids)}"
        done: trio.Event = trio.Event()
        box: list[Any] = []
        self._pending[call_id] = (done, box)
        try:
            await self._ws.send_message(_JSON.encode(
                {"type": "rpc", "id": call_id, "method": method, "args": list(args)}).decode())
            await done.wait()
        except ConnectionClosed as exc:
            raise RpcError(f"connection closed before {method!r} answered: {exc.reason}") from None
        finally:
            self._pending.pop(call_id, None)
        answer = box[0]
        if answer is None:
            raise RpcError(f"connection closed before {method!r} answered: {self._ws.closed}")
        if not answer.get("success"):
            raise RpcError(str(answer.get("error")))
        return answer.get("result")

    async def send(self, message: Any) -> None:
        """Send a JSON message (it reaches the agent's ``on_message``)."""
        try:
            await self._ws.send_message(_JSON.encode(message).decode())
        except ConnectionClosed as exc:
            raise EventwfError(f"connection closed: {exc.reason}") from None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Any]:
        async for message in self._receive:
            yield message

    async def _reader(self) -> None:
        try:
            while True:
                try:
                    message = _DECODE.decode(await self._ws.get_message())
                except (msgspec.DecodeError, RecursionError):  # a server that breaks P4-P6
                    await self._ws.aclose(1007, "malformed message from the server: not JSON")
                    break
                kind = message.get("type") if isinstance(message, dict) else None
                if kind == "rpc" and isinstance(call_id := message.get("id"), str) and \
                        call_id in self._pending:
                    done, box = self._pending[call_id]
                    box.append(message)
                    done.set()
                    continue
                if kind == "state" and isinstance(position := message.get("position"), int):
                    first, stale = self.position < 0, position <= self.position
                    if stale:  # a state already delivered (P4: positions only go up)
                        continue
                    self.state, self.position = message.get("state"), position
                    self._first_state.set()
                    if first:
                        continue  # connect_agent returns with it in ``state``: not again
                await self._send.send(message)
        except ConnectionClosed:
            pass  # iteration ends; pending calls are failed below
        finally:
            for done, box in self._pending.values():
                box.append(None)
                done.set()
            self._first_state.set()
            await self._send.aclose()

    @property
    def closed(self) -> Any:
        """The close reason (code, reason) once closed, else None."""
        return self._ws.closed


@asynccontextmanager
async def connect_agent(
    url: str, cls_name: str, name: str, *, max_message_size: int = 8 * 1024 * 1024,
    buffer: int = 10_000, extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[AgentConnection]:
    """Connect to ``{url}/agents/{cls_name}/{name}`` and wait for the first state.

    The first state is ``conn.state``; ``async for`` yields the messages after it. A refused
    handshake raises ``AgentUnavailableError`` (with the HTTP ``status``). Up to ``buffer``
    messages wait for ``async for``; when that many are unread the reader waits too
    (``state`` and RPC answers stop), so iterate a long-lived connection.
    """
    target = f"{url.rstrip('/')}/agents/{quote(cls_name, safe='')}/{quote(name, safe='')}"
    try:
        async with open_websocket_url(target, max_message_size=max_message_size,
                                      extra_headers=extra_headers) as ws:
            connection = AgentConnection(ws, buffer)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connection._reader)
                    await connection._first_state.wait()
                    if connection.position < 0:
                        raise EventwfError(f"{target} closed before sending the agent's state: "
                                           f"{ws.closed}")
                    try:
                        yield connection
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # the body's exception itself, not a group
                if len(group.exceptions) == 1:
                    raise group.exceptions[0] from None
                raise
    except ConnectionRejected as exc:  # the server refused the handshake (P3)
        reason = (exc.body or b"").decode("utf-8", "replace").strip()[:300]
        raise AgentUnavailableError(f"{target} refused the connection ({exc.status_code}): "
                                    f"{reason or 'no reason given'}", exc.status_code) from None
    except HandshakeError as exc:
        raise AgentUnavailableError(f"{target}: the WebSocket handshake failed: {exc}") from exc
