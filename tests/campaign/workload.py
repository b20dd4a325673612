"""One engine session running (or continuing) a plan: the engine plus its client.

The client starts the plan's workflows (paced), sends each workflow's events and
approvals (after the start, with the plan's delays, so some arrive before the wait and
some after), and sets a client agent's state every ``state_every`` seconds. Every client
operation is written to the history: ``invoke`` before, ``ok``/``fail`` after. On a new
session it reconciles with the log first (what was started, which events landed), as a
real client retrying idempotently would, so nothing is sent twice on purpose.

The session ends when every workflow is finished and every callback delivered (True), or
after ``stop_after`` seconds (False); in a worker process it may also be killed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import trio

import eventwf
from eventwf.errors import EventwfError, StorageError
from eventwf.model.events import AgentStateSet, EventReceived, WorkflowStarted

from . import programs
from .history import History, read_history
from .ledger import Ledger
from .logview import decode_event, readonly_connection
from .programs import BINDING, CampaignAgent, CampaignWorkflow, Plan, PlanWorkflow, Runtime
from .service import Service

__all__ = ["Config", "Landed", "landed", "session"]

CLIENT_AGENT = "client"


@dataclass
class Config:
    """Everything a session needs; JSON-serializable so a worker process can get it."""

    dir: str
    db: str = ""
    run: str = ""  # the run label (default: the pid)
    fault: str = ""  # "point:nth:action[,...]" armed in the worker before opening
    hibernate_after: float | None = 60.0
    wal_autocheckpoint: int | None = None  # 0: never checkpoint (torn-tail campaigns)
    start_gap: float = 0.01
    state_every: float = 0.05
    body_delay: float = 0.002
    retry_delay: float = 0.01
    stop_after: float | None = None
    ledger_clock: str = "wall"  # "trio": ledger times are trio.current_time() (MockClock)
    die_on_storage_error: bool = False  # SIGKILL this process right after a client op fails
    start_limit: int | None = None  # start at most this many new workflows this session

    def __post_init__(self) -> None:
        if not self.db:
            self.db = os.path.join(self.dir, "log.db")

    @property
    def plan(self) -> str:
        return os.path.join(self.dir, "plan.json")

    @property
    def ledger(self) -> str:
        return os.path.join(self.dir, "ledger.db")

    @property
    def service(self) -> str:
        return os.path.join(self.dir, "service.db")

    @property
    def history(self) -> str:
        return os.path.join(self.dir, "history.jsonl")

    def dump(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def load(cls, text: str) -> Config:
        return cls(**json.loads(text))


@dataclass
class Landed:
    """What the log already holds of the client's operations."""

    started: set[str]
    received: dict[tuple[str, str], int]  # (workflow, type) -> events of that type logged
    tokens: set[str]


def landed(db: str) -> Landed:
    """Read the log directly (a read-only connection; safe beside the engine)."""
    out = Landed(set(), {}, set())
    if not os.path.exists(db):
        return out
    conn = readonly_connection(db)
    try:
        rows = conn.execute(
            "SELECT position, stream, type, data FROM events WHERE type IN "
            "('workflow.started', 'event.received', 'agent.state_set') ORDER BY position"
        ).fetchall()
    except sqlite3.OperationalError:  # no table yet
        rows = []
    finally:
        conn.close()
    for position, stream, type_name, data in rows:
        event = decode_event(type_name, data, position=position)
        if isinstance(event, WorkflowStarted) and stream.startswith("wf:"):
            out.started.add(stream[3:])
            out.tokens.add(str((event.params or {}).get("token")))
        elif isinstance(event, EventReceived) and stream.startswith("wf:"):
            key = (stream[3:], event.event_type)
            out.received[key] = out.received.get(key, 0) + 1
            payload = event.payload if isinstance(event.payload, dict) else {}
            out.tokens.add(str(payload.get("tok", payload.get("reason"))))
        elif isinstance(event, AgentStateSet) and isinstance(event.state, dict):
            out.tokens.add(str(event.state.get("tok")))
    return out


def _token() -> str:
    return uuid.uuid4().hex[:16]


class Client:
    def __init__(self, engine: eventwf.Engine, cfg: Config, plan: Plan, history: History,
                 run: str) -> None:
        self.engine = engine
        self.cfg = cfg
        self.plan = plan
        self.history = history
        self.run = run
        self.done = trio.Event()

    async def agent(self, name: str) -> CampaignAgent:
        """The agent object (its first use appends; a storage failure is retried)."""
        while True:
            try:
                return await self.engine.get_agent(CampaignAgent, name)
            except StorageError as exc:
                if exc.fatal:
                    raise
                await trio.sleep(0.2)

    async def call(self, op: str, key: str, fn: Callable[[str], Any]) -> bool:
        """Invoke until acknowledged; a storage failure is logged as ``fail`` and retried.
        False if the engine refused for another reason (also logged)."""
        while True:
            token = _token()
            self.history.invoke(op, key, token)
            try:
                await fn(token)
            except StorageError as exc:
                self.history.fail(token, exc)
                if self.cfg.die_on_storage_error:  # before any later commit can happen
                    os.kill(os.getpid(), signal.SIGKILL)
                if exc.fatal:
                    raise
                await trio.sleep(0.2)
                continue
            except EventwfError as exc:
                self.history.fail(token, exc)
                return False
            self.history.ok(token)
            return True

    async def main(self) -> bool:
        have = landed(self.cfg.db)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._set_states)
            started = await self._start_all(nursery, have)
            for workflow in self.plan.workflows:
                if workflow.id not in started:
                    continue
                try:
                    await self.engine.wait_workflow(workflow.id)
                except eventwf.CorruptLogError:
                    pass  # quarantined: finished as far as this client can tell
            if len(started) < len(self.plan.workflows):
                nursery.cancel_scope.cancel()
                return False
            await self._callbacks_delivered()
            nursery.cancel_scope.cancel()
        return True

    async def _start_all(self, nursery: trio.Nursery, have: Landed) -> set[str]:
        started: set[str] = set()
        fresh = 0
        for workflow in self.plan.workflows:
            if workflow.id in have.started:
                started.add(workflow.id)
                nursery.start_soon(self._send_all, workflow, have)
                continue
            if self.cfg.start_limit is not None and fresh >= self.cfg.start_limit:
                continue
            fresh += 1
            await trio.sleep(self.cfg.start_gap)  # paced: one start per gap, after a gap
            agent = await self.agent(workflow.agent)

            async def start(token: str, workflow: PlanWorkflow = workflow,
                            agent: CampaignAgent = agent) -> None:
                await agent.run_workflow(BINDING, {"program": workflow.program, "token": token},
                                         id=workflow.id)

            if await self.call("start", workflow.id, start):
                started.add(workflow.id)
                nursery.start_soon(self._send_all, workflow, have)
        return started

    async def _send_all(self, workflow: PlanWorkflow, have: Landed) -> None:
        agent = await self.agent(workflow.agent)
        skip = dict(have.received)
        for send in workflow.sends:
            key = (workflow.id, send.type)
            if skip.get(key, 0) > 0:
                skip[key] -= 1
                continue
            await trio.sleep(send.delay)
            op_key = f"{workflow.id}/{send.key}"
            if send.type == "approval":
                async def answer(token: str, index: int = send.index,
                                 decision: str = send.decision) -> None:
                    if decision == "yes":
                        await agent.approve_workflow(workflow.id, reason=token,
                                                     metadata={"i": index})
                    else:
                        await agent.reject_workflow(workflow.id, reason=token)

                await self.call("approve" if send.decision == "yes" else "reject", op_key,
                                answer)
            else:
                value = f"{send.type}:{send.j}"

                async def deliver(token: str, event_type: str = send.type,
                                  value: str = value, op_key: str = op_key) -> None:
                    await agent.send_workflow_event(BINDING, workflow.id, {
                        "type": event_type, "payload": {"id": op_key, "v": value, "tok": token}})

                await self.call("send", op_key, deliver)

    async def _set_states(self) -> None:
        agent = await self.agent(CLIENT_AGENT)
        n = sum(1 for op in read_history(self.cfg.history) if op.op == "set_state")
        while True:
            n += 1

            async def set_state(token: str, n: int = n) -> None:
                await agent.set_state({"n": n, "tok": token})

            await self.call("set_state", str(n), set_state)
            await trio.sleep(self.cfg.state_every)

    async def _callbacks_delivered(self) -> None:
        while True:
            conn = readonly_connection(self.cfg.db)
            try:
                (pending,) = conn.execute(
                    "SELECT count(*) FROM agents WHERE last_callback > delivered_through "
                    "AND corrupt_position IS NULL").fetchone()
            finally:
                conn.close()
            if not pending:
                return
            await trio.sleep(0.01)


async def session(cfg: Config, *, wall_clock: Callable[[], float] = time.time) -> bool:
    """Open the engine on the plan's log, run the client, close. True if all is done."""
    run = cfg.run or str(os.getpid())
    plan = Plan.load(cfg.plan)
    ledger = Ledger(cfg.ledger)
    service = Service(cfg.service)
    history = History(cfg.history, run)
    runtime = Runtime(run, ledger, service, body_delay=cfg.body_delay,
                      retry_delay=cfg.retry_delay)
    if cfg.ledger_clock == "trio":
        ledger.clock = trio.current_time
    programs.RUNTIME = runtime
    done = False
    try:
        async with eventwf.open_engine(
                cfg.db, agents=[CampaignAgent], workflows={BINDING: CampaignWorkflow},
                wall_clock=wall_clock, hibernate_after=cfg.hibernate_after) as engine:
            runtime.head = lambda: engine.statistics().head
            ledger.opened(run, engine.statistics().head)
            if cfg.wal_autocheckpoint is not None:
                engine.runtime.store.conn.execute(  # type: ignore[attr-defined]
                    f"PRAGMA wal_autocheckpoint={int(cfg.wal_autocheckpoint)}")
            client = Client(engine, cfg, plan, history, run)
            with trio.move_on_after(cfg.stop_after if cfg.stop_after is not None
                                    else float("inf")):
                done = await client.main()
        if done:
            ledger.note(run, "DONE")
        return done
    finally:
        programs.RUNTIME = None
        history.close()
        service.close()
        ledger.close()
