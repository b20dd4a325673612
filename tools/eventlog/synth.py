"""A large, realistic synthetic log, for measuring the tool (not a test fixture).

    python -m tools.eventlog.synth OUT.db [--events 1000000] [--seed 7]

Many workflows run interleaved, as a busy engine would write them (50 events a second):
started, running, 3-6 ``step.do`` (one in ten fails once and retries after 10 s), often
a 10 s sleep, sometimes a wait that takes an outside event, sometimes a merge into the
agent's state, then completed with a ``complete`` callback on the agent's stream
(mostly delivered at once). The last ones are left in flight. Every event goes through
``Store.commit`` in large batches with the projection rows folded by the engine's own
``apply_workflow``/``apply_agent``, exactly as the engine's writer does, so ``verify``
finds the result intact.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import deque
from collections.abc import Iterator

from eventwf.model.agent_fold import AgentSummary, apply_agent
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import (
    AgentCreated,
    AgentStateMerged,
    AgentStateSet,
    CallbackScheduled,
    CallbacksDelivered,
    ErrorInfo,
    Event,
    EventConsumed,
    EventReceived,
    Recorded,
    SleepCompleted,
    SleepStarted,
    StepAttemptFailed,
    StepRetrying,
    StepSucceeded,
    WaitStarted,
    WorkflowCompleted,
    WorkflowRunning,
    WorkflowStarted,
    agent_stream,
    parse_stream,
)
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore

__all__ = ["synthesize"]

AGENT = "ReportAgent"
_ERROR = ErrorInfo("builtins.ConnectionError", "upstream timed out",
                   ["upstream timed out"], "Traceback (most recent call last):\n  ...\n")
Item = tuple[str, Event]


class _Full(Exception):
    """The log has the events asked for."""


class _Writer:
    """Stages events with their folds and commits them in batches, like the engine."""

    def __init__(self, store: SQLiteStore, batch: int, limit: int) -> None:
        self.store = store
        self.batch = batch
        self.limit = limit
        self.rows: list[PendingRow] = []
        self.workflows: dict[str, WorkflowSummary] = {}
        self.agents: dict[tuple[str, str], AgentSummary] = {}
        self.dirty_wf: dict[str, WorkflowSummary] = {}
        self.dirty_ag: dict[tuple[str, str], AgentSummary] = {}
        self.time_us = 1_800_000_000_000_000
        self.written = 0

    def append(self, stream: str, event: Event) -> Recorded:
        if self.written + len(self.rows) >= self.limit:
            raise _Full
        kind, key, name = parse_stream(stream)
        position = self.store.head + len(self.rows) + 1
        self.time_us += 20_000
        if kind == "wf":
            current = self.workflows.get(key)
            rec = Recorded(position, stream, 0 if current is None else current.head + 1,
                           self.time_us, event)
            self.workflows[key] = self.dirty_wf[key] = apply_workflow(current, rec)
        else:
            agent = self.agents.get((key, name))
            rec = Recorded(position, stream, 0 if agent is None else agent.head + 1,
                           self.time_us, event)
            self.agents[key, name] = self.dirty_ag[key, name] = apply_agent(agent, rec)
        self.rows.append(PendingRow(stream, rec.stream_position, rec.time_us,
                                    event_type(event), encode_event(event)))
        if len(self.rows) >= self.batch:
            self.flush()
        return rec

    def flush(self) -> None:
        if not self.rows:
            return
        self.store.commit(self.rows, list(self.dirty_wf.values()), list(self.dirty_ag.values()))
        self.written += len(self.rows)
        self.rows.clear()
        for key in self.dirty_wf:  # finished workflows are in their projection row now
            if self.workflows[key].finished:
                del self.workflows[key]
        self.dirty_wf.clear()
        self.dirty_ag.clear()


def _workflow(w: _Writer, rng: random.Random, number: int, agent: str,
              steps: int | None) -> Iterator[None]:
    """One workflow's events; yields after each so that many run interleaved."""
    workflow_id = f"report-{number:07d}"
    stream = "wf:" + workflow_id
    w.append(stream, WorkflowStarted("Report", AGENT, agent, {"url": f"https://x/{number}"},
                                     {"tenant": f"t{number % 37}", "priority": number % 3}))
    yield
    w.append(stream, WorkflowRunning())
    yield
    seq = 0
    for step in range(rng.randint(3, 6) if steps is None else steps):
        name = f"fetch-{step}"
        attempt = 1
        if rng.random() < 0.1:
            w.append(stream, StepAttemptFailed(seq, name, 1, _ERROR, w.time_us + 10_000_000,
                                               10_000_000))
            yield
            w.append(stream, StepRetrying(seq, name, 2))
            yield
            attempt = 2
        value = {"rows": rng.randint(0, 10_000), "page": step, "etag": f"{rng.getrandbits(64):x}"}
        w.append(stream, StepSucceeded(seq, "do", name, value, attempt))
        seq += 1
        yield
    yield from _extras(w, rng, stream, workflow_id, agent, seq)


def _extras(w: _Writer, rng: random.Random, stream: str, workflow_id: str, agent: str,
            seq: int) -> Iterator[None]:
    if rng.random() < 0.5:
        w.append(stream, SleepStarted(seq, "cool-down", w.time_us + 10_000_000, 10_000_000))
        yield
        w.append(stream, SleepCompleted(seq))
        seq += 1
        yield
    if rng.random() < 0.3:
        w.append(stream, WaitStarted(seq, "approval", "approval", w.time_us + 3_600_000_000,
                                     3_600_000_000))
        yield
        received = w.append(stream, EventReceived("approval", {"approved": True, "by": "ops"}))
        yield
        w.append(stream, EventConsumed(seq, "approval", "approval", received.stream_position))
        seq += 1
        yield
    if rng.random() < 0.2:
        w.append(stream, StepSucceeded(seq, "merge_state"))
        w.append(agent_stream(AGENT, agent), AgentStateMerged({"last": workflow_id},
                                                               workflow_id))
        seq += 1
        yield
    output = {"report": workflow_id, "pages": seq}
    w.append(stream, WorkflowCompleted(output))
    callback = w.append(agent_stream(AGENT, agent),
                        CallbackScheduled("complete", "Report", workflow_id, output))
    yield
    if rng.random() < 0.7:  # the rest are delivered in a later burst
        w.append(callback.stream, CallbacksDelivered(w.agents[AGENT, agent].last_callback))


def synthesize(path: str, events: int, *, seed: int = 7, agents: int = 100,
               concurrent: int = 500, steps: int | None = None, batch: int = 20_000) -> int:
    """Write ``events`` events to a new log at ``path``; returns how many.

    ``concurrent`` workflows run at a time, each with ``steps`` step.do (default 3-6), so
    a log with few long workflows is ``concurrent=4, steps=10**9``.
    """
    if os.path.exists(path):
        raise SystemExit(f"{path} exists; synth writes a new log only")
    rng = random.Random(seed)
    store = SQLiteStore(path, synchronous="NORMAL")
    try:
        w = _Writer(store, batch, events)
        try:
            _run(w, rng, agents, concurrent, steps)
        except _Full:
            pass
        w.flush()
        return w.written
    finally:
        store.close()


def _run(w: _Writer, rng: random.Random, agents: int, concurrent: int,
         steps: int | None) -> None:
    """Workflows round-robin, ``concurrent`` at a time, until the writer is full."""
    names = [f"tenant-{i:03d}" for i in range(agents)]
    for name in names:
        w.append(agent_stream(AGENT, name), AgentCreated(AGENT, name))
        w.append(agent_stream(AGENT, name), AgentStateSet({"last": None}))
    active: deque[Iterator[None]] = deque()
    number = 0
    while True:
        while len(active) < concurrent:
            active.append(_workflow(w, rng, number, names[number % agents], steps))
            number += 1
        runner = active.popleft()
        if next(runner, StopIteration) is not StopIteration:
            active.append(runner)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.eventlog.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="OUT", help="the new log file to write")
    parser.add_argument("--events", type=int, default=1_000_000, help="about how many events")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--concurrent", type=int, default=500,
                        help="workflows in flight at a time (default 500)")
    parser.add_argument("--steps", type=int,
                        help="step.do per workflow (default 3-6; large: few long workflows)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    written = synthesize(args.path, args.events, seed=args.seed, concurrent=args.concurrent,
                         steps=args.steps)
    elapsed = time.perf_counter() - start
    print(f"wrote {written:,} events to {args.path} ({os.path.getsize(args.path):,} bytes) "
          f"in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
