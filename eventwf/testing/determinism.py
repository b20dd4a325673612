"""Replay a log's workflows against the code under test, and fail on a disagreement.

This is ``eventwf.check_replay`` (the check behind ``eventwf log PATH check``) turned
into an assertion, and extended to finished workflows: the engine replays only
unfinished ones, so for a finished workflow the log is first cut just before the event
that finished it (the log a crash at that moment leaves), where its ``run`` must replay
every logged command and reach its end. Nothing is ever written to the log checked.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from eventwf.agent import Agent
from eventwf.engine import ReplayCheck, check_replay
from eventwf.errors import ReplayCheckError
from eventwf.model.events import WorkflowCompleted, WorkflowErrored, WorkflowTerminated
from eventwf.store import copy_log_prefix, open_store
from eventwf.workflow import AgentWorkflow

__all__ = ["FAILING", "check_determinism"]

# The verdicts that fail the check (as ``eventwf log check`` exits 1 on them).
FAILING = frozenset({"diverged", "corrupt", "error"})
_ENDS = (WorkflowCompleted, WorkflowErrored, WorkflowTerminated)


def _end_position(path: str, workflow_id: str) -> int:
    """Where the workflow last finished in the log (``ValueError`` if it never did)."""
    store = open_store(path, readonly=True)
    try:
        ends = [r.position for r in store.read_stream("wf:" + workflow_id)
                if isinstance(r.event, _ENDS)]
    finally:
        store.close()
    if not ends:
        raise ValueError(f"workflow {workflow_id!r} has not finished in {path}; unfinished "
                         "workflows are checked without naming them")
    return ends[-1]


async def _check_finished(path: str, workflow_id: str, options: dict[str, Any],
                          timeout: float) -> ReplayCheck:
    with tempfile.TemporaryDirectory(prefix="eventwf-determinism-") as tmp:
        cut = os.path.join(tmp, "cut.db")
        copy_log_prefix(path, cut, _end_position(path, workflow_id) - 1)
        for verdict in await check_replay(cut, timeout=timeout, **options):
            if verdict.workflow_id == workflow_id:
                return verdict
    raise ReplayCheckError(f"workflow {workflow_id!r} of {path} was not replayed before its end")


async def check_determinism(
    path: str | os.PathLike[str],
    *,
    agents: Sequence[type[Agent]],
    workflows: Mapping[str, type[AgentWorkflow[Any]]] | Sequence[type[AgentWorkflow[Any]]],
    finished: Sequence[str] = (),
    strict: bool = False,
    timeout: float = 60.0,
) -> list[ReplayCheck]:
    """Replay every unfinished workflow of the log at ``path``, and each finished one
    named in ``finished``, against ``agents`` and ``workflows``; return the verdicts.

    Raises :class:`~eventwf.errors.ReplayCheckError` (an ``AssertionError``) naming each
    workflow whose verdict is ``diverged``, ``corrupt`` or ``error`` (and ``orphan``, a
    workflow with no registered code, when ``strict``), with the replay's message.
    """
    where = os.fspath(path)
    options: dict[str, Any] = {"agents": agents, "workflows": workflows}
    verdicts = await check_replay(where, timeout=timeout, **options)
    for workflow_id in finished:
        verdicts.append(await _check_finished(where, workflow_id, options, timeout))
    failing = FAILING | ({"orphan"} if strict else set())
    bad = [v for v in verdicts if v.verdict in failing]
    if bad:
        lines = [f"workflow {v.workflow_id!r} ({v.workflow_name}): {v.verdict} after "
                 f"{v.commands} command(s): {v.message}" for v in bad]
        raise ReplayCheckError(f"{len(bad)} of {len(verdicts)} workflow(s) of {where} do not "
                               "replay against this code:\n  " + "\n  ".join(lines))
    return verdicts
