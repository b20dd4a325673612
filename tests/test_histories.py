"""Golden histories in tests/histories/ replay against today's code (specs R2, R3)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import eventwf
from tests import golden


def _open(db: str) -> Any:
    return eventwf.open_engine(db, agents=[golden.ShopAgent], workflows={"ORDER": golden.Order},
                               wall_clock=lambda: 1_780_000_000.0 + 1800 + trio.current_time())


async def test_in_flight_history_replays_and_finishes(db: str) -> None:
    golden.load("in-flight.jsonl", db)
    golden.LEDGER.clear()
    async with _open(db) as engine:
        agent = await engine.get_agent(golden.ShopAgent, "shop")
        info = await agent.get_workflow("order-1")
        assert info is not None and info.status == "waiting"
        assert info.metadata == {"customer": "c-7"}
        await trio.sleep(1800)
        await agent.send_workflow_event("ORDER", "order-1", {"type": "delivered",
                                                             "payload": "door"})
        done = await engine.wait_workflow("order-1")
        status = await agent.get_workflow_status("ORDER", "order-1")
        assert agent.state == {"orders": 1}
    assert done.status == "complete"
    assert status.output == {"item": "book", "paid": 42}
    assert golden.LEDGER == []  # reserve and charge were served from the log


async def test_divergent_history_raises_non_determinism(db: str) -> None:
    golden.load("divergent.jsonl", db)
    golden.LEDGER.clear()
    async with _open(db) as engine:
        with pytest.raises(eventwf.NonDeterminismError) as err:
            await engine.wait_workflow("order-1")
        agent = await engine.get_agent(golden.ShopAgent, "shop")
        info = await agent.get_workflow("order-1")
    assert "step.do('charge-card')" in str(err.value)
    assert "step.do('charge')" in str(err.value)
    assert "command #1" in str(err.value)
    assert info is not None and info.status == "paused"
    assert golden.LEDGER == []
