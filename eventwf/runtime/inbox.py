"""Requests for agents another engine owns, through the database's inbox (specs/postgres.md PG15).

Theory of operation. On PostgreSQL any engine serves every agent: an ``Agent`` method on
an agent this engine does not own now is sent to the agent's owner as a request (JSON:
operation, agent, arguments; never pickle) in the ``inbox`` table, with the agent's shard
and this engine's reply channel; then a coalesced notification on ``INBOX_CHANNEL``
(payload: the shard) wakes the owners. The owner (:meth:`Inbox.serve`) takes the rows of
the shards it holds in id order, marks each taken (its owner id) and applies it through
the same code path as a local call (``apply``: the ``Agent`` method itself, unforwarded),
under ``consuming.applying``: the request's first append consumes its row, deleting it and
writing a placeholder reply ("applied, result pending") in the transaction of its events.
When the method returns, its reply (the result, or the error's class and message)
replaces the placeholder; a method that logged nothing deletes the row and writes the
reply in one transaction instead. Then the requester's reply channel is notified. The
requester (:meth:`Inbox.request`) waits for the final reply with a deadline of
``lease_ttl`` plus :data:`MARGIN` (a shard nobody holds is taken by some engine within one
lease), woken by the notification or, as a fallback, polling every :data:`POLL` seconds;
an error is raised again as the same eventwf class.

Exactly once. A request is applied when the commit of its first events lands, and that
commit deletes its row only while the engine applying it still holds it, so two engines
never both log it. A row still present was never applied (its first append would have
deleted it), whoever marked it taken: the shard's owner takes it over and applies it
(again: the unlogged part of a method, such as a user's RPC code, may run twice). A
commit that finds the row gone (withdrawn, or taken over by another engine) rolls back and
the method's appends are refused ("withdrawn; nothing was logged"). A request refused with
``AgentMovedError`` before anything was logged is put back for the next owner. A
requester whose deadline passes withdraws its request if nobody has taken it
(``StorageError``: nothing was logged); if it was taken it waits one more deadline, then
gives up (``StorageError``): the request was applied but its result was lost when only the
placeholder is left (its owner died after logging it), and its outcome is unknown when the
row is still queued (its next owner may still apply it). A request whose requester died
may still be applied: requesters that retry make their operations idempotent (a start
with an explicit id and ``if_exists="return"``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from eventwf.errors import AgentMovedError, EventwfError, StorageError
from eventwf.model.inbox_codec import (
    InboxRequest,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    is_pending,
)
from eventwf.model.values import shorten
from eventwf.runtime import consuming
from eventwf.runtime.agents import Agents
from eventwf.runtime.consuming import State
from eventwf.runtime.notifications import MAX_KEPT, Listener, Notifier, wait_real
from eventwf.runtime.ownership import Ownership
from eventwf.store.interface import Consumed

__all__ = ["INBOX_CHANNEL", "MARGIN", "POLL", "Inbox", "Table", "decode_reply",
           "encode_reply", "encode_request", "serve_postgres_inbox"]

logger = logging.getLogger("eventwf")

INBOX_CHANNEL = "eventwf_inbox"  # the same name as store.postgres.inbox.INBOX_CHANNEL
MARGIN = 5.0  # seconds a requester waits beyond lease_ttl
POLL = 1.0  # seconds between reads of the inbox and of a reply without a notification
_BATCH = 100
_SWEEP = 600.0  # seconds between sweeps of unread replies

Apply = Callable[[Any, str, list[Any], dict[str, Any]], Awaitable[Any]]


class Row(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def request(self) -> str: ...
    @property
    def reply_channel(self) -> str: ...
    @property
    def taken_by(self) -> str | None: ...


class Left(Protocol):
    """What a requester that gives up finds (``store.postgres.inbox.Abandoned``)."""

    @property
    def queued(self) -> bool: ...
    @property
    def taken_by(self) -> str | None: ...
    @property
    def reply(self) -> str | None: ...


class Table(Protocol):
    """The inbox tables (``store.postgres.inbox.InboxTable``); failures are StorageError."""

    def enqueue(self, shard: int, request: str, reply_channel: str) -> int: ...
    def pending(self, shards: Sequence[int], limit: int = ...) -> Sequence[Row]: ...
    def take(self, request_id: int, owner: str, was: str | None = ...) -> bool: ...
    def release(self, request_id: int, owner: str) -> None: ...
    def answer(self, request_id: int, reply: str, owner: str) -> bool: ...
    def finish(self, request_id: int, reply: str) -> bool: ...
    def reply(self, request_id: int) -> str | None: ...
    def abandon(self, request_id: int) -> Left: ...
    def withdraw(self, request_id: int) -> bool: ...
    def sweep(self) -> int: ...


class Inbox:
    """One engine's side of the inbox: its requests and the requests of its shards."""

    def __init__(self, agents: Agents, ownership: Ownership, requests: Table, serving: Table,
                 listener: Listener, notifier: Notifier, apply: Apply) -> None:
        self._agents = agents
        self._ownership = ownership
        self._requests = requests
        self._serving = serving
        self._listener = listener
        self._notifier = notifier
        self._apply = apply
        self.reply_channel = f"eventwf_reply_{secrets.token_hex(8)}"
        self._awaited: dict[int, trio.Event] = {}  # request id -> set when its reply may be in
        self.applied = 0  # requests this engine applied as the owner
        self.sent = 0  # requests this engine sent

    # -- the requester -------------------------------------------------------------------

    def deadline(self) -> float:
        return self._ownership.ttl + MARGIN

    async def request(self, agent_class: str, name: str, op: str, args: Sequence[Any],
                      kwargs: dict[str, Any]) -> Any:
        """Send ``op`` to the owner of agent ``agent_class/name`` and return its result (or
        raise its error); see the module docstring for the deadline and what it raises."""
        text = encode_request(agent_class, name, op, args, kwargs)
        shard = self._ownership.shard(agent_class, name)
        request_id = self._requests.enqueue(shard, text, self.reply_channel)
        self.sent += 1
        self._notifier.notify(INBOX_CHANNEL, str(shard))
        what = f"{op} for agent {agent_class}/{name} (inbox request {request_id})"
        reply = await self._wait_reply(request_id)
        if reply is None:
            if self._requests.withdraw(request_id):
                raise StorageError(f"{what}: no engine took it within {self.deadline():g} s; "
                                   "it was withdrawn and nothing of it was logged")
            reply = await self._wait_reply(request_id)
        if reply is None:
            reply = self._give_up(request_id, what)
        return decode_reply(reply)

    def _give_up(self, request_id: int, what: str) -> str:
        """Two deadlines passed without a final reply: one that came just now, else the
        ``StorageError`` saying what is known of the request (see the module docstring)."""
        waited = f"{2 * self.deadline():g} s"
        left = self._requests.abandon(request_id)
        if left.reply is not None and not is_pending(left.reply):
            return left.reply
        if left.reply is not None:
            raise StorageError(f"{what} was applied (its events are logged) but its result "
                               f"was lost: its owner did not answer within {waited} (it "
                               "died after logging it)")
        if left.queued and left.taken_by is None and self._requests.withdraw(request_id):
            raise StorageError(f"{what}: no engine applied it within {waited}; it was "
                               "withdrawn and nothing of it was logged")
        if left.queued:
            raise StorageError(f"{what}: engine {left.taken_by or '(another)'} took it but "
                               f"did not apply it within {waited}; nothing of it is logged "
                               "yet, but its shard's next owner may still apply it: its "
                               "outcome is unknown")
        raise StorageError(f"{what}: it left the inbox but no reply came within {waited}; "
                           "its outcome is unknown")

    async def _wait_reply(self, request_id: int) -> str | None:
        """The reply once it is in, or None after the deadline. Woken by the notification
        naming the request (:meth:`dispatch_replies`: one read per reply, not one per
        waiter), else by polling every :data:`POLL` seconds."""
        deadline = time.monotonic() + self.deadline()  # real time: other engines answer
        try:
            while True:
                woken = self._awaited[request_id] = trio.Event()
                reply = self._requests.reply(request_id)
                if reply is not None:
                    return reply
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                await wait_real(woken.wait, min(POLL, left))
        finally:
            self._awaited.pop(request_id, None)

    async def dispatch_replies(self, *, task_status: trio.TaskStatus[None] =
                               trio.TASK_STATUS_IGNORED) -> None:
        """Until cancelled: wake the waiter of each reply notified on this engine's reply
        channel (the payload is the request id); every waiter when the notifications may
        be incomplete (a lost session, a fallback with none, too many to keep)."""
        self._listener.watch(self.reply_channel)
        task_status.started()
        while True:
            payloads = await self._listener.wait(self.reply_channel, POLL)
            ids = {int(p) for p in payloads if p.isdigit()}
            everyone = not payloads or len(payloads) >= MAX_KEPT or len(ids) < len(payloads)
            for request_id, woken in list(self._awaited.items()):
                if everyone or request_id in ids:
                    woken.set()

    # -- the owner -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Apply the requests of this engine's shards, in id order, until cancelled."""
        self._listener.watch(INBOX_CHANNEL)
        task_status.started()
        next_sweep = time.monotonic()
        while True:
            full = await self.serve_once()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + _SWEEP
                self._sweep()
            if not full:
                await self._listener.wait(INBOX_CHANNEL, POLL)

    async def serve_once(self) -> bool:
        """Apply what is queued for the shards held now; True if a full batch was read."""
        shards = [s for s in sorted(self._ownership.held) if s not in self._ownership.expired()]
        if not shards:
            return False
        try:
            rows = self._serving.pending(shards, _BATCH)
        except StorageError as exc:
            logger.warning("%s; requests from other engines wait for it", exc)
            return False
        by_agent: dict[tuple[str, str], list[tuple[Row, InboxRequest | None]]] = {}
        for row in rows:  # each agent's requests in id order; agents side by side
            request = decode_request(row.request)
            key = ("", str(row.id)) if request is None else (request.agent_class, request.name)
            by_agent.setdefault(key, []).append((row, request))
        async with trio.open_nursery() as nursery:
            for items in by_agent.values():
                nursery.start_soon(self._handle_all, items)
        return len(rows) == _BATCH

    async def _handle_all(self, items: list[tuple[Row, InboxRequest | None]]) -> None:
        """One agent's requests, in order; a failure of the database leaves the rest of
        them queued for the next read."""
        for row, request in items:
            try:
                await self._handle(row, request)
            except StorageError as exc:
                logger.warning("inbox request %d: %s; it is retried", row.id, exc)
                return

    async def _handle(self, row: Row, request: InboxRequest | None) -> None:
        owner = self._ownership.owner
        if request is not None and not self._ownership.owns(request.agent_class, request.name):
            return  # moved since it was read: its next owner takes it
        if not self._serving.take(row.id, owner, row.taken_by):
            return  # withdrawn, answered, or taken by another engine since it was read
        if row.taken_by is not None:  # still queued: its first append never committed
            logger.info("inbox request %d: engine %s took it but logged nothing of it; "
                        "applying it here", row.id, row.taken_by)
        state: State = "closed"
        reply: str | None
        if request is None:
            reply = encode_reply(error=EventwfError(
                f"inbox request {row.id} is malformed: {shorten(row.request, 80)}"))
        else:
            state, reply = await self._run(row.id, request)
        if reply is None:
            self._serving.release(row.id, owner)  # the agent moved; nothing was logged
            return
        self.applied += 1
        if state == "withdrawn":  # its requester was told, or another engine answers
            logger.debug("inbox request %d was withdrawn while it was applied", row.id)
            return
        if state == "consumed":
            answered = self._serving.finish(row.id, reply)
        else:
            answered = self._serving.answer(row.id, reply, owner)
        if answered:
            self._notifier.notify(row.reply_channel, str(row.id))

    async def _run(self, request_id: int, request: InboxRequest) -> tuple[State, str | None]:
        """Apply a request this engine took, its first commit consuming its row: the
        consumption's last state and the reply (None: the agent moved before anything of
        the request was logged, so it goes back to the queue)."""
        try:  # outside the consumption: making the agent (AgentCreated) is not the request
            agent = await self._agents.object(request.agent_class, request.name)
        except AgentMovedError:
            return "closed", None
        except Exception as exc:
            return "closed", encode_reply(error=exc)
        error: Exception | None = None
        result: Any = None
        with consuming.applying(Consumed(request_id, self._ownership.owner)) as consumption:
            try:
                result = await self._apply(agent, request.op, request.args, request.kwargs)
            except Exception as exc:
                error = exc
        state = await consumption.close()
        if isinstance(error, AgentMovedError) and state != "consumed":
            return state, None
        return state, encode_reply(result, error)

    def _sweep(self) -> None:
        try:
            swept = self._serving.sweep()
        except StorageError as exc:
            logger.warning("%s; unread replies stay until the next sweep", exc)
            return
        if swept:
            logger.info("swept %d inbox replies nobody read", swept)


async def serve_postgres_inbox(agents: Agents, ownership: Ownership, url: str, apply: Apply,
                               *, task_status: trio.TaskStatus[Inbox] =
                               trio.TASK_STATUS_IGNORED) -> None:
    """An engine's inbox on PostgreSQL, until cancelled: its requests and its shards'
    requests (each through a session of its own), a listener and a notifier."""
    from eventwf.store.postgres.inbox import InboxTable
    from eventwf.store.postgres.notify import ListenSession, NotifySender

    requests, serving = InboxTable(url), InboxTable(url)
    try:
        listener = Listener(lambda channels: ListenSession(url, channels))
        notifier = Notifier(NotifySender(url))
        inbox = Inbox(agents, ownership, requests, serving, listener, notifier, apply)
        async with trio.open_nursery() as nursery:
            listener.watch(INBOX_CHANNEL)
            listener.watch(inbox.reply_channel)
            await nursery.start(listener.serve)
            await nursery.start(notifier.serve)
            await nursery.start(inbox.dispatch_replies)
            await nursery.start(inbox.serve)
            task_status.started(inbox)
    finally:
        requests.close()
        serving.close()
