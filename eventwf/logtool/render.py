"""Output: human times and durations, compact values, event one-liners, tables, JSON lines.

Human output is aligned text tables; ``--json`` output is one JSON object per line, encoded
with msgspec (events keep their ``t`` tag; bytes become base64 strings; a value JSON
cannot hold is written as its ``repr``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import msgspec

from eventwf.model.events import ErrorInfo, Event
from eventwf.store.sqlite.log import LogRow

from .rowview import RowView

__all__ = [
    "Output",
    "compact",
    "compact_text",
    "duration",
    "error_text",
    "event_details",
    "iso",
    "printable",
    "row_record",
    "to_json",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(time_us: int | None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2027-01-15T08:00:00.000Z``."""
    if time_us is None:
        return "-"
    try:
        moment = _EPOCH + timedelta(microseconds=time_us)
    except OverflowError:
        return f"{time_us}us"
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(us: float | None) -> str:
    """``850ms``, ``6.000s``, ``1h02m03s``, ``3d04h05m``: to the millisecond under a minute."""
    if us is None:
        return "-"
    sign, us = ("-", -int(us)) if us < 0 else ("", int(us))
    if us < 1_000_000:
        return f"{sign}{us / 1000:g}ms"
    if us < 60_000_000:
        return f"{sign}{us / 1_000_000:.3f}s"
    seconds = us // 1_000_000
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{secs:02d}s"
    return f"{sign}{minutes}m{secs:02d}s"


def _fallback(value: Any) -> Any:
    if isinstance(value, msgspec.msgpack.Ext):
        return {"msgpack_ext": value.code, "data": value.data}
    return repr(value)


_ENCODER = msgspec.json.Encoder(enc_hook=_fallback)


def to_json(value: Any) -> bytes:
    """JSON for any logged value; keys that JSON cannot hold become strings."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError, msgspec.EncodeError):
        return _ENCODER.encode(msgspec.to_builtins(value, str_keys=True, enc_hook=_fallback))


def compact(value: Any, limit: int | None = 80) -> str:
    """A value as compact JSON, cut to ``limit`` characters (None: whole)."""
    return compact_text(to_json(value).decode(), limit)


def error_text(error: ErrorInfo) -> str:
    return f"{error.type}: {error.message}"


_TIMES = frozenset({"wake_at_us", "retry_at_us", "timeout_at_us"})
_DURATIONS = frozenset({"delay_us", "duration_us", "timeout_us"})


def event_details(event: Event, limit: int | None = 80) -> str:
    """``key=value`` pairs of an event's non-default fields (errors as ``Type: message``)."""
    parts = []
    for name in event.__struct_fields__:
        value = getattr(event, name)
        if name != "seq" and value == _default(event, name):
            continue
        if isinstance(value, ErrorInfo):
            text = compact_text(error_text(value), limit)
        elif name in _TIMES and isinstance(value, int):
            text = iso(value)
        elif name in _DURATIONS and isinstance(value, int):
            text = duration(value)
        else:
            text = compact(value, limit)
        parts.append(f"{name.removesuffix('_us')}={text}")
    return " ".join(parts)


# Control characters (C0, DEL, C1), line and paragraph separators and bidirectional
# overrides, as escapes: a logged value (an error message, a payload, a stream name) can
# hold anything, and printed raw it would move the cursor, recolour or rewrite the
# terminal, or make a line read other than it is.
_ESCAPES = {code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))}
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_ESCAPES.update({code: f"\\u{code:04x}" for code in (0x2028, 0x2029, *range(0x202A, 0x202F),
                                                       *range(0x2066, 0x206A))})


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: every control character escaped."""
    return text.translate(_ESCAPES)


def compact_text(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def _default(event: Event, name: str) -> Any:
    fields = event.__struct_fields__
    defaults = event.__struct_defaults__
    index = fields.index(name) - (len(fields) - len(defaults))
    return defaults[index] if index >= 0 else msgspec.NODEFAULT


def row_record(item: RowView, *, complete: bool = False) -> dict[str, Any]:
    """The JSON form of one log row: place, time, type and the decoded event.

    ``complete`` adds the stored data (base64 msgpack) and hash: the row, losslessly.
    """
    row: LogRow = item.row
    record: dict[str, Any] = {
        "position": row.position,
        "stream": row.stream,
        "stream_position": row.stream_position,
        "time_us": row.time_us,
        "time": iso(row.time_us),
        "type": row.type,
    }
    if item.event is not None:
        record["event"] = item.event
    if item.problem is not None:
        record["problem"] = item.problem
    if complete or (item.problem is not None and item.event is None):
        record["data"] = bytes(row.data) if isinstance(row.data, bytes) else repr(row.data)
    if complete:
        record["hash"] = row.hash.hex() if isinstance(row.hash, bytes) else repr(row.hash)
    return record


class Output:
    """Where a command writes: text lines and tables, or JSON lines with ``--json``."""

    def __init__(self, json: bool = False, stream: TextIO | None = None) -> None:
        self.json = json
        self.stream = stream if stream is not None else sys.stdout

    def line(self, text: str = "") -> None:
        """One line of text output, its control characters escaped (``printable``)."""
        self.stream.write(printable(text) + "\n")

    def record(self, record: Mapping[str, Any]) -> None:
        self.stream.write(to_json(record).decode() + "\n")

    def flush(self) -> None:
        self.stream.flush()

    def table(self, headers: Sequence[str], rows: Iterable[Sequence[Any]],
              indent: str = "") -> None:
        """An aligned table; the last column is never padded (it may be long)."""
        cells = [[printable(str(c)) for c in row] for row in rows]  # widths as printed
        widths = [len(h) for h in headers]
        for row in cells:
            for i, cell in enumerate(row[:-1]):
                widths[i] = max(widths[i], len(cell))
        for row in [list(headers), *cells]:
            padded = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
            self.line((indent + "  ".join([*padded, row[-1]])).rstrip())

    def stream_table(self, widths: Sequence[int], row: Sequence[Any]) -> None:
        """One row of a table printed as it streams, with fixed minimum widths."""
        padded = [printable(str(c)).ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        self.line("  ".join([*padded, str(row[-1])]).rstrip())
