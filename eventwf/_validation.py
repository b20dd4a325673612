"""Input checks shared by every layer: durations, names, ids, metadata keys.

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
    "MAX_NAME_LENGTH",
    "check_agent_name",
    "check_binding_name",
    "check_event_type",
    "check_metadata",
    "check_step_name",
    "check_workflow_id",
    "metadata_key_path",
    "new_workflow_id",
    "parse_duration",
    "parse_instant",
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
