"""Workflows by status, name and agent, newest first, a bounded page at a time.

The web console's listing (specs/console.md CN3, CN4). It reads the ``workflows``
projection table (one short read transaction per page), never the events: a page is at
most :data:`MAX_PAGE` rows however large the log. Pages follow a keyset cursor over
``(created_us, workflow_id)`` in descending order, so a page is the same whatever was
appended since the first one, and a workflow created meanwhile appears on a fresh first
page. The cursor is opaque text; a malformed one raises ``ValueError`` naming it.

Every filter value is a bound parameter; an absent filter is no clause at all.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from eventwf.model.status import STATUSES

from .source import LogSource

__all__ = ["MAX_PAGE", "WorkflowFilter", "WorkflowPage", "WorkflowRow", "page", "status_counts"]

MAX_PAGE = 100
_COLUMNS = ("workflow_id", "workflow_name", "agent_class", "agent_name", "status",
            "created_us", "updated_us", "completed_us", "error_name", "error_message", "run")
_SELECT = "SELECT " + ", ".join(_COLUMNS) + " FROM workflows"  # noqa: S608 - constants


@dataclass(frozen=True)
class WorkflowFilter:
    """Which workflows a page lists; None (or "") means any."""

    status: str | None = None
    workflow_name: str | None = None
    agent_class: str | None = None
    agent_name: str | None = None

    def where(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("status", self.status), ("workflow_name", self.workflow_name),
                              ("agent_class", self.agent_class),
                              ("agent_name", self.agent_name)):
            if value:
                clauses.append(f"{column} = ?")
                params.append(value)
        return clauses, params


@dataclass(frozen=True)
class WorkflowRow:
    """One line of the listing: what the projection says about a workflow now."""

    workflow_id: str
    workflow_name: str
    agent_class: str
    agent_name: str
    status: str
    created_us: int
    updated_us: int
    completed_us: int | None
    error_name: str | None
    error_message: str | None
    run: int


@dataclass(frozen=True)
class WorkflowPage:
    rows: list[WorkflowRow]
    next_cursor: str | None  # None: this is the last page


def _encode_cursor(row: WorkflowRow) -> str:
    raw = json.dumps([row.created_us, row.workflow_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_us, workflow_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"invalid page cursor {cursor!r}: use the one a page gave") from exc
    if type(created_us) is not int or not isinstance(workflow_id, str):
        raise ValueError(f"invalid page cursor {cursor!r}: use the one a page gave")
    return created_us, workflow_id


def page(log: LogSource, where: WorkflowFilter, *, limit: int = 50,
         cursor: str | None = None) -> WorkflowPage:
    """Up to ``limit`` (1..MAX_PAGE) workflows matching ``where``, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"page size {limit} is out of range: use 1..{MAX_PAGE}")
    clauses, params = where.where()
    if cursor:
        created_us, workflow_id = _decode_cursor(cursor)
        clauses.append("(created_us < ? OR (created_us = ? AND workflow_id < ?))")
        params += [created_us, created_us, workflow_id]
    sql = _SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
    sql += " ORDER BY created_us DESC, workflow_id DESC LIMIT ?"
    fetched = log.conn.execute(sql, [*params, limit + 1]).fetchall()
    rows = [WorkflowRow(*row) for row in fetched[:limit]]
    more = len(fetched) > limit
    return WorkflowPage(rows, _encode_cursor(rows[-1]) if more else None)


def status_counts(log: LogSource) -> dict[str, int]:
    """How many workflows have each status (every status named, zeros included)."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for status, count in log.conn.execute(
            "SELECT status, count(*) FROM workflows GROUP BY status").fetchall():
        counts[str(status)] = int(count)
    return counts
