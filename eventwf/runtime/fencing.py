"""The writer's side of several engines on one log (specs/postgres.md PG9a, PG13).

Theory of operation. Before a batch is staged, :meth:`Fencing.admit` refuses the requests
of agents this engine does not own now (``AgentMovedError``) and of runs that were
replaced, and claims the streams the others touch that this engine has not written in its
lease, so that an engine paused past its lease collides instead of forking them; the
claimed streams' summaries are then read again (the claim moved their heads). When a
commit collides anyway (``StreamsTakenError``), :meth:`Fencing.taken` gives the streams'
shards up (their work stops here), answers the requests that touch them and hands back
the rest, which the writer commits at once. On SQLite (one engine owns everything) the
writer does not call this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from eventwf.errors import AgentMovedError, StorageError, StreamsTakenError, TransitionError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Event, parse_stream
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime.clock import Clock
from eventwf.runtime.ownership import Ownership

__all__ = ["Fencing", "RunReplaced"]

logger = logging.getLogger("eventwf")


class RunReplaced(TransitionError):
    """The appending runner was replaced (pause, restart, terminate) before it committed."""


class Request(Protocol):
    fence: tuple[str, int] | None
    items: Sequence[tuple[str, Event]]
    records: list[Any]


class Folds(Protocol):
    def workflow_summary(self, workflow_id: str) -> WorkflowSummary | None: ...
    def agent_summary(self, agent_class: str, name: str) -> AgentSummary | None: ...
    def runner_epoch(self, workflow_id: str) -> int: ...
    def forget(self, streams: Sequence[str]) -> None: ...


R = TypeVar("R", bound=Request)


class Fencing:
    def __init__(self, folds: Folds, ownership: Ownership, clock: Clock,
                 answer: Callable[[Any, BaseException], None]) -> None:
        self._folds = folds
        self._ownership = ownership
        self._clock = clock
        self._answer = answer  # fail one request (its caller learns why)

    def agent_of(self, stream: str) -> tuple[str, str] | None:
        """The agent a stream belongs to, or None for a stream not in the log yet."""
        kind, key, name = parse_stream(stream)
        if kind == "wf":
            summary = self._folds.workflow_summary(key)
            return None if summary is None else (summary.agent_class, summary.agent_name)
        if kind == "agent" and self._folds.agent_summary(key, name) is not None:
            return key, name
        return None

    def admit(self, requests: list[R]) -> list[R]:
        """The requests left to stage, once their streams are claimed (see the module)."""
        ownership = self._ownership
        wanted: dict[str, int] = {}
        kept: list[R] = []
        for request in requests:
            try:
                self._check(request, wanted)
            except (AgentMovedError, RunReplaced) as exc:
                self._answer(request, exc)
            else:
                kept.append(request)
        if not wanted:
            return kept
        try:
            ownership.claim(list(wanted.items()), self._clock.now_us())
        except StreamsTakenError as exc:
            self._folds.forget(list(wanted))
            return self.taken(kept, exc.streams, {}, wanted)
        except StorageError as exc:
            for request in kept:
                self._answer(request, exc)
            return []
        self._folds.forget(list(wanted))
        return kept

    def _check(self, request: Request, wanted: dict[str, int]) -> None:
        if request.fence is not None:  # a replaced run claims nothing
            workflow_id, epoch = request.fence
            if self._folds.runner_epoch(workflow_id) != epoch:
                raise RunReplaced(f"workflow {workflow_id!r} is no longer run by this task")
        for stream, _ in request.items:
            agent = self.agent_of(stream)
            if agent is None:
                continue
            self._ownership.check(*agent)
            shard = self._ownership.shard(*agent)
            if self._ownership.needs_claim(stream, shard):
                wanted[stream] = shard

    def taken(self, requests: list[R], streams: Sequence[str],
              staged: Mapping[str, WorkflowSummary],
              shards_of: Mapping[str, int] | None = None) -> list[R]:
        """Another engine took ``streams``: give their shards up, answer the requests that
        touch them (``AgentMovedError``); the others, to commit again at once."""
        ownership = self._ownership
        lost: set[int] = set()
        for stream in streams:
            shard = (shards_of or {}).get(stream)
            if shard is None and (agent := self._agent(stream, staged)) is not None:
                shard = ownership.shard(*agent)
            if shard is not None:
                lost.add(shard)
        logger.warning("another engine took %d stream(s) of shard(s) %s; their work stops "
                       "here", len(streams), sorted(lost))
        ownership.on_lost(lost)
        again: list[R] = []
        for request in requests:
            touched = {stream for stream, _ in request.items}
            moved = self._moved(touched, staged, lost)
            if moved is not None or touched & set(streams):
                self._answer(request, AgentMovedError(
                    f"{'agent ' + '/'.join(moved) if moved else 'a stream of this request'} "
                    "moved to another engine; nothing of this request was logged here"))
            else:
                request.records = []
                again.append(request)
        return again

    def _moved(self, streams: Collection[str], staged: Mapping[str, WorkflowSummary],
               lost: Collection[int]) -> tuple[str, str] | None:
        for stream in streams:
            agent = self._agent(stream, staged)
            if agent is not None and self._ownership.shard(*agent) in lost:
                return agent
        return None

    def _agent(self, stream: str, staged: Mapping[str, WorkflowSummary]
               ) -> tuple[str, str] | None:
        kind, key, name = parse_stream(stream)
        if kind == "agent":
            return key, name
        if (summary := staged.get(key)) is not None:
            return summary.agent_class, summary.agent_name
        return self.agent_of(stream)

    def wrote(self, workflows: Mapping[str, WorkflowSummary],
              agents: Collection[tuple[str, str]]) -> None:
        """This engine committed to these streams in its lease: they are fenced."""
        ownership = self._ownership
        for workflow_id, summary in workflows.items():
            ownership.wrote("wf:" + workflow_id,
                            ownership.shard(summary.agent_class, summary.agent_name))
        for agent_class, name in agents:
            ownership.wrote(f"agent:{agent_class}/{name}", ownership.shard(agent_class, name))
