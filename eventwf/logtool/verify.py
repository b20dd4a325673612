"""``verify``: prove a log intact, or name the first bad position and what is wrong
(specs/tools.md V11-V15).

One streaming pass over the rows in bounded batches (each its own short read transaction)
checks, for every row: its position follows the previous one, its hash follows from the
previous hash and its own fields, its stream version follows the stream's previous one,
and its event decodes. Each event is folded exactly as ``eventwf.store.sqlite.rebuild.fold_log``
does (a bad row quarantines its stream), and at the end the folds are compared with the
stored projection rows inside one short snapshot that also reads the rows appended since
the last batch, so a live writer causes no false mismatch. Memory grows with the number
of streams (their folds), never with the number of events.
"""

from __future__ import annotations

import bisect
import os
import sqlite3
from collections.abc import Callable
from typing import Any, NamedTuple

from eventwf.errors import CorruptLogError, TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.codec import decode_event, decode_value
from eventwf.model.events import Recorded, parse_stream
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow, quarantine
from eventwf.store.sqlite.anchor import Anchor, read_anchor
from eventwf.store.sqlite.lock import log_home
from eventwf.store.sqlite.log import LogRow, chain_hash
from eventwf.store.sqlite.projections import (
    AGENT_COLUMNS,
    WORKFLOW_COLUMNS,
    agent_row,
    workflow_row,
)
from eventwf.store.sqlite.schema import SCHEMA_VERSION

from .render import compact, compact_text
from .source import BATCH, Damaged, LogSource, NotALog, ToolError, Unreadable
from .verify_report import KINDS, Problem, Report

__all__ = ["KINDS", "Checker", "Problem", "Report", "anchor_problem", "difference", "verify"]

def _where(row: LogRow) -> str:
    return f"event at position {row.position} (stream {row.stream!r}, {row.type})"


class Checker:
    """Feed rows in position order; collects problems and the folds of every stream."""

    def __init__(self, genesis: bytes, report: Report, keep: int = 20) -> None:
        self.prev = genesis
        self.expected = 1
        self.versions: dict[str, int] = {}
        self.workflows: dict[str, WorkflowSummary] = {}
        self.agents: dict[tuple[str, str], AgentSummary] = {}
        self.report = report
        self.keep = max(keep, 1)  # the verdict is always the first problem

    def add(self, problem: Problem) -> None:
        """Count every problem; keep the first ``keep`` in log order."""
        self.report.problem_count += 1
        kept = self.report.problems
        if len(kept) < self.keep or problem.order() < kept[-1].order():
            bisect.insort(kept, problem, key=Problem.order)
            del kept[self.keep:]

    def feed(self, row: LogRow) -> None:
        self.report.events += 1
        self.report.head = row.position
        problem = self._row_problem(row)
        event = None
        if row.data.__class__ is bytes:
            try:
                event = decode_event(row.type, row.data, position=row.position)
            except CorruptLogError as exc:
                if problem is None:
                    problem = Problem("undecodable", row.position, str(exc), row.stream)
                else:
                    problem = problem._replace(message=problem.message + "; its data does not "
                                               "decode either")
        if problem is not None:
            self.add(problem)
        self._fold(row, problem, event)

    def _row_problem(self, row: LogRow) -> Problem | None:
        """What is wrong with the row's place in the log (the checks of ``log.scan``)."""
        expected, prev = self.expected, self.prev
        last = self.versions.get(row.stream, -1)
        self.versions[row.stream] = row.stream_position
        self.expected = row.position + 1
        self.prev = row.hash if isinstance(row.hash, bytes) else b""
        if row.position != expected:
            missing = (f"position {expected} is" if row.position == expected + 1 else
                       f"positions {expected}..{row.position - 1} are")
            return Problem("position gap", expected, f"{missing} missing: the log jumps from "
                           f"{expected - 1} to {row.position}", row.stream)
        if row.data.__class__ is not bytes:
            why = getattr(row.data, "problem", None) or (
                f"has a data column that is not a blob ({type(row.data).__name__})")
            return Problem("undecodable", row.position, f"{_where(row)}: {why}", row.stream)
        if not isinstance(row.hash, bytes) or chain_hash(
                prev, row.position, row.stream, row.stream_position, row.time_us, row.type,
                row.data) != row.hash:
            return Problem("broken chain", row.position, f"{_where(row)} fails its checksum: "
                           "the row was changed, damaged, inserted or moved", row.stream)
        if row.stream_position != last + 1:
            return Problem("stream gap", row.position, f"stream {row.stream!r} jumps from "
                           f"version {last} to {row.stream_position} at position "
                           f"{row.position}: an event of that stream is missing", row.stream)
        return None

    def _fold(self, row: LogRow, problem: Problem | None, event: Any) -> None:
        """Apply the row as ``fold_log`` does: a bad row quarantines its stream."""
        kind, key, name = parse_stream(row.stream)
        if self._quarantined(kind, key, name):
            return
        try:
            if problem is not None or event is None:
                raise CorruptLogError(f"event at log position {row.position}: "
                                      f"{problem.message if problem else 'does not decode'}")
            rec = Recorded(row.position, row.stream, row.stream_position, row.time_us, event)
            if kind == "wf":
                self.workflows[key] = apply_workflow(self.workflows.get(key), rec)
            elif kind == "agent":
                self.agents[key, name] = apply_agent(self.agents.get((key, name)), rec)
            else:
                self.add(Problem("unknown stream", row.position, f"event at position "
                                 f"{row.position} is on stream {row.stream!r}, which is neither "
                                 "a workflow nor an agent stream", row.stream))
        except (CorruptLogError, TransitionError) as exc:
            message = str(exc)
            if isinstance(exc, TransitionError):
                message = f"event at log position {row.position} cannot apply: {exc}"
                self.add(Problem("illegal transition", row.position, message, row.stream))
            if kind == "wf":
                self.workflows[key] = quarantine(self.workflows.get(key), row.stream,
                                                 row.position, message, row.time_us)
            elif kind == "agent":
                self.agents[key, name] = quarantine_agent(self.agents.get((key, name)), key,
                                                          name, row.position)

    def _quarantined(self, kind: str, key: str, name: str) -> bool:
        if kind == "wf":
            summary = self.workflows.get(key)
            return summary is not None and summary.status == "unknown"
        if kind == "agent":
            agent = self.agents.get((key, name))
            return agent is not None and agent.corrupt_position is not None
        return False


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return compact(decode_value(value), 60)
        except Exception:  # noqa: BLE001 - a damaged blob is shown raw
            return value.hex()[:60]
    return compact(value, 60)


def difference(columns: tuple[str, ...], stored: tuple[Any, ...],
                expected: tuple[Any, ...]) -> str | None:
    """The first column where a stored projection row differs from its fold, or None
    (a value encoded differently but equal decoded is no difference)."""
    for column, have, want in zip(columns, stored, expected, strict=False):
        if have == want:
            continue
        if isinstance(have, bytes) and isinstance(want, bytes):
            try:
                if decode_value(have) == decode_value(want):
                    continue  # the same value, encoded differently
            except Exception:  # noqa: BLE001, S110 - undecodable: a real difference
                pass
        return f"column {column}: stored {_shown(have)}, the log says {_shown(want)}"
    return None


def _last_position(conn: sqlite3.Connection, stream: str) -> int | None:
    row = conn.execute("SELECT position FROM events WHERE stream = ? "
                       "ORDER BY stream_position DESC LIMIT 1", (stream,)).fetchone()
    return None if row is None else int(row[0])


class _Table(NamedTuple):
    """How one projection table is compared with the folds."""

    select: str  # every column, in key order
    columns: tuple[str, ...]
    key: Callable[[tuple[Any, ...]], Any]  # stored row -> fold key
    row: Callable[[Any], tuple[Any, ...]]  # fold -> row
    name: Callable[[Any], str]  # fold key -> "workflow 'x'" / "agent C/n"
    stream: Callable[[Any], str]


_WORKFLOWS = _Table(
    "SELECT " + ", ".join(WORKFLOW_COLUMNS) + " FROM workflows ORDER BY workflow_id",  # noqa: S608
    WORKFLOW_COLUMNS, lambda stored: stored[0], workflow_row,
    lambda key: f"workflow {key!r}", lambda key: f"wf:{key}")
_AGENTS = _Table(
    "SELECT " + ", ".join(AGENT_COLUMNS)  # noqa: S608 - constants
    + " FROM agents ORDER BY agent_class, agent_name",
    AGENT_COLUMNS, lambda stored: (str(stored[0]), str(stored[1])), agent_row,
    lambda key: f"agent {key[0]}/{key[1]}", lambda key: f"agent:{key[0]}/{key[1]}")


def _compare(conn: sqlite3.Connection, checker: Checker, table: _Table,
             folded: dict[Any, Any]) -> None:
    """Every stored row against its fold, then every fold that has no row."""
    cursor = conn.execute(table.select)
    while rows := cursor.fetchmany(500):
        for stored in rows:
            key = table.key(stored)
            summary = folded.pop(key, None)
            if summary is None:
                message = f"{table.name(key)} has a projection row but no events"
            else:
                diff = difference(table.columns, tuple(stored), table.row(summary))
                if diff is None:
                    continue
                message = f"{table.name(key)}: {diff}"
            checker.add(Problem("projection mismatch",
                                _last_position(conn, table.stream(key)), message,
                                table.stream(key)))
    for key in sorted(folded):
        checker.add(Problem("projection mismatch", _last_position(conn, table.stream(key)),
                            f"{table.name(key)} has events but no projection row",
                            table.stream(key)))


def _projections(log: LogSource, conn: sqlite3.Connection, checker: Checker) -> None:
    """Compare the folds with the stored rows, if the stored rows claim to be current."""
    report = checker.report
    text = log.meta("projected_through")
    try:
        projected = int(text) if text is not None else None
    except ValueError:
        projected = None
    report.projected_through = projected
    if projected is None:
        report.warnings.append(f"meta.projected_through is {text!r}, not a position; the "
                               "projections were not compared")
    elif projected < report.head:
        report.warnings.append(f"the projections reflect position {projected} of {report.head}: "
                               "they lag the log (the engine rebuilds them when it opens it); "
                               "they were not compared")
    elif projected > report.head:
        if not _tail_cut(report):
            checker.add(Problem("position gap", report.head + 1, f"the projections reflect "
                                f"position {projected} but the log ends at {report.head}: "
                                f"positions {report.head + 1}..{projected} are missing"))
    elif missing := _missing_columns(conn):
        report.warnings.append(f"the projection tables lack the columns {missing} that this "
                               "eventwf keeps (another eventwf version wrote them); they were "
                               "not compared")
    else:
        checker.report.workflows = len(checker.workflows)
        checker.report.agents = len(checker.agents)
        _compare(conn, checker, _WORKFLOWS, checker.workflows)
        _compare(conn, checker, _AGENTS, checker.agents)
        report.projections_checked = True


def _missing_columns(conn: sqlite3.Connection) -> list[str]:
    missing: list[str] = []
    for table, columns in (("workflows", WORKFLOW_COLUMNS), ("agents", AGENT_COLUMNS)):
        have = {str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")}
        missing.extend(f"{table}.{c}" for c in columns if c not in have)
    return missing


def _tail_cut(report: Report) -> bool:
    return any(p.kind == "position gap" and p.position == report.head + 1
               for p in report.problems)


def _anchor(path: str, report: Report) -> Anchor | None:
    """The engine's ``.anchor`` sidecar (read before the scan: the log only grows after)."""
    try:
        return read_anchor(path)
    except ValueError as exc:
        report.warnings.append(f"{exc}; the tail was not checked against it")
        return None


def anchor_problem(anchor: Anchor, conn: sqlite3.Connection, head: int) -> Problem | None:
    """A cut or rewritten tail: what the hash chain alone cannot see."""
    where = "the anchor (written when the engine last opened or closed the log) says"
    if anchor.position > head:
        return Problem("position gap", head + 1, f"{where} the log reached position "
                       f"{anchor.position}, but it ends at {head}: positions "
                       f"{head + 1}..{anchor.position} were cut")
    if anchor.position == 0:
        return None
    row = conn.execute("SELECT CAST(hash AS BLOB), CAST(stream AS BLOB) FROM events "
                       "WHERE position = ?", (anchor.position,)).fetchone()
    if row is not None and row[0] == anchor.hash:
        return None
    held = "no such row" if row is None else (row[0] or b"").hex()
    return Problem("broken chain", anchor.position, f"{where} position {anchor.position} has "
                   f"hash {anchor.hash.hex()}, but the log holds {held}: rows up to there were "
                   "rewritten", None if row is None else (row[1] or b"").decode(errors="replace"))


def _warnings(log: LogSource, checker: Checker) -> None:
    report = checker.report
    version = log.meta("schema_version")
    if version is not None and not version.isdigit():
        checker.add(Problem("unreadable", None, f"meta.schema_version is "
                            f"{compact_text(repr(version), 60)}, not a version number: the "
                            "meta table was changed or damaged"))
    elif version is not None and int(version) > SCHEMA_VERSION:
        checker.add(Problem("newer schema", None, f"schema version {version} is newer than "
                            f"this eventwf's ({SCHEMA_VERSION}): it cannot vouch for a format "
                            "it does not know; upgrade eventwf to verify this log"))
    triggers = {str(name) for (name,) in log.conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'")}
    missing = {"events_no_update", "events_no_delete"} - triggers
    if missing:
        report.warnings.append(f"the append-only triggers {sorted(missing)} are missing: the "
                               "file was changed outside eventwf (the engine re-creates them "
                               "when it next opens the log)")


def _scan(log: LogSource, checker: Checker, batch: int) -> None:
    anchor = _anchor(log.home, checker.report)
    for row in log.rows(0, batch=batch):
        checker.feed(row)
    with log.snapshot() as conn:  # rows appended since the last batch, then the projections
        for row in log.rows(checker.report.head, batch=batch):
            checker.feed(row)
        problem = None if anchor is None else anchor_problem(anchor, conn, checker.report.head)
        if problem is not None:
            checker.add(problem)
        _projections(log, conn, checker)


def _open_problem(log_error: ToolError, salvage: bool) -> Problem:
    if isinstance(log_error, NotALog):
        return Problem("not an eventwf log", None, str(log_error))
    position = log_error.position if isinstance(log_error, Unreadable) else None
    return Problem("truncated file" if salvage else "unreadable", position, str(log_error))


def verify(path: str, *, keep: int = 20, batch: int = BATCH) -> Report:
    """Check the whole log at ``path``; the report names every problem in log order."""
    report = Report(path)
    checker = Checker(b"", report, keep)
    try:
        log = LogSource(path)
    except (NotALog, Damaged) as exc:
        truncated = isinstance(exc, Unreadable)  # raised on open only for a short file
        checker.add(_open_problem(exc, truncated))
        if os.path.getsize(path) == 0:
            _lost(log_home(path), report, checker)
        return report
    with log:
        checker.prev = log.genesis
        try:
            _scan(log, checker, batch)
            _warnings(log, checker)
        except Unreadable as exc:
            checker.add(_open_problem(exc, log.salvage))
            if "no such table: events" in str(exc):
                _lost(log.home, report, checker)
        except sqlite3.DatabaseError as exc:
            checker.add(Problem("truncated file" if log.salvage else "unreadable",
                                report.head + 1, f"the log cannot be read after position "
                                f"{report.head}: {exc}"))
    report.streams = len(checker.versions)
    return report


def _lost(home: str, report: Report, checker: Checker) -> None:
    """A log that holds no rows (an empty file, no events table) whose anchor recorded
    some: it was emptied or replaced."""
    try:
        anchor = read_anchor(home)
    except ValueError:
        return
    if anchor is not None and anchor.position > 0:
        checker.add(Problem("position gap", 1, f"the anchor (written when the "
                            f"engine last opened or closed the log) says the log reached "
                            f"position {anchor.position}, but no event can be read: positions "
                            f"1..{anchor.position} were lost (the file was emptied or "
                            "replaced)"))
