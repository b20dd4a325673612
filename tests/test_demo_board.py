"""One demo board under concurrent calls (specs/demo.md M4-M6), engine-level, MockClock.

The caps must hold however the calls interleave: the decision counts the tracking
records (a start writes its record in the same commit) and the starts in flight, so 100
concurrent starts against a cap of 25 start exactly 25.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import eventwf
from eventwf.apps.demo import DemoAgent, DemoTask
from tests.wfkit import virtual_wall

ACTIVE = ["queued", "running", "waiting", "waitingForPause", "paused"]
FULL = "25 tasks are already in progress"


@asynccontextmanager
async def board(db: str) -> AsyncIterator[DemoAgent]:
    async with eventwf.open_engine(db, agents=[DemoAgent], workflows=[DemoTask],
                                   wall_clock=virtual_wall) as engine:
        yield await engine.get_agent(DemoAgent, "b")


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(3600):
        while not condition():
            await trio.sleep(0.05)


def status_of(agent: DemoAgent, task_id: str) -> str | None:
    task = agent.state.get(task_id)
    return None if task is None else str(task["status"])


async def start_many(agent: DemoAgent, call: Callable[[int], Any], n: int) -> list[Any]:
    """Run ``call(i)`` for i < n all at once; each result or the ValueError it raised."""
    results: list[Any] = []

    async def one(i: int) -> None:
        try:
            results.append(await call(i))
        except ValueError as exc:
            results.append(exc)

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, i)
    return results


async def active_total(agent: DemoAgent) -> int:
    return (await agent.get_workflows(status=ACTIVE)).total


async def test_concurrent_starts_never_pass_the_active_cap(db: str) -> None:
    async with board(db) as agent:
        results = await start_many(agent, lambda i: agent.start_task(f"task {i}"), 100)
        started = [r for r in results if isinstance(r, str)]
        assert len(started) == 25, f"{len(started)} started against a cap of 25"
        assert all(FULL in str(r) for r in results if not isinstance(r, str))
        assert await active_total(agent) == 25
        await until(lambda: all(status_of(agent, t) == "waiting" for t in started))
        with pytest.raises(ValueError, match=FULL):
            await agent.start_task("one more")
        await agent.approve(started[0])
        await until(lambda: status_of(agent, started[0]) == "done")
        assert await active_total(agent) == 24
        assert isinstance(await agent.start_task("its place is free again"), str)


async def test_run_again_counts_against_the_cap_and_runs_a_task_once(db: str) -> None:
    async with board(db) as agent:
        first = await agent.start_task("to be rejected")
        await until(lambda: status_of(agent, first) == "waiting")
        await agent.reject(first)
        await until(lambda: status_of(agent, first) == "rejected")
        results = await start_many(agent, lambda i: agent.start_task(f"task {i}"), 30)
        assert sum(isinstance(r, str) for r in results) == 25
        with pytest.raises(ValueError, match=FULL):
            await agent.run_again(first)  # it would be the 26th
        assert await active_total(agent) == 25

    async with board(db + "2") as agent:  # two tabs click "Run again" at once
        first = await agent.start_task("to be rejected")
        await until(lambda: status_of(agent, first) == "waiting")
        await agent.reject(first)
        await until(lambda: status_of(agent, first) == "rejected")
        results = await start_many(agent, lambda i: agent.run_again(first), 10)
        assert results.count(None) == 1, results
        assert all("already running" in str(r) for r in results if r is not None)
        await until(lambda: status_of(agent, first) == "waiting")
        info = await agent.get_workflow(first)
        assert info is not None and info.status == "waiting"


async def test_a_board_holds_a_bounded_number_of_tasks(db: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """M6: finished cards stay on the board, so the board's state (at most 1 MiB) would
    fill up; the number of tasks is capped with a clear error instead."""
    monkeypatch.setattr("eventwf.apps.demo.board.MAX_TASKS", 3)
    async with board(db) as agent:
        ids = [await agent.start_task(f"task {i}") for i in range(3)]
        await until(lambda: all(status_of(agent, t) == "waiting" for t in ids))
        for task_id in ids:
            await agent.reject(task_id)
        await until(lambda: all(status_of(agent, t) == "rejected" for t in ids))
        assert await active_total(agent) == 0
        with pytest.raises(ValueError, match="holds 3 tasks"):
            await agent.start_task("a fourth")
        await agent.run_again(ids[0])  # a task already on the board may run again


async def test_calls_with_bad_arguments_are_refused_by_name(db: str) -> None:
    async with board(db) as agent:
        for bad in [["x"], None, "x" * 10_000, 5]:
            for call in (agent.approve, agent.reject, agent.run_again):
                with pytest.raises(ValueError) as err:
                    await call(bad)  # type: ignore[arg-type]
                assert len(str(err.value)) < 200
            with pytest.raises(ValueError, match="title"):
                await agent.start_task(bad)  # type: ignore[arg-type]
        assert agent.state == {}
