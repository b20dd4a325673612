"""One client's connection as the agent sees it, and its outbound side (P10-P11).

Theory of operation: each connection has an outbound queue bounded by bytes
(``Outbox``) drained by its own sender task, so a slow client never stalls the agent, the
writer or other clients: stale state messages give way first (every state message carries
the log position it reflects), and a client whose queue still overflows is disconnected
(1013). What the agent host calls here is synchronous, never blocks and never raises:
nothing a client or a log holds can raise into the writer, and a state that cannot be
sent closes that connection (1011). Each message pushed to every client is encoded once
(``_Texts``).

This is its own module because it is the part of the server every state change and
broadcast goes through (the fan-out's hot path); admitting a handshake and reading what
a client sends are ``websocket.py``'s and ``inbound.py``'s.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import msgspec
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from eventwf.agent import Agent
from eventwf.model.codec import json_value
from eventwf.server.handshake import AgentRequest
from eventwf.server.handshake import close_reason as _reason
from eventwf.server.outbox import Outbox

__all__ = ["CLOSE_INTERNAL", "CLOSE_SHUTDOWN", "CLOSE_TOO_SLOW", "OUTBOUND_BYTES", "SLOW_GRACE",
           "Connection"]

logger = logging.getLogger("eventwf")
_JSON = msgspec.json.Encoder()
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_ids = itertools.count(1)

OUTBOUND_BYTES = 8 * 1024 * 1024  # per connection; one message of any size always fits
CLOSE_TOO_SLOW = (1013, "outbound queue full: client too slow")
CLOSE_SHUTDOWN = (1001, "server shutting down")
CLOSE_INTERNAL = (1011, "internal server error")
# After an overflow, a send already in flight gets this long to finish (so the close frame
# can follow it); a client that reads nothing at all is then cut off at the TCP level.
SLOW_GRACE = 10.0


class _Texts:
    """The JSON text of the message being pushed, encoded once for every client.

    A state change or a broadcast is pushed to every client in one synchronous loop: the
    (object, position) pair names it while it is held here. A state that cannot be
    encoded (one logged before states were checked) is reported once, as ``ValueError``.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, int | None] = (None, None)
        self._text: tuple[str, int] | ValueError = ("null", 4)

    def get(self, value: Any, position: int | None = None) -> tuple[str, int]:
        """(text, encoded size) of ``value``, or of its state message at ``position``."""
        if self._key[0] is not value or self._key[1] != position:
            self._key = (value, position)
            self._text = self._encode(value, position)
        if isinstance(self._text, ValueError):
            raise self._text
        return self._text

    @staticmethod
    def _encode(value: Any, position: int | None) -> tuple[str, int] | ValueError:
        message = value if position is None else {"type": "state", "state": value,
                                                  "position": position}
        try:
            data = _JSON.encode(message)
        except _ENCODE_ERRORS as exc:
            what = "a message" if position is None else f"the state at log position {position}"
            logger.error("%s cannot be sent to clients as JSON (%s); its clients are "
                         "disconnected with 1011", what, exc)
            return ValueError(f"{what} cannot be sent as JSON: {exc}")
        return data.decode(), len(data)


_texts = _Texts()


class Connection:
    """One client of one agent, as the agent's hooks see it.

    ``remote`` is the client's ``(host, port)`` (None when it cannot be known);
    ``connected_us`` the engine's time (epoch µs, the clock of the log's event times) when
    the handshake was accepted.
    """

    def __init__(self, ws: WebSocketConnection, request: AgentRequest, agent: Agent,
                 connected_us: int = 0) -> None:
        self.id = f"c{next(_ids)}"
        self.agent = agent
        self.path = request.path
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in request.headers}
        self.remote = request.remote  # (host, port), or None where it cannot be known
        self.connected_us = connected_us
        self._ws = ws
        self._outbox = Outbox(OUTBOUND_BYTES)
        self._wake = trio.Event()
        self._send_scope: trio.CancelScope | None = None
        self.close_reason: tuple[int, str] | None = None
        self.aborted = False  # cut off without a close frame (it stopped reading entirely)

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.path[:200]}>"

    @property
    def queued_bytes(self) -> int:
        """What waits in this connection's outbound queue (at most ``OUTBOUND_BYTES``)."""
        return self._outbox.size

    # -- what the agent host calls (synchronous, never blocks, never raises) -------------

    def push_state(self, state: Any, position: int) -> None:
        if self.close_reason is not None or position <= self._outbox.position:
            return
        try:
            text, size = _texts.get(state, position)
        except ValueError as exc:
            self._fail(*_reason(1011, str(exc)))
            return
        self._put(text, size, position)

    def push_message(self, message: Any) -> None:
        if self.close_reason is not None:
            return
        try:
            text, size = _texts.get(message)
        except ValueError as exc:
            self._fail(*_reason(1011, str(exc)))
            return
        self._put(text, size)

    def send(self, message: Any) -> None:
        """Queue a message for this client (not logged); ``ValueError`` unless JSON data."""
        self.push_message(json_value(message, "message to a client", logged=False))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close this connection (after what is already queued is sent)."""
        self._stop(*_reason(code, reason))

    def _put(self, text: str, size: int, position: int | None = None) -> None:
        if self._outbox.put(text, size, position=position):
            self._wake.set()
            return
        self._fail(*CLOSE_TOO_SLOW)
        if self._send_scope is not None:  # a send is stuck: bound how long it may take
            self._send_scope.deadline = trio.current_time() + SLOW_GRACE

    def _fail(self, code: int, reason: str) -> None:
        """Close at once: what is still queued is dropped."""
        self._outbox.clear()
        self._stop(code, reason)

    def _stop(self, code: int, reason: str) -> None:
        if self.close_reason is None:
            self.close_reason = (code, reason)
            self._wake.set()

    # -- the task ------------------------------------------------------------------------

    async def sender(self) -> None:
        """Send queued messages until the connection is closed (by either side).

        One cancel scope covers the loop (not one per message: this is the fan-out's hot
        path); only an overflow gives it a deadline, ``SLOW_GRACE`` from then.
        """
        try:
            with trio.CancelScope() as scope:
                self._send_scope = scope
                while True:
                    text = self._outbox.get()
                    if text is not None:
                        await self._ws.send_message(text)
                        continue
                    if self.close_reason is not None:
                        return
                    self._wake = trio.Event()
                    await self._wake.wait()
            self.aborted = scope.cancelled_caught  # the grace ran out: cut it off
        except ConnectionClosed:
            return
        finally:
            self._send_scope = None

