"""Values sent to clients or stored as JSON are JSON data (specs/agents.md A7, A2).

Issue 19, item 1: a state with a ``None``/``True``/tuple key or a msgpack extension was
committed, then the writer raised while pushing it to a client and the engine exited; after
a restart every connect to that agent failed. Every such value is now checked once, at the
API boundary (``_codec.json_value``), before anything is logged; a state that is already in
a log and cannot be sent closes only its connections (1011). And item 13: ``agent.state``
is a read-only view, so an in-place change can no longer desynchronise it from the log.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import open_websocket_url

import eventwf
from eventwf.model.events import AgentStateSet, agent_stream
from tests.test_server import closed_with
from tests.wfkit import event_types, virtual_wall


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


# (value, what the ValueError names)
NOT_JSON = [
    pytest.param({None: 1}, r"key None \(NoneType\)", id="None-key"),
    pytest.param({True: 1}, r"key True \(bool\)", id="True-key"),
    pytest.param({"a": {(1, 2): 1}}, r"key \(1, 2\) \(tuple\) at \$[.\w]*\.a is", id="tuple-key"),
    pytest.param({1: "a"}, r"key 1 \(int\) at \$[.\w]* is not a str", id="int-key"),
    pytest.param({"x": msgspec.msgpack.Ext(1, b"x")}, r"msgspec\.msgpack\.Ext\) at \$[.\w]*\.x",
                 id="ext"),
    pytest.param({"x": [0, math.nan]}, r"nan at \$[.\w]*\.x\[1\]", id="nan"),
    pytest.param({"x": math.inf}, "inf", id="inf"),
    pytest.param({"deep": _deep(128)}, "nested deeper than 128 levels", id="depth-129"),
    pytest.param(_deep(100_000), "nested deeper than 128 levels|cannot be (logged|sent)",
                 id="depth-100k"),
]


class Keeper(eventwf.Agent):
    initial_state: Any = {"n": 0, "tags": ["a"]}

    def __init__(self) -> None:
        self.updates: list[Any] = []

    async def on_state_update(self, state: Any, source: str) -> None:
        self.updates.append(state)

    @eventwf.callable
    async def bad_result(self) -> Any:
        return {None: 1}


class Direct(eventwf.AgentWorkflow[Keeper]):
    """Tries ``Direct.value`` as a state update and inside a merge; returns the errors."""

    value: Any = None

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        errors = []
        for attempt, value in ((step.update_agent_state, Direct.value),
                               (step.merge_agent_state, {"bad": Direct.value})):
            try:
                await attempt(value)
            except ValueError as exc:
                errors.append(str(exc))
        return errors


class Merge(eventwf.AgentWorkflow[Keeper]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.merge_agent_state(event.payload)


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[Keeper], workflows=[Direct, Merge],
                               wall_clock=virtual_wall)


class Client:
    def __init__(self) -> None:
        self.got: list[Any] = []

    def push_state(self, state: Any, position: int) -> None:
        self.got.append(("state", state))

    def push_message(self, message: Any) -> None:
        self.got.append(("message", message))


@pytest.mark.parametrize(("value", "named"), NOT_JSON)
async def test_the_agent_api_refuses_values_that_are_not_json_data(
        db: str, value: Any, named: str) -> None:  # A3, A4, A7
    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        client = Client()
        agent._host.connections.add(client)
        with pytest.raises(ValueError, match=named):
            await agent.set_state(value)
        with pytest.raises(ValueError, match=named):
            await agent.broadcast(value)
        assert client.got == [] and agent.updates == []
        await agent.set_state({"n": 1})  # the engine goes on
        assert agent.state == {"n": 1} and client.got == [("state", {"n": 1})]
    assert event_types(db, agent_stream("Keeper", "k")) == ["agent.created", "agent.state_set"]


@pytest.mark.parametrize(("value", "named"), NOT_JSON)
async def test_workflows_cannot_log_a_state_that_is_not_json_data(
        db: str, value: Any, named: str, monkeypatch: pytest.MonkeyPatch) -> None:  # A5, A7
    monkeypatch.setattr(Direct, "value", value)
    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        client = Client()
        agent._host.connections.add(client)
        workflow_id = await agent.run_workflow("Direct")
        assert (await engine.wait_workflow(workflow_id, timeout=5)).status == "complete"
        errors = (await agent.get_workflow_status("Direct", workflow_id)).output
        assert len(errors) == 2 and all(re.search(named, error) for error in errors), errors
        assert agent.state == {"n": 0, "tags": ["a"]} and client.got == []
    assert "agent.state_set" not in event_types(db, agent_stream("Keeper", "k"))
    assert "agent.state_merged" not in event_types(db, agent_stream("Keeper", "k"))


@pytest.mark.parametrize(("value", "named"), NOT_JSON)
async def test_an_initial_state_that_is_not_json_data_is_refused_at_open(
        db: str, value: Any, named: str, monkeypatch: pytest.MonkeyPatch) -> None:  # A1, A7
    class BadStart(eventwf.Agent):
        initial_state = value

    with pytest.raises(ValueError, match=f"BadStart.initial_state .*({named})"):
        async with eventwf.open_engine(db, agents=[BadStart]):
            pass
    async with eventwf.open_engine(db, agents=[Keeper]) as engine:  # changed while open
        monkeypatch.setattr(Keeper, "initial_state", value)
        with pytest.raises(ValueError, match=named):
            await engine.get_agent(Keeper, "b")
        assert engine.statistics().live_agents == 0
    assert event_types(db) == []


async def test_workflow_metadata_is_json_data(db: str) -> None:  # T5, A7
    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        for metadata in ({"a": {None: 1}}, {"a": (1, math.nan)},
                         {"a": msgspec.msgpack.Ext(1, b"")}, {"a": _deep(40)}):
            with pytest.raises(ValueError, match="metadata"):
                await agent.run_workflow("Merge", {}, id="m", metadata=metadata)
    assert event_types(db, "wf:m") == []


async def test_a_client_that_raises_never_stops_the_writer(
        db: str, caplog: pytest.LogCaptureFixture) -> None:  # P4 (defence in depth)
    class Broken(Client):
        def push_state(self, state: Any, position: int) -> None:
            raise RuntimeError("a broken client")

    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        good, broken = Client(), Broken()
        agent._host.connections.update({good, broken})
        await agent.set_state({"n": 1})
        await agent.set_state({"n": 2})  # the writer lives, and skips the broken client
        assert good.got == [("state", {"n": 1}), ("state", {"n": 2})]
        assert broken not in agent._host.connections
    assert any("that client gets no more pushes" in r.getMessage() for r in caplog.records)


# -- over real sockets ----------------------------------------------------------------------


@asynccontextmanager
async def serving(db: str) -> AsyncIterator[tuple[eventwf.Engine, str]]:
    async with eventwf.open_engine(db, agents=[Keeper]) as engine:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(eventwf.serve, engine, "127.0.0.1", 0))
            yield engine, f"ws://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()


@pytest.mark.realtime
async def test_a_bad_state_never_reaches_the_writer_or_the_clients(db: str) -> None:  # A7, P4
    async with serving(db) as (engine, url):
        agent = await engine.get_agent(Keeper, "k")
        async with eventwf.connect_agent(url, "Keeper", "k") as conn:
            for value in ({None: 1}, {True: 1}, {(1, 2): 1}, msgspec.msgpack.Ext(1, b"x")):
                with pytest.raises(ValueError, match="not JSON data"):
                    await agent.set_state(value)
            with pytest.raises(eventwf.RpcError, match="ValueError: the result of 'bad_result' "
                                                       "is not JSON data: key None"):
                await conn.call("bad_result")
            await agent.set_state({"n": 2})
            with trio.fail_after(5):
                async for message in conn:
                    if message["type"] == "state" and message["state"] == {"n": 2}:
                        break
            assert conn.closed is None
    async with serving(db) as (engine, url):  # and after a restart
        async with eventwf.connect_agent(url, "Keeper", "k") as conn:
            assert conn.state == {"n": 2}


@pytest.mark.realtime
async def test_a_logged_state_that_cannot_be_sent_closes_only_its_connections(
        db: str, caplog: pytest.LogCaptureFixture) -> None:  # A7, P4
    # A log written before states were checked may hold one: it is written here directly.
    bad = AgentStateSet({None: "old"}, None)
    async with serving(db) as (engine, url):
        agent = await engine.get_agent(Keeper, "k")
        await engine.get_agent(Keeper, "other")
        async with open_websocket_url(f"{url}/agents/Keeper/k") as ws, \
                eventwf.connect_agent(url, "Keeper", "other") as other:
            await ws.get_message()
            [rec] = await agent._rt.append([(agent_stream("Keeper", "k"), bad)])
            close = await closed_with(ws)
            assert close.code == 1011 and f"log position {rec.position}" in close.reason
            other_agent = await engine.get_agent(Keeper, "other")
            await other_agent.set_state({"n": 5})  # the writer and the other clients go on
            with trio.fail_after(5):
                async for message in other:
                    if message["type"] == "state" and message["state"] == {"n": 5}:
                        break
        assert any("cannot be sent to clients as JSON" in r.getMessage() for r in caplog.records)
    async with serving(db) as (engine, url):  # after a restart: a clear refusal, not a crash
        with pytest.raises(eventwf.EventwfError, match="1011"):
            async with eventwf.connect_agent(url, "Keeper", "k"):
                pass
        agent = await engine.get_agent(Keeper, "k")
        assert agent.state == {None: "old"}  # readable in Python, as logged
        await agent.set_state({"n": 3})  # and repaired by a good state
        async with eventwf.connect_agent(url, "Keeper", "k") as conn:
            assert conn.state == {"n": 3}


# -- item 13: agent.state is read-only --------------------------------------------------------


async def test_agent_state_refuses_in_place_changes(db: str) -> None:  # A2
    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        await agent.set_state({"n": 1, "tags": ["a"], "meta": {"x": [1, {"y": 2}]}})
        state = agent.state
        changes = [
            lambda: state.__setitem__("n", 2), lambda: state.pop("n"), lambda: state.clear(),
            lambda: state.update(n=2), lambda: state.setdefault("z", 1),
            lambda: state.__delitem__("n"), lambda: state["tags"].append("b"),
            lambda: state["tags"].extend("b"), lambda: state["tags"].sort(),
            lambda: state["meta"]["x"][1].__setitem__("y", 3), lambda: state["tags"].pop(),
        ]
        for change in changes:
            with pytest.raises(TypeError, match="read-only.*set_state"):
                change()
        with pytest.raises(TypeError, match="read-only"):
            state["tags"] += ["b"]
        with pytest.raises(TypeError, match="read-only"):
            state |= {"n": 2}
        expected = {"n": 1, "tags": ["a"], "meta": {"x": [1, {"y": 2}]}}
        assert agent.state == expected and isinstance(agent.state, dict)
        assert json.loads(json.dumps(agent.state)) == expected
        mutable = copy.deepcopy(agent.state)
        mutable["meta"]["x"][1]["y"] = 3  # a deep copy is plain and mutable
        await agent.set_state({**agent.state, "n": 2, "tags": [*agent.state["tags"], "b"]})
        assert agent.state == {**expected, "n": 2, "tags": ["a", "b"]}
        assert agent.updates[-1] == agent.state and agent.updates[-1] is agent.state
    async with _open(db) as engine:  # the log and the projection never saw the attempts
        agent = await engine.get_agent(Keeper, "k")
        assert agent.state == {**expected, "n": 2, "tags": ["a", "b"]}


async def test_state_reads_share_one_view_per_change(db: str) -> None:  # A2
    async with _open(db) as engine:
        agent = await engine.get_agent(Keeper, "k")
        big = {f"k{i}": {"i": i, "tags": ["x"] * 10} for i in range(10_000)}
        await agent.set_state(big)
        first = agent.state
        assert agent.state is first  # a read costs nothing: no copy per read
        await engine.wait_workflow(await agent.run_workflow("Merge", {"k5": {"i": -5}}),
                                   timeout=5)
        after = agent.state
        assert after["k5"] == {"i": -5} and first["k5"]["i"] == 5  # old views stay as they were
        assert after["k6"] is first["k6"]  # a merge re-makes only what it changed


class Quiet(eventwf.Agent):  # keeps the default (no-op) on_state_update
    initial_state: Any = {"n": 0}


async def test_a_state_nobody_reads_gets_no_view(db: str) -> None:  # A2a
    async with eventwf.open_engine(db, agents=[Quiet], wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(Quiet, "q")
        await agent.set_state({"n": 1, "big": list(range(100_000))})
        assert agent._host._view is None  # the no-op hook is not called: nothing copied
        assert agent.state == {"n": 1, "big": list(range(100_000))}
        seen: list[Any] = []

        async def hook(state: Any, source: str) -> None:
            seen.append(state)

        agent.on_state_update = hook  # type: ignore[method-assign]  # an instance's own hook
        await agent.set_state({"n": 2})
        assert seen == [{"n": 2}] and seen[0] is agent.state

