"""What ``verify`` found: the kinds of problem, each problem, and the report (V11-V14)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["KINDS", "Problem", "Report"]

KINDS = ("not an eventwf log", "newer schema", "truncated file", "unreadable", "position gap",
         "broken chain", "stream gap", "undecodable", "unknown stream", "illegal transition",
         "projection mismatch")


class Problem(NamedTuple):
    kind: str  # one of KINDS
    position: int | None  # the first bad log position (None: not tied to one)
    message: str
    stream: str | None = None

    def order(self) -> tuple[int, int]:
        """Log problems by position, then projection mismatches (V14)."""
        return (self.kind == "projection mismatch",
                -1 if self.position is None else self.position)


@dataclass
class Report:
    path: str
    problems: list[Problem] = field(default_factory=list)  # the first ``keep`` found
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)
    events: int = 0
    head: int = 0
    streams: int = 0
    workflows: int = 0
    agents: int = 0
    projected_through: int | None = None
    projections_checked: bool = False

    @property
    def intact(self) -> bool:
        return self.problem_count == 0

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None
