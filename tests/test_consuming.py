"""Which inbox request an append consumes (runtime/consuming.py, specs/postgres.md PG15),
and a store without an inbox refusing to consume one. The PostgreSQL side, with the
writer and the inbox: tests/test_pg_inbox_commit.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from eventwf.errors import StorageError
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import AgentCreated
from eventwf.runtime import consuming
from eventwf.store import open_store
from eventwf.store.interface import Consumed, PendingRow


def _row(stream: str, version: int) -> PendingRow:
    event = AgentCreated("T", stream)
    return PendingRow(stream, version, 1, event_type(event), encode_event(event))


def test_a_sqlite_store_refuses_to_consume_inbox_requests(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "eventwf.db"))
    try:
        with pytest.raises(ValueError, match=r"no inbox.*\[7\]"):
            store.commit([_row("agent:T/a", 0)], consumes=[Consumed(7, "me")])
        assert store.head == 0 and store.read_stream("agent:T/a") == []
        assert store.commit([_row("agent:T/a", 0)], consumes=()) == [1]
    finally:
        store.close()


async def test_a_consumption_is_carried_by_its_task_and_its_own_nurseries_only() -> None:
    seen: dict[str, Any] = {}
    made: list[consuming.Consumption] = []

    async def record(key: str) -> None:
        seen[key] = consuming.current()

    async def apply(engine_nursery: trio.Nursery) -> None:  # the inbox's task
        with consuming.applying(Consumed(7, "me")) as consumption:
            made.append(consumption)
            await record("task")
            async with trio.open_nursery() as own:
                own.start_soon(record, "child")
            engine_nursery.start_soon(record, "spawned")  # a run: inherits the variable
        await record("after")

    async with trio.open_nursery() as engine_nursery:
        engine_nursery.start_soon(apply, engine_nursery)
    assert seen == {"task": made[0], "child": made[0], "spawned": None, "after": None}


class _Request:
    """An append request as the consumption functions see it."""

    def __init__(self, consumes: consuming.Consumption | None) -> None:
        self.consumes = consumes


async def test_a_consumption_is_carried_until_a_commit_consumes_it_and_refused_once_withdrawn(
        ) -> None:
    with consuming.applying(Consumed(7, "me")) as consumption:
        requests = [_Request(consuming.current()), _Request(consuming.current()),
                    _Request(None)]
        assert consuming.begin(requests) == [Consumed(7, "me")]  # once per batch
        consuming.end(requests, committed=False)
        assert consumption.state == "open" and consuming.current() is consumption
        assert consuming.begin(requests) == [Consumed(7, "me")]  # the retry again
        consuming.end(requests, committed=True)
        assert consumption.state == "consumed" and consuming.current() is None
        assert consuming.begin(requests) == []  # later appends carry nothing
    with consuming.applying(Consumed(8, "me")) as gone:
        requests = [_Request(consuming.current()), _Request(None)]
        consuming.begin(requests)
        answered: list[tuple[Any, BaseException]] = []
        retry = consuming.withdrawn(requests, (8,), lambda r, e: answered.append((r, e)))
        assert retry == requests[1:] and [r for r, _ in answered] == requests[:1]
        with pytest.raises(StorageError, match="request 8 was withdrawn"):
            consuming.current()
    assert await gone.close() == "withdrawn"
    with consuming.applying(Consumed(9, "me")) as unused:
        pass
    assert await unused.close() == "closed"
