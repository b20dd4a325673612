"""The JSON of the inbox (specs/postgres.md PG15): requests, replies and the placeholder.

Why here, below the store: the owner's commit that applies a request also writes its
*placeholder* reply (``PENDING_REPLY``: "applied, result pending") in the transaction of
the request's first events, so the store writes the same encoding as the runtime reads.
JSON by msgspec, never pickle. A reply holds a result or an error's class name and
message; ``decode_reply`` raises the error again as the same eventwf (or built-in) class.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import msgspec

from eventwf import errors
from eventwf.errors import EventwfError, StorageError

__all__ = ["PENDING_REPLY", "InboxRequest", "decode_reply", "decode_request",
           "encode_reply", "encode_request", "is_pending"]


class InboxRequest(msgspec.Struct, frozen=True):
    """An ``Agent`` operation for the agent's owner: ``op`` with its arguments."""

    agent_class: str
    name: str
    op: str
    args: list[Any]
    kwargs: dict[str, Any]


class _Reply(msgspec.Struct, frozen=True):
    ok: bool
    result: Any = None
    error: str = ""
    message: str = ""
    pending: bool = False  # the placeholder: applied (logged), the result not written yet


_ENCODER = msgspec.json.Encoder()
_REMOTE_CLASSES: dict[str, type[EventwfError]] = {}

# The reply row written with a request's first events; the final reply replaces it. Compared
# as text by the statements (a requester reads only a reply that is not this one).
PENDING_REPLY = _ENCODER.encode(_Reply(False, pending=True)).decode()


def encode_request(agent_class: str, name: str, op: str, args: Sequence[Any],
                   kwargs: dict[str, Any]) -> str:
    """A request as JSON text; ``ValueError`` naming the operation for non-JSON arguments."""
    try:
        return _ENCODER.encode(InboxRequest(agent_class, name, op, list(args), kwargs)
                               ).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"the arguments of {op!r} for agent {agent_class}/{name} are not "
                         f"JSON data: {exc}") from exc


def decode_request(text: str) -> InboxRequest | None:
    """A request read from the inbox; None when it is malformed."""
    try:
        return msgspec.json.decode(text, type=InboxRequest)
    except msgspec.DecodeError:
        return None


def encode_reply(result: Any = None, error: BaseException | None = None) -> str:
    """A reply as JSON text: the result, or the error's class name and message."""
    if error is not None:
        reply = _Reply(False, error=type(error).__name__, message=str(error))
    else:
        reply = _Reply(True, result=result)
    try:
        return _ENCODER.encode(reply).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        return encode_reply(error=EventwfError(f"the result is not JSON data: {exc}"))


def is_pending(text: str) -> bool:
    """Whether a reply is the placeholder: applied, its result not written (yet)."""
    return text == PENDING_REPLY


def decode_reply(text: str) -> Any:
    """The result of a reply, or its error raised again as the same eventwf (or built-in)
    class; an error of any other class becomes an ``EventwfError`` subclass of its name.
    The placeholder raises ``StorageError``: the request was applied, its result is not
    known."""
    reply = msgspec.json.decode(text, type=_Reply)
    if reply.pending:
        raise StorageError("the request was applied (its events are logged) but its result "
                           "was not written")
    if reply.ok:
        return reply.result
    raise _error(reply.error, reply.message)


def _error(name: str, message: str) -> Exception:
    found = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            made = found(message)
        except TypeError:
            pass  # another signature (StepFailedError, UnexpectedStatusError)
        else:
            if isinstance(made, Exception):
                return made
    cls = _REMOTE_CLASSES.get(name)
    if cls is None:
        cls = _REMOTE_CLASSES[name] = type(name if name.isidentifier() else "RemoteError",
                                           (EventwfError,), {})
    return cls(message)
