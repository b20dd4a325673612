"""Any engine serves any agent: requests through the inbox (specs/postgres.md PG15).

Two engines in one trio run on one database, real clock, short leases (PG3a). Every wait
is for a condition with a generous deadline; nothing asserts a duration.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

pytest.importorskip("psycopg")
import psycopg  # noqa: E402
import trio  # noqa: E402

import eventwf  # noqa: E402
from eventwf.agent import call_method  # noqa: E402
from eventwf.errors import (  # noqa: E402
    DuplicateWorkflowError,
    EventwfError,
    MailboxFullError,
    TransitionError,
    WorkflowNotFoundError,
)
from eventwf.runtime import staging  # noqa: E402
from eventwf.runtime.agents import host_of  # noqa: E402
from eventwf.runtime.inbox import decode_reply, encode_request  # noqa: E402
from eventwf.store.postgres.inbox import InboxTable  # noqa: E402
from tests.pg_engines import Running, owned_name, until  # noqa: E402

TTL = 1.5
SHARDS = 256  # the default shard count of a new database

RUNS: collections.Counter[str] = collections.Counter()
STARTS: collections.Counter[str] = collections.Counter()


class Host(eventwf.Agent):
    initial_state: Any = {}

    async def on_start(self) -> None:
        STARTS[self.name] += 1

    @eventwf.callable
    async def bump(self, by: int) -> int:
        await self.patch_state({"n": (self.state.get("n") or 0) + by})
        return int(self.state["n"])


class Gate(eventwf.AgentWorkflow[Host]):
    """One step, a wait for an event, one more step."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        first = await step.do("first", lambda: RUNS.update([f"{self.workflow_id}/first"]) or 1)
        got = await step.wait_for_event("go", type="go", timeout=600)
        return first + int(got.payload)


class Approval(eventwf.AgentWorkflow[Host]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await self.wait_for_approval(step)


def _open(url: str) -> Any:
    return eventwf.open_engine(url, agents=[Host], workflows=[Gate, Approval], lease_ttl=TTL)


def _running() -> Running:
    return Running(_open)


async def _two(nursery: trio.Nursery, url: str) -> tuple[eventwf.Engine, eventwf.Engine]:
    """Two engines whose shares have settled (each holds half the shards)."""
    first = await nursery.start(_running().serve, url)
    second = await nursery.start(_running().serve, url)

    def settled() -> bool:
        a, b = first.runtime.ownership.held, second.runtime.ownership.held
        return len(a) == len(b) == SHARDS // 2
    await until(settled, "the shares settling")
    return first, second


def _owned_by(engine: eventwf.Engine, prefix: str) -> str:
    return owned_name(engine, "Host", prefix)


def _types(url: str, stream: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT type FROM eventwf.events WHERE stream = %s ORDER BY stream_position",
            (stream,))]


@pytest.mark.realtime
async def test_operations_on_a_non_owner_reach_the_owner_and_take_effect_once(
        fresh_postgres_url: str) -> None:
    RUNS.clear()
    STARTS.clear()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            owner, other = await _two(nursery, fresh_postgres_url)
            name = _owned_by(owner, "a")
            remote = await other.get_agent(Host, name)
            assert host_of(remote).remote and not other.runtime.ownership.owns("Host", name)
            await remote.set_state({"n": 1})
            local = await owner.get_agent(Host, name)
            assert local.state == {"n": 1}  # applied by the owner before the reply
            await until(lambda: remote.state == {"n": 1}, "the followed state")
            assert await remote.run_workflow(Gate, id="g1") == "g1"
            await remote.send_workflow_event("Gate", "g1", {"type": "go", "payload": 6})
            assert (await owner.wait_workflow("g1", timeout=60)).status == "complete"
            assert (await remote.get_workflow_status("Gate", "g1")).output == 7
            info = await remote.get_workflow("g1")
            assert info is not None and info.status == "complete"
            await remote.run_workflow("Approval", id="p1")
            await remote.approve_workflow("p1", reason="ok")
            assert (await owner.wait_workflow("p1", timeout=60)).status == "complete"
            assert await remote.delete_workflow("p1") is True
            assert await local.get_workflow("p1") is None
            nursery.cancel_scope.cancel()
    assert RUNS == {"g1/first": 1}
    assert {name: 1} == STARTS  # started on the owner only
    assert _types(fresh_postgres_url, f"agent:Host/{name}").count("agent.state_set") == 1
    assert _types(fresh_postgres_url, "wf:g1").count("workflow.started") == 1


@pytest.mark.realtime
async def test_errors_cross_back_with_their_class(fresh_postgres_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "MAILBOX_LIMIT", 2)  # a TransitionError within reach
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            owner, other = await _two(nursery, fresh_postgres_url)
            remote = await other.get_agent(Host, _owned_by(owner, "e"))
            await remote.run_workflow("Gate", id="g1")
            with pytest.raises(DuplicateWorkflowError, match="g1"):
                await remote.run_workflow("Gate", id="g1")
            assert await remote.run_workflow("Gate", id="g1", if_exists="return") == "g1"
            for _ in range(2):
                await remote.send_workflow_event("Gate", "g1", {"type": "later"})
            with pytest.raises(MailboxFullError, match="limit 2") as full:
                await remote.send_workflow_event("Gate", "g1", {"type": "later"})
            assert isinstance(full.value, TransitionError)
            await remote.terminate_workflow("g1")
            with pytest.raises(EventwfError, match="it is terminated") as refused:
                await remote.pause_workflow("g1")
            assert type(refused.value) is EventwfError
            with pytest.raises(WorkflowNotFoundError, match="nope"):
                await remote.approve_workflow("nope")
            with pytest.raises(ValueError, match="None"):
                await remote.patch_state(None)
            nursery.cancel_scope.cancel()


class Recorder:
    """A client of an agent that records every push (``agent_host.Connection``)."""

    def __init__(self) -> None:
        self.states: list[tuple[Any, int]] = []

    def push_state(self, state: Any, position: int) -> None:
        self.states.append((state, position))

    def push_message(self, message: Any) -> None:
        pass


@pytest.mark.realtime
async def test_a_client_of_the_non_owner_sees_the_owners_states_in_order(
        fresh_postgres_url: str) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            owner, other = await _two(nursery, fresh_postgres_url)
            name = _owned_by(owner, "c")
            remote = await other.get_agent(Host, name)
            recorder = Recorder()
            host_of(remote).connections.add(recorder)
            local = await owner.get_agent(Host, name)
            for n in range(1, 6):
                await local.set_state({"n": n})
            # a client's RPC on the non-owner runs on the owner (its state is current there)
            assert await call_method(remote, "bump", remote.bump, [10]) == 15
            await until(lambda: len(recorder.states) >= 6, f"six pushes ({recorder.states})")
            nursery.cancel_scope.cancel()
    assert [s for s, _ in recorder.states] == [{"n": n} for n in (1, 2, 3, 4, 5, 15)]
    positions = [p for _, p in recorder.states]
    assert positions == sorted(set(positions))


@pytest.mark.realtime
async def test_a_request_queued_while_no_engine_runs_is_applied_by_the_next_owner(
        fresh_postgres_url: str) -> None:
    """A queued row, and a row a dead engine took but never consumed (its first append
    would have deleted it), are both applied once, in id order, by the next owner."""
    async with _open(fresh_postgres_url) as engine:  # makes the schema, then closes
        shard = engine.runtime.ownership.shard("Host", "q")
    table = InboxTable(fresh_postgres_url)
    try:
        queued = table.enqueue(shard, encode_request("Host", "q", "set_state", [{"n": 9}], {}),
                               "eventwf_reply_test")
        interrupted = table.enqueue(shard, encode_request(
            "Host", "q", "patch_state", [{"m": 1}], {}), "eventwf_reply_test")
        assert table.take(interrupted, "a-dead-engine")  # its owner died mid-request
        with trio.fail_after(60):
            async with _open(fresh_postgres_url) as engine:
                replies: dict[int, str] = {}

                def answered() -> bool:
                    for request_id in (queued, interrupted):
                        if request_id not in replies and (text := table.reply(request_id)):
                            replies[request_id] = text
                    return len(replies) == 2
                await until(answered, "both replies")
                agent = await engine.get_agent(Host, "q")
                assert agent.state == {"n": 9, "m": 1}
                assert engine.runtime.inbox is not None
                assert engine.runtime.inbox.applied == 2
        assert decode_reply(replies[queued]) is None
        assert decode_reply(replies[interrupted]) is None
    finally:
        table.close()
    types = _types(fresh_postgres_url, "agent:Host/q")
    assert types.count("agent.state_set") == 1
    assert types.count("agent.state_patched") == 1, types
    assert _inbox_rows(fresh_postgres_url) == ([], [])  # consumed, replies read


def _inbox_rows(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The inbox's rows (id, taken_by) and the replies' (id, reply)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return (conn.execute("SELECT id, taken_by FROM eventwf.inbox ORDER BY id").fetchall(),
                conn.execute("SELECT id, reply FROM eventwf.inbox_replies ORDER BY id"
                             ).fetchall())


@pytest.mark.realtime
async def test_clients_keep_their_pushes_when_the_agent_moves_between_engines(
        fresh_postgres_url: str) -> None:
    """A client connected to a non-owner keeps receiving the agent's states after its engine
    takes the agent over, and a client of the owner keeps them after the agent moves away:
    the agent's object (and its clients) stays the same, only who writes changes. Found
    with two demo servers: after a takeover the board of a client of the new owner froze."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            first_run, second_run = _running(), _running()
            first = await nursery.start(first_run.serve, fresh_postgres_url)
            second = await nursery.start(second_run.serve, fresh_postgres_url)
            name = _owned_by(first, "m")
            remote = await second.get_agent(Host, name)
            watching = Recorder()
            host_of(remote).connections.add(watching)
            await (await first.get_agent(Host, name)).set_state({"n": 1})
            await until(lambda: len(watching.states) >= 1, "the first push")
            await first_run.close()  # its leases go at once: the second engine takes them
            await until(lambda: second.runtime.ownership.owns("Host", name), "the takeover")
            again = await second.get_agent(Host, name)
            assert again is remote  # the same object, now the owner's
            await again.set_state({"n": 2})
            await remote.patch_state({"m": 1})
            await until(lambda: len(watching.states) >= 3, f"pushes ({watching.states})")
            nursery.cancel_scope.cancel()
    assert [s for s, _ in watching.states] == [{"n": 1}, {"n": 2}, {"n": 2, "m": 1}]
    assert STARTS[name] == 2  # on_start ran on each owner, once each


@pytest.mark.realtime
async def test_clients_of_an_owner_keep_their_pushes_when_its_agents_move_away(
        fresh_postgres_url: str) -> None:
    """An engine that gives agents up (the shares rebalance when another engine joins)
    keeps serving their clients, now with the new owner's states, through the follower."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(_running().serve, fresh_postgres_url)
            await until(lambda: len(first.runtime.ownership.held) == SHARDS, "all shards")
            own = first.runtime.ownership
            names: dict[int, str] = {}
            for i in range(100_000):  # one agent in each of 32 shards spread over all
                shard = own.shard("Host", f"r{i}")
                if shard % 8 == 0 and shard not in names:
                    names[shard] = f"r{i}"
                if len(names) == 32:
                    break
            watching: dict[str, Recorder] = {}
            for name in names.values():
                agent = await first.get_agent(Host, name)
                await agent.set_state({"n": 1})
                watching[name] = Recorder()
                host_of(agent).connections.add(watching[name])
            second = await nursery.start(_running().serve, fresh_postgres_url)
            await until(lambda: len(own.held) == SHARDS // 2, "the shares settling")
            moved = [n for n in names.values() if not own.owns("Host", n)]
            assert moved, "no agent of 32 spread over the shards moved"
            for name in moved:
                await (await second.get_agent(Host, name)).set_state({"n": 2})
            await until(lambda: all(watching[n].states for n in moved), "the moved pushes")
            nursery.cancel_scope.cancel()
    for name in moved:
        assert [s for s, _ in watching[name].states] == [{"n": 2}]


@pytest.mark.realtime
async def test_an_operation_whose_agent_moves_while_it_runs_here_reaches_the_new_owner(
        fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine ran ``set_state`` itself (it owned the agent as the call began), and the
    agent moved before the append was staged: the writer refuses it (nothing logged).
    The call used to raise ``AgentMovedError`` to its caller (a benchmark's engine process
    died of it while a third engine joined); now it goes to the new owner's inbox."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            owner, other = await _two(nursery, fresh_postgres_url)
            name = _owned_by(owner, "m")
            remote = await other.get_agent(Host, name)
            ownership = other.runtime.ownership
            real_owns = ownership.owns
            asked: list[bool] = []

            def owned_as_the_call_begins(agent_class: str, agent_name: str) -> bool:
                if agent_name == name and not asked:  # the call's first look: "mine"
                    asked.append(True)
                    return True
                return real_owns(agent_class, agent_name)

            monkeypatch.setattr(ownership, "owns", owned_as_the_call_begins)
            await remote.set_state({"n": 5})
            assert asked == [True]
            local = await owner.get_agent(Host, name)
            assert local.state == {"n": 5}
            nursery.cancel_scope.cancel()
    assert _types(fresh_postgres_url, f"agent:Host/{name}").count("agent.state_set") == 1
