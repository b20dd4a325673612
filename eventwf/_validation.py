"""Input checks shared by every layer: durations, names, ids, metadata keys, JSON data.

Each function either returns the normalised value or raises ``ValueError`` naming the
bad input, so callers validate before anything is logged.
"""

from __future__ import annotations

import math
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_NAME_LENGTH",
    "check_agent_name",
    "check_binding_name",
    "check_event_type",
    "check_json_data",
    "check_metadata",
    "check_step_name",
    "check_workflow_id",
    "metadata_key_path",
    "new_workflow_id",
    "parse_duration",
    "parse_instant",
    "shorten",
]

MAX_NAME_LENGTH = 256
_UNITS = {
    "millisecond": 0.001,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s+([a-z]+?)s?\s*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_WORKFLOW_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}\Z")
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-"
_META_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}\Z")
MAX_METADATA_KEYS = 64
MAX_METADATA_DEPTH = 32


def parse_duration(value: object, *, what: str = "duration", allow_zero: bool = True) -> float:
    """Seconds from a number, a ``timedelta`` or ``"<n> <unit>"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: expected seconds, a timedelta or '<n> <unit>'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"invalid {what} {value!r}: too large") from None
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION_RE.match(value.lower())
        unit = match.group(2) if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"invalid {what} {value!r}: expected '<n> <unit>' with unit one of "
                "millisecond(s), second(s), minute(s), hour(s), day(s), week(s)"
            )
        seconds = float(match.group(1)) * _UNITS[unit]
    else:
        raise ValueError(f"invalid {what} {value!r}: expected seconds, a timedelta or '<n> <unit>'")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(f"invalid {what} {value!r}: must be a finite, non-negative duration")
    if not allow_zero and seconds == 0:
        raise ValueError(f"invalid {what} {value!r}: must be greater than zero")
    return seconds


def parse_instant(value: object) -> float:
    """Epoch seconds from an aware ``datetime`` or a number of epoch seconds."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            raise ValueError(f"invalid instant {value!r}: datetimes must be timezone-aware")
        return value.timestamp()
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"invalid instant {value!r}: too large") from None
        if math.isfinite(seconds):
            return seconds
    raise ValueError(f"invalid instant {value!r}: expected an aware datetime or epoch seconds")


def check_step_name(name: object) -> str:
    """Step names are 1-256 characters without control characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"invalid step name {name!r}: must be a string of 1-256 characters")
    if _CONTROL_RE.search(name):
        raise ValueError(f"invalid step name {name!r}: control characters are not allowed")
    return name


def check_event_type(event_type: object) -> str:
    """Event types follow the step-name rules (matched exactly, FIFO per type)."""
    if not isinstance(event_type, str) or not event_type or len(event_type) > MAX_NAME_LENGTH:
        raise ValueError(
            f"invalid event type {event_type!r}: must be a string of 1-256 characters"
        )
    if _CONTROL_RE.search(event_type):
        raise ValueError(f"invalid event type {event_type!r}: control characters are not allowed")
    return event_type


def check_workflow_id(workflow_id: object) -> str:
    """Workflow ids match ``[A-Za-z0-9_][A-Za-z0-9_-]{0,99}``."""
    if not isinstance(workflow_id, str) or not _WORKFLOW_ID_RE.match(workflow_id):
        raise ValueError(
            f"invalid workflow id {workflow_id!r}: must match [A-Za-z0-9_][A-Za-z0-9_-]{{0,99}}"
        )
    return workflow_id


def new_workflow_id() -> str:
    """A fresh ``wf_`` id: 21 random characters, never starting with ``-``."""
    return "wf_" + "".join(_ID_ALPHABET[b & 63] for b in secrets.token_bytes(21))


def check_agent_name(name: object) -> str:
    """Agent instance names are 1-256 characters without control characters."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"invalid agent name {name!r}: must be a string of 1-256 characters")
    if _CONTROL_RE.search(name):
        raise ValueError(f"invalid agent name {name!r}: control characters are not allowed")
    return name


def check_binding_name(name: object) -> str:
    """Workflow binding names are 1-64 characters without control characters."""
    if not isinstance(name, str) or not name or len(name) > 64 or _CONTROL_RE.search(name):
        raise ValueError(
            f"invalid workflow binding name {name!r}: must be 1-64 characters without "
            "control characters"
        )
    return name


def check_metadata(metadata: object) -> dict[str, Any] | None:
    """Tracking metadata: a JSON object whose keys (at every depth) are plain identifiers.

    Keys are restricted so that a query key either names stored data exactly or matches
    nothing; values may be any JSON value.
    """
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise ValueError(f"invalid metadata {metadata!r}: must be a dict or None")
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"invalid metadata: {len(metadata)} keys, at most {MAX_METADATA_KEYS}")
    _check_metadata_value(metadata, "", 0)
    return metadata


def _check_metadata_value(value: object, where: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"invalid metadata: nested deeper than {MAX_METADATA_DEPTH} levels "
                         f"at {where[:80]!r}")
    if isinstance(value, dict):
        for key, inner in value.items():
            if not isinstance(key, str) or not _META_SEGMENT_RE.match(key):
                raise ValueError(
                    f"invalid metadata key {key!r}{' under ' + where if where else ''}: keys "
                    "must match [A-Za-z0-9_][A-Za-z0-9_-]{0,63}"
                )
            _check_metadata_value(inner, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _check_metadata_value(inner, f"{where}[{index}]", depth + 1)
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError(f"invalid metadata value at {where!r}: {value!r} is not a JSON value")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"invalid metadata value at {where!r}: {value!r} is not finite")


def metadata_key_path(key: object) -> str | None:
    """The SQLite JSON path for a query key (``"a.b"`` is nested), or None if it cannot match.

    Stored keys are validated by :func:`check_metadata`, so a key with any other character
    names nothing: the query then matches no rows instead of reaching the JSON parser.
    """
    if not isinstance(key, str):
        return None
    segments = key.split(".")
    if not all(_META_SEGMENT_RE.match(segment) for segment in segments):
        return None
    return "$" + "".join(f'."{segment}"' for segment in segments)


def utc_from_us(us: int) -> datetime:
    """An aware UTC datetime from integer microseconds since the epoch."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


# -- JSON data: what clients receive and what is stored as JSON -----------------------------

MAX_JSON_DEPTH = 128
_JSON_SCALARS = frozenset({str, int, bool, type(None)})  # float is checked apart (finite)
_Where = tuple[Any, str | int] | None  # (the parent's where, key or index): a path, built lazily


def check_json_data(value: object, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """``ValueError`` naming where ``value`` is not JSON data that clients read as it is held.

    JSON data (agents.md A7): None, bool, int, finite float, str, list or tuple of JSON
    data, dict with str keys and JSON-data values, nested at most ``max_depth`` containers
    deep; also bytes and datetimes, which clients receive as base64 and RFC 3339 strings.
    Expects a value as the codec decodes it (exact builtin types). The walk is a loop, so
    any depth gets this error, never ``RecursionError``.
    """
    todo: list[tuple[Any, int, _Where]] = [(value, 0, None)]
    while todo:
        node, depth, where = todo.pop()
        kind = type(node)
        if kind is dict or kind is list or kind is tuple:
            if depth >= max_depth:
                raise ValueError(f"{what} is not JSON data: nested deeper than {max_depth} "
                                 f"levels at {_path(where)}")
            if kind is dict:
                for key, inner in node.items():
                    if type(key) is not str:
                        raise ValueError(
                            f"{what} is not JSON data: key {shorten(key)} "
                            f"({type(key).__name__}) at {_path(where)} is not a str (JSON "
                            "object keys are strings)")
                    if type(inner) not in _JSON_SCALARS:
                        todo.append((inner, depth + 1, (where, key)))
            else:
                todo.extend((inner, depth + 1, (where, index)) for index, inner in enumerate(node)
                            if type(inner) not in _JSON_SCALARS)
        elif kind is float:
            if not math.isfinite(node):
                raise ValueError(f"{what} is not JSON data: {node!r} at {_path(where)} (JSON "
                                 "has no NaN or Infinity)")
        elif kind not in _JSON_SCALARS and kind is not bytes and kind is not datetime:
            raise ValueError(f"{what} is not JSON data: {shorten(node)} "
                             f"({kind.__module__}.{kind.__qualname__}) at {_path(where)}")


def _path(where: _Where) -> str:
    """``$.a[3].b`` for a ``where`` chain (the root is ``$``); deep paths keep both ends."""
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f".{shorten(key, 40, quote=False)}")
    parts.reverse()
    if len(parts) > 8:
        parts[3:-4] = [f"…({len(parts) - 7} more)…"]
    return "$" + "".join(parts)


def shorten(value: object, limit: int = 80, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to about ``limit`` characters.

    For error messages, close reasons and answers that name a client's input: they never
    echo it unbounded.
    """
    if isinstance(value, str | bytes) and len(value) > limit:  # cut before repr: it may be huge
        cut = value[:limit]
        text = repr(cut) if quote else str(cut)
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{text[:limit]}… ({len(value):,} {unit})"
    text = repr(value) if quote else str(value)
    return text if len(text) <= limit else f"{text[:limit]}…"
