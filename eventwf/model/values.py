"""Input checks shared by every layer: durations, names, ids, metadata keys and filters.

Each function either returns the normalised value or raises ``ValueError`` naming the
bad input, so callers validate before anything is logged.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

__all__ = [
    "MAX_FILTER_KEYS",
    "MAX_METADATA_BYTES",
    "MAX_NAME_LENGTH",
    "check_agent_name",
    "check_binding_name",
    "check_event_type",
    "check_metadata",
    "check_step_name",
    "check_workflow_id",
    "created_before_us",
    "is_binding_name",
    "is_workflow_id",
    "metadata_filter",
    "metadata_key_path",
    "new_workflow_id",
    "parse_duration",
    "parse_instant",
    "shorten",
    "status_filter",
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
MAX_METADATA_BYTES = 64 * 1024  # encoded; so no stored string is longer
MAX_FILTER_KEYS = 64
_INT64_MIN, _INT64_END = -(1 << 63), 1 << 63  # SQLite's INTEGER range: [min, end)


def _is_text(value: str) -> bool:
    """No control characters, and encodable as UTF-8 (no lone surrogates): it can be logged."""
    if _CONTROL_RE.search(value):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def parse_duration(value: object, *, what: str = "duration", allow_zero: bool = True) -> float:
    """Seconds from a number, a ``timedelta`` or ``"<n> <unit>"``; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {value!r}: expected seconds, a timedelta or '<n> <unit>'")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"invalid {what} {shorten(value)}: too large") from None
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION_RE.match(value.lower())
        unit = match.group(2) if match else ""
        if match is None or unit not in _UNITS:
            raise ValueError(
                f"invalid {what} {shorten(value)}: expected '<n> <unit>' with unit one of "
                "millisecond(s), second(s), minute(s), hour(s), day(s), week(s)"
            )
        seconds = float(match.group(1)) * _UNITS[unit]
    else:
        raise ValueError(
            f"invalid {what} {shorten(value)}: expected seconds, a timedelta or '<n> <unit>'")
    if math.isnan(seconds) or math.isinf(seconds) or seconds < 0:
        raise ValueError(
            f"invalid {what} {shorten(value)}: must be a finite, non-negative duration")
    if not allow_zero and seconds == 0:
        raise ValueError(f"invalid {what} {shorten(value)}: must be greater than zero")
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
            raise ValueError(f"invalid instant {shorten(value)}: too large") from None
        if math.isfinite(seconds):
            return seconds
    raise ValueError(
        f"invalid instant {shorten(value)}: expected an aware datetime or finite epoch seconds")


def _check_name(name: object, what: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """Names are 1-``max_length`` characters of text: no control characters, valid UTF-8."""
    if not isinstance(name, str) or not name or len(name) > max_length:
        raise ValueError(f"invalid {what} {shorten(name)}: must be a string of 1-{max_length} "
                         "characters")
    if not _is_text(name):
        raise ValueError(f"invalid {what} {shorten(name)}: control characters and lone "
                         "surrogates are not allowed")
    return name


def check_step_name(name: object) -> str:
    """Step names are 1-256 characters without control characters."""
    return _check_name(name, "step name")


def check_patch_id(patch_id: object) -> str:
    """Patch ids (``step.patched``) follow the step-name rules."""
    return _check_name(patch_id, "patch id")


def check_event_type(event_type: object) -> str:
    """Event types follow the step-name rules (matched exactly, FIFO per type)."""
    return _check_name(event_type, "event type")


def is_workflow_id(workflow_id: object) -> TypeGuard[str]:
    return isinstance(workflow_id, str) and _WORKFLOW_ID_RE.match(workflow_id) is not None


def check_workflow_id(workflow_id: object) -> str:
    """Workflow ids match ``[A-Za-z0-9_][A-Za-z0-9_-]{0,99}``."""
    if not is_workflow_id(workflow_id):
        raise ValueError(
            f"invalid workflow id {shorten(workflow_id)}: must match "
            "[A-Za-z0-9_][A-Za-z0-9_-]{0,99}"
        )
    return workflow_id


def new_workflow_id() -> str:
    """A fresh ``wf_`` id: 21 random characters, never starting with ``-``."""
    return "wf_" + "".join(_ID_ALPHABET[b & 63] for b in secrets.token_bytes(21))


def check_agent_name(name: object) -> str:
    """Agent instance names are 1-256 characters without control characters."""
    return _check_name(name, "agent name")


def is_binding_name(name: object) -> TypeGuard[str]:
    return isinstance(name, str) and 0 < len(name) <= 64 and _is_text(name)


def check_binding_name(name: object) -> str:
    """Workflow binding names are 1-64 characters without control characters."""
    if not is_binding_name(name):
        raise ValueError(
            f"invalid workflow binding name {shorten(name)}: must be 1-64 characters without "
            "control characters or lone surrogates"
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
    if not isinstance(key, str) or len(key) > _MAX_KEY_PATH:
        return None
    segments = key.split(".")
    if len(segments) > MAX_METADATA_DEPTH or not all(
            _META_SEGMENT_RE.match(segment) for segment in segments):
        return None
    return "$" + "".join(f'."{segment}"' for segment in segments)


# -- query inputs (specs/agents.md T10-T12) ------------------------------------------------

_MAX_KEY_PATH = MAX_METADATA_DEPTH * 65  # 32 segments of at most 64 characters, and dots


def status_filter(status: object, known: tuple[str, ...]) -> list[str] | None:
    """The statuses a query asks for (None: any), each once: one of ``known`` or a collection."""
    if status is None:
        return None
    if isinstance(status, str):
        values: Collection[object] = [status]
    elif isinstance(status, bytes | bytearray | Mapping) or not isinstance(status, Collection):
        raise ValueError(f"invalid status filter {shorten(status)}: must be a status or a list "
                         "of statuses")
    else:
        values = status
    wanted: set[str] = set()
    for value in values:
        if not isinstance(value, str) or value not in known:
            raise ValueError(f"invalid status {shorten(value)}: must be one of {', '.join(known)}")
        wanted.add(value)
    return [s for s in known if s in wanted]


def metadata_filter(metadata: object) -> list[tuple[str | None, Any]]:
    """(JSON path, value) pairs for a metadata filter; the path is None where nothing can match.

    A key that could not have been stored, or a value that no stored metadata can hold
    (a non-finite float; a string that is not UTF-8 or longer than metadata may be), matches
    nothing. Other values are bound as they are: SQL compares them exactly (T4).
    """
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        raise ValueError(f"invalid metadata filter {shorten(metadata)}: must be a dict")
    if len(metadata) > MAX_FILTER_KEYS:
        raise ValueError(f"invalid metadata filter: {len(metadata):,} keys, at most "
                         f"{MAX_FILTER_KEYS}")
    pairs: list[tuple[str | None, Any]] = []
    for key, value in metadata.items():
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ValueError(f"invalid metadata filter value {shorten(value)} for {shorten(key)}: "
                             "must be a str, int, float, bool or None")
        pairs.append((metadata_key_path(key) if _storable(value) else None, value))
    return pairs


def _storable(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        if len(value) > MAX_METADATA_BYTES:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


def created_before_us(value: object) -> int | None:
    """``created_before`` as a strict bound in µs; None when every record is before it.

    Any finite instant is answered exactly: one beyond SQLite's 64-bit range selects
    everything (far future) or nothing (far past, as the bound ``-2**63``).
    """
    seconds = parse_instant(value)
    if seconds * 1e6 >= _INT64_END:
        return None
    if seconds * 1e6 < _INT64_MIN:
        return _INT64_MIN
    return int(round(seconds * 1_000_000))


def utc_from_us(us: int) -> datetime:
    """An aware UTC datetime from integer microseconds since the epoch."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


# -- JSON data: what clients receive and what is stored as JSON -----------------------------

def shorten(value: object, limit: int = 260, *, quote: bool = True) -> str:
    """``repr(value)`` (or ``str`` with ``quote=False``) cut to about ``limit`` characters.

    For error messages, close reasons and answers that name a caller's or a client's
    input: they never echo megabytes of it, and never fail on an int too long to print
    or a list too deep to show.
    """
    if isinstance(value, str | bytes) and len(value) > limit:  # cut before repr: it may be huge
        cut = value[:limit]
        text = repr(cut) if quote else str(cut)
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{text[:limit]}… ({len(value):,} {unit})"
    if isinstance(value, int) and value.bit_length() > 3 * limit:
        return f"<an int of {value.bit_length():,} bits>"
    try:
        text = repr(value) if quote else str(value)
    except (ValueError, RecursionError):
        return f"<a {type(value).__name__} too large to show>"
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"
