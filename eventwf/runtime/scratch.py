"""A log read from a database and written only in memory: the store of a replay check.

Why: ``check_replay`` on a PostgreSQL URL replays against the database itself, read-only
(specs/tools.md V20), rather than against a copy: a copy would be an SQLite file, whose
verification chains every row to the one before it in the log, while PostgreSQL chains
each row to the one before it *in its stream* (postgres.md PG5). The copy could only be
verified by re-chaining (which would vouch for rows it never checked) or by teaching SQLite
logs a second, weaker chain rule that a damaged file could then claim. Read in place, every
row is verified by the PostgreSQL store's own checks, exactly as the engine reads it.

Contract: reads go to ``base``, a store opened read-only (it holds no writer lock and its
session refuses writes). What the check's runtime writes (an agent's ``set_state`` called
by a replayed workflow, a quarantine's projection rows) is kept here, in memory, for the
rest of the check, and read back through this store: positions after the base's head,
summaries in place of the base's. Nothing reaches the database. Tracking queries and
counts (``query_workflows`` and the like) answer from the database alone.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from eventwf.model.agent_fold import AgentSummary
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import (
    Consumed,
    LogStore,
    OpenReport,
    PendingRow,
    Project,
    Sharding,
    TrackingQuery,
)

__all__ = ["ScratchStore"]


class ScratchStore:
    """``base`` for reading, memory for writing (implements ``LogStore``)."""

    def __init__(self, base: LogStore) -> None:
        self._base = base
        self._streams: dict[str, list[Recorded]] = {}
        self._workflows: dict[str, WorkflowSummary] = {}
        self._agents: dict[tuple[str, str], AgentSummary] = {}
        self._head = base.head

    @property
    def path(self) -> str:
        return self._base.path

    @property
    def head(self) -> int:
        return self._head

    @property
    def written(self) -> int:
        """How many events the check wrote (kept in memory only)."""
        return self._head - self._base.head

    def open_checks(self, *, quiet: bool = False) -> OpenReport:
        return self._base.open_checks(quiet=quiet)

    def close(self) -> None:
        self._base.close()

    @property
    def sharding(self) -> Sharding | None:
        """None: the check replays the whole log as its only engine (it writes nothing)."""
        return None

    @property
    def commits_in_thread(self) -> bool:
        """False: its commits stay in memory."""
        return False

    def commit(self, rows: Sequence[PendingRow], workflows: Sequence[WorkflowSummary] = (),
               agents: Sequence[AgentSummary] = (), *, project: Project | None = None,
               consumes: Sequence[Consumed] = ()) -> list[int]:
        if consumes:  # the check replays one log as its only engine: no inbox
            raise ValueError(f"a replay check cannot consume inbox requests "
                             f"{[c.request_id for c in consumes]}")
        first = self._head + 1
        positions = list(range(first, first + len(rows)))
        for position, row in zip(positions, rows, strict=True):
            event = decode_event(row.type, row.data, position=position)
            self._streams.setdefault(row.stream, []).append(
                Recorded(position, row.stream, row.stream_position, row.time_us, event))
        self._head += len(rows)
        if project is not None:
            workflows, agents = project(positions)
        self.write_projections(workflows, agents)
        return positions

    def write_projections(self, workflows: Sequence[WorkflowSummary] = (),
                          agents: Sequence[AgentSummary] = ()) -> None:
        self._workflows.update((s.workflow_id, s) for s in workflows)
        self._agents.update(((s.agent_class, s.name), s) for s in agents)

    def read_stream(self, stream: str, from_stream_position: int = 0, *,
                    after_position: int = 0) -> list[Recorded]:
        out = self._base.read_stream(stream, from_stream_position,
                                     after_position=after_position)
        return out + [r for r in self._streams.get(stream, ())
                      if r.stream_position >= from_stream_position
                      and r.position > after_position]

    def stream_head(self, stream: str) -> int:
        written = self._streams.get(stream)
        return written[-1].stream_position if written else self._base.stream_head(stream)

    def workflow_statuses(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        found = self._base.workflow_statuses(workflow_ids)
        for workflow_id in workflow_ids:  # the check's own summaries come first
            kept = self._workflows.get(workflow_id)
            if kept is not None:
                found[workflow_id] = (kept.status, kept.run)
        return found

    def load_workflow(self, workflow_id: str) -> WorkflowSummary | None:
        kept = self._workflows.get(workflow_id)
        return kept if kept is not None else self._base.load_workflow(workflow_id)

    def load_agent(self, agent_class: str, name: str) -> AgentSummary | None:
        kept = self._agents.get((agent_class, name))
        return kept if kept is not None else self._base.load_agent(agent_class, name)

    def unfinished_workflows(self, shards: Collection[int] | None = None
                             ) -> list[WorkflowSummary]:
        """The database's unfinished workflows as the check left them (and any it made)."""
        stored = self._base.unfinished_workflows(shards)
        known = {s.workflow_id for s in stored}
        made = [s for i, s in self._workflows.items() if i not in known]
        return [s for s in (self.load_workflow(s.workflow_id) or s for s in stored + made)
                if not s.finished]

    def agents_with_pending_callbacks(self, shards: Collection[int] | None = None
                                      ) -> list[tuple[str, str]]:
        return self._base.agents_with_pending_callbacks(shards)

    def binding_counts(self) -> list[tuple[str, int, int]]:
        return self._base.binding_counts()

    def query_workflows(self, query: TrackingQuery, *, ascending: bool, limit: int | None,
                        after: tuple[int, str] | None = None) -> list[WorkflowSummary]:
        return self._base.query_workflows(query, ascending=ascending, limit=limit, after=after)

    def count_workflows(self, query: TrackingQuery) -> int:
        return self._base.count_workflows(query)

    def workflow_ids(self, agent_class: str, agent_name: str, binding: str) -> list[str]:
        return self._base.workflow_ids(agent_class, agent_name, binding)
