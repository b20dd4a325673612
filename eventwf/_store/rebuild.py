"""Fold the whole log into projections: used on open when projections lag the log, by
``rebuild-projections`` and by ``verify`` (which compares the result with the tables).

Theory of operation. The checked fold reads every row, checks it (hash chain, positions,
versions, text), decodes it and applies it; a bad row quarantines its own stream. On a
large log with two cores the work is split in two processes instead (spec L9a): the
checker (``chaincheck``) checks every row, decodes the step rows and folds the agents, while
this process folds the other workflow rows, unchecked. Step rows (most of a log) change
nothing but the head, and only while the workflow runs; this process does not read them and
checks that from the gaps they leave in each stream's versions. Anything the split cannot
vouch for sends the whole log to the checked fold, so the result is always the checked one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .._agentfold import AgentSummary, apply_agent, quarantine_agent
from .._codec import decode_event
from .._events import EVENT_TYPES, Recorded, parse_stream
from .._fold import HEAD_ONLY, WorkflowSummary, apply_workflow, quarantine
from ..errors import CorruptLogError, TransitionError
from .chaincheck import SKIPPED_TYPES, Report, read_report, start_checker
from .log import checked_batches, workflow_batches

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
            tentative, seen = _fold(workflow_batches(conn, through, SKIPPED_TYPES), split=True)
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


# The statuses in which a skipped step row is allowed and changes nothing but the head.
_STEP_STATUSES = frozenset.intersection(*(HEAD_ONLY[EVENT_TYPES[name]]
                                          for name in SKIPPED_TYPES))


class _Unsure(Exception):
    """A skipped row may not be allowed where it is: only the checked fold can say."""


def _accept(tentative: Folded, seen: dict[str, int], report: Report | None,
            through: int) -> bool:
    """Complete ``tentative`` from a clean report (agents, heads after trailing steps) and
    say True; False when the report has a problem or a skipped row is not vouched for."""
    if report is None or report.problem is not None or report.rows != through:
        return False
    workflows = tentative.workflows
    for stream, last in report.heads.items():
        if last == seen.get(stream, -1):
            continue
        summary = workflows.get(stream[3:])
        if summary is None:
            return False  # a stream of step rows only
        if summary.status == "unknown":
            continue  # quarantined: rows after the bad one add nothing
        if summary.status not in _STEP_STATUSES:
            return False
        workflows[stream[3:]] = msgspec.structs.replace(summary, head=last)
    tentative.agents = {(a.agent_class, a.name): a for a in report.agents}
    tentative.head = tentative.events = through
    return True


def _fold(batches: Iterable[list[tuple[tuple[Any, ...], str | None]]], *,
          split: bool = False) -> tuple[Folded, dict[str, int]]:
    """Apply every row to its stream's summary: the checked fold, or with ``split`` this
    process's half of the split one, whose step rows are missing. Returns the fold and, when
    ``split``, the last version read of each workflow stream."""
    out = Folded()
    workflows, agents = out.workflows, out.agents
    # Per stream, parse_stream's answer, or None once the stream is quarantined.
    kinds: dict[str, tuple[str, str, str] | None] = {}
    heads: dict[str, int] = {}  # versions of head-only events not yet folded in
    seen: dict[str, int] = {}
    head_only = HEAD_ONLY.get
    position = events = 0
    for rows in batches:
        events += len(rows)
        for raw, problem in rows:
            position, stream, version, time_us, type_name, data, _ = raw
            parsed = kinds.get(stream, _UNSEEN)
            if parsed is _UNSEEN:
                parsed = kinds[stream] = parse_stream(stream)
            elif parsed is None:
                continue  # quarantined: its later rows add nothing
            kind, key, name = parsed
            try:
                if problem is not None:
                    raise CorruptLogError(f"event at log position {position}: {problem}",
                                          position=position)
                if kind == "wf":
                    summary = workflows.get(key)
                    if split:
                        if version != seen.get(stream, -1) + 1:  # step rows not read
                            if summary is None or summary.status not in _STEP_STATUSES:
                                raise _Unsure
                            heads[key] = version - 1
                        seen[stream] = version
                    event = decode_event(type_name, data, position=position)
                    if summary is not None and summary.status in head_only(event.__class__,
                                                                           ()):
                        heads[key] = version
                    else:
                        rec = Recorded(position, stream, version, time_us, event)
                        workflows[key] = apply_workflow(summary, rec)
                elif kind == "agent":
                    event = decode_event(type_name, data, position=position)
                    rec = Recorded(position, stream, version, time_us, event)
                    agents[key, name] = apply_agent(agents.get((key, name)), rec)
                else:
                    raise CorruptLogError(f"event at log position {position} is on unknown "
                                          f"stream {stream!r}", position=position)
            except (CorruptLogError, TransitionError) as exc:
                kinds[stream] = None
                _quarantine(out, position, time_us, stream, exc)
    _advance_heads(workflows, heads)
    out.head, out.events = position, events
    return out, seen


_UNSEEN: Any = object()


def _advance_heads(workflows: dict[str, WorkflowSummary], heads: dict[str, int]) -> None:
    """Fold in the head-only rows that were passed over (a quarantined stream's too)."""
    for key, version in heads.items():
        summary = workflows[key]
        if version > summary.head:
            workflows[key] = msgspec.structs.replace(summary, head=version)


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
