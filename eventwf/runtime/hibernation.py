"""Hibernation (replay.md R10): idle runs drop their coroutine and are replayed on wake.

A run that waits (sleep, back-off, event wait) at least ``hibernate_after`` seconds, or
while more than ``max_live`` runs are in memory, ends its task; its pending timer and the
event type it waits for are in its summary. One timer task wakes it when its timer falls
due; an event of the type it waits for wakes it at once.
"""

from __future__ import annotations

from collections.abc import Callable

from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.clock import Clock
from eventwf.runtime.summaries import Summaries
from eventwf.runtime.timers import Wakeups

__all__ = ["Hibernation"]


class Hibernation:
    def __init__(self, clock: Clock, summaries: Summaries, live: Callable[[], int],
                 wake: Callable[[WorkflowSummary], None], *, hibernate_after: float | None,
                 max_live: int) -> None:
        self._clock = clock
        self._summaries = summaries
        self._live = live  # how many runs have a task now
        self._wake = wake  # give a waiting workflow a run again
        self._after_us = None if hibernate_after is None else int(hibernate_after * 1e6)
        self._max_live = max_live
        self.wakeups = Wakeups(clock, self._due)
        self.count = 0  # hibernations so far
        self._asleep: set[str] = set()  # hibernated ids (a hint: see ``asleep``)

    @property
    def enabled(self) -> bool:
        return self._after_us is not None

    def should_hibernate(self, until_us: int) -> bool:
        """Drop a waiting run's coroutine if the wait is long or too many are alive."""
        if self._after_us is None:
            return False
        if self._live() > self._max_live:
            return True
        return until_us - self._clock.now_us() >= self._after_us

    def hibernated(self, workflow_id: str) -> None:
        self.count += 1
        summary = self._summaries.workflow(workflow_id)
        if summary is not None:
            self.schedule_wake(summary)

    def asleep(self, is_live: Callable[[str], bool]) -> int:
        """How many workflows are hibernated now: waiting, with no run (entries of
        workflows that were woken, resumed or stopped meanwhile are dropped here)."""
        self._asleep = {
            workflow_id for workflow_id in self._asleep
            if (s := self._summaries.cached_workflow(workflow_id)) is not None
            and s.status == "waiting" and not is_live(workflow_id)}
        return len(self._asleep)

    def schedule_wake(self, summary: WorkflowSummary) -> None:
        self._asleep.add(summary.workflow_id)
        if summary.wake_at_us is not None:  # never later than the timer's own length
            fire = min(summary.wake_at_us, self._clock.now_us() + summary.wake_span_us)
            self.wakeups.schedule(summary.workflow_id, fire)

    def event_arrived(self, workflow_id: str, event_type: str) -> None:
        """An event for a workflow with no run: wake it if it waits for that type."""
        summary = self._summaries.cached_workflow(workflow_id)
        if summary is not None and summary.status == "waiting" and \
                summary.wait_type == event_type:
            self._asleep.discard(workflow_id)
            self._wake(summary)

    def _due(self, workflow_id: str) -> None:
        self._asleep.discard(workflow_id)
        summary = self._summaries.workflow(workflow_id)
        if summary is not None and summary.status == "waiting":
            self._wake(summary)
