"""Requests for agents another engine owns, through the database's inbox (specs/postgres.md PG15).

Theory of operation. On PostgreSQL any engine serves every agent: an ``Agent`` method on
an agent this engine does not own now is sent to the agent's owner as a request (JSON:
operation, agent, arguments; never pickle) in the ``inbox`` table, with the agent's shard
and this engine's reply channel; then a coalesced notification on ``INBOX_CHANNEL``
(payload: the shard) wakes the owners. The owner (:meth:`Inbox.serve`) takes the rows of
the shards it holds in id order, marks each taken (its owner id), applies it through the
same code path as a local call (``apply``: the ``Agent`` method itself, unforwarded), and
in one transaction deletes the row and writes the reply (the result, or the error's
class and message), then notifies the requester's reply channel. The requester
(:meth:`Inbox.request`) waits for the reply with a deadline of ``lease_ttl`` plus
:data:`MARGIN` (a shard nobody holds is taken by some engine within one lease), woken by
the notification or, as a fallback, polling every :data:`POLL` seconds; an error is
raised again as the same eventwf class.

Exactly once. A request is applied only by the engine that marked it taken. A row found
taken by an engine that is not applying it now (its owner died or lost the shard
mid-request) is never applied again: it is answered with ``StorageError`` saying that
its outcome is unknown. A request refused with ``AgentMovedError`` (the shard moved
before anything was logged) is put back for the next owner. A requester whose deadline
passes withdraws its request if nobody has taken it (``StorageError``: nothing was
logged); if it was taken it waits one more deadline, then raises ``StorageError`` saying
that the outcome is unknown. The delete of the row is not in the transaction of the
request's own commit (the writer's batches do not carry it): the taken mark is what
stops a second application.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import msgspec
import trio

from eventwf import errors
from eventwf.errors import AgentMovedError, EventwfError, StorageError
from eventwf.model.values import shorten
from eventwf.runtime.agents import Agents
from eventwf.runtime.notifications import Listener, Notifier
from eventwf.runtime.ownership import Ownership

__all__ = ["INBOX_CHANNEL", "MARGIN", "POLL", "Inbox", "Table", "decode_reply",
           "encode_reply", "serve_postgres_inbox"]

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


class Table(Protocol):
    """The inbox tables (``store.postgres.inbox.InboxTable``); failures are StorageError."""

    def enqueue(self, shard: int, request: str, reply_channel: str) -> int: ...
    def pending(self, shards: Sequence[int], limit: int = ...) -> Sequence[Row]: ...
    def take(self, request_id: int, owner: str) -> bool: ...
    def release(self, request_id: int, owner: str) -> None: ...
    def answer(self, request_id: int, reply: str) -> None: ...
    def reply(self, request_id: int) -> str | None: ...
    def withdraw(self, request_id: int) -> bool: ...
    def sweep(self) -> int: ...


class _Request(msgspec.Struct, frozen=True):
    agent_class: str
    name: str
    op: str
    args: list[Any]
    kwargs: dict[str, Any]


class _Reply(msgspec.Struct, frozen=True):
    ok: bool
    result: Any = None
    error: str = ""
    message: str = ""


_ENCODER = msgspec.json.Encoder()
_REMOTE_CLASSES: dict[str, type[EventwfError]] = {}


def encode_request(agent_class: str, name: str, op: str, args: Sequence[Any],
                   kwargs: dict[str, Any]) -> str:
    """A request as JSON text; ``ValueError`` naming the operation for non-JSON arguments."""
    try:
        return _ENCODER.encode(_Request(agent_class, name, op, list(args), kwargs)).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValueError(f"the arguments of {op!r} for agent {agent_class}/{name} are not "
                         f"JSON data: {exc}") from exc


def encode_reply(result: Any = None, error: BaseException | None = None) -> str:
    """A reply as JSON text: the result, or the error's class name and message."""
    if error is not None:
        reply = _Reply(False, error=type(error).__name__, message=str(error))
    else:
        reply = _Reply(True, result=result)
    try:
        return _ENCODER.encode(reply).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        return encode_reply(error=EventwfError(f"the result is not JSON data: {exc}"))


def decode_reply(text: str) -> Any:
    """The result of a reply, or its error raised again as the same eventwf (or built-in)
    class; an error of any other class becomes an ``EventwfError`` subclass of its name."""
    reply = msgspec.json.decode(text, type=_Reply)
    if reply.ok:
        return reply.result
    raise _error(reply.error, reply.message)


def _error(name: str, message: str) -> Exception:
    found = getattr(errors, name, None) or getattr(builtins, name, None)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            made = found(message)
        except TypeError:
            pass  # another signature (StepFailedError, UnexpectedStatusError)
        else:
            if isinstance(made, Exception):
                return made
    cls = _REMOTE_CLASSES.get(name)
    if cls is None:
        cls = _REMOTE_CLASSES[name] = type(name if name.isidentifier() else "RemoteError",
                                           (EventwfError,), {})
    return cls(message)


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
                raise StorageError(f"{what}: its owner took it but did not answer within "
                                   f"{2 * self.deadline():g} s; its outcome is unknown")
        return decode_reply(reply)

    async def _wait_reply(self, request_id: int) -> str | None:
        deadline = time.monotonic() + self.deadline()  # real time: other engines answer
        while True:
            reply = self._requests.reply(request_id)
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await self._listener.wait(self.reply_channel, min(POLL, left))

    # -- the owner -----------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Apply the requests of this engine's shards, in id order, until cancelled."""
        self._listener.watch(INBOX_CHANNEL)
        self._listener.watch(self.reply_channel)
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
        by_agent: dict[tuple[str, str], list[tuple[Row, _Request | None]]] = {}
        for row in rows:  # each agent's requests in id order; agents side by side
            try:
                request: _Request | None = msgspec.json.decode(row.request, type=_Request)
            except msgspec.DecodeError:
                request = None
            key = ("", str(row.id)) if request is None else (request.agent_class, request.name)
            by_agent.setdefault(key, []).append((row, request))
        async with trio.open_nursery() as nursery:
            for items in by_agent.values():
                nursery.start_soon(self._handle_all, items)
        return len(rows) == _BATCH

    async def _handle_all(self, items: list[tuple[Row, _Request | None]]) -> None:
        """One agent's requests, in order; a failure of the database leaves the rest of
        them queued for the next read."""
        for row, request in items:
            try:
                await self._handle(row, request)
            except StorageError as exc:
                logger.warning("inbox request %d: %s; it is retried", row.id, exc)
                return

    async def _handle(self, row: Row, request: _Request | None) -> None:
        if row.taken_by is not None:  # interrupted mid-request: never applied twice
            self._answer(row, error=StorageError(
                f"inbox request {row.id} was interrupted while engine {row.taken_by} applied "
                "it (it died or lost the agent's shard); its outcome is unknown"))
            return
        if request is None:
            self._answer(row, error=EventwfError(f"inbox request {row.id} is malformed: "
                                                 f"{shorten(row.request, 80)}"))
            return
        if not self._ownership.owns(request.agent_class, request.name):
            return  # moved since it was read: its next owner takes it
        if not self._serving.take(row.id, self._ownership.owner):
            return
        try:
            agent = await self._agents.object(request.agent_class, request.name)
            result = await self._apply(agent, request.op, request.args, request.kwargs)
        except AgentMovedError:
            self._serving.release(row.id, self._ownership.owner)  # nothing was logged
            return
        except Exception as exc:
            self._answer(row, error=exc)
        else:
            self._answer(row, result=result)
        self.applied += 1

    def _answer(self, row: Row, result: Any = None, error: BaseException | None = None
                ) -> None:
        self._serving.answer(row.id, encode_reply(result, error))
        self._notifier.notify(row.reply_channel, str(row.id))

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
            await nursery.start(inbox.serve)
            task_status.started(inbox)
    finally:
        requests.close()
        serving.close()
