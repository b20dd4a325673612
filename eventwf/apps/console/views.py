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
from collections.abc import Callable, Mapping
from typing import Any

from eventwf.logtool import agentstate, listing, timeline, timeline_view, verify_view
from eventwf.logtool import workflows as listing_workflows
from eventwf.logtool.render import Output, to_json
from eventwf.logtool.source import LogSource
from eventwf.logtool.verify import verify as verify_log

__all__ = ["MAX_TAIL", "PAGE", "agent", "overview", "parse_filter", "tail", "verify", "workflow"]

PAGE = 50  # workflows on a page of the listing (CN4)
MAX_TAIL = 500  # events the tail shows at most (CN6)


def _records(write: Callable[[Output], object]) -> list[dict[str, Any]]:
    """The JSON records a log-tool renderer writes, parsed back into dicts."""
    buffer = io.StringIO()
    write(Output(json=True, stream=buffer))
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def parse_filter(query: Mapping[str, str]) -> listing_workflows.WorkflowFilter:
    """The listing's filter from query parameters: ``status``, ``name``, ``agent``
    (``Class`` or ``Class/name``)."""
    agent_class, _, agent_name = query.get("agent", "").partition("/")
    return listing_workflows.WorkflowFilter(
        status=query.get("status") or None, workflow_name=query.get("name") or None,
        agent_class=agent_class or None, agent_name=agent_name or None)


def overview(log: LogSource, query: Mapping[str, str], limit: int = PAGE) -> dict[str, Any]:
    """Counts per status and one page of ``limit`` workflows of the filtered listing
    (CN3, CN4); ``ValueError`` for a bad cursor or limit."""
    found = listing_workflows.page(log, parse_filter(query), limit=limit,
                                   cursor=query.get("cursor") or None)
    return {
        "record": "overview", "head": log.head(),
        "counts": listing_workflows.status_counts(log),
        "filter": {k: query.get(k, "") for k in ("status", "name", "agent")},
        "workflows": [json.loads(to_json(row)) for row in found.rows],
        "next_cursor": found.next_cursor, "limit": limit,
    }


def workflow(log: LogSource, workflow_id: str) -> list[dict[str, Any]]:
    """A workflow's header, runs, steps, status changes and received events (CN5)."""
    built = timeline.build(log, workflow_id)  # NotFound for an unknown id
    return _records(lambda out: timeline_view.render(built, out))


def agent(log: LogSource, agent_class: str, name: str, at: int | None) -> list[dict[str, Any]]:
    """An agent's state now or as of log position ``at``, and its state changes (CN6)."""
    return _records(lambda out: agentstate.agent(log, out, agent_class, name, at=at,
                                                 history=True))


def tail(log: LogSource, count: int) -> list[dict[str, Any]]:
    """The last ``count`` events of the log, each checked against the one before (CN7)."""
    count = max(1, min(count, MAX_TAIL))
    return _records(lambda out: listing.tail(log, out, count=count))


def verify(path: str) -> list[dict[str, Any]]:
    """``verify``'s problems and verdict (the last record) for the log at ``path`` (CN7)."""
    report = verify_log(path)
    return _records(lambda out: verify_view.render(report, out))
