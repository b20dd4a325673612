"""``verify`` of a PostgreSQL log (specs/tools.md V20): the checks of ``verify`` that apply.

One pass over the rows in position order, in bounded batches, as on SQLite (``verify``):
positions are gap-free (one engine writes a database and decides them), each row's hash
follows from the previous hash *of its stream* (specs/postgres.md PG5: the chain is per
stream, not per log), each stream's versions are contiguous, every event decodes and
folds. The folds are then compared with the stored projection rows, read at one instant
with the head; if the log grew since the pass (a live engine), the projections are not
compared and a warning says so. What only an SQLite file has (its header, pages, anchor,
``meta.projected_through``: PostgreSQL projections commit with their events) is not
checked here.
"""

from __future__ import annotations

from typing import Any

from eventwf.store.rows import AGENT_COLUMNS, WORKFLOW_COLUMNS, agent_row, workflow_row
from eventwf.store.sqlite.columns import LogRow

from .pgsource import PgLogSource, StreamChains
from .source import BATCH
from .verify import Checker, difference
from .verify_report import Problem, Report

__all__ = ["PgChecker", "verify"]


class PgChecker(Checker):
    """:class:`Checker` with PostgreSQL's per-stream chain."""

    def __init__(self, log: PgLogSource, report: Report, keep: int = 20) -> None:
        super().__init__(log.genesis, report, keep)
        self.chains = StreamChains(log.pg)

    def _row_problem(self, row: LogRow) -> Problem | None:
        expected = self.expected
        self.expected = row.position + 1
        found = self.chains.check(row)  # first: the stream goes on from this row
        if row.position != expected:
            missing = (f"position {expected} is" if row.position == expected + 1 else
                       f"positions {expected}..{row.position - 1} are")
            return Problem("position gap", expected, f"{missing} missing: the log jumps from "
                           f"{expected - 1} to {row.position}", row.stream)
        if found is not None:
            return Problem(found[0], row.position, found[1], row.stream)
        return None


def _compare(log: PgLogSource, checker: PgChecker, stored: list[tuple[Any, ...]],
             folded: dict[Any, Any], *, workflows: bool) -> None:
    """Every stored row against its fold, then every fold that has no row."""
    columns = WORKFLOW_COLUMNS if workflows else AGENT_COLUMNS
    for row in stored:
        key: Any = str(row[0]) if workflows else (str(row[0]), str(row[1]))
        summary = folded.pop(key, None)
        if summary is None:
            message = f"{_name(key)} has a projection row but no events"
        else:
            made = workflow_row(summary) if workflows else agent_row(summary)
            diff = difference(columns, tuple(row), made)
            if diff is None:
                continue
            message = f"{_name(key)}: {diff}"
        checker.add(Problem("projection mismatch", log.pg.last_position(_stream(key)),
                            message, _stream(key)))
    for key in sorted(folded):
        checker.add(Problem("projection mismatch", log.pg.last_position(_stream(key)),
                            f"{_name(key)} has events but no projection row", _stream(key)))


def _name(key: Any) -> str:
    return f"workflow {key!r}" if isinstance(key, str) else f"agent {key[0]}/{key[1]}"


def _stream(key: Any) -> str:
    return f"wf:{key}" if isinstance(key, str) else f"agent:{key[0]}/{key[1]}"


def verify(url: str, *, keep: int = 20, batch: int = BATCH) -> Report:
    """Check the whole PostgreSQL log at ``url``; the report's path hides the password."""
    with PgLogSource(url) as log:
        report = Report(log.path)
        checker = PgChecker(log, report, keep)
        seen: set[str] = set()
        for row in log.rows(0, None, batch=batch):
            seen.add(row.stream)
            checker.feed(row)
        report.streams = len(seen)
        head, workflows, agents = log.pg.stored_projections()
        report.projected_through = head
        if head != report.head:
            report.warnings.append(f"the log grew from position {report.head} to {head} "
                                   "during verify (a running engine); the projections were "
                                   "not compared: run verify again")
            return report
        report.workflows = len(checker.workflows)
        report.agents = len(checker.agents)
        _compare(log, checker, workflows, checker.workflows, workflows=True)
        _compare(log, checker, agents, checker.agents, workflows=False)
        report.projections_checked = True
        return report
