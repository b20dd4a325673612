"""The storage interface: everything the runtime needs from a log backend, and nothing more.

Theory of operation: a backend keeps one append-only table of events (global position,
stream, version in the stream, time, type, data, a hash chain) and the projection tables
folded from it (``workflows``, ``agents``), changed in the same transaction as the events
that change them. The runtime never reads or writes SQL: it hands ``commit`` a batch of
pending rows (each row names its stream version, which the backend enforces as the
expected version) with the summaries they change, reads a stream back to replay it, and
asks the projections for summaries and tracking queries. SQLite is the first backend
(``eventwf.store.sqlite``); another implements this Protocol and nothing above changes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Recorded
from eventwf.model.workflow_fold import WorkflowSummary

__all__ = ["Consumed", "Lease", "LogStore", "OpenReport", "PendingRow", "Project", "Projections",
           "Sharding", "TrackingQuery"]


class PendingRow(NamedTuple):
    """An event row before it has a log position; ``stream_position`` is the version the
    stream must reach with it (the expected version of an append)."""

    stream: str
    stream_position: int
    time_us: int
    type: str
    data: bytes


class Consumed(NamedTuple):
    """An inbox request a commit consumes (PostgreSQL, specs/postgres.md PG15): its row,
    which ``taken_by`` (this engine's owner id) marked taken, is deleted and its
    placeholder reply written in the transaction of the request's first events."""

    request_id: int
    taken_by: str


Projections = tuple[Sequence[WorkflowSummary], Sequence[AgentSummary]]
# Given the positions a batch's rows got (drawn by the commit), the projection rows to write.
Project = Callable[[Sequence[int]], Projections]


class Lease(NamedTuple):
    """A shard this engine holds, in the lease epoch the database gave it. ``released``:
    taken after its last holder gave it up cleanly (nobody can still be appending to its
    streams, so no claim is needed, PG13), not after it expired."""

    shard: int
    epoch: int
    released: bool = False


class OpenReport(NamedTuple):
    """What opening found: rows that fail verification (position, stream, message) and an
    anchor mismatch (the log lost or rewrote events it once held)."""

    problems: list[tuple[int, str, str]]
    anchor: str | None


@dataclass(frozen=True)
class TrackingQuery:
    """The tracked workflows of one agent that a query or a deletion selects.

    ``metadata`` pairs a JSON path (None: a key no stored value can have, so nothing
    matches) with the value it must equal, typed (``1`` matches numbers only).
    """

    agent_class: str
    agent_name: str
    statuses: Sequence[str] | None = None
    workflow_name: str | None = None
    metadata: Sequence[tuple[str | None, Any]] = ()
    created_before_us: int | None = None


class Sharding(Protocol):
    """Shard leases and stream claims of a store several engines share (PostgreSQL,
    specs/postgres.md PG12-PG13). Leases are timed by the database's clock only; the
    engine keeps its own deadline per lease. A SQLite store has none (one engine owns
    everything, by its file lock)."""

    @property
    def shards(self) -> int:
        """How many shards the log was made with."""

    def shard_of(self, agent_class: str, name: str) -> int:
        """The shard of an agent and of its workflows (the same in every process)."""

    def heartbeat(self, owner: str, ttl: float) -> tuple[int, int]:
        """Say that ``owner`` is alive for ``ttl`` more seconds; how many engines are, and
        the database's clock (µs since the epoch) as it answered."""

    def take(self, owner: str, ttl: float, limit: int) -> list[Lease]:
        """Take up to ``limit`` free or expired shards; the leases won."""

    def renew(self, owner: str, held: Sequence[Lease], ttl: float) -> list[Lease]:
        """Extend the leases still held (a missing one was lost), in one statement."""

    def release(self, owner: str, held: Sequence[Lease]) -> None:
        """Give leases up at once (others take them without waiting for the expiry)."""

    def leave(self, owner: str) -> None:
        """``owner`` closes: no longer counted among the live engines."""

    def claim(self, streams: Sequence[str], data: bytes, time_us: int) -> dict[str, int]:
        """Append a claim marker (``data``: an encoded ``StreamClaimed``) to each stream at
        its head, in one transaction; the versions claimed. ``StreamsTakenError`` if other
        writers keep appending."""


class LogStore(Protocol):
    """One log and its projections, used from one thread (the engine's)."""

    @property
    def path(self) -> str:
        """Where the log lives (a file path or a database URL), for messages."""

    @property
    def head(self) -> int:
        """The highest position this store knows committed (0 for an empty log); with
        several engines, other engines' later rows may be beyond it."""

    def open_checks(self, *, quiet: bool = False) -> OpenReport:
        """Bring the projections up to date with the log (rebuilding what lags or fails its
        checks) and verify what was written since the last verification."""

    def close(self) -> None:
        """Let the log go (whatever happens: a closed store holds no lock)."""

    # -- writing -------------------------------------------------------------------------

    @property
    def sharding(self) -> Sharding | None:
        """Leases and claims when several engines share the log; None when one owns it."""

    @property
    def commits_in_thread(self) -> bool:
        """True: the writer calls :meth:`commit` from a worker thread while the engine goes
        on (a commit waits on a server); the store then serialises its other calls with
        it. False: called from the engine's thread, like every other method."""

    def commit(self, rows: Sequence[PendingRow], workflows: Sequence[WorkflowSummary] = (),
               agents: Sequence[AgentSummary] = (), *, project: Project | None = None,
               consumes: Sequence[Consumed] = ()) -> list[int]:
        """Append ``rows`` and upsert the projection rows, in one transaction; the positions
        the rows got (the store draws them: gap-free on SQLite, from an identity with gaps
        on PostgreSQL). ``project``, when given, is called with those positions inside the
        transaction and its rows are written instead of ``workflows`` and ``agents`` (folds
        that keep positions need them). ``consumes``: inbox requests whose rows the same
        transaction deletes, writing their placeholder replies (PostgreSQL only; a store
        without an inbox raises ``ValueError`` if given any; none costs nothing).
        ``StorageError`` when it did not happen (nothing of it is in the log),
        ``StreamsTakenError`` when another engine appended to a stream first,
        ``RequestsWithdrawnError`` when a consumed request is no longer queued as this
        engine's, ``StorageError(fatal=True)`` when its outcome is unknown."""

    def write_projections(self, workflows: Sequence[WorkflowSummary] = (),
                          agents: Sequence[AgentSummary] = ()) -> None:
        """Projection rows no event changes (a quarantine found while reading)."""

    # -- reading the log -----------------------------------------------------------------

    def read_stream(self, stream: str, from_stream_position: int = 0, *,
                    after_position: int = 0) -> list[Recorded]:
        """A stream's events in order, verified; ``CorruptLogError`` at the first bad one."""

    def stream_head(self, stream: str) -> int:
        """The last version of ``stream`` (-1 if it has none)."""

    # -- projections ---------------------------------------------------------------------

    def load_workflow(self, workflow_id: str) -> WorkflowSummary | None: ...

    def workflow_statuses(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """(status, run) of each of ``workflow_ids`` that has a projection row, in one
        read: a hint for waits (the row itself, read by ``load_workflow``, is checked)."""
    def load_agent(self, agent_class: str, name: str) -> AgentSummary | None: ...

    def unfinished_workflows(self, shards: Collection[int] | None = None
                             ) -> list[WorkflowSummary]:
        """Every workflow not complete, errored or terminated, in creation order (only
        those of ``shards`` when given)."""

    def agents_with_pending_callbacks(self, shards: Collection[int] | None = None
                                      ) -> list[tuple[str, str]]: ...

    def binding_counts(self) -> list[tuple[str, int, int]]:
        """(binding, active, finished) for every binding with workflows in the log."""

    def query_workflows(self, query: TrackingQuery, *, ascending: bool, limit: int | None,
                        after: tuple[int, str] | None = None) -> list[WorkflowSummary]:
        """Tracked workflows ordered by (created time, id), after a keyset cursor."""

    def count_workflows(self, query: TrackingQuery) -> int: ...

    def workflow_ids(self, agent_class: str, agent_name: str, binding: str) -> list[str]:
        """The ids of one agent's workflows under ``binding`` (quarantined ones left out)."""
