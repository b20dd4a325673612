"""Fold the whole log into projections: used on open when projections lag the log, by
``rebuild-projections`` and by ``verify`` (which compares the result with the tables).

Theory of operation. The checked fold reads every row, checks it (hash chain, positions,
versions, text), decodes it and applies it; a bad row quarantines its own stream. On a
large log with two cores the work is split in two processes instead (spec L9a): the
checker (``chaincheck``) checks every row and folds the agents, while this process folds
the workflow rows, unchecked. Anything the split cannot vouch for (a problem the checker
found, rows it saw that this process did not) sends the whole log to the checked fold, so
the result is always the checked one. Most rows are steps' outcomes, which change only a
running workflow's command count and head: both folds pass over them without making a new
summary per row.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from eventwf.errors import CorruptLogError, TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.codec import OUTCOME_TYPES, decode_event, outcome_seq
from eventwf.model.events import Recorded, StepFailed, StepSucceeded, parse_stream
from eventwf.model.workflow_fold import (
    HEAD_ONLY,
    TRANSITIONS,
    WorkflowSummary,
    apply_workflow,
    quarantine,
)
from eventwf.store.sqlite.chaincheck import Report, read_report, start_checker
from eventwf.store.sqlite.log import checked_batches, workflow_batches

__all__ = ["PARALLEL_MIN_ROWS", "Folded", "PendingFold", "fold_log", "fold_tentatively"]

PARALLEL_MIN_ROWS = 100_000  # below this, starting a process costs more than it saves


@dataclass
class Folded:
    """Summaries rebuilt from the log, and every row that could not be applied."""

    workflows: dict[str, WorkflowSummary] = field(default_factory=dict)
    agents: dict[tuple[str, str], AgentSummary] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    head: int = 0
    events: int = 0


def fold_log(conn: sqlite3.Connection, genesis: bytes, *, path: str | None = None) -> Folded:
    """One streaming pass: verify each row, decode it and apply it to its stream's fold.

    A row that fails quarantines its own stream only; the pass goes on with the rest.
    With the log's ``path``, a large log on a machine with two cores is split with a second
    process (see the module's docstring); the result is the same either way.
    """
    with fold_tentatively(conn, genesis, path=path) as pending:
        return pending.result()


class PendingFold:
    """A fold the checker may still be working on: ``tentative`` holds the workflows at once
    (to write them in a transaction not yet committed); ``result()`` is the final word."""

    def __init__(self, tentative: Folded, settle: Callable[[], Folded] | None = None) -> None:
        self.tentative = tentative
        self._settle = settle
        self._final = tentative if settle is None else None

    def result(self) -> Folded:
        """The checked fold (waits for the checker): ``tentative``, completed with the
        agents, when the checker vouched for it; a fold redone with every check if not."""
        if self._final is None and self._settle is not None:
            settle, self._settle = self._settle, None
            self._final = settle()
        return self._final or self.tentative


@contextmanager
def fold_tentatively(conn: sqlite3.Connection, genesis: bytes, *,
                     path: str | None = None) -> Iterator[PendingFold]:
    """:func:`fold_log` in two halves, so a caller can write the tentative workflows while
    the checker finishes; leaving the block stops a checker whose verdict was not asked for."""
    through = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
    checker = None
    if path is not None and path != ":memory:" and through >= PARALLEL_MIN_ROWS and _cores() > 1:
        checker = start_checker(path, through)
    if checker is None:
        yield PendingFold(_fold(checked_batches(conn, genesis))[0])
        return
    try:
        try:
            tentative, seen = _fold(workflow_batches(conn, through), split=True)
        except (_Unsure, CorruptLogError):  # CorruptLogError: text the split pass cannot read
            checker.kill()  # its verdict cannot help: free the core for the checked fold
            yield PendingFold(_fold(checked_batches(conn, genesis))[0])
            return

        def settle() -> Folded:
            report = read_report(checker, path or "")
            if _accept(tentative, seen, report, through):
                return tentative
            return _fold(checked_batches(conn, genesis))[0]

        yield PendingFold(tentative, settle)
    finally:
        if checker.returncode is None:
            checker.kill()
            checker.communicate()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# The statuses in which a step's outcome keeps the status (it changes the run's command
# count and the head only): the fold's fast path for most of a log.
_STEP_STATUSES = frozenset.intersection(*(
    frozenset(status for status, target in TRANSITIONS[cls].items() if target == status)
    for cls in (StepSucceeded, StepFailed)))


class _Unsure(Exception):
    """The split fold cannot vouch for a stream: only the checked fold can say."""


def _accept(tentative: Folded, seen: dict[str, int], report: Report | None,
            through: int) -> bool:
    """Complete ``tentative`` with the agents of a clean report and say True; False when
    the report has a problem or saw other workflow rows than this process folded."""
    if report is None or report.problem is not None or report.rows != through:
        return False
    if report.heads != seen:
        return False
    tentative.agents = {(a.agent_class, a.name): a for a in report.agents}
    tentative.head = tentative.events = through
    return True


class _Lane:
    """One workflow stream's place in the fold: what its hot path reads and writes, so a
    step's outcome costs one lookup and no new summary."""

    __slots__ = ("behind", "commands", "fast", "head", "key", "seen")

    def __init__(self, key: str, summary: WorkflowSummary, seen: int) -> None:
        self.key = key
        self.seen = seen  # the last version read (the split pass's contiguity check)
        self.behind = False  # rows passed over that the summary does not hold yet
        self.follow(summary)

    def follow(self, summary: WorkflowSummary) -> None:
        self.fast = summary.status in _STEP_STATUSES and not summary.pending
        self.commands, self.head = summary.commands, summary.head

    def summary(self, workflows: dict[str, WorkflowSummary]) -> WorkflowSummary:
        """The summary with the rows passed over folded in."""
        summary = workflows[self.key]
        if self.behind:
            self.behind = False
            summary = workflows[self.key] = _caught_up(summary, self.commands, self.head)
        return summary


def _fold(batches: Iterable[list[tuple[tuple[Any, ...], str | None]]], *,
          split: bool = False) -> tuple[Folded, dict[str, int]]:
    """Apply every row to its stream's summary: the checked fold, or with ``split`` this
    process's half of the split one (the workflow rows, unchecked). Returns the fold and,
    when ``split``, the last version read of each workflow stream."""
    out = Folded()
    workflows = out.workflows
    # Per stream, parse_stream's answer, or None once the stream is quarantined.
    kinds: dict[str, tuple[str, str, str] | None] = {}
    lanes: dict[str, _Lane] = {}
    lane_of = lanes.get
    position = events = 0
    for rows in batches:
        events += len(rows)
        for raw, problem in rows:
            position, stream, version, time_us, type_name, data, _ = raw
            lane = lane_of(stream)
            if lane is not None and problem is None:
                if split:
                    if version != lane.seen + 1:
                        raise _Unsure
                    lane.seen = version
                if lane.fast and type_name in OUTCOME_TYPES:
                    # a step's outcome, most of a log: only its command number matters here
                    seq = outcome_seq(data) if split else decode_event(
                        type_name, data, position=position).seq  # type: ignore[attr-defined]
                    if seq == lane.commands:
                        lane.commands, lane.head, lane.behind = seq + 1, version, True
                        continue
            parsed = kinds.get(stream, _UNSEEN)
            if parsed is _UNSEEN:
                parsed = kinds[stream] = parse_stream(stream)
            elif parsed is None:
                continue  # quarantined: its later rows add nothing
            try:
                _fold_row(out, lanes, parsed, raw, problem, lane, split)
            except (CorruptLogError, TransitionError) as exc:
                kinds[stream] = None
                if lane is not None:
                    lane.summary(workflows)
                    del lanes[stream]
                _quarantine(out, position, time_us, stream, exc)
    seen = {}
    for stream, lane in lanes.items():
        lane.summary(workflows)
        seen[stream] = lane.seen
    out.head, out.events = position, events
    return out, seen


def _fold_row(out: Folded, lanes: dict[str, _Lane], parsed: tuple[str, str, str],
              raw: tuple[Any, ...], problem: str | None, lane: _Lane | None,
              split: bool) -> None:
    """The slow path of :func:`_fold`, apart so the hot loop stays short: ``raw`` (a row
    of the stream ``parsed``, not quarantined, that the fast path did not pass over)
    decoded and applied to its stream's summary; a workflow's first row opens its lane.

    Raises ``CorruptLogError`` or ``TransitionError`` for a row that cannot apply (the
    caller quarantines its stream), ``_Unsure`` when the split fold cannot vouch for it."""
    position, stream, version, time_us, type_name, data, _ = raw
    workflows, agents = out.workflows, out.agents
    kind, key, name = parsed
    if problem is not None:
        raise CorruptLogError(f"event at log position {position}: {problem}",
                              position=position)
    if kind == "wf":
        event = decode_event(type_name, data, position=position)
        if lane is None:
            if split and version != 0:
                raise _Unsure
            summary = workflows[key] = apply_workflow(
                workflows.get(key), Recorded(position, stream, version, time_us, event))
            lanes[stream] = _Lane(key, summary, version)
        elif workflows[key].status in HEAD_ONLY.get(event.__class__, ()):
            lane.head, lane.behind = version, True
        else:
            summary = workflows[key] = apply_workflow(
                lane.summary(workflows), Recorded(position, stream, version, time_us, event))
            lane.follow(summary)
    elif kind == "agent":
        event = decode_event(type_name, data, position=position)
        rec = Recorded(position, stream, version, time_us, event)
        agents[key, name] = apply_agent(agents.get((key, name)), rec)
    else:
        raise CorruptLogError(f"event at log position {position} is on unknown "
                              f"stream {stream!r}", position=position)


def _caught_up(summary: WorkflowSummary, commands: int, head: int) -> WorkflowSummary:
    """``summary`` with the rows passed over folded in (their count and last version)."""
    if (summary.commands, summary.head) == (commands, head):
        return summary
    return msgspec.structs.replace(summary, commands=commands, head=head)


_UNSEEN: Any = object()


def _quarantine(out: Folded, position: int, time_us: int, stream: str,
                exc: CorruptLogError | TransitionError) -> None:
    message = str(exc)
    if isinstance(exc, TransitionError):
        message = f"event at log position {position} cannot apply: {exc}"
    out.problems.append((position, message))
    kind, key, name = parse_stream(stream)
    if kind == "wf":
        out.workflows[key] = quarantine(out.workflows.get(key), stream, position, message,
                                        time_us)
    elif kind == "agent":
        out.agents[key, name] = quarantine_agent(out.agents.get((key, name)), key, name,
                                                 position)
