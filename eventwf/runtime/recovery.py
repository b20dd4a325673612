"""Opening a log: bring the projections up to date, quarantine what fails verification,
report orphans, resume or schedule every unfinished workflow, and load the agents that
still owe callbacks. A replay-only check (``check_replay``) recovers differently: quietly,
paused workflows too, no timers, no hooks (``recover_for_check``)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection

from eventwf.errors import CorruptLogError, StreamsTakenError
from eventwf.model.events import StreamClaimed, agent_stream, parse_stream, workflow_stream
from eventwf.model.status import RUNNABLE, WorkflowStatus
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.fingerprint import code_fingerprint, matches
from eventwf.runtime.runtime import Runtime
from eventwf.store.interface import OpenReport

__all__ = ["recover", "recover_for_check", "resume_shards"]

logger = logging.getLogger("eventwf")

_CLAIMS_LOOKED_PAST = 8  # more takeovers in a row without a write: the sleeper is replayed


def recover(rt: Runtime) -> int:
    """Resume every unfinished workflow that can run here. Returns the runs started. With
    several engines (PostgreSQL) only the shards this engine takes are resumed, as it
    takes them (``resume_shards``, from ``takeover.py``)."""
    _quarantine_damage(rt, rt.store.open_checks())
    _report_orphans(rt)
    rt.spawn(rt.hibernation.wakeups.run, "eventwf timers")
    if not rt.ownership.everything:
        return 0
    started = _resume(rt, RUNNABLE, hibernate=rt.hibernation.enabled)
    _load_agents_with_callbacks(rt)
    return started


def resume_shards(rt: Runtime, shards: Collection[int]) -> tuple[int, set[int]]:
    """Recovery on gaining shards (specs/postgres.md PG17): claim the streams of their
    unfinished workflows and of their agents that owe callbacks (PG13), then resume them
    as a reopened engine does. Returns the runs started and the shards another engine
    turned out to hold (a claim collided: the caller gives them up)."""
    own = rt.ownership

    def in_shards(agent_class: str, name: str) -> bool:
        return own.shard(agent_class, name) in shards

    rt.summaries.forget_where(in_shards)  # another engine may have written them since
    by_shard: dict[int, list[tuple[str, int]]] = {}
    for s in rt.store.unfinished_workflows(shards):
        if s.workflow_name not in rt.workflow_classes or s.agent_class not in rt.agent_classes:
            continue  # not run here, so left untouched (an orphan is only reported)
        shard = own.shard(s.agent_class, s.agent_name)
        by_shard.setdefault(shard, []).append((workflow_stream(s.workflow_id), shard))
    for agent_class, name in rt.store.agents_with_pending_callbacks(shards):
        if agent_class not in rt.agent_classes:
            continue
        shard = own.shard(agent_class, name)
        by_shard.setdefault(shard, []).append((agent_stream(agent_class, name), shard))
    taken: set[int] = set()
    for shard, streams in sorted(by_shard.items()):
        try:
            own.claim(streams, rt.clock.now_us())
        except StreamsTakenError:
            taken.add(shard)
    kept = set(shards) - taken
    rt.summaries.forget_where(in_shards)  # the claims moved their heads
    started = _resume(rt, RUNNABLE, hibernate=rt.hibernation.enabled, shards=kept)
    _load_agents_with_callbacks(rt, kept)
    return started, taken


def recover_for_check(rt: Runtime) -> int:
    """Replay every unfinished workflow, paused ones too, and nothing else."""
    _quarantine_damage(rt, rt.store.open_checks(quiet=True))
    return _resume(rt, RUNNABLE | {"paused"}, hibernate=False)


def _resume(rt: Runtime, runnable: frozenset[WorkflowStatus], *, hibernate: bool,
            shards: Collection[int] | None = None) -> int:
    started = 0
    for summary in rt.store.unfinished_workflows(shards):
        rt.summaries.remember(summary)
        if hibernate and _asleep(rt, summary) and _same_code(rt, summary):
            rt.hibernation.schedule_wake(summary)
        elif summary.status in runnable:
            started += rt.runs.start(summary)
    return started


def _asleep(rt: Runtime, summary: WorkflowSummary) -> bool:
    """A waiting workflow with nothing to take yet can stay without a coroutine."""
    return (summary.status == "waiting" and summary.wake_at_us is not None
            and summary.mailbox == 0 and summary.workflow_name in rt.workflow_classes
            and summary.agent_class in rt.agent_classes)


def _same_code(rt: Runtime, summary: WorkflowSummary) -> bool:
    """Whether a sleeper's last event (the wait it sleeps in) was logged by the code now
    registered for its binding (R16): one read of one event. When not, the caller replays
    it at once, so a divergence pauses it now rather than when its timer fires."""
    code = code_fingerprint(rt.workflow_classes[summary.workflow_name])
    stream = workflow_stream(summary.workflow_id)
    version = summary.head
    while version >= max(summary.head - _CLAIMS_LOOKED_PAST, 0):
        try:  # one event: the wait, unless claim markers of takeovers follow it (PG13)
            last = rt.store.read_stream(stream, version)[:1]
        except CorruptLogError:  # not silent: replaying it reads it again and quarantines it
            return False
        if not last or not isinstance(last[0].event, StreamClaimed):
            return len(last) == 1 and matches(last[0].event, code)
        version -= 1
    return False


def _load_agents_with_callbacks(rt: Runtime, shards: Collection[int] | None = None) -> None:
    for agent_class, name in rt.store.agents_with_pending_callbacks(shards):
        if agent_class in rt.agent_classes:
            rt.spawn(functools.partial(rt.agents.load, agent_class, name),
                     f"load agent {agent_class}/{name}")
        else:
            logger.warning("agent %s/%s has undelivered callbacks, but its class is not "
                           "registered", agent_class, name)


def _quarantine_damage(rt: Runtime, report: OpenReport) -> None:
    """Quarantine the streams whose rows failed verification on open (an anchor
    mismatch is logged by the store, before its new anchor is written)."""
    for position, stream, message in report.problems:
        kind, key, name = parse_stream(stream)
        if kind == "wf" and (summary := rt.summaries.workflow(key)) is not None:
            rt.runs.quarantine(summary, CorruptLogError(message, position=position))
            continue
        if kind == "agent":
            rt.agents.quarantine(key, name, position)
        logger.error("corrupt log: %s", message)


def _report_orphans(rt: Runtime) -> None:
    known = list(rt.workflow_classes)
    for binding, active, finished in rt.store.binding_counts():
        if binding in rt.workflow_classes:
            continue
        parts = [f"{active} active"] if active else []
        if finished:
            parts.append(f"{finished} finished")
        target = known[0] if len(known) == 1 else "<NEW_BINDING_NAME>"
        logger.warning(
            "Found %d workflow(s) referencing unknown binding '%s' (%s); they are left "
            "untouched. If you renamed the binding, call: "
            "agent.migrate_workflow_binding('%s', '%s')",
            active + finished, binding, ", ".join(parts), binding, target,
        )
