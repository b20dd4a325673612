"""What each console page shows, as JSON-ready records read through the log tool.

Every function takes a log opened read-only by the log tool (``LogSource``) and returns
plain data; the records are the log tool's own ``--json`` records (``eventwf log PATH
workflow ID --json`` and friends), so the console and the terminal tool say the same
thing (specs/console.md CN2). Nothing here runs SQL: the log tool does (design.md D2b).
Blocking: call these in a worker thread.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from eventwf.apps.console import tail as _tail
from eventwf.logtool import agentstate, pgverify, timeline, timeline_view, verify_view
from eventwf.logtool import workflows as listing_workflows
from eventwf.logtool.pgsource import PgLogSource
from eventwf.logtool.render import Output, to_json
from eventwf.logtool.source import LogSource
from eventwf.logtool.verify import verify as verify_log
from eventwf.store import is_url

__all__ = ["MAX_TAIL", "PAGE", "agent", "open_log", "overview", "parse_filter",
           "parse_metadata", "tail", "verify", "workflow"]

PAGE = 50  # workflows on a page of the listing (CN4)
MAX_TAIL = _tail.MAX_TAIL  # events the tail shows at most (CN7)
# key=value, the value a JSON string ("..."), or text up to the next comma
_PAIR = re.compile(r'\s*([^=,\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,]*?)\s*(?:,|$)')


def open_log(location: str) -> LogSource:
    """The log at ``location`` opened read-only: an SQLite file, or a PostgreSQL database
    by its ``postgresql://`` URL (CN15)."""
    return PgLogSource(location) if is_url(location) else LogSource(location)


def _records(write: Callable[[Output], object]) -> list[dict[str, Any]]:
    """The JSON records a log-tool renderer writes, parsed back into dicts."""
    buffer = io.StringIO()
    write(Output(json=True, stream=buffer))
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def parse_metadata(text: str) -> tuple[tuple[str, Any], ...]:
    """``key=value`` pairs separated by commas (CN16): a value in double quotes is a
    string (JSON), else one JSON scalar (``1``, ``2.5``, ``true``, ``null``) is itself,
    and anything else is a string (``region=eu``); ``ValueError`` names a bad pair."""
    pairs: list[tuple[str, Any]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        found = _PAIR.match(text, position)
        if found is None or found.end() == position:
            raise ValueError(f"metadata filter {text[position:][:80]!r} is not key=value "
                             "(pairs separated by commas)")
        key, raw = found.group(1), found.group(2)
        try:
            value: Any = json.loads(raw)
        except ValueError:
            if raw.startswith('"'):
                raise ValueError(f"metadata filter value {raw[:80]!r} for {key!r} is not a "
                                 "JSON string") from None
            value = raw
        if isinstance(value, list | dict):
            value = raw  # only scalars compare: a bracketed text is text
        pairs.append((key, value))
        position = found.end()
    return tuple(pairs)


def parse_filter(query: Mapping[str, str]) -> listing_workflows.WorkflowFilter:
    """The listing's filter from query parameters: ``status``, ``name``, ``agent``
    (``Class`` or ``Class/name``), ``meta`` (``key=value`` pairs, :func:`parse_metadata`)."""
    agent_class, _, agent_name = query.get("agent", "").partition("/")
    return listing_workflows.WorkflowFilter(
        status=query.get("status") or None, workflow_name=query.get("name") or None,
        agent_class=agent_class or None, agent_name=agent_name or None,
        metadata=parse_metadata(query.get("meta", "")))


def overview(log: LogSource, query: Mapping[str, str], limit: int = PAGE) -> dict[str, Any]:
    """Counts per status and one page of ``limit`` workflows of the filtered listing
    (CN3, CN4); ``ValueError`` for a bad cursor or limit."""
    found = listing_workflows.page(log, parse_filter(query), limit=limit,
                                   cursor=query.get("cursor") or None)
    return {
        "record": "overview", "head": log.head(),
        "counts": listing_workflows.status_counts(log),
        "filter": {k: query.get(k, "") for k in ("status", "name", "agent", "meta")},
        "workflows": [json.loads(to_json(row)) for row in found.rows],
        "next_cursor": found.next_cursor, "limit": limit,
    }


def workflow(log: LogSource, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's header, runs, steps, status changes and received events (CN5)."""
    built = timeline.build(log, workflow_id)  # NotFound for an unknown id
    return _records(lambda out: timeline_view.render(built, out))


Clients = Callable[[str, str], list[dict[str, Any]]]  # (class, name) -> connected clients


def agent(log: LogSource, agent_class: str, name: str, at: int | None,
          clients: Clients | None = None) -> list[dict[str, Any]]:
    """An agent's state now or as of log position ``at``, its state changes, its
    callback outbox with the delivery cursor, and its connected clients as ``clients``
    (the live engine's, when mounted) tells them; a log alone cannot (CN6, CN18)."""
    records = _records(lambda out: agentstate.agent(log, out, agent_class, name, at=at,
                                                    history=True, outbox=True))
    if clients is None:
        kind = "database" if isinstance(log, PgLogSource) else "file"
        records.append({"record": "clients", "available": False, "clients": [],
                        "note": f"not available: read from the log {kind}, not from a "
                                "running engine (mount the console with eventwf.serve(..., "
                                "console=True) to see them)"})
    else:
        records.append({"record": "clients", "available": True, "note": "",
                        "clients": clients(agent_class, name)})
    return records


def tail(log: LogSource, query: Mapping[str, str], count: int, after: int | None
         ) -> list[dict[str, Any]]:
    """The newest ``count`` events matching the query's filter, or those after ``after``
    (the live tail), then the ``tail`` record (CN7, CN16; ``tail.py``)."""
    return _tail.tail(log, _tail.parse_filter(query), count, after)


def verify(location: str) -> list[dict[str, Any]]:
    """``verify``'s problems and verdict (the last record) for the log at ``location``,
    a file or a PostgreSQL URL (CN7)."""
    report = pgverify.verify(location) if is_url(location) else verify_log(location)
    return _records(lambda out: verify_view.render(report, out))
