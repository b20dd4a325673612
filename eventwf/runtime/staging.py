"""What one group commit stages: the requests, checked against the folds, as rows.

A request (:class:`Append`) is one or more events, all or nothing. Staging checks each
against the current folds (status machine, runner fence, mailbox limit, ownership),
folds it into the batch's own summaries and encodes its rows, so the commit writes rows
and the projection rows they change together. A refused request leaves nothing behind.
The writer (``writer.py``) decides when a batch is staged, committed and settled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import msgspec

from eventwf.errors import MailboxFullError, TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent
from eventwf.model.codec import encode_event, event_type
from eventwf.model.commands import MAILBOX_LIMIT
from eventwf.model.events import Event, EventReceived, Recorded, parse_stream
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow
from eventwf.runtime.ack import Ack
from eventwf.runtime.consuming import Consumption
from eventwf.runtime.fencing import RunReplaced
from eventwf.runtime.ownership import Ownership
from eventwf.store.interface import PendingRow

__all__ = ["Append", "Batch", "Registry"]


class Registry(Protocol):
    """What the writer needs from the engine: current folds, fences, and a publish hook."""

    def workflow_summary(self, workflow_id: str) -> WorkflowSummary | None: ...
    def agent_summary(self, agent_class: str, name: str) -> AgentSummary | None: ...
    def runner_epoch(self, workflow_id: str) -> int: ...
    def install(
        self, workflows: dict[str, WorkflowSummary], agents: dict[tuple[str, str], AgentSummary]
    ) -> None: ...
    def published(self, records: list[Recorded]) -> None: ...
    def forget(self, streams: Sequence[str]) -> None: ...


class Append:
    """One atomic append request and, once committed, its records."""

    __slots__ = ("consumes", "done", "error", "fence", "items", "records", "watched")

    def __init__(self, items: Sequence[tuple[str, Event]], fence: tuple[str, int] | None,
                 watched: bool = True, consumes: Consumption | None = None) -> None:
        self.items = items
        self.fence = fence
        self.watched = watched  # a caller waits for the answer (else a refusal is logged)
        self.consumes = consumes  # the inbox request it applies (PG15; runtime.consuming)
        self.done = Ack()  # set once answered; its wait is shielded
        self.error: BaseException | None = None
        self.records: list[Recorded] = []


class Batch:
    """Requests staged for one commit. A batch staged again (``again_of``: the store drew
    other positions) sees what the first staging saw, whatever changed since: the same
    summaries, and no fence or ownership checks (they passed): on PostgreSQL that staging
    runs in the commit's worker thread while the engine goes on, and must stage the very
    rows that thread is committing."""

    def __init__(self, registry: Registry, positions: Iterator[int], time_us: int,
                 ownership: Ownership, again_of: Batch | None = None) -> None:
        self.registry = registry
        self.ownership = ownership
        self.checks = again_of is None
        self.positions = positions  # staged records take them in order
        self.time_us = time_us
        self.workflows: dict[str, WorkflowSummary] = {}
        self.agents: dict[tuple[str, str], AgentSummary] = {}
        self.original_wf: dict[str, WorkflowSummary | None] = (
            {} if again_of is None else dict(again_of.original_wf))
        self.original_ag: dict[tuple[str, str], AgentSummary | None] = (
            {} if again_of is None else dict(again_of.original_ag))
        self.rows: list[PendingRow] = []
        self.records: list[Recorded] = []
        self.size = 0
        # requests refused while this batch was staged, answered once it is settled
        self.refused: list[tuple[Append, Exception]] = []

    def _workflow(self, key: str, local: dict[str, WorkflowSummary]) -> WorkflowSummary | None:
        if key in local:
            return local[key]
        if key in self.workflows:
            return self.workflows[key]
        if key not in self.original_wf:
            self.original_wf[key] = self.registry.workflow_summary(key)
        return self.original_wf[key]

    def _agent(
        self, key: tuple[str, str], local: dict[tuple[str, str], AgentSummary]
    ) -> AgentSummary | None:
        if key in local:
            return local[key]
        if key in self.agents:
            return self.agents[key]
        if key not in self.original_ag:
            self.original_ag[key] = self.registry.agent_summary(*key)
        return self.original_ag[key]

    def stage(self, request: Append) -> None:
        """Check and place one request; on any error nothing of it is kept."""
        if request.fence is not None and self.checks:
            workflow_id, epoch = request.fence
            if self.registry.runner_epoch(workflow_id) != epoch:
                raise RunReplaced(f"workflow {workflow_id!r} is no longer run by this task")
        if self.checks and request.consumes is not None \
                and request.consumes.state == "withdrawn":
            raise request.consumes.refusal()  # queued before its request's row was found gone
        local_wf: dict[str, WorkflowSummary] = {}
        local_ag: dict[tuple[str, str], AgentSummary] = {}
        records: list[Recorded] = []
        rows: list[PendingRow] = []
        size = 0
        for stream, event in request.items:
            position = next(self.positions)
            kind, key, name = parse_stream(stream)
            if kind == "wf":
                current = self._workflow(key, local_wf)
                if event.__class__ is EventReceived and current is not None \
                        and current.mailbox >= MAILBOX_LIMIT:
                    raise MailboxFullError(
                        f"workflow {key!r} already holds {current.mailbox} undelivered events "
                        f"(limit {MAILBOX_LIMIT}); it must consume some first")
                head = -1 if current is None else current.head
                rec = Recorded(position, stream, head + 1, self.time_us, event)
                after = local_wf[key] = apply_workflow(current, rec)
                if self.checks:
                    self.ownership.check(after.agent_class, after.agent_name)
            elif kind == "agent":
                agent = self._agent((key, name), local_ag)
                if self.checks:
                    self.ownership.check(key, name)
                head = -1 if agent is None else agent.head
                rec = Recorded(position, stream, head + 1, self.time_us, event)
                local_ag[key, name] = apply_agent(agent, rec)
            else:
                raise TransitionError(f"cannot append to stream {stream!r}")
            data = encode_event(event)
            rows.append(PendingRow(stream, rec.stream_position, self.time_us,
                                   event_type(event), data))
            records.append(rec)
            size += len(data)
        self.workflows.update(local_wf)
        self.agents.update(local_ag)
        self.rows.extend(rows)
        self.records.extend(records)
        request.records = records
        self.size += size

    def dirty_projections(self) -> tuple[list[WorkflowSummary], list[AgentSummary]]:
        """Summaries whose projection row changed (the stream head alone does not count)."""
        workflows = [
            new for key, new in self.workflows.items()
            if (old := self.original_wf.get(key)) is None
            or msgspec.structs.replace(new, head=old.head) != old
        ]
        agents = [
            new for key, new in self.agents.items()
            if (before := self.original_ag.get(key)) is None
            or msgspec.structs.replace(new, head=before.head) != before
        ]
        return workflows, agents
