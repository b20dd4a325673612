"""Opening a log: rebuild lagging or damaged projections, verify what was written since
the last verification, report orphans, resume or schedule every unfinished workflow, and
load the agents that still owe callbacks."""

from __future__ import annotations

import functools
import logging

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import quarantine_agent
from eventwf.model.events import parse_stream
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.core import Core
from eventwf.store.interface import OpenReport

__all__ = ["recover"]

logger = logging.getLogger("eventwf")
_RUNNABLE = frozenset({"queued", "running", "waiting", "waitingForPause"})


def recover(core: Core) -> int:
    """Resume every unfinished workflow that can run here. Returns the runners started."""
    store = core.store
    _quarantine_damage(core, store.open_checks(quiet=core.check))
    if not core.check:
        _report_orphans(core)
        core.spawn(core.wakeups.run, "eventwf timers")
    runnable = _RUNNABLE | {"paused"} if core.check else _RUNNABLE
    started = 0
    for summary in store.unfinished_workflows():
        core.remember(summary)
        if _asleep(core, summary):
            core.schedule_wake(summary)
        elif summary.status in runnable:
            started += core.start_runner(summary)
    if not core.check:
        _load_agents_with_callbacks(core)
    return started


def _asleep(core: Core, summary: WorkflowSummary) -> bool:
    """A waiting workflow with nothing to take yet can stay without a coroutine."""
    return (not core.check and core.hibernation and summary.status == "waiting"
            and summary.wake_at_us is not None and summary.mailbox == 0
            and summary.workflow_name in core.workflow_classes
            and summary.agent_class in core.agent_classes)


def _load_agents_with_callbacks(core: Core) -> None:
    for agent_class, name in core.store.agents_with_pending_callbacks():
        if agent_class in core.agent_classes:
            core.spawn(functools.partial(core.load_agent, agent_class, name),
                       f"load agent {agent_class}/{name}")
        else:
            logger.warning("agent %s/%s has undelivered callbacks, but its class is not "
                           "registered", agent_class, name)


def _quarantine_damage(core: Core, report: OpenReport) -> None:
    """Quarantine the streams whose rows failed verification on open."""
    if report.anchor is not None:
        logger.error("%s", report.anchor)
    for position, stream, message in report.problems:
        kind, key, name = parse_stream(stream)
        if kind == "wf" and (summary := core.workflow_summary(key)) is not None:
            core.quarantine(summary, CorruptLogError(message, position=position))
            continue
        if kind == "agent" and (agent := core.agent_summary(key, name)) is not None:
            core.replace_agent(quarantine_agent(agent, key, name, position))
        logger.error("corrupt log: %s", message)


def _report_orphans(core: Core) -> None:
    known = list(core.workflow_classes)
    for binding, active, finished in core.store.binding_counts():
        if binding in core.workflow_classes:
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
