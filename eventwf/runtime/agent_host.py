"""Hosting one live agent: its callback outbox, its state pushes and its connections.

Callbacks (``on_workflow_*``) are delivered by one task per agent, in log order. A logged
callback is marked delivered (``CallbacksDelivered``) right after its hook returns, so a
crash redelivers at most the callback that was running; progress is not logged and is
delivered in the same queue, in call order. A hook that raises is logged, never fatal.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from eventwf import faults
from eventwf.errors import EventwfError, StorageError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.codec import encode_value
from eventwf.model.events import (
    AgentStateMerged,
    AgentStatePatched,
    AgentStateReset,
    AgentStateSet,
    CallbackScheduled,
    CallbacksDelivered,
    Event,
    Recorded,
    agent_stream,
)
from eventwf.model.merge_patch import merge_patch
from eventwf.model.readonly import read_only

__all__ = ["AgentHost", "Connection", "state_items"]

logger = logging.getLogger("eventwf")


class Connection(Protocol):
    """A client of an agent (the WebSocket server implements it)."""

    def push_state(self, state: Any, position: int) -> None: ...
    def push_message(self, message: Any) -> None: ...


class _Item:
    __slots__ = ("done", "kind", "position", "value", "workflow_id", "workflow_name")

    def __init__(self, position: int | None, kind: str, workflow_name: str, workflow_id: str,
                 value: Any, done: trio.Event | None = None) -> None:
        self.position = position
        self.kind = kind
        self.workflow_name = workflow_name
        self.workflow_id = workflow_id
        self.value = value
        self.done = done


class AgentHost:
    """The engine's side of one agent object."""

    def __init__(
        self,
        agent: Any,
        agent_class: str,
        name: str,
        initial_state: Any,
        append: Callable[[list[tuple[str, Event]]], Awaitable[list[Recorded]]],
        spawn: Callable[[Callable[[], Awaitable[None]], str], None],
    ) -> None:
        self.agent = agent
        self.agent_class = agent_class
        self.name = name
        self.stream = agent_stream(agent_class, name)
        self.initial_state = initial_state
        self.connections: set[Connection] = set()
        self._append = append
        self._spawn = spawn
        self._queue: deque[_Item] = deque()
        self._dispatching = False
        self._seen: set[int] = set()
        self._view: tuple[Any, Any] | None = None  # (a state, its read-only view)
        # made for an agent another engine owned (PG15): not started here, no callbacks
        self.remote = False

    def state_update_hooked(self) -> bool:
        """Whether the agent overrides ``on_state_update``: the default does nothing, so
        it is not called, and a state nobody reads never gets a read-only view."""
        hook = getattr(self.agent.on_state_update, "__func__", None)
        return not getattr(hook, "__eventwf_noop__", False)

    def state_view(self, state: Any) -> Any:
        """The read-only view of ``state`` (``Agent.state``), made once per state change.

        The view of the previous state lends its unchanged top-level parts, so a merge into
        a large state costs the keys it changed, not the whole state.
        """
        view = self._view
        if view is None or view[0] is not state:
            view = (state, read_only(state, reuse=view))
            self._view = view
        return view[1]

    # -- callbacks -----------------------------------------------------------------------

    def schedule(self, rec: Recorded) -> None:
        """A logged ``CallbackScheduled`` to deliver (each position at most once here)."""
        event = rec.event
        assert isinstance(event, CallbackScheduled)
        if rec.position in self._seen:
            return
        self._seen.add(rec.position)
        self._queue.append(_Item(rec.position, event.kind, event.workflow_name,
                                 event.workflow_id, event.value))
        self._ensure_dispatcher()

    async def progress(self, workflow_name: str, workflow_id: str, progress: Any) -> None:
        """Deliver ``on_workflow_progress`` in order with the logged callbacks; wait for it."""
        done = trio.Event()
        self._queue.append(_Item(None, "progress", workflow_name, workflow_id, progress, done))
        self._ensure_dispatcher()
        await done.wait()

    def stop(self) -> None:
        """Deliver nothing more (another engine owns the agent now); waiters are woken."""
        while self._queue:
            item = self._queue.popleft()
            if item.done is not None:
                item.done.set()

    def _ensure_dispatcher(self) -> None:
        if not self._dispatching:
            self._dispatching = True
            self._spawn(self._dispatch, f"eventwf callbacks {self.stream}")

    async def _dispatch(self) -> None:
        """Deliver the queue in order. A logged callback whose hook the agent does not
        override (a no-op) is not called, and its mark waits for the next one (C4): one
        mark covers a run of them, as a crash before it redelivers nothing observable."""
        owed: list[int] = []  # positions of no-op callbacks passed but not marked yet
        try:
            while self._queue or owed:
                if not self._queue:
                    await self._mark_delivered(owed[-1], owed)
                    continue
                item = self._queue.popleft()
                if item.position is not None and self._noop(item.kind):
                    owed.append(item.position)
                    continue
                try:
                    await self._call(item)
                finally:
                    if item.done is not None:
                        item.done.set()
                faults.hit("callback.after_hook")
                if item.position is not None:
                    owed.append(item.position)
                    await self._mark_delivered(item.position, owed)
        finally:
            self._dispatching = False

    def _noop(self, kind: str) -> bool:
        hook = getattr(getattr(self.agent, f"on_workflow_{kind}"), "__func__", None)
        return getattr(hook, "__eventwf_noop__", False) is True

    async def _mark_delivered(self, position: int, covered: list[int]) -> None:
        """Log the delivery through ``position`` (of the callbacks at ``covered``, emptied
        once it is logged); while storage fails, retry (backing off) rather than redeliver."""
        delay = 0.5
        while True:
            try:
                await self._append([(self.stream, CallbacksDelivered(position))])
                self._seen.difference_update(covered)
                covered.clear()
                return
            except StorageError as exc:
                if exc.fatal:
                    raise
                logger.error("could not record delivery of the callback at position %d of %s "
                             "(%s); retrying in %.1f s", position, self.stream, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def _call(self, item: _Item) -> None:
        hook = getattr(self.agent, f"on_workflow_{item.kind}")
        try:
            await hook(item.workflow_name, item.workflow_id, item.value)
        except Exception:
            logger.exception(
                "on_workflow_%s of agent %s/%s raised for workflow %s (%s); the engine goes on",
                item.kind, self.agent_class, self.name, item.workflow_id, item.workflow_name,
            )

    @property
    def idle(self) -> bool:
        """No client, and no callback queued or being delivered here."""
        return not self.connections and not self._queue and not self._dispatching

    # -- clients -------------------------------------------------------------------------

    def push_state(self, state: Any, position: int) -> None:
        """Queue ``state`` for every client; called by the writer, so it never raises."""
        for connection in list(self.connections):
            try:
                connection.push_state(state, position)
            except Exception:
                self._drop(connection, f"the state at log position {position}")

    def push_message(self, message: Any, exclude: set[Any]) -> None:
        for connection in list(self.connections):
            if connection not in exclude:
                try:
                    connection.push_message(message)
                except Exception:
                    self._drop(connection, "a broadcast")

    def _drop(self, connection: Connection, what: str) -> None:
        logger.exception("pushing %s to %r of agent %s/%s failed; that client gets no more "
                         "pushes", what, connection, self.agent_class, self.name)
        self.connections.discard(connection)


def state_items(host: AgentHost, summary: AgentSummary | None, action: str, value: Any,
                workflow_id: str | None) -> list[tuple[str, Event]]:
    """The events for a ``set``/``reset``/``merge``/``patch`` of the agent's state, checked.

    A merge needs a dict state; a merge or patch carries the initial state it would start
    from, so the fold never needs the class's ``initial_state`` and concurrent first
    changes compose. The result as of now is encoded once, to refuse a state over 1 MiB.
    """
    stream = host.stream
    if action == "set":
        return [(stream, AgentStateSet(value, workflow_id))]
    if action == "reset":
        return [(stream, AgentStateReset(host.initial_state, workflow_id))]
    has_state = summary is not None and summary.has_state
    base = summary.state if summary is not None and has_state else host.initial_state
    what = f"state of agent {host.agent_class}/{host.name}"
    if action == "patch":
        encode_value(merge_patch(base, value), what)
        return [(stream, AgentStatePatched(value, workflow_id, initial=host.initial_state))]
    if not isinstance(base, dict):
        raise EventwfError(
            f"merge_agent_state needs a dict state, but agent {host.agent_class}/"
            f"{host.name} has a {type(base).__name__}; use update_agent_state instead")
    encode_value({**base, **value}, what)
    return [(stream, AgentStateMerged(value, workflow_id, initial=host.initial_state))]
