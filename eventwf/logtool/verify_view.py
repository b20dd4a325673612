"""Printing a ``verify`` report: the verdict first, then every problem in log order."""

from __future__ import annotations

from .render import Output
from .verify import Report

__all__ = ["render"]

_CHECKS = ("every event decodes; positions are gap-free; each stream's versions are "
           "contiguous; the hash chain holds")


def render(report: Report, out: Output) -> int:
    """Print the report; 0 when the log is intact, 1 otherwise."""
    if out.json:
        for problem in report.problems:
            out.record({"record": "problem", **problem._asdict()})
        first = report.first
        out.record({
            "record": "verdict", "path": report.path, "intact": report.intact,
            "verdict": "intact" if first is None else first.kind,
            "position": None if first is None else first.position,
            "stream": None if first is None else first.stream,
            "message": None if first is None else first.message,
            "problems": report.problem_count, "events": report.events, "head": report.head,
            "streams": report.streams, "workflows": report.workflows, "agents": report.agents,
            "projected_through": report.projected_through,
            "projections_checked": report.projections_checked, "warnings": report.warnings,
        })
        return 0 if report.intact else 1
    _text(report, out)
    return 0 if report.intact else 1


def _text(report: Report, out: Output) -> None:
    out.line(f"verify {report.path}")
    out.line(f"  events       {report.events:,} read (last position {report.head:,}) in "
             f"{report.streams:,} stream(s)")
    if report.projections_checked:
        out.line(f"  projections  {report.workflows:,} workflow(s) and {report.agents:,} "
                 f"agent(s) compared with a rebuild (projected through "
                 f"{report.projected_through:,})")
    for warning in report.warnings:
        out.line(f"  warning      {warning}")
    first = report.first
    if first is None:
        compared = ("; the stored projections equal a rebuild" if report.projections_checked
                    else "")
        out.line(f"INTACT: {_CHECKS}{compared}")
        return
    where = f"position {first.position}" if first.position is not None else report.path
    verdict = "NOT VERIFIED" if first.kind == "newer schema" else f"DAMAGED at {where}"
    out.line(f"{verdict}: {first.kind}: {first.message}")
    shown = len(report.problems)
    more = f" (the first {shown} shown)" if shown < report.problem_count else ""
    out.line(f"{report.problem_count} problem(s){more}:")
    out.table(["POSITION", "KIND", "STREAM", "PROBLEM"],
              [["-" if p.position is None else str(p.position), p.kind, p.stream or "-",
                p.message] for p in report.problems], indent="  ")
