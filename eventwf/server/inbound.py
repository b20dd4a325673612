"""What a client sends: frames parsed into messages, RPC calls answered (P6-P9).

A frame must be a JSON object of JSON data (``check_json_data``: at most
``MAX_JSON_DEPTH`` levels, so nothing deeper ever reaches a hook or raises
``RecursionError``); anything else earns a close (code, reason) for that connection
alone. An RPC answer names the client's input only in part (``shorten``), so a client
cannot make the server queue copies of its own huge text.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from eventwf.agent import call_method, is_callable
from eventwf.model.codec import json_value
from eventwf.model.json_data import MAX_JSON_DEPTH, check_json_data
from eventwf.model.values import shorten
from eventwf.server.handshake import close_reason

__all__ = ["MAX_RPC_ERROR", "MAX_RPC_ID", "answer_rpc", "parse_frame"]

MAX_RPC_ID = 256  # characters; a longer (or non-str) id is answered with "id": null
MAX_RPC_ERROR = 1000  # characters of an error answer
_DECODE = msgspec.json.Decoder()


class Caller(Protocol):
    """The connection an RPC came on: its agent, and where the answer goes."""

    @property
    def agent(self) -> Any: ...
    def push_message(self, message: Any) -> None: ...


def parse_frame(raw: str | bytes) -> dict[str, Any] | tuple[int, str]:
    """An inbound frame as a JSON object of JSON data, or the close (code, reason) it earns."""
    if isinstance(raw, bytes):
        return 1003, "binary frames are not supported: send JSON text"
    try:
        message = _DECODE.decode(raw)
    except msgspec.DecodeError:
        return 1007, "malformed message: not valid JSON"
    except RecursionError:  # deeper than the decoder goes: far over MAX_JSON_DEPTH
        return 1007, f"malformed message: nested deeper than {MAX_JSON_DEPTH} levels"
    if not isinstance(message, dict):
        return 1003, "malformed message: expected a JSON object"
    try:
        check_json_data(message, "the frame")
    except ValueError as exc:
        return close_reason(1007, f"malformed message: {exc}")
    return message


async def answer_rpc(caller: Caller, message: dict[str, Any]) -> None:
    """Call an ``@eventwf.callable`` method and queue the answer (P6, P7)."""
    call_id, method, args = message.get("id"), message.get("method"), message.get("args", [])
    answer_id = call_id if isinstance(call_id, str) and len(call_id) <= MAX_RPC_ID else None
    if answer_id is None or not isinstance(method, str) or not isinstance(args, list):
        _fail(caller, answer_id, f"malformed rpc: expected a str id of at most {MAX_RPC_ID} "
                                 "characters, a str method and a list of args")
        return
    fn = getattr(caller.agent, method, None) \
        if len(method) <= 256 and not method.startswith("_") else None
    if fn is None or not is_callable(fn):
        _fail(caller, answer_id, f"method {shorten(method, 80)} is not callable")
        return
    try:
        result = await call_method(caller.agent, method, fn, args)
        result = json_value(result, f"the result of {method!r}", logged=False)
    except Exception as exc:  # the caller gets the error; the connection stays open
        _fail(caller, answer_id, shorten(f"{type(exc).__name__}: {exc}", MAX_RPC_ERROR,
                                         quote=False))
        return
    caller.push_message({"type": "rpc", "id": answer_id, "success": True, "result": result})


def _fail(caller: Caller, call_id: str | None, error: str) -> None:
    caller.push_message({"type": "rpc", "id": call_id, "success": False, "error": error})
