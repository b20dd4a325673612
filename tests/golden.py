"""Golden histories: logs recorded once, kept as JSON lines, replayed by every build.

A file holds one event per line: {"stream", "time_us", "event": <tagged event as JSON>}.
Loading re-encodes the events and lays them down as a fresh log; what matters is that
today's code replays the recorded history the same way.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

import eventwf
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import AnyEvent, Event
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore

HISTORIES = Path(__file__).parent / "histories"
LEDGER: list[str] = []


class ShopAgent(eventwf.Agent):
    initial_state: Any = {"orders": 0}


class Order(eventwf.AgentWorkflow[ShopAgent]):
    """Today's code for binding ORDER."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        item = await step.do("reserve", lambda: LEDGER.append("reserve") or event.payload["item"])
        paid = await step.do("charge", lambda: LEDGER.append("charge") or 42)
        await step.sleep("ship-delay", "1 hour")
        delivered = await step.wait_for_event("delivered", type="delivered", timeout="3 days")
        await step.merge_agent_state({"orders": 1})
        await step.report_complete({"item": item, "paid": paid, "to": delivered.payload})
        return {"item": item, "paid": paid}


class OrderV0(eventwf.AgentWorkflow[ShopAgent]):
    """An older version whose second step had another name (recorded into divergent.jsonl)."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        item = await step.do("reserve", lambda: event.payload["item"])
        await step.do("charge-card", lambda: 42)
        await step.sleep("ship-delay", "1 hour")
        return item


class _Line(msgspec.Struct):
    stream: str
    time_us: int
    event: AnyEvent  # type: ignore[valid-type]


def dump(db: str, out: Path) -> None:
    """Write a log as golden JSON lines."""
    lines = []
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT stream, time_us, type, data FROM events ORDER BY position")
        for stream, time_us, _, data in rows:
            event = msgspec.msgpack.decode(data, type=AnyEvent)
            lines.append(msgspec.json.encode(_Line(stream, time_us, event)).decode())
    conn.close()
    out.write_text("\n".join(lines) + "\n")


def load(name: str, db: str) -> None:
    """Lay a golden history down as a new log at ``db``."""
    store = SQLiteStore(db)
    try:
        heads: dict[str, int] = {}
        rows = []
        for text in (HISTORIES / name).read_text().splitlines():
            line = msgspec.json.decode(text, type=_Line)
            event: Event = line.event
            head = heads.get(line.stream, -1) + 1
            heads[line.stream] = head
            rows.append(PendingRow(line.stream, head, line.time_us, event_type(event),
                                   encode_event(event)))
        store.commit(rows)
        store.conn.execute("UPDATE meta SET value = '0' WHERE key = 'projected_through'")
    finally:
        store.close()
