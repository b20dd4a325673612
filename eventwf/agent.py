"""``Agent``: a named, stateful identity whose state is a fold of its own log stream.

Get instances with ``engine.get_agent(MyAgent, "name")`` (one object per name while the
engine is open). ``state`` is read-only; ``set_state`` logs the change, then calls
``on_state_update`` and pushes the state to every connected client.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar

from eventwf.errors import AgentMovedError, EventwfError
from eventwf.model.codec import json_value
from eventwf.model.types import InstanceStatus, WorkflowInfo, WorkflowPage
from eventwf.runtime import operations as _ops
from eventwf.runtime import tracking as _tracking
from eventwf.runtime.agent_host import AgentHost
from eventwf.runtime.inbox import Inbox
from eventwf.runtime.runtime import Runtime

__all__ = ["Agent", "apply_request", "call_method", "callable"]

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
AgentT = TypeVar("AgentT", bound="Agent[Any]")
if TYPE_CHECKING:  # a default (PEP 696): a plain ``Agent`` subclass is an ``Agent[Any]``
    from typing_extensions import TypeVar as _DefaultedTypeVar

    StateT = _DefaultedTypeVar("StateT", default=Any)
else:
    StateT = TypeVar("StateT")
logger = logging.getLogger("eventwf")


def callable(fn: F) -> F:  # noqa: A001 - the public name is eventwf.callable
    """Mark an agent method as callable by WebSocket clients (RPC)."""
    fn.__eventwf_callable__ = True  # type: ignore[attr-defined]
    return fn


def is_callable(fn: object) -> bool:
    return getattr(fn, "__eventwf_callable__", False) is True


def _forwarded(fn: Callable[Concatenate[AgentT, P], Awaitable[R]]
               ) -> Callable[Concatenate[AgentT, P], Awaitable[R]]:
    """A durable operation: run here when this engine owns the agent (always on SQLite),
    else sent to its owner through the inbox (specs/postgres.md PG15), which runs the
    undecorated method (``apply_request``) and answers with its result or its error."""
    async def forward(self: AgentT, /, *args: P.args, **kwargs: P.kwargs) -> R:
        inbox = self._remote()
        if inbox is None:
            try:
                return await fn(self, *args, **kwargs)
            except AgentMovedError:
                # the agent moved while this ran here, before its one append was logged:
                # its new owner applies it (PG15); one of several appends stops where it was
                inbox = self._remote()
                if inbox is None or getattr(fn, "__eventwf_appends_in_batches__", False):
                    raise
        host = self._host
        result: R = await inbox.request(host.agent_class, host.name, fn.__name__,
                                        [_plain(self._rt, a) for a in args],
                                        {k: _plain(self._rt, v) for k, v in kwargs.items()})
        return result
    functools.update_wrapper(forward, fn)
    forward.__eventwf_forwarded__ = True  # type: ignore[attr-defined]
    return forward


def _in_batches(fn: Callable[Concatenate[AgentT, P], Awaitable[R]]
                ) -> Callable[Concatenate[AgentT, P], Awaitable[R]]:
    """Marks a durable operation that logs one append per batch: if its agent moves part
    way, it raises ``AgentMovedError`` instead of going to the new owner (which would
    apply it again from the start)."""
    fn.__eventwf_appends_in_batches__ = True  # type: ignore[attr-defined]
    return fn


def _plain(rt: Runtime, value: Any) -> Any:
    """An argument as the request carries it: a workflow class by its binding name, a
    datetime as its POSIX timestamp (what the local path accepts too)."""
    if isinstance(value, type):
        return _tracking.binding_of(rt, value)
    if isinstance(value, datetime):
        return value.timestamp()
    return value


async def apply_request(agent: Any, op: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """The owner's side of a request from another engine (``Inbox``): the same code path
    as a local call. ``op`` is a forwarded ``Agent`` method, or ``"rpc"`` with ``[method,
    args]`` for an ``@eventwf.callable`` method called by a WebSocket client."""
    if op == "rpc":
        method, call_args = args
        fn = getattr(agent, method, None) if isinstance(method, str) and \
            not method.startswith("_") else None
        if fn is None or not is_callable(fn):
            raise EventwfError(f"method {method!r} of {type(agent).__name__} is not callable")
        result = fn(*call_args)
        return await result if inspect.isawaitable(result) else result
    method = getattr(type(agent), op, None)
    if method is None or getattr(method, "__eventwf_forwarded__", False) is not True:
        raise EventwfError(f"operation {op!r} cannot be requested from another engine")
    return await method.__wrapped__(agent, *args, **kwargs)


async def call_method(agent: Agent[Any], method: str, fn: Callable[..., Any],
                      args: list[Any]) -> Any:
    """Call an ``@eventwf.callable`` method for a WebSocket client: here when this engine
    owns the agent, else on its owner through the inbox."""
    inbox = agent._remote()
    if inbox is not None:
        host = agent._host
        return await inbox.request(host.agent_class, host.name, "rpc", [method, args], {})
    result = fn(*args)
    return await result if inspect.isawaitable(result) else result


class Agent(Generic[StateT]):
    """Subclass this; override the ``on_*`` hooks you need. Instances come from the engine.

    ``Agent[StateT]`` types ``state`` and ``set_state`` (``class Board(Agent[dict[str, Any]])``);
    a plain ``Agent`` subclass has ``Any`` state.
    """

    initial_state: Any = None
    _eventwf_host: AgentHost | None = None
    _eventwf_runtime: Runtime | None = None

    def _eventwf_bind(self, host: AgentHost, runtime: Runtime) -> None:
        """The engine's attach point (it calls this on each object it makes)."""
        self._eventwf_host, self._eventwf_runtime = host, runtime

    @property
    def _host(self) -> AgentHost:
        host = self._eventwf_host
        if host is None:
            raise EventwfError(f"{type(self).__name__} is not attached to an engine; get agents "
                               "with engine.get_agent(cls, name)")
        return host

    @property
    def _rt(self) -> Runtime:
        runtime = self._eventwf_runtime
        if runtime is None:
            raise EventwfError(f"{type(self).__name__} is not attached to an engine")
        return runtime

    def _remote(self) -> Inbox | None:
        """The inbox to send durable operations through: None when this engine owns the
        agent now (or owns every agent: SQLite)."""
        rt, host = self._rt, self._host
        if rt.inbox is None or rt.ownership.owns(host.agent_class, host.name):
            return None
        return rt.inbox

    def _fresh(self, workflow_id: str) -> None:
        """Read a workflow another engine runs as the projections have it now."""
        rt, host = self._rt, self._host
        if rt.inbox is not None and not rt.ownership.owns(host.agent_class, host.name):
            rt.summaries.forget_workflow(workflow_id)

    @property
    def name(self) -> str:
        """The instance name given to ``get_agent``."""
        return self._host.name

    @property
    def state(self) -> StateT:
        """The current state (``initial_state`` until the first change), read-only.

        Its dicts and lists refuse changes (``TypeError``): build a new value, e.g.
        ``{**agent.state, "n": 1}`` or ``copy.deepcopy(agent.state)``, and pass it to
        ``set_state``. Reads are free: one view per state change, shared (agents.md A2a).
        """
        host = self._host
        view: StateT = host.state_view(self._rt.agents.state(host))
        return view

    @_forwarded
    async def set_state(self, state: StateT) -> None:
        """Log ``state`` as the new state, then call ``on_state_update(state, "server")``."""
        await _ops.set_state(self._rt, self._host, state)
        if self._host.state_update_hooked():
            await self.on_state_update(self.state, "server")

    @_forwarded
    async def patch_state(self, patch: Any) -> None:
        """Apply RFC 7396 JSON Merge Patch ``patch`` to the state as it is when the patch
        commits (nested objects merge, ``None`` deletes a key, a non-object replaces), then
        call ``on_state_update(state, "server")``. A ``None`` patch raises ``ValueError``."""
        await _ops.patch_state(self._rt, self._host, patch)
        if self._host.state_update_hooked():
            await self.on_state_update(self.state, "server")

    async def broadcast(self, message: Any, exclude: Iterable[Any] = ()) -> None:
        """Send a message to every connected client (not logged).

        ``ValueError`` unless it is JSON data within 1 MiB (agents.md A7); then nothing is sent.
        """
        message = json_value(message, "broadcast message", logged=False)
        self._host.push_message(message, set(exclude))

    # -- workflows -----------------------------------------------------------------------

    @_forwarded
    async def run_workflow(self, workflow_name: str | type[Any], params: Any = None, *,
                           id: str | None = None, metadata: dict[str, Any] | None = None,
                           if_exists: Literal["error", "return"] = "error") -> str:
        """Start a workflow and its tracking record in one append; returns its id.

        ``workflow_name`` is a binding name or the registered workflow class. An id this
        agent already tracks raises ``DuplicateWorkflowError``, or with
        ``if_exists="return"`` returns that id and starts nothing (an idempotent start).
        """
        return await _ops.run_workflow(self._rt, self._host, workflow_name, params, id,
                                       metadata, if_exists)

    @_forwarded
    async def send_workflow_event(self, workflow_name: str, workflow_id: str,
                                  event: dict[str, Any]) -> None:
        """Deliver ``{"type": ..., "payload": ...}`` to a (waiting or later) wait of that type."""
        await _ops.send_workflow_event(self._rt, workflow_name, workflow_id, event)

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo | None:
        """This agent's tracking record of ``workflow_id``, or None."""
        self._fresh(workflow_id)
        return _tracking.get_workflow(self._rt, self._host, workflow_id)

    async def get_workflows(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        limit: int = 50,
        order: str = "desc",
        cursor: str | None = None,
    ) -> WorkflowPage:
        """This agent's tracked workflows, newest first unless ``order="asc"``."""
        return _tracking.get_workflows(self._rt, self._host, status=status,
                                  workflow_name=workflow_name, metadata=metadata, limit=limit,
                                  order=order, cursor=cursor)

    @_forwarded
    async def delete_workflow(self, workflow_id: str) -> bool:
        """Drop a tracking record (the workflow itself is untouched); False if there is none."""
        return await _tracking.delete_workflow(self._rt, self._host, workflow_id)

    @_forwarded
    @_in_batches
    async def delete_workflows(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        created_before: datetime | float | None = None,
    ) -> int:
        """Drop every matching tracking record (all of them with no criteria)."""
        return await _tracking.delete_workflows(self._rt, self._host, status=status,
                                           workflow_name=workflow_name, metadata=metadata,
                                           created_before=created_before)

    @_forwarded
    async def approve_workflow(self, workflow_id: str, *, reason: str | None = None,
                               metadata: dict[str, Any] | None = None) -> None:
        """Answer a ``wait_for_approval`` with yes."""
        s = _tracking.tracked(self._rt, self._host, workflow_id)
        payload = {"approved": True, "reason": reason, "metadata": metadata}
        await self.send_workflow_event(s.workflow_name, workflow_id,
                                       {"type": "approval", "payload": payload})

    @_forwarded
    async def reject_workflow(self, workflow_id: str, *, reason: str | None = None) -> None:
        """Answer a ``wait_for_approval`` with no: it raises ``WorkflowRejectedError``."""
        s = _tracking.tracked(self._rt, self._host, workflow_id)
        payload = {"approved": False, "reason": reason}
        await self.send_workflow_event(s.workflow_name, workflow_id,
                                       {"type": "approval", "payload": payload})

    @_forwarded
    async def terminate_workflow(self, workflow_id: str) -> None:
        """Stop the workflow for good (``terminated``); a finished one raises (K2)."""
        await _ops.terminate_workflow(self._rt, self._host, workflow_id)

    @_forwarded
    async def pause_workflow(self, workflow_id: str) -> None:
        """Pause at the next step boundary (``waitingForPause``, then ``paused``; K3)."""
        await _ops.pause_workflow(self._rt, self._host, workflow_id)

    @_forwarded
    async def resume_workflow(self, workflow_id: str) -> None:
        """Resume a paused workflow (also one paused for non-determinism, after a fix; K4)."""
        await _ops.resume_workflow(self._rt, self._host, workflow_id)

    @_forwarded
    async def restart_workflow(self, workflow_id: str, *, reset_tracking: bool = True) -> None:
        """Run again from the start with a cleared step history (same id and params)."""
        await _ops.restart_workflow(self._rt, self._host, workflow_id, reset_tracking)

    async def get_workflow_status(self, workflow_name: str, workflow_id: str) -> InstanceStatus:
        """The status, error and output of a workflow under a binding (K6)."""
        self._fresh(workflow_id)
        return _tracking.get_workflow_status(self._rt, workflow_name, workflow_id)

    @_forwarded
    async def migrate_workflow_binding(self, old_name: str, new_name: str) -> int:
        """Re-point this agent's workflows from a renamed binding; resumes unfinished ones."""
        return await _ops.migrate_workflow_binding(self._rt, self._host, old_name, new_name)

    # -- hooks ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once when the engine first loads this agent (after its state)."""

    async def on_state_update(self, state: Any, source: str) -> None:
        """Called after every logged state change (with the read-only ``state``)."""

    on_state_update.__eventwf_noop__ = True  # type: ignore[attr-defined]  # see AgentHost

    async def on_workflow_progress(self, workflow_name: str, workflow_id: str,
                                   progress: Any) -> None:
        """A workflow's ``report_progress`` (not logged; may repeat on recovery)."""

    async def on_workflow_complete(self, workflow_name: str, workflow_id: str,
                                   result: Any) -> None:
        """Once per finished run: ``report_complete``'s value, else ``run``'s return value."""

    on_workflow_complete.__eventwf_noop__ = True  # type: ignore[attr-defined]  # AgentHost

    async def on_workflow_error(self, workflow_name: str, workflow_id: str, error: str) -> None:
        """Once per failure (not again after ``report_error``). The default logs it."""
        logger.error(
            "Workflow error [%s/%s]: %s\nOverride on_workflow_error() in your Agent to handle "
            "workflow errors.", workflow_name, workflow_id, error)

    async def on_workflow_event(self, workflow_name: str, workflow_id: str, event: Any) -> None:
        """A workflow's ``step.send_event(event)``."""

    on_workflow_event.__eventwf_noop__ = True  # type: ignore[attr-defined]  # see AgentHost

    async def on_connect(self, connection: Any) -> None:
        """A WebSocket client connected (it already got the state)."""

    async def on_message(self, connection: Any, message: Any) -> None:
        """A client message that is not an RPC call."""

    async def on_close(self, connection: Any) -> None:
        """A WebSocket client went away."""
