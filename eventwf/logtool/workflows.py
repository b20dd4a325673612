"""Workflows by status, name and agent, newest first, a bounded page at a time.

The web console's listing (specs/console.md CN3, CN4). It reads the ``workflows``
projection table (one short read transaction per page), never the events: a page is at
most :data:`MAX_PAGE` rows however large the log. Pages follow a keyset cursor over
``(created_us, workflow_id)`` in descending order, so a page is the same whatever was
appended since the first one, and a workflow created meanwhile appears on a fresh first
page. The cursor is opaque text; a malformed one raises ``ValueError`` naming it.

The query is the log's own (``LogSource.workflow_rows``: SQLite here, PostgreSQL in
``pgsource``); every filter value is a bound parameter; an absent filter is no clause.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from eventwf.model.status import STATUSES
from eventwf.model.values import metadata_filter

from .source import LogSource

__all__ = ["MAX_PAGE", "WorkflowFilter", "WorkflowPage", "WorkflowRow", "encode_cursor", "page",
           "status_counts"]

MAX_PAGE = 100


@dataclass(frozen=True)
class WorkflowFilter:
    """Which workflows a page lists; None (or "", or no pairs) means any. ``metadata``
    pairs a key (``"a.b"`` is nested) with a value matched with its JSON type, as
    ``Agent.get_workflows(metadata=...)`` matches (``1`` is not ``"1"``)."""

    status: str | None = None
    workflow_name: str | None = None
    agent_class: str | None = None
    agent_name: str | None = None
    metadata: tuple[tuple[str, Any], ...] = ()

    def equals(self) -> list[tuple[str, str]]:
        """(column, value) of each filter given."""
        return [(column, value) for column, value in (
            ("status", self.status), ("workflow_name", self.workflow_name),
            ("agent_class", self.agent_class), ("agent_name", self.agent_name)) if value]

    def metadata_paths(self) -> list[tuple[str | None, Any]]:
        """(JSON path, value) pairs; ``ValueError`` for a value no metadata can hold."""
        return metadata_filter(dict(self.metadata)) if self.metadata else []


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


def encode_cursor(row: WorkflowRow) -> str:
    """The opaque cursor of the page that follows ``row`` (older workflows)."""
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
    after = _decode_cursor(cursor) if cursor else None
    fetched = log.workflow_rows(where.equals(), where.metadata_paths(), after, limit + 1)
    rows = [WorkflowRow(*row) for row in fetched[:limit]]
    more = len(fetched) > limit
    return WorkflowPage(rows, encode_cursor(rows[-1]) if more else None)


def status_counts(log: LogSource) -> dict[str, int]:
    """How many workflows have each status (every status named, zeros included)."""
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    for status, count in log.status_counts():
        counts[str(status)] = int(count)
    return counts
