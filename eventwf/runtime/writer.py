"""Group commit: every append made while the previous commit ran goes into the next one.

Theory of operation: callers queue an :class:`Append` (one or more events, all or
nothing) and wait. The writer task takes everything queued, checks each request against
the current folds (status machine, runner fence), assigns positions, and commits the
rows plus the projection rows they change in one transaction, without yielding. Only
after the commit does it publish the records (so memory follows the log) and wake the
callers (ack after commit). No fixed sleep: the batch is whatever arrived meanwhile.
On PostgreSQL an append made while the inbox applies a request carries it
(``runtime.consuming``): the batch's commit also consumes the request's inbox row, and a
row found gone refuses only that request's appends, the rest being retried at once.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

import trio

from eventwf.errors import (
    EventwfError,
    RequestsWithdrawnError,
    StorageError,
    StreamsTakenError,
)
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Event, Recorded
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.runtime import consuming
from eventwf.runtime.clock import Clock, mocked
from eventwf.runtime.fencing import Fencing
from eventwf.runtime.ownership import Ownership
from eventwf.runtime.staging import Append, Batch, Registry
from eventwf.runtime.telemetry import NULL_TELEMETRY, Telemetry
from eventwf.store.interface import Consumed, LogStore

__all__ = ["Writer"]

logger = logging.getLogger("eventwf")

MAX_BATCH_REQUESTS = 4096
MAX_BATCH_BYTES = 16 * 1024 * 1024


class Writer:
    def __init__(self, store: LogStore, clock: Clock, registry: Registry,
                 telemetry: Telemetry = NULL_TELEMETRY,
                 ownership: Ownership | None = None) -> None:
        self._store = store
        self._ownership = ownership if ownership is not None else Ownership(None, 0.0)
        self._fencing = Fencing(registry, self._ownership, clock, self._answer)
        self._telemetry = telemetry
        self._clock = clock
        self._registry = registry
        self._queue: list[Append] = []
        self._wake = trio.Event()
        self._closed = False
        self._in_flight: trio.Event | None = None  # set once the commit in its thread ends
        self.commits = 0
        self.events = 0
        self.on_commit: Callable[[], None] | None = None  # after each commit (PostgreSQL: NOTIFY)

    @property
    def in_flight(self) -> trio.Event | None:
        """Set once the commit now in its worker thread is installed (None: none is)."""
        return self._in_flight

    @property
    def queue_depth(self) -> int:
        """Appends queued for the next commit."""
        return len(self._queue)

    async def append(
        self, items: Sequence[tuple[str, Event]], *, fence: tuple[str, int] | None = None
    ) -> list[Recorded]:
        """Append ``items`` atomically and wait for the commit; returns their records.

        Cancellation has one meaning (spec W3): once queued, a request is answered, and
        its caller learns the answer. Waiting for it is shielded (one group commit at
        most), so a caller cancelled meanwhile returns the committed records (or raises
        the commit's error) and meets the cancellation at its next checkpoint. A caller
        therefore never appends again what already committed, and a clean close commits
        what its tasks had queued.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()  # a task of the closing engine stops here
            raise EventwfError("the engine is closed; nothing was logged")
        request = Append(items, fence, consumes=consuming.current())
        self._queue.append(request)
        self._wake.set()
        await request.done.wait()  # uncancellable: the answer comes after one commit
        if request.error is not None:
            raise request.error
        return request.records

    def submit(self, items: Sequence[tuple[str, Event]], *,
               fence: tuple[str, int] | None = None) -> None:
        """Queue ``items`` without waiting: a status note a run logs when one of its tasks
        exits (no task of the run is left to wait). Queued in call order like ``append``;
        a refusal (the run was replaced meanwhile) is logged at debug level, not raised."""
        if self._closed:
            logger.debug("not logged, the engine is closed: %r", items)
            return
        try:
            consumes = consuming.current()
        except StorageError as exc:
            logger.debug("a status note was not logged: %s", exc)
            return
        self._queue.append(Append(items, fence, watched=False, consumes=consumes))
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        threaded = self._store.commits_in_thread and not mocked()  # see clock.mocked
        # a thread of its own: never queued behind the program's to_thread calls
        limiter = trio.CapacityLimiter(1)
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await trio.lowlevel.checkpoint()  # one more round for stragglers
                while self._queue:
                    staged = self._stage(self._take())
                    if staged is None:
                        continue
                    if not threaded:
                        self._settle(*staged, self._commit(*staged))
                        continue
                    self._in_flight = trio.Event()  # the engine goes on while it commits
                    try:
                        self._settle(*staged, await trio.to_thread.run_sync(
                            self._commit, *staged, limiter=limiter))
                    finally:
                        self._in_flight.set()
                        self._in_flight = None
        finally:
            self._closed = True
            for request in self._take(everything=True):
                request.error = EventwfError("the engine closed before this was logged")
                request.done.set()

    async def flush_pending(self) -> None:
        """Commit what is still queued (a clean close, after every other task stopped):
        once no commit is in flight (the writer's task may be waiting on one), inline."""
        while self._in_flight is not None:
            await self._in_flight.wait()
        if not self._closed:
            while self._queue:
                staged = self._stage(self._take())
                if staged is not None:
                    self._settle(*staged, self._commit(*staged))

    def _restage(self, first: Batch, accepted: list[Append], positions: Sequence[int]
                 ) -> Batch:
        """The accepted requests staged again at the positions the commit gave them, as
        the first staging saw them (only positions differ; see :class:`Batch`)."""
        batch = Batch(self._registry, iter(positions), first.time_us, self._ownership,
                       again_of=first)
        for request in accepted:
            batch.stage(request)
        return batch

    def _again(self, requests: list[Append]) -> None:
        """Queue ``requests`` again, first (the rest of a batch another engine cut)."""
        self._queue[:0] = requests
        if requests:
            self._wake.set()

    @staticmethod
    def _answer(request: Append, error: BaseException) -> None:
        request.error = error
        request.done.set()
        if not request.watched:
            logger.debug("a status note was not logged: %s", error)

    def _take(self, *, everything: bool = False) -> list[Append]:
        if everything or len(self._queue) <= MAX_BATCH_REQUESTS:
            batch, self._queue = self._queue, []
        else:
            batch, self._queue = self._queue[:MAX_BATCH_REQUESTS], self._queue[MAX_BATCH_REQUESTS:]
        return batch

    def _stage(self, requests: list[Append]
               ) -> tuple[Batch, list[Append], list[Consumed]] | None:
        """Stage what can be committed now: the batch, its accepted requests and the inbox
        rows it consumes (PG15; almost always none), or None if none is accepted. A
        refused request is answered at once; what does not fit waits, first."""
        if not self._ownership.everything:
            requests = self._fencing.admit(requests)
        batch = Batch(self._registry, itertools.count(self._store.head + 1),
                       self._clock.now_us(), self._ownership)
        accepted: list[Append] = []
        deferred: list[Append] = []
        for request in requests:
            if batch.size >= MAX_BATCH_BYTES:
                deferred.append(request)
                continue
            try:
                batch.stage(request)
            except Exception as exc:  # refused (TransitionError, ValueError...): caller learns
                batch.refused.append((request, exc))
            else:
                accepted.append(request)
        self._queue[:0] = deferred
        if not accepted:
            for request, refusal in batch.refused:
                self._answer(request, refusal)
            return None
        return batch, accepted, consuming.begin(accepted)

    def _commit(self, batch: Batch, accepted: list[Append], consumes: list[Consumed]
                ) -> tuple[Batch, list[int]] | StorageError:
        """Commit a staged batch (in a worker thread if the store says so: it touches only
        the batch and the store); the batch as committed and its positions, or the error."""
        staged = [rec.position for rec in batch.records]
        committed = batch

        def project(positions: Sequence[int]) -> tuple[list[WorkflowSummary],
                                                       list[AgentSummary]]:
            nonlocal committed  # the store drew other positions: stage again with them
            if list(positions) != staged:
                committed = self._restage(batch, accepted, positions)
            return committed.dirty_projections()

        try:
            positions = self._store.commit(batch.rows, project=project, consumes=consumes)
        except StorageError as exc:  # StreamsTakenError, RequestsWithdrawnError too
            return exc
        if [rec.position for rec in committed.records] != positions:
            committed = self._restage(batch, accepted, positions)
        return committed, positions

    def _settle(self, staged: Batch, accepted: list[Append], consumes: list[Consumed],
                outcome: tuple[Batch, list[int]] | StorageError) -> None:
        """Settle the batch, then answer what it refused: a refusal may rest on a request
        of this batch (a run's append after a terminate staged before it), and its caller
        must find that in memory when it learns of it (with the commit in a thread, it
        would otherwise wake while the batch is still being committed)."""
        try:
            self._settle_outcome(staged, accepted, consumes, outcome)
        finally:
            for request, refusal in staged.refused:
                self._answer(request, refusal)

    def _settle_outcome(self, staged: Batch, accepted: list[Append], consumes: list[Consumed],
                        outcome: tuple[Batch, list[int]] | StorageError) -> None:
        """Answer the batch's callers and, if it committed, publish it (memory follows the
        log). A fatal storage error stops the writer: memory may no longer match the log
        (reopening replays it)."""
        try:
            if isinstance(outcome, RequestsWithdrawnError):
                self._again(consuming.withdrawn(accepted, outcome.request_ids, self._answer))
                return
            if isinstance(outcome, StreamsTakenError):
                self._again(self._fencing.taken(accepted, outcome.streams, staged.workflows))
                return
            if isinstance(outcome, StorageError):
                for request in accepted:
                    self._answer(request, outcome)
                if outcome.fatal:
                    raise outcome
                return
        finally:
            if consumes:  # consumed with the commit, or open again
                consuming.end(accepted, not isinstance(outcome, StorageError))
        batch, _ = outcome
        if not self._ownership.everything:
            self._fencing.wrote(batch.workflows, batch.agents)
        self.commits += 1
        self.events += len(batch.rows)
        self._telemetry.committed(len(batch.rows))
        if self.on_commit is not None:
            self.on_commit()
        try:
            self._registry.install(batch.workflows, batch.agents)
            self._registry.published(batch.records)
        finally:  # committed: every caller learns it, whatever publishing did
            for request in accepted:
                request.done.set()
