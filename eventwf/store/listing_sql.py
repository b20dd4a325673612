"""The log tool's workflow listing as one statement, spelled by either backend.

The log tool (``eventwf log PATH workflows``, the console's listing) reads the projected
workflows newest first by (created time, id), a page at a time: the keyset ``after`` is the
(created time, id) of the previous page's last row. It filters by equality on a few
columns and by typed equality on metadata paths (as ``Agent.get_workflows``). The
statement is the same on SQLite (``logtool/lookups.py``) and PostgreSQL
(``store/postgres/reader.py``) but for what :class:`Dialect` says: the placeholder, the
table's name, how ids are ordered (PostgreSQL's ``COLLATE "C"`` is SQLite's byte order,
so both backends page alike), and the metadata clause of the backend's projections
module (passed in: this module is below both backends). Column names are constants,
checked here; every value is a bound parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eventwf.store.rows import WORKFLOW_COLUMNS

__all__ = ["FILTER_COLUMNS", "Dialect", "MetadataClause", "workflow_listing"]

# The columns a listing may filter on by equality.
FILTER_COLUMNS = frozenset({"status", "workflow_name", "agent_class", "agent_name"})

# (JSON path or None, value) -> (clause, its values): a backend's typed metadata equality.
MetadataClause = Callable[[str | None, Any], tuple[str, list[Any]]]


@dataclass(frozen=True)
class Dialect:
    """How one backend spells the listing: its ``table``, its placeholder (``mark``), the
    id ``workflow_id`` as it is ordered, and its ``metadata_clause``."""

    table: str
    mark: str
    workflow_id: str
    metadata_clause: MetadataClause


def workflow_listing(dialect: Dialect, columns: Sequence[str],
                     equals: Sequence[tuple[str, str]],
                     metadata: Sequence[tuple[str | None, Any]],
                     after: tuple[int, str] | None, limit: int) -> tuple[str, list[Any]]:
    """The statement and its values: up to ``limit`` rows (``columns``) newest first by
    (created time, id), older than the keyset ``after``; ``equals`` pairs a column of
    :data:`FILTER_COLUMNS` with its value, ``metadata`` a JSON path with a value. A column
    outside those sets is the caller's bug (``AssertionError``), never input."""
    assert set(columns) <= set(WORKFLOW_COLUMNS), columns
    mark = dialect.mark
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in equals:
        assert column in FILTER_COLUMNS, column
        clauses.append(f"{column} = {mark}")
        params.append(value)
    for path, value in metadata:
        clause, values = dialect.metadata_clause(path, value)
        clauses.append(clause)
        params += values
    if after is not None:
        clauses.append(f"(created_us, {dialect.workflow_id}) < ({mark}, {mark})")
        params += [after[0], after[1]]
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    sql = (f"SELECT {', '.join(columns)} FROM {dialect.table}{where} "  # noqa: S608 - constants
           f"ORDER BY created_us DESC, {dialect.workflow_id} DESC LIMIT {mark}")
    return sql, [*params, limit]
