"""Following the log for other writers' agent states (specs/postgres.md PG18): a trio task.

Theory of operation. On PostgreSQL several engines write one log; each pushes its own
commits to its WebSocket clients at commit (``Agents.record``), as on SQLite. To reach
this engine's clients of an agent another engine wrote, :class:`Follower` reads the log
in commit-horizon order from where the engine opened it (``store.postgres.follow``: it
never skips a row committed late) and hands each agent record to
``Agents.push_followed``, which pushes the new state with its position and skips what
this engine already knows (its own commits: their versions are at or below the agent's
head in memory). It reads when woken: by the writers' coalesced notification after each
commit (``LOG_CHANNEL``), else by polling, every ``fast`` seconds while clients are
connected, every ``slow`` seconds while it follows agents this engine does not own. With
neither it does not read at all, not even when notified (nobody to push to: a
later client gets the current state on connect, and the follower catches up from its
cursor at the next wake-up, skipping what that state already holds), so an engine with
no clients pays nothing for following, and under ``MockClock`` no poll runs. Notifications
are hints: with none at all, pushes arrive within one poll.

What it reads and how it waits are given (:class:`Source`, :class:`Wait`): this module
imports no driver, so SQLite engines never load PostgreSQL code;
:func:`serve_postgres_following` wires the PostgreSQL pieces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import trio

from eventwf.errors import EventwfError, StorageError
from eventwf.model.events import Recorded
from eventwf.runtime.agents import Agents
from eventwf.runtime.notifications import Listener, Notifier
from eventwf.runtime.writer import Writer

__all__ = ["FAST_POLL", "SLOW_POLL", "Follower", "Source", "Wait", "serve_postgres_following"]

logger = logging.getLogger("eventwf")

FAST_POLL = 0.1  # seconds between reads while clients are connected (specs/postgres.md PG16)
SLOW_POLL = 1.0  # while this engine hosts agents it does not own and no client is connected


class FollowedRecord(Protocol):
    @property
    def position(self) -> int: ...
    @property
    def stream(self) -> str: ...
    @property
    def record(self) -> Recorded | None: ...
    @property
    def problem(self) -> str | None: ...


class Source(Protocol):
    """Committed agent records after the cursor, in horizon order (``more``: read again;
    ``StorageError`` when the database cannot be read)."""

    @property
    def more(self) -> bool: ...

    def read(self) -> Sequence[FollowedRecord]: ...


class Wait(Protocol):
    """Waits for a notification, or ``fallback`` seconds (None: a notification only)."""

    async def __call__(self, fallback: float | None) -> object: ...


class Follower:
    """Pushes other writers' agent states to this engine's clients (module docstring)."""

    def __init__(self, source: Source, agents: Agents, wait: Wait, *,
                 fast: float = FAST_POLL, slow: float = SLOW_POLL,
                 in_flight: Callable[[], trio.Event | None] = lambda: None) -> None:
        self._source = source
        self._in_flight = in_flight  # this engine's commit in its worker thread, if any
        self._agents = agents
        self._wait = wait
        self._fast = fast
        self._slow = slow
        self.reads = 0  # reads of the log
        self.pushed = 0  # records of other writers acted on

    def interval(self) -> float | None:
        """How long to wait for a notification before reading anyway."""
        if self._agents.has_clients():
            return self._fast
        if self._agents.follows_any():
            return self._slow
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        while True:
            interval = self.interval()
            if interval is not None:  # someone to push to, or views to keep: read
                await self.catch_up()
            await self._wait(interval)

    async def catch_up(self) -> None:
        """Read until the horizon, acting on each agent record (a checkpoint per batch).
        A failed read is logged; the next wake-up reads again from the same place."""
        while True:
            # A commit of this engine may land in the log before the writer installs it:
            # its rows are acted on once it has (then they are known, so skipped). Read
            # with no await in between: no commit of this engine starts meanwhile.
            committing = self._in_flight()
            try:
                rows = self._source.read()
            except StorageError as exc:
                logger.warning("%s; state pushes from other engines wait for it", exc)
                return
            if committing is not None:
                await committing.wait()
            self.reads += 1
            for row in rows:
                self._act(row)
            if not self._source.more:
                return
            await trio.lowlevel.checkpoint()

    def _act(self, row: FollowedRecord) -> None:
        if row.record is None:
            logger.error("following the log: %s; this record is not pushed", row.problem)
            return
        try:
            if self._agents.push_followed(row.record):
                self.pushed += 1
        except EventwfError as exc:
            logger.error("following the log: the record at position %d of %s cannot be "
                         "applied (%s); its agent's clients miss it", row.position,
                         row.stream, exc)


async def serve_postgres_following(writer: Writer, agents: Agents, url: str, *,
                                   task_status: trio.TaskStatus[Follower] =
                                   trio.TASK_STATUS_IGNORED) -> None:
    """An engine's log on PostgreSQL, until cancelled: after each of ``writer``'s commits a
    coalesced notification on the log channel (sent by a notifier of its own), and a
    follower of the log for ``agents`` (a listener and a horizon reader, each on a
    session of its own, opened now: it follows from the horizon of this moment)."""
    from eventwf.store.postgres.follow import LogFollower
    from eventwf.store.postgres.notify import LOG_CHANNEL, ListenSession, NotifySender

    source = LogFollower(url, prefix="agent:")
    try:
        listener = Listener(lambda channels: ListenSession(url, channels))
        notifier = Notifier(NotifySender(url))

        async def wait(fallback: float | None) -> object:
            return await listener.wait(LOG_CHANNEL, fallback)

        follower = Follower(source, agents, wait, in_flight=lambda: writer.in_flight)
        async with trio.open_nursery() as nursery:
            listener.watch(LOG_CHANNEL)
            await nursery.start(listener.serve)
            await nursery.start(notifier.serve)
            writer.on_commit = lambda: notifier.notify(LOG_CHANNEL, "log")
            await nursery.start(follower.run)
            task_status.started(follower)
    finally:
        writer.on_commit = None
        source.close()
