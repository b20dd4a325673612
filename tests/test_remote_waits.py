"""Waits for workflows other engines run (runtime/remote_waits.py): one read of every
waited workflow per interval, whatever the number of waits; a wait ends when its
workflow's (status, run) differs from what its caller saw, or after its longest."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import trio

from eventwf.errors import StorageError
from eventwf.runtime.remote_waits import RemoteWaits


class Statuses:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, int]] = {}
        self.calls: list[list[str]] = []
        self.fail = False

    def __call__(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        self.calls.append(list(workflow_ids))
        if self.fail:
            raise StorageError("the database is away")
        return {w: self.rows[w] for w in workflow_ids if w in self.rows}


@pytest.mark.realtime
async def test_many_waits_cost_one_read_per_interval_and_only_changes_wake() -> None:
    statuses = Statuses()
    statuses.rows = {f"w{i}": ("running", 1) for i in range(50)}
    waits = RemoteWaits(statuses, interval=0.02)
    ended: list[str] = []

    async def wait(workflow_id: str) -> None:
        await waits.changed(workflow_id, ("running", 1), 30.0)
        ended.append(workflow_id)

    async with trio.open_nursery() as nursery:
        await nursery.start(waits.serve)
        for i in range(50):
            nursery.start_soon(wait, f"w{i}")
        while len(statuses.calls) < 3:
            await trio.sleep(0.005)
        assert ended == [] and all(len(c) == 50 for c in statuses.calls)
        statuses.rows["w7"] = ("complete", 1)
        statuses.rows["w9"] = ("running", 2)  # restarted: a new run
        del statuses.rows["w11"]  # deleted
        while len(ended) < 3:
            await trio.sleep(0.005)
        assert sorted(ended) == ["w11", "w7", "w9"]
        nursery.cancel_scope.cancel()
    assert waits.reads == len(statuses.calls)


@pytest.mark.realtime
async def test_a_failed_read_is_logged_and_a_wait_ends_after_its_longest(
        caplog: pytest.LogCaptureFixture) -> None:
    statuses = Statuses()
    statuses.fail = True
    waits = RemoteWaits(statuses, interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(waits.serve)
        with trio.fail_after(5):
            await waits.changed("w", ("running", 1), 0.1)  # nothing wakes it: its longest
        nursery.cancel_scope.cancel()
    assert statuses.calls and "the database is away" in caplog.text
