"""Several engines on one PostgreSQL database (specs/postgres.md PG9a, PG12-PG13, PG17).

In-process: two engines in one trio run (takeover after a clean close; fencing by a claim).
Multi-process: engines as real subprocesses (tests/pg_multi_worker.py), SIGKILLed and
SIGSTOPped. Real clock with short leases (PG3a); every wait is for a condition, with a
generous deadline; the only timing asserted is "within lease_ttl plus a margin" (>= 5 s).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

pytest.importorskip("psycopg")
import psycopg  # noqa: E402
import trio  # noqa: E402

import eventwf  # noqa: E402
from eventwf.errors import AgentMovedError  # noqa: E402
from eventwf.model.codec import decode_event, encode_event  # noqa: E402
from eventwf.model.events import StepSucceeded, StreamClaimed  # noqa: E402
from eventwf.store import open_store  # noqa: E402
from eventwf.store.postgres import PostgresStore  # noqa: E402
from tests.pg_engines import Running, owned_name, until  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TTL = 1.5
MARGIN = 10.0  # generous: a loaded 2-core machine


class Host(eventwf.Agent):
    initial_state: Any = {}


RUNS: collections.Counter[str] = collections.Counter()


class Gate(eventwf.AgentWorkflow[Host]):
    """One step, a wait for an event, one more step."""

    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        first = await step.do("first", lambda: RUNS.update([f"{self.workflow_id}/first"]) or 1)
        got = await step.wait_for_event("go", type="go", timeout=600)
        second = await step.do("second", lambda: RUNS.update([f"{self.workflow_id}/second"])
                               or 2)
        return first + second + int(got.payload)


def _open(url: str) -> Any:
    return eventwf.open_engine(url, agents=[Host], workflows=[Gate], lease_ttl=TTL)


def _running() -> Running:
    return Running(_open)


def _owned_name(engine: eventwf.Engine, prefix: str, not_shard: int | None = None) -> str:
    return owned_name(engine, "Host", prefix, not_shard)


@pytest.mark.realtime
async def test_an_engine_takes_over_the_shards_another_released_on_close(
        fresh_postgres_url: str) -> None:  # PG12 (release on close), PG17
    RUNS.clear()
    async with trio.open_nursery() as nursery:
        first_task, second_task = _running(), _running()
        first = await nursery.start(first_task.serve, fresh_postgres_url)
        name = _owned_name(first, "h")
        await (await first.get_agent(Host, name)).run_workflow("Gate", id="g1")
        await until(lambda: RUNS["g1/first"] == 1, "the first step")
        second = await nursery.start(second_task.serve, fresh_postgres_url)
        await first_task.close()  # gives its leases up: no need to wait for an expiry
        closed = time.monotonic()
        await until(lambda: second.runtime.ownership.owns("Host", name), "the takeover")
        assert time.monotonic() - closed < TTL + MARGIN
        agent = await second.get_agent(Host, name)
        await agent.send_workflow_event("Gate", "g1", {"type": "go", "payload": 4})
        info = await second.wait_workflow("g1", timeout=60)
        assert info.status == "complete"
        assert (await agent.get_workflow_status("Gate", "g1")).output == 7
        await second_task.close()
    assert RUNS == {"g1/first": 1, "g1/second": 1}  # the logged first step never ran again


@pytest.mark.realtime
async def test_a_stream_another_engine_claimed_drops_the_agent_and_not_the_batch(
        fresh_postgres_url: str) -> None:  # PG9a, PG13
    async with _open(fresh_postgres_url) as engine:
        own = engine.runtime.ownership
        taken = _owned_name(engine, "t")
        kept = _owned_name(engine, "k", not_shard=own.shard("Host", taken))
        lost_agent = await engine.get_agent(Host, taken)
        kept_agent = await engine.get_agent(Host, kept)
        await lost_agent.set_state({"n": 1})
        other = open_store(fresh_postgres_url)  # another engine's claim (it took the shard)
        assert isinstance(other, PostgresStore)
        try:
            other.sharding.claim([f"agent:Host/{taken}"],
                                 encode_event(StreamClaimed("other", 9)), 1)
        finally:
            other.close()
        results: dict[str, Any] = {}

        async def set_state(agent: Any, key: str) -> None:
            try:
                await agent.set_state({"n": 2})
                results[key] = "ok"
            except AgentMovedError as exc:
                results[key] = str(exc)

        async with trio.open_nursery() as nursery:  # one group commit holds both
            nursery.start_soon(set_state, lost_agent, "taken")
            nursery.start_soon(set_state, kept_agent, "kept")
        # the kept agent's append committed; the taken one's was refused here (nothing of
        # it logged: the agent moved) and went to its owner's inbox (PG15): here nobody
        # else runs, so this engine took the shard back, claimed the stream and applied it
        assert results == {"kept": "ok", "taken": "ok"}
        await kept_agent.set_state({"n": 3})  # the engine goes on: never fatal
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
        rows = [(r[0], bytes(r[1])) for r in conn.execute(
            "SELECT type, data FROM eventwf.events WHERE stream = %s "
            "ORDER BY stream_position", (f"agent:Host/{taken}",))]
    types = [t for t, _ in rows]
    # nothing was appended under the old claim: a new claim comes first, then n=2, once
    assert types == ["agent.created", "agent.state_set", "stream.claimed", "stream.claimed",
                     "agent.state_set"], types
    assert decode_event(*rows[-1]).state == {"n": 2}  # type: ignore[attr-defined]


def _claims(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT stream FROM eventwf.events WHERE type = 'stream.claimed' "
            "ORDER BY position")]


@pytest.mark.realtime
async def test_streams_are_claimed_after_an_expired_lease_not_after_a_release(
        fresh_postgres_url: str) -> None:  # PG13: only a lapsed holder can still append
    RUNS.clear()
    async with _open(fresh_postgres_url) as engine:
        name = _owned_name(engine, "c")
        await (await engine.get_agent(Host, name)).run_workflow("Gate", id="g2")
        await until(lambda: RUNS["g2/first"] == 1, "the first step")
    async with _open(fresh_postgres_url):  # released on close: resumed with no claim
        pass  # (recovery runs at open)
    assert _claims(fresh_postgres_url) == []
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:  # a holder that died
        conn.execute("UPDATE eventwf.shard_leases SET owner = 'gone', "
                     "expires_at = now() - interval '1 second'")
    async with _open(fresh_postgres_url) as engine:
        assert _claims(fresh_postgres_url) == ["wf:g2"]  # claimed at open, before its replay
        agent = await engine.get_agent(Host, name)
        await agent.send_workflow_event("Gate", "g2", {"type": "go", "payload": 1})
        assert (await engine.wait_workflow("g2", timeout=60)).status == "complete"
    assert RUNS == {"g2/first": 1, "g2/second": 1}


# -- engines as processes -----------------------------------------------------------------


class _Worker:
    def __init__(self, url: str, ledger: Path, count: int, steps: int, engines: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.pg_multi_worker", url, str(ledger), str(TTL),
             str(count), str(steps), str(engines)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        for stream, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=_drain, args=(stream, into), daemon=True).start()

    @property
    def started(self) -> list[str]:
        return [line.split()[1] for line in self.lines if line.startswith("STARTED ")]


def _drain(stream: IO[str] | None, into: list[str]) -> None:
    assert stream is not None
    for line in stream:
        into.append(line.rstrip("\n"))


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


@contextmanager
def _workers(url: str, ledger: Path, n: int, count: int, steps: int) -> Iterator[list[_Worker]]:
    workers: list[_Worker] = []
    try:
        for _ in range(n):
            workers.append(_Worker(url, ledger, count, steps, n))
            _wait(lambda: "READY" in workers[-1].lines, "an engine opening")
        yield workers
    finally:
        for worker in workers:
            if worker.proc.poll() is None:
                os.kill(worker.proc.pid, signal.SIGCONT)
                worker.proc.kill()
            worker.proc.wait()


def _statuses(url: str, ids: list[str]) -> dict[str, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT workflow_id, status FROM eventwf.workflows "
                            "WHERE workflow_id = ANY(%s)", (ids,)).fetchall()
    return {str(w): str(s) for w, s in rows}


def _event_count(url: str, ids: list[str]) -> int:
    """Rows of the workflows' streams (the other engine may still log callbacks delivered
    on their agents' streams)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM eventwf.events WHERE stream = ANY(%s)",
                           (["wf:" + wid for wid in ids],)).fetchone()
    assert row is not None
    return int(row[0])


def _tail(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT position, stream, stream_position, type, data "
                            "FROM eventwf.events ORDER BY position DESC LIMIT 3").fetchall()


def _runs(ledger: Path) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(workflow, step) -> the (pid, start time) of each time its body ran."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = collections.defaultdict(list)
    for line in ledger.read_text().splitlines():
        pid, wid, step, started = line.split()
        out[wid, step].append((int(pid), float(started)))
    return out


def _logged_steps(url: str) -> dict[tuple[str, str], list[float]]:
    """(workflow, step) -> the time of each ``step.succeeded`` logged for it."""
    out: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT stream, time_us, data FROM eventwf.events "
                            "WHERE type = 'step.succeeded'").fetchall()
    for stream, time_us, data in rows:
        event = decode_event("step.succeeded", bytes(data))
        assert isinstance(event, StepSucceeded) and event.name is not None
        out[str(stream)[3:], event.name].append(int(time_us) / 1e6)
    return out


def _no_logged_step_ran_again(url: str, ledger: Path, steps: int, ids: list[str]) -> None:
    """Every step of every workflow is logged once, and no body of it started after that
    (a body that ran while its engine stopped owning the workflow, unlogged, may run
    again elsewhere: at least once, PG14). A body starts >= 0.2 s before its outcome is
    logged, so clock differences between processes of one machine do not matter."""
    runs, logged = _runs(ledger), _logged_steps(url)
    for wid in ids:
        for i in range(steps):
            (at,) = logged[wid, f"s{i}"]
            assert all(started < at for _, started in runs[wid, f"s{i}"]), (wid, i)


def test_a_killed_engines_workflows_finish_on_the_others(fresh_postgres_url: str,
                                                        tmp_path: Path) -> None:
    """PG12, PG13, PG17, issue 15 item 6: 3 engines; SIGKILL one mid-flight: its workflows
    finish on the others within lease_ttl plus a margin, nothing acknowledged is lost, no
    logged step runs again."""
    ledger, steps = tmp_path / "ledger", 12
    with _workers(fresh_postgres_url, ledger, 3, 3, steps) as workers:
        _wait(lambda: all(len(w.started) == 3 for w in workers), "the workflows starting")
        victim = workers[0]
        mine = victim.started
        _wait(lambda: len(_runs(ledger)) >= 9 + 3 * 2, "steps running")
        victim.proc.kill()
        killed = time.monotonic()
        victim.proc.wait()
        ids = [wid for w in workers for wid in w.started]  # acknowledged by run_workflow
        _wait(lambda: set(_statuses(fresh_postgres_url, ids).values()) == {"complete"}
              and len(_statuses(fresh_postgres_url, ids)) == len(ids),
              "every workflow completing", timeout=120)
        # the rest of the victim's work is at most `steps` steps of 0.2 s each
        assert time.monotonic() - killed < TTL + steps * 0.2 + MARGIN
        assert all(w.proc.poll() is None for w in workers[1:])
        assert not any("Traceback" in line or "quarantined" in line
                       for w in workers[1:] for line in w.errors)
    assert len(mine) == 3
    with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:  # fenced (PG13)
        claimed = conn.execute("SELECT count(*) FROM eventwf.events WHERE type = "
                               "'stream.claimed' AND stream = ANY(%s)",
                               (["wf:" + wid for wid in mine],)).fetchone()
    assert claimed is not None and claimed[0] >= 1
    _no_logged_step_ran_again(fresh_postgres_url, ledger, steps, ids)


def test_an_owner_paused_past_its_lease_appends_nothing_when_it_resumes(
        fresh_postgres_url: str, tmp_path: Path) -> None:
    """PG12 (the engine's own deadline), PG13: SIGSTOP the owner of running workflows past
    its lease; another engine takes them over and finishes them; SIGCONT: the paused
    engine's next append is refused (by its own deadline, or by a claim), nothing of it
    is logged, and it keeps running."""
    ledger, steps = tmp_path / "ledger", 10
    with _workers(fresh_postgres_url, ledger, 1, 2, steps) as workers:
        owner = workers[0]
        _wait(lambda: len(owner.started) == 2, "the workflows starting")
        _wait(lambda: len(_runs(ledger)) >= 4, "steps running")
        os.kill(owner.proc.pid, signal.SIGSTOP)
        with _workers(fresh_postgres_url, ledger, 1, 0, steps) as others:
            ids = owner.started
            _wait(lambda: set(_statuses(fresh_postgres_url, ids).values()) == {"complete"},
                  "the other engine finishing the paused engine's workflows", timeout=120)
            before = _event_count(fresh_postgres_url, ids)
            os.kill(owner.proc.pid, signal.SIGCONT)
            _wait(lambda: any("moved to another engine" in line or "ran out" in line
                              for line in owner.errors), "the paused engine noticing")
            time.sleep(TTL)  # a renewal round: it must not append anything meanwhile either
            assert _event_count(fresh_postgres_url, ids) == before, _tail(fresh_postgres_url)
            assert not any("quarantined" in line for line in owner.errors)
            assert owner.proc.poll() is None and others[0].proc.poll() is None
    _no_logged_step_ran_again(fresh_postgres_url, ledger, steps, ids)
