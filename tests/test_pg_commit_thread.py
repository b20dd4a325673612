"""The writer's commits in a worker thread on PostgreSQL (specs/postgres.md PG20, PG3a):
the engine goes on while the server commits, a clean close waits for the commit in
flight before it flushes what is queued, and under a MockClock the commit stays inline.
Real clock (``realtime``) where the thread is the point: a MockClock makes it inline."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[dev]' "
                    "(PostgreSQL tests)")

import eventwf  # noqa: E402
from eventwf.store.postgres import PostgresStore  # noqa: E402
from tests.wfkit import TestAgent  # noqa: E402


class Counting(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        total = 0
        for i in range(event.payload["n"]):
            total += await step.do(f"s{i}", lambda i=i: i)
        return total


class Gate:
    """Holds the commits of agent states (in whatever thread) while closed."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.held = threading.Event()  # a commit waits at the gate now
        self.threads: list[bool] = []  # per commit: made on the main thread?

    def commit(self, original: Any) -> Any:
        def commit(store: PostgresStore, rows: Any, *args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread() is threading.main_thread())
            if not self.open.is_set() and any(r.type == "agent.state_set" for r in rows):
                self.held.set()
                self.open.wait(30)
            return original(store, rows, *args, **kwargs)
        return commit


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    made = Gate()
    monkeypatch.setattr(PostgresStore, "commit", made.commit(PostgresStore.commit))
    yield made
    made.open.set()


def _open(url: str) -> Any:
    return eventwf.open_engine(url, agents=[TestAgent], workflows={"COUNT": Counting},
                               lease_ttl=5.0)


@pytest.mark.realtime
async def test_the_engine_goes_on_while_a_commit_waits_on_the_server(
        fresh_postgres_url: str, gate: Gate) -> None:
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        gate.open.clear()
        ticks = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.set_state, {"n": 1})
            await trio.to_thread.run_sync(gate.held.wait, 10)
            for _ in range(5):  # the loop runs while the commit is held in its thread
                await trio.sleep(0.01)
                ticks += 1
            gate.open.set()
        assert ticks == 5 and agent.state == {"n": 1}
        workflow_id = await agent.run_workflow("COUNT", {"n": 20})
        assert (await engine.wait_workflow(workflow_id, timeout=30)).status == "complete"
    assert gate.threads and not any(gate.threads[1:]), gate.threads  # all off the main thread


@pytest.mark.realtime
async def test_a_clean_close_flushes_the_queue_after_the_commit_in_flight(
        fresh_postgres_url: str, gate: Gate, caplog: pytest.LogCaptureFixture) -> None:
    answered: list[object] = []

    async def set_state(agent: TestAgent, n: int) -> None:
        await agent.set_state({"n": n})
        answered.append(n)

    with caplog.at_level(logging.WARNING, logger="eventwf"):
        async with trio.open_nursery() as outer:  # the callers outlive the engine's block
            async with _open(fresh_postgres_url) as engine:
                agent = await engine.get_agent(TestAgent, "a")
                gate.open.clear()
                outer.start_soon(set_state, agent, 1)  # its commit is held in its thread
                await trio.to_thread.run_sync(gate.held.wait, 10)
                outer.start_soon(set_state, agent, 2)  # the same stream, queued behind it
                writer = engine.runtime.writer
                while writer.queue_depth == 0:
                    await trio.sleep(0.001)
                flush = writer.flush_pending

                async def flush_on_release() -> None:
                    gate.open.set()  # the held commit ends while the close flushes
                    await flush()
                writer.flush_pending = flush_on_release  # type: ignore[method-assign]
        assert sorted(answered) == [1, 2]
        async with _open(fresh_postgres_url) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            assert agent.state == {"n": 2}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_under_a_mock_clock_commits_stay_on_the_engine_thread(
        fresh_postgres_url: str, gate: Gate) -> None:  # PG3a
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        workflow_id = await agent.run_workflow("COUNT", {"n": 3})
        assert (await engine.wait_workflow(workflow_id)).status == "complete"
    assert gate.threads and all(gate.threads)


@pytest.mark.realtime
async def test_commits_never_wait_for_the_programs_threads(fresh_postgres_url: str) -> None:
    release = threading.Event()
    watchdog = threading.Timer(10, release.set)  # the program's threads end after 10 s
    default = trio.to_thread.current_default_thread_limiter()
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        try:
            async with trio.open_nursery() as nursery:
                for _ in range(int(default.total_tokens)):  # the program's threads, all busy
                    nursery.start_soon(trio.to_thread.run_sync, release.wait)
                while default.borrowed_tokens < default.total_tokens:
                    await trio.sleep(0.001)
                watchdog.start()
                await agent.set_state({"n": 1})  # its commit needs a thread
                waited = release.is_set()
                release.set()
        finally:
            release.set()
            watchdog.cancel()
        assert not waited, "the commit waited for the program's threads to end"
        assert agent.state == {"n": 1}


class AfterCommit:
    """Holds the store's commit of a restart after the server committed it, while the
    store's lock is still held: signals ``entered``, waits for ``release``."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def commit(self, original: Any) -> Any:
        def commit(store: PostgresStore, rows: Any, *args: Any, **kwargs: Any) -> Any:
            positions = original(store, rows, *args, **kwargs)
            if any(r.type == "workflow.restarted" for r in rows):
                self.entered.set()
                assert self.release.wait(30), "the test never released the commit"
            return positions
        return commit


@pytest.mark.realtime
async def test_a_row_read_while_its_commit_is_in_flight_does_not_hide_the_commit(
        fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished workflow is not in memory; it is restarted, and while that commit is in
    its thread (committed on the server, not yet installed) the workflow is read: the
    read waits for the store and gets the restarted row. The install used to take that
    row for the state before the commit, saw no change, and started no run: the workflow
    stayed queued until the engine reopened. Now the install knows the read came during
    the commit and starts the run."""
    gate = AfterCommit()
    monkeypatch.setattr(PostgresStore, "_commit", gate.commit(PostgresStore._commit))
    async with _open(fresh_postgres_url) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        workflow_id = await agent.run_workflow("COUNT", {"n": 2})
        assert (await engine.wait_workflow(workflow_id, timeout=30)).status == "complete"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.restart_workflow, workflow_id)
            assert await trio.to_thread.run_sync(gate.entered.wait, 30)
            gate.release.set()
            # no checkpoint between: the writer cannot install the commit before this read
            assert (await agent.get_workflow(workflow_id)).status == "queued"
        info = await engine.wait_workflow(workflow_id, timeout=30)
    assert info.status == "complete", info
