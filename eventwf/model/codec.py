"""The codec: events and user values to msgpack bytes and back.

One encoder and one decoder, made once. Decoding a logged row never lets anything but
``CorruptLogError`` escape (msgspec's errors, ``UnicodeDecodeError`` and ``RecursionError``
are translated here), and user values are checked for size before anything is logged.
"""

from __future__ import annotations

from typing import Any

import msgspec

from eventwf.errors import CorruptLogError, PayloadTooLargeError
from eventwf.model.events import EVENT_TYPES, AnyEvent, Event
from eventwf.model.json_data import MAX_VALUE_DEPTH, check_json_data, nested_deeper

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "OUTCOME_TYPES",
    "decode_event",
    "decode_value",
    "encode_event",
    "encode_value",
    "event_type",
    "outcome_seq",
    "json_value",
    "roundtrip_value",
]

MAX_PAYLOAD_BYTES = 1024 * 1024

_ENCODER = msgspec.msgpack.Encoder()
_EVENT_DECODER = msgspec.msgpack.Decoder(AnyEvent)
_VALUE_DECODER = msgspec.msgpack.Decoder()
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


# The types of steps' outcomes (most of a log), and a decoder of their command number alone:
# a rebuild whose rows another process decodes in full reads only that (no value is built).
OUTCOME_TYPES = frozenset({"step.succeeded", "step.failed"})


class _Numbered(msgspec.Struct):
    seq: int


_SEQ_DECODER = msgspec.msgpack.Decoder(_Numbered)


def outcome_seq(data: bytes) -> int:
    """The command number of a step outcome's data; ``-1`` if it has none (undecodable
    data is found, with its position, by the pass that decodes the row in full)."""
    try:
        return _SEQ_DECODER.decode(data).seq
    except _DECODE_ERRORS:
        return -1


def event_type(event: Event) -> str:
    return str(event.__struct_config__.tag)


def encode_event(event: Event) -> bytes:
    return _ENCODER.encode(event)


def decode_event(type_name: str, data: bytes, *, position: int | None = None) -> Event:
    """Decode one logged event; anything unreadable is a ``CorruptLogError`` naming its position."""
    if type_name in EVENT_TYPES:
        try:
            event: Event = _EVENT_DECODER.decode(data)
        except _DECODE_ERRORS:
            pass  # reported with its position below
        else:
            if event.__class__ is EVENT_TYPES[type_name]:
                return event
    return _decode_slowly(type_name, data, position)


def _decode_slowly(type_name: str, data: bytes, position: int | None) -> Event:
    """The same decode, on a row known to be bad: it raises the precise ``CorruptLogError``."""
    where = f"event at log position {position}" if position is not None else "event"
    if type_name not in EVENT_TYPES:
        raise CorruptLogError(
            f"{where} has type {type_name!r}, which this eventwf version does not know; "
            "it was written by a newer eventwf or damaged. Upgrade eventwf to replay it.",
            position=position,
        )
    try:
        event: Event = _EVENT_DECODER.decode(data)
    except _DECODE_ERRORS as exc:
        raise CorruptLogError(
            f"{where} ({type_name}) cannot be decoded: {exc}", position=position
        ) from exc
    if event.__class__ is not EVENT_TYPES[type_name]:
        raise CorruptLogError(
            f"{where} says type {type_name!r} but its data is {event_type(event)!r}",
            position=position,
        )
    return event


def encode_value(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES,
                 problem: str = "cannot be logged") -> bytes:
    """Encode a user value; ``ValueError`` if it cannot be, ``PayloadTooLargeError`` if too big."""
    try:
        data = _ENCODER.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{what} {problem}: {exc}") from exc
    if len(data) > limit:
        raise PayloadTooLargeError(
            f"{what} is {len(data):,} bytes encoded; the limit is {limit:,} bytes "
            f"({limit / 1024 / 1024:g} MiB)" if limit >= 1 << 20 else
            f"{what} is {len(data):,} bytes encoded; the limit is {limit:,} bytes")
    # a value nested d deep takes at least d bytes: only a long one can be too deep
    if len(data) > MAX_VALUE_DEPTH and nested_deeper(value):
        raise ValueError(f"{what} {problem}: nested deeper than {MAX_VALUE_DEPTH} levels")
    return data


def decode_value(data: bytes) -> Any:
    return _VALUE_DECODER.decode(data)


def roundtrip_value(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES) -> Any:
    """The value exactly as a replay will see it (tuples become lists, and so on)."""
    return _VALUE_DECODER.decode(encode_value(value, what, limit=limit))


def json_value(value: Any, what: str, *, limit: int = MAX_PAYLOAD_BYTES,
               logged: bool = True) -> Any:
    """``value`` as the log holds it and clients receive it; ``ValueError`` if it cannot be.

    The one check for every value sent to clients or stored as JSON (agent state, initial
    states, broadcasts, RPC results, workflow metadata; agents.md A7): it must encode within
    ``limit`` and, as decoded, be JSON data (``check_json_data``), so a push never fails.
    ``logged=False`` (broadcasts, answers) only words the error for a value never logged.
    """
    problem = "cannot be logged" if logged else "cannot be sent as JSON"
    decoded = _VALUE_DECODER.decode(encode_value(value, what, limit=limit, problem=problem))
    check_json_data(decoded, what)
    return decoded
