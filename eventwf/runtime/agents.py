"""The live agents of an engine: one object per (class, name), made and logged on first use.

Each live agent has an ``AgentHost`` (its callback outbox and its clients). Committed
records of an agent's stream come here (``record``): state changes are pushed to its
clients, each with the state as of its own log position, and callbacks are scheduled.
An agent that owes callbacks but is not live is loaded to deliver them, retrying while it
cannot be (its ``on_start`` raises). Nothing here ends the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import trio

from eventwf.errors import AgentMovedError, CorruptLogError, EventwfError
from eventwf.model.agent_fold import AgentSummary, apply_agent, quarantine_agent
from eventwf.model.codec import json_value
from eventwf.model.events import (
    AgentCreated,
    AgentStateMerged,
    AgentStatePatched,
    AgentStateReset,
    AgentStateSet,
    CallbackScheduled,
    Event,
    Recorded,
    agent_stream,
    parse_stream,
)
from eventwf.runtime.agent_host import AgentHost, Connection, state_items
from eventwf.runtime.ownership import Ownership
from eventwf.runtime.summaries import AgentKey, Summaries
from eventwf.store.interface import LogStore

__all__ = ["Agents", "host_of"]

logger = logging.getLogger("eventwf")

Append = Callable[[Sequence[tuple[str, Event]]], Awaitable[list[Recorded]]]
Spawn = Callable[[Callable[[], Awaitable[None]], str], None]
Bind = Callable[[Any, AgentHost], None]  # attaches a new agent object to its host
Owns = Callable[[str, str], bool]  # whether this engine writes an agent's stream


def _owns_every_agent(agent_class: str, name: str) -> bool:
    return True  # one engine per log: it writes every stream


def host_of(agent: Any) -> AgentHost:
    """The host of an agent object the engine made (``EventwfError`` for any other)."""
    host = getattr(agent, "_eventwf_host", None)
    if not isinstance(host, AgentHost):
        raise EventwfError(
            f"{type(agent).__name__} instance is not attached to an engine; get agents "
            "with engine.get_agent(cls, name)")
    return host


class Agents:
    def __init__(self, bind: Bind, classes: dict[str, type[Any]], summaries: Summaries,
                 store: LogStore, append: Append, spawn: Spawn,
                 owns: Owns = _owns_every_agent) -> None:
        self._bind = bind
        self.owns = owns  # replaced by an engine that shares its log (shard ownership)
        self.classes = classes
        self._summaries = summaries
        self._store = store
        self._append = append
        self._spawn = spawn
        self._hosts: dict[AgentKey, AgentHost] = {}
        self._creating: dict[AgentKey, trio.Event] = {}
        self.ownership = Ownership(None, 0.0)  # several engines: set once wired
        # remote agents with no log yet: the follower starts them from nothing, not from a
        # projection row that may already be ahead of the record it reads (PG15, PG18)
        self._unborn: set[AgentKey] = set()

    def __len__(self) -> int:
        return len(self._hosts)

    def clients(self) -> int:
        """How many clients are connected to the live agents."""
        return sum(len(host.connections) for host in self._hosts.values())

    def connections(self, agent_class: str, name: str) -> list[Connection]:
        """The clients connected to one agent now (none when it is not live here)."""
        host = self._hosts.get((agent_class, name))
        return [] if host is None else list(host.connections)

    # -- live objects --------------------------------------------------------------------

    async def object(self, agent_class: str, name: str) -> Any:
        """The one live object for (class, name), created and logged on first use. An
        agent another engine owned keeps its object (and its clients) when this engine
        takes it over: the object is started here as the owner's (PG15)."""
        key = (agent_class, name)
        while True:
            host = self._hosts.get(key)
            if host is not None and not (host.remote and self.ownership.owns(*key)):
                return host.agent
            creating = self._creating.get(key)
            if creating is None:
                break
            await creating.wait()
        cls = self.classes.get(agent_class)
        if cls is None:
            raise EventwfError(f"agent class {agent_class!r} is not registered with this engine")
        self._creating[key] = done = trio.Event()
        try:
            return await self._create(cls, agent_class, name, host)
        finally:
            del self._creating[key]
            done.set()

    async def _create(self, cls: type[Any], agent_class: str, name: str,
                      remote: AgentHost | None = None) -> Any:
        """Make the agent live as its owner's: a new object, or ``remote`` (the object
        this engine already served for another owner) promoted in place."""
        key = (agent_class, name)
        initial = json_value(getattr(cls, "initial_state", None), f"{agent_class}.initial_state")
        stream = agent_stream(agent_class, name)
        if not self.ownership.everything:
            self._summaries.forget_agent(key)  # read it as the log has it
            if not self.ownership.owns(agent_class, name):
                if remote is not None:
                    return remote.agent
                return self._remote(cls, agent_class, name, initial)
        summary = self._summaries.agent(agent_class, name)
        if summary is None:
            await self._append([(stream, AgentCreated(agent_class, name))])
        elif summary.corrupt_position is not None:
            raise CorruptLogError(
                f"agent {agent_class}/{name} has a corrupt event at log position "
                f"{summary.corrupt_position}", position=summary.corrupt_position)
        if remote is None:
            agent = cls()
            host = AgentHost(agent, agent_class, name, initial, self._append, self._spawn)
            self._bind(agent, host)
        else:
            host, agent = remote, remote.agent
            host.remote = False
        self._hosts[key] = host
        self._unborn.discard(key)
        try:
            await agent.on_start()
        except BaseException:
            if remote is None:
                del self._hosts[key]
            else:
                host.remote = True  # still served, as another engine's, until started
            raise
        summary = self._summaries.agent(agent_class, name)
        if summary is not None and summary.callbacks_pending:
            for rec in self._store.read_stream(stream, after_position=summary.delivered_through):
                if isinstance(rec.event, CallbackScheduled):
                    host.schedule(rec)
        return agent

    def _remote(self, cls: type[Any], agent_class: str, name: str, initial: Any) -> Any:
        """Several engines (PG13, PG15): an agent another engine owns gets an object bound
        to a remote host. Its state is its projection row, kept current by the follower;
        its durable operations go to the owner through the inbox (``Agent``); it is not
        started here (``on_start`` runs on the owner) and delivers no callbacks. Its
        stream is claimed by its owner at its first append, not here."""
        summary = self._summaries.agent(agent_class, name)  # the projection row
        if summary is not None and summary.corrupt_position is not None:
            raise CorruptLogError(
                f"agent {agent_class}/{name} has a corrupt event at log position "
                f"{summary.corrupt_position}", position=summary.corrupt_position)
        agent = cls()
        host = AgentHost(agent, agent_class, name, initial, self._append, self._spawn)
        host.remote = True
        if summary is None:
            self._unborn.add((agent_class, name))
        self._bind(agent, host)
        self._hosts[agent_class, name] = host
        return agent

    def drop_where(self, agent: Callable[[str, str], bool]) -> set[AgentKey]:
        """The agents ``agent`` selects are another engine's now: they deliver nothing more
        from here. One with clients stays, as a remote agent (its clients get the new
        owner's states through the follower, PG18, from the version they saw: its summary
        must be kept); the others are let go. The agents kept."""
        kept: set[AgentKey] = set()
        for key, host in list(self._hosts.items()):
            if agent(*key):
                host.stop()
                if host.connections:
                    host.remote = True
                    kept.add(key)
                else:
                    del self._hosts[key]
                    self._unborn.discard(key)
        return kept

    async def load(self, agent_class: str, name: str) -> None:
        """Load an agent that owes callbacks; while that fails, retry (backing off)."""
        delay = 0.5
        while True:
            try:
                await self.object(agent_class, name)
                return
            except CorruptLogError as exc:
                logger.error("agent %s/%s cannot be loaded: %s", agent_class, name, exc)
                return  # quarantined: nothing will change that while the engine runs
            except AgentMovedError:
                return  # another engine owns it: that engine delivers its callbacks
            except Exception:
                logger.exception("agent %s/%s could not be loaded to deliver its callbacks; "
                                 "retrying in %.1f s", agent_class, name, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def evict_idle(self, agent_class: str, keep: Collection[str],
                   busy_streams: Collection[str]) -> set[str]:
        """Drop the live objects of the idle agents of one class; return the names still live.

        Internal: a host that bounds its agents in memory (the demo) calls it. Idle means not
        in ``keep``, no client, no callback queued, being delivered or logged undelivered, no
        live run of its workflows (``busy_streams``), not being created (agents.md A8).
        """
        live: set[str] = set()
        for (cls, name), host in list(self._hosts.items()):
            if cls != agent_class:
                continue
            summary = self._summaries.agent(cls, name)
            if (name in keep or not host.idle or host.stream in busy_streams or (cls, name) in
                    self._creating or (summary is not None and summary.callbacks_pending)):
                live.add(name)
            else:
                del self._hosts[cls, name]
                self._unborn.discard((cls, name))
                self._summaries.forget_agent((cls, name))
        return live

    # -- state ---------------------------------------------------------------------------

    def state(self, host: AgentHost) -> Any:
        summary = self._summaries.agent(host.agent_class, host.name)
        if summary is None or not summary.has_state:
            return host.initial_state
        return summary.state

    def state_items(self, agent: Any, action: str, value: Any,
                    workflow_id: str | None) -> list[tuple[str, Event]]:
        """The events for a state change; checked against the current state first."""
        host = host_of(agent)
        return state_items(host, self._summaries.agent(host.agent_class, host.name), action,
                           value, workflow_id)

    async def state_committed(self, agent: Any) -> None:
        """Tell the agent its state changed (from a workflow); a raising hook is logged."""
        host = host_of(agent)
        if not host.state_update_hooked():
            return
        try:
            await agent.on_state_update(agent.state, "server")
        except Exception:
            logger.exception("on_state_update of agent %s raised", host.stream)

    async def deliver_progress(self, agent: Any, workflow_name: str, workflow_id: str,
                               progress: Any) -> None:
        await host_of(agent).progress(workflow_name, workflow_id, progress)

    # -- committed records ---------------------------------------------------------------

    def record(self, agent_class: str, name: str, rec: Recorded,
               before: AgentSummary | None) -> AgentSummary | None:
        """Act on a committed record of an agent's stream; returns the agent's summary as of
        this record (``before``: as of the previous one in this batch, None if unknown)."""
        host = self._hosts.get((agent_class, name))
        event = rec.event
        if host is None:
            if isinstance(event, CallbackScheduled) and agent_class in self.classes:
                self._spawn(lambda: self.load(agent_class, name), f"load {rec.stream}")
            return before
        if isinstance(event, AgentStateSet | AgentStateMerged | AgentStatePatched
                                 | AgentStateReset):
            at_record = apply_agent(before, rec) if before is not None else None
            state = at_record.state if at_record is not None else self.state(host)
            host.push_state(state, rec.position)
            return at_record
        if isinstance(event, CallbackScheduled):
            host.schedule(rec)
        return before  # what else it changes is not state

    # -- records of other writers (PostgreSQL, specs/postgres.md PG18) -------------------

    def has_clients(self) -> bool:
        """Whether any client is connected to a live agent (stops at the first)."""
        return any(host.connections for host in self._hosts.values())

    def follows_any(self) -> bool:
        """Whether a live agent is one this engine does not own (its state comes from the
        log); at once when it owns every agent (one engine per log)."""
        owns = self.owns
        return owns is not _owns_every_agent and any(
            not owns(host.agent_class, host.name) for host in self._hosts.values())

    def push_followed(self, rec: Recorded) -> bool:
        """A committed record of an agent's stream, read by following the log: if this
        engine hosts that agent and does not know the record yet, fold it into the agent's
        view and push a state change to its clients with ``rec.position``; True if so.

        Known records are skipped: this engine's own commits (pushed at commit) and any
        read twice, since their version is at or below the agent's head in memory. A new
        record of an agent this engine owns means another engine wrote its stream (the
        ownership was lost): logged at warning, nothing changed here.
        """
        _, agent_class, name = parse_stream(rec.stream)
        host = self._hosts.get((agent_class, name))
        if host is None:
            return False
        key = (agent_class, name)
        summary = None if key in self._unborn else self._summaries.agent(agent_class, name)
        head = -1 if summary is None else summary.head
        if rec.stream_position <= head:
            return False
        if self.owns(agent_class, name):
            logger.warning("agent %s/%s: another writer logged version %d (log position %d) "
                           "while this engine owns it; its ownership was lost", agent_class,
                           name, rec.stream_position, rec.position)
            return False
        if rec.stream_position == head + 1:
            summary = apply_agent(summary, rec)
            changed = isinstance(rec.event, AgentStateSet | AgentStateMerged
                                 | AgentStatePatched | AgentStateReset)
        else:  # versions in between were not followed here: read the agent's row again
            self._summaries.forget_agent((agent_class, name))
            summary = self._summaries.agent(agent_class, name)
            if summary is None or summary.head < rec.stream_position:
                raise EventwfError(f"agent {agent_class}/{name} has no version "
                                   f"{rec.stream_position} in the log's projection yet")
            changed = True
        self._unborn.discard(key)
        self._summaries.install({}, {(agent_class, name): summary}, commit=False)
        if changed:
            host.push_state(self.state(host), summary.state_position)
        return True

    def quarantine(self, agent_class: str, name: str, position: int) -> None:
        summary = self._summaries.agent(agent_class, name)
        if summary is not None:
            self._summaries.replace_agent(quarantine_agent(summary, agent_class, name,
                                                           position))
