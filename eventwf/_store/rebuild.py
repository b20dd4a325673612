"""Fold the whole log into projections: used on open when projections lag the log, by
``rebuild-projections`` and by ``verify`` (which compares the result with the tables)."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .._codec import decode_event
from .._events import Recorded, parse_stream
from .._fold import (
    AgentSummary,
    WorkflowSummary,
    advances_only_head,
    apply_agent,
    apply_workflow,
    quarantine,
    quarantine_agent,
)
from ..errors import CorruptLogError, TransitionError
from .log import checked_batches, plain_batches

__all__ = ["PARALLEL_MIN_ROWS", "Folded", "fold_log"]

logger = logging.getLogger("eventwf")


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
    With the log's ``path``, a large log on a machine with two cores is checked by a second
    process (``chaincheck``) while this one folds; if that finds anything or cannot run,
    the fold is redone here with every check, so the result is the same either way.
    """
    through = conn.execute("SELECT max(position) FROM events").fetchone()[0] or 0
    if path is not None and path != ":memory:" and through >= PARALLEL_MIN_ROWS and _cores() > 1:
        checker = _start_checker(path, through)
        if checker is not None:
            try:
                folded = _fold(plain_batches(conn, through))
            except BaseException:
                checker.kill()
                checker.communicate()
                raise
            if _checked_clean(checker, path, through):
                return folded
    return _fold(checked_batches(conn, genesis))


PARALLEL_MIN_ROWS = 100_000  # below this, starting a process costs more than it saves


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _start_checker(path: str, through: int) -> subprocess.Popen[bytes] | None:
    package_root = str(Path(__file__).resolve().parents[2])  # so the child imports this copy
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    try:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-m", "eventwf._store.chaincheck", path, str(through)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        logger.warning("rebuild of %s: cannot start the checking process (%s); checking "
                       "in this one", path, exc)
        return None


def _checked_clean(checker: subprocess.Popen[bytes], path: str, through: int) -> bool:
    """True when the checker read rows 1..``through`` and found nothing wrong."""
    out, err = checker.communicate()
    try:
        report = msgspec.json.decode(out, type=_Report)
    except msgspec.DecodeError:
        logger.warning("rebuild of %s: the checking process failed (exit %s: %s); checking "
                       "in this one", path, checker.returncode,
                       err.decode(errors="replace").strip()[-500:])
        return False
    return report.problem is None and report.rows == through


class _Report(msgspec.Struct):
    rows: int
    problem: tuple[int, str] | None


def _fold(batches: Iterable[list[tuple[tuple[Any, ...], str | None]]]) -> Folded:
    out = Folded()
    bad: set[str] = set()  # quarantined streams: their later rows add nothing
    workflows, agents = out.workflows, out.agents
    kinds: dict[str, tuple[str, str, str]] = {}  # parse_stream, once per stream
    heads: dict[str, int] = {}  # versions of head-only events not yet folded in
    position = events = 0
    for rows in batches:
        events += len(rows)
        for raw, problem in rows:
            position, stream, version, time_us, type_name, data, _ = raw
            if stream in bad:
                continue
            parsed = kinds.get(stream)
            if parsed is None:
                parsed = kinds[stream] = parse_stream(stream)
            kind, key, name = parsed
            try:
                if problem is not None:
                    raise CorruptLogError(f"event at log position {position}: {problem}",
                                          position=position)
                event = decode_event(type_name, data, position=position)
                if kind == "wf":
                    summary = workflows.get(key)
                    if advances_only_head(summary, event.__class__):
                        heads[key] = version
                    else:
                        rec = Recorded(position, stream, version, time_us, event)
                        workflows[key] = apply_workflow(summary, rec)
                elif kind == "agent":
                    rec = Recorded(position, stream, version, time_us, event)
                    agents[key, name] = apply_agent(agents.get((key, name)), rec)
                else:
                    raise CorruptLogError(f"event at log position {position} is on unknown "
                                          f"stream {stream!r}", position=position)
            except (CorruptLogError, TransitionError) as exc:
                bad.add(stream)
                _quarantine(out, position, time_us, stream, exc)
    for key, version in heads.items():
        summary = workflows[key]
        if version > summary.head:
            workflows[key] = msgspec.structs.replace(summary, head=version)
    out.head, out.events = position, events
    return out


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
