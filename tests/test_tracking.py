"""Tracking records through the public Agent API (specs/agents.md T1-T9)."""

from __future__ import annotations

import base64
import functools
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventwf
from eventwf.store import is_url
from tests.wfkit import TestAgent, event_types, flip_last_byte, virtual_wall


@pytest.fixture
def db(any_db: str) -> str:
    """These engine tests run on both backends (conftest ``any_db``, specs/postgres.md)."""
    return any_db

ran: list[str] = []


class Hold(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.do("start", lambda: ran.append(event.instance_id))
        return (await step.wait_for_event("go", type="go", timeout="1 day")).payload


class Quick(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("only", lambda: ran.append(event.instance_id) or event.payload)


class Nap(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        await step.sleep("nap", "1 hour")
        await step.do("after", lambda: ran.append(f"after:{event.instance_id}"))
        return "rested"


BINDINGS: dict[str, Any] = {"HOLD": Hold, "QUICK": Quick, "NAP": Nap}
BAD_CURSOR = "Invalid pagination cursor. The cursor may be malformed or corrupted."


@asynccontextmanager
async def _open(db: str, workflows: dict[str, Any] | None = None) -> AsyncIterator[Any]:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=workflows or BINDINGS,
                                   wall_clock=virtual_wall) as engine:
        yield engine
        await trio.sleep(1)  # let runners settle, so no test depends on close races


def _ids(page: eventwf.WorkflowPage) -> list[str]:
    return [w.workflow_id for w in page.workflows]


def _snapshot(db: str) -> list[Any]:  # every tracking row, the log's size and the schema
    if is_url(db):
        import psycopg

        with psycopg.connect(db, autocommit=True) as pg:
            return [pg.execute(sql).fetchall() for sql in [
                "SELECT * FROM eventwf.workflows ORDER BY workflow_id",
                "SELECT count(*), max(position) FROM eventwf.events",
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'eventwf' ORDER BY 1, 2"]]
    with sqlite3.connect(db) as conn:
        return [conn.execute(sql).fetchall() for sql in [
            "SELECT * FROM workflows ORDER BY workflow_id",
            "SELECT count(*), max(position) FROM events", "SELECT * FROM sqlite_master"]]


# -- T1: starting ---------------------------------------------------------------------------


async def test_leaving_the_engine_at_once_is_clean(db: str) -> None:
    """API.md Engine, T1: leaving the block stops workflows cleanly, even before a resumed
    run's first append (this raised EventwfError('the engine is closed') out of the block)."""
    for i in range(20):  # each close races the resumed runner's first append
        async with eventwf.open_engine(db, agents=[TestAgent], workflows=BINDINGS,
                                       wall_clock=virtual_wall) as engine:
            if i == 0:
                await (await engine.get_agent(TestAgent, "a")).run_workflow("HOLD", id="w")
    async with _open(db) as engine:  # the start was logged: the run resumes and waits
        agent = await engine.get_agent(TestAgent, "a")
        await trio.sleep(1)
        assert (await agent.get_workflow("w")).status == "waiting"  # type: ignore[union-attr]


async def test_started_workflows_are_tracked_per_agent_with_wf_ids(db: str) -> None:
    async with _open(db) as engine:  # T1, T2, T5
        agent = await engine.get_agent(TestAgent, "a")
        ids = []
        for _ in range(2):
            ids.append(wid := await agent.run_workflow("HOLD", metadata={"k": 1}))
            assert re.fullmatch(r"wf_[A-Za-z0-9_-]{21}", wid)
            info = await agent.get_workflow(wid)
            assert info is not None and info.created_at.tzinfo is not None
            assert (info.workflow_id, info.workflow_name, info.agent_class, info.agent_name,
                    info.status, info.metadata, info.completed_at, info.updated_at) == (
                wid, "HOLD", "TestAgent", "a", "queued", {"k": 1}, None, info.created_at)
        assert ids[0] != ids[1]
        meta = {"k" * 64: {"_x-1": [{"Z9": None}], "n": 1.5}, "e": {}}  # T5: valid at any depth
        wid = await agent.run_workflow("HOLD", id="x" * 100, metadata=meta)
        assert (await agent.get_workflow(wid)).metadata == meta  # type: ignore[union-attr]
        other = await engine.get_agent(TestAgent, "b")  # T2: records are per agent
        assert [await other.get_workflow(w) for w in ids] == [None, None]
        assert (await other.get_workflows()).total == 0 and (await agent.get_workflows()).total == 3
        assert await agent.get_workflow("unknown") is None
        assert await agent.get_workflow(42) is None  # type: ignore[arg-type]


async def test_tracked_ids_are_duplicates_and_unknown_bindings_are_named(db: str) -> None:
    async with _open(db) as engine:  # T1
        agent, other = [await engine.get_agent(TestAgent, n) for n in "ab"]
        assert await agent.run_workflow("QUICK", 1, id="job-1") == "job-1"
        with pytest.raises(eventwf.DuplicateWorkflowError, match="job-1"):
            await agent.run_workflow("QUICK", 2, id="job-1")
        await engine.wait_workflow("job-1")
        before = event_types(db)
        with pytest.raises(eventwf.DuplicateWorkflowError):
            await agent.run_workflow("HOLD", id="job-1")
        with pytest.raises(eventwf.DuplicateWorkflowError):  # ids are global, not per agent
            await other.run_workflow("QUICK", id="job-1")
        assert event_types(db) == before
        with pytest.raises(eventwf.UnknownWorkflowError, match="'NOPE'"):
            await agent.run_workflow("NOPE")


async def test_active_untracked_id_is_a_duplicate_and_finished_deleted_id_restarts(db: str
                                                                                   ) -> None:
    ran.clear()  # T1, T6, T7
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("HOLD", id="again", metadata={"run": 1})
        await trio.sleep(1)
        assert await agent.delete_workflow("again") is True
        with pytest.raises(eventwf.DuplicateWorkflowError, match="waiting"):
            await agent.run_workflow("HOLD", id="again")
        await trio.sleep(3600)  # T6: the workflow goes on without its record
        assert (await agent.get_workflow_status("HOLD", "again")).status == "waiting"
        await agent.send_workflow_event("HOLD", "again", {"type": "go", "payload": "first"})
        assert (await engine.wait_workflow("again")).status == "complete"
        assert await agent.get_workflow("again") is None  # finishing does not bring it back
        assert await agent.run_workflow("HOLD", id="again", metadata={"run": 2}) == "again"
        info = await agent.get_workflow("again")
        assert info is not None and info.metadata == {"run": 2} and info.status == "queued"
        await trio.sleep(1)
        assert ran == ["again", "again"]  # a new run: the old step result is not served
        await agent.send_workflow_event("HOLD", "again", {"type": "go", "payload": "second"})
        await engine.wait_workflow("again")
        assert (await agent.get_workflow_status("HOLD", "again")).output == "second"


BAD_STARTS: list[dict[str, Any]] = [
    {"id": ""}, {"id": "-lead"}, {"id": "has space"}, {"id": "a" * 101}, {"id": "a/b"},
    {"id": "ü"}, {"id": 7}, {"params": "x" * (1024 * 1024 + 1)},
    *({"metadata": m} for m in [
        {"bad key": 1}, {"a": {"b.c": 1}}, {"$": 1}, {"-x": 1}, {"k" * 65: 1}, {1: "x"},
        {"l": [{"x y": 1}]}, [("a", 1)], {f"k{i}": i for i in range(65)}, {"v": object()},
        {"v": float("nan")}]),
]


async def test_bad_ids_metadata_and_oversize_params_raise_value_error(db: str) -> None:
    async with _open(db) as engine:  # T1, T5
        agent = await engine.get_agent(TestAgent, "a")
        before = event_types(db)
        for kw in BAD_STARTS:
            with pytest.raises(ValueError):
                await agent.run_workflow("HOLD", kw.get("params"), id=kw.get("id"),
                                         metadata=kw.get("metadata"))
        assert event_types(db) == before


# -- T3: queries ----------------------------------------------------------------------------


async def test_status_and_workflow_name_filters(db: str) -> None:
    async with _open(db) as engine:  # T3
        agent = await engine.get_agent(TestAgent, "a")
        done = [await agent.run_workflow("QUICK", id=f"q{i}") for i in range(2)]
        held = [await agent.run_workflow("HOLD", id=f"h{i}") for i in range(3)]
        await trio.sleep(1)

        async def ids(**kw: Any) -> list[str]:
            page = await agent.get_workflows(order="asc", **kw)
            assert page.total == len(page.workflows)
            return _ids(page)

        assert await ids(status="complete") == done
        assert await ids(status="waiting") == held
        assert await ids(status=["complete", "waiting"]) == ["h0", "h1", "h2", "q0", "q1"]
        assert await ids(status=[]) == []
        assert await ids(status="running") == []
        assert await ids(workflow_name="HOLD") == held
        assert await ids(workflow_name="HOLD", status="complete") == []
        assert await ids(workflow_name="NAP") == []
        with pytest.raises(ValueError, match="'finished'"):
            await agent.get_workflows(status="finished")


async def test_order_is_created_time_then_id_in_both_directions(db: str) -> None:
    async with _open(db) as engine:  # T3
        agent = await engine.get_agent(TestAgent, "a")
        for wid in ["m", "c", "x"]:  # no time passes: one created time
            await agent.run_workflow("HOLD", id=wid)
        await trio.sleep(5)
        await agent.run_workflow("HOLD", id="a")
        infos = {w.workflow_id: w for w in (await agent.get_workflows()).workflows}
        assert infos["m"].created_at == infos["c"].created_at == infos["x"].created_at
        assert (infos["a"].created_at - infos["m"].created_at).total_seconds() == 5
        assert _ids(await agent.get_workflows()) == _ids(await agent.get_workflows(order="desc"))
        assert _ids(await agent.get_workflows()) == ["a", "x", "m", "c"]
        assert _ids(await agent.get_workflows(order="asc")) == ["c", "m", "x", "a"]


async def test_limit_defaults_to_50_is_capped_at_100_and_is_checked(db: str) -> None:
    async with _open(db) as engine:  # T3
        agent = await engine.get_agent(TestAgent, "a")
        for i in range(120):
            await agent.run_workflow("HOLD", id=f"w{i:03}")
        page = await agent.get_workflows()
        assert (len(page.workflows), page.total) == (50, 120) and page.next_cursor is not None
        for limit in [100, 101, 10_000]:
            assert len((await agent.get_workflows(limit=limit)).workflows) == 100
        assert _ids(await agent.get_workflows(limit=1)) == ["w119"]
        for bad in [0, -1, 1.5, "10", True, None]:
            with pytest.raises(ValueError, match="limit"):
                await agent.get_workflows(limit=bad)  # type: ignore[arg-type]
        for order in ["up", "", None, "ascending"]:
            with pytest.raises(ValueError, match="order"):
                await agent.get_workflows(order=order)  # type: ignore[arg-type]


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 4, 23, 100])
async def test_cursor_pagination_walks_every_record_exactly_once(db: str, order: str,
                                                                 limit: int) -> None:
    async with _open(db) as engine:  # T3
        agent = await engine.get_agent(TestAgent, "a")
        for i in range(23):  # groups of 5 sharing a created time, ids not in creation order
            await agent.run_workflow("HOLD", id=f"w{(i * 7) % 23:02}")
            if i % 5 == 4:
                await trio.sleep(1)
        full = _ids(await agent.get_workflows(order=order, limit=100))
        keys = {w.workflow_id: (w.created_at, w.workflow_id)
                for w in (await agent.get_workflows(limit=100)).workflows}
        assert full == sorted(keys, key=keys.__getitem__, reverse=order == "desc")
        page = await agent.get_workflows(order=order, limit=limit)
        seen = _ids(page)
        while page.next_cursor is not None:
            page = await agent.get_workflows(order=order, limit=limit, cursor=page.next_cursor)
            assert page.total == 23  # total ignores the cursor
            seen += _ids(page)
        assert seen == full


async def test_malformed_cursors_raise_value_error_with_the_exact_message(db: str) -> None:
    async with _open(db) as engine:  # T3
        agent = await engine.get_agent(TestAgent, "a")
        await agent.run_workflow("HOLD")
        for cursor in ["not-valid-base64!", base64.b64encode(b"not-json").decode(),
                       base64.b64encode(b'{"wrong":"structure"}').decode(),
                       base64.b64encode(b'{"c":"1","i":"x"}').decode(), "", 5]:
            with pytest.raises(ValueError) as err:
                await agent.get_workflows(cursor=cursor)  # type: ignore[arg-type]
            assert str(err.value) == BAD_CURSOR, cursor


# -- T4: metadata filters --------------------------------------------------------------------

STORED: dict[str, Any] = {  # agent a's records; b's "b-int" and a's deleted "gone" match v=1
    "m-int": {"v": 1, "a": {"b": "x", "c": None}}, "m-str": {"v": "1", "a": {"b": "y"}},
    "m-true": {"v": True, "tags": ["t1"], "n": {"deep": {"x": 1.5}}}, "m-null": {"v": None},
    "m-real": {"v": 1.0, "a": "flat"}, "m-false": {"v": False, "a": {"b": 1}},
    "m-zero": {"v": 0, "n": {"deep": 0}}, "m-none": None,
    "m-big": {"v": 2**64 - 1, "w": 2**63, "r": 2.0**64},  # beyond SQLite's INTEGER (T11)
}
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")
_MISSING = object()
HOSTILE = ["x') OR 1=1 --", 'a"b', "$", "arr[0]", "tags[0]", "a\x00b", "\x00", "x" * 10_240,
           "'" * 10_240, "", ".", "a.", ".a", "a..b", "$.v", "v'", 'v"', "v) OR (1=1", "*",
           " v", "v\n", "%", "a.b[0]", "'; DROP TABLE workflows; --", "v -- ", "-v", "a.-b"]
KEYS = (st.sampled_from(HOSTILE) | st.text(max_size=30)
        | st.sampled_from(["v", "a", "a.b", "a.c", "n.deep", "n.deep.x", "tags", "v.x", "zz", "w",
                           "r"])
        | st.from_regex(r"[a-v0-9_][a-z0-9_-]{0,3}(\.[a-z_][a-z0-9_-]{0,3}){0,2}",
                        fullmatch=True))
VALUES = (st.none() | st.booleans() | st.integers(-2, 2) | st.text(max_size=8)
          | st.floats(allow_nan=False, allow_infinity=False)
          | st.sampled_from([1.0, 1.5, 0.0, -0.0, "1", "x", "y", "flat", "t1", "x') OR 1=1 --"])
          | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70, -(2**63), -(2**63) - 1,
                             2.0**63, 2.0**64, 1e300, math.nan, math.inf, 10**400]))


def _json_equal(stored: Any, value: Any) -> bool:  # T4: numbers compare across int/float
    if value is None or isinstance(value, bool):
        return stored is value
    if isinstance(value, int | float):
        return isinstance(stored, int | float) and not isinstance(stored, bool) and stored == value
    return isinstance(stored, str) and stored == value


def _lookup(meta: Any, key: str) -> Any:
    if not all(_SEGMENT.fullmatch(segment) for segment in key.split(".")):
        return _MISSING  # T4: a key that could not have been stored names nothing
    for segment in key.split("."):
        meta = meta.get(segment, _MISSING) if isinstance(meta, dict) else _MISSING
    return meta


def _reference(query: dict[str, Any]) -> set[str]:
    return {wid for wid, meta in STORED.items()
            if all(_json_equal(_lookup(meta, k), v) for k, v in query.items())}


def _mock_run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stored_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    """A log of workflows with typed metadata, on each backend (made once per module)."""
    server = None
    if request.param == "sqlite":
        path = str(tmp_path_factory.mktemp("t4") / "eventwf.db")
    else:
        server = request.getfixturevalue("pg_server")
        path = server.new_database()

    async def build() -> None:
        async with _open(path) as engine:
            a, b = [await engine.get_agent(TestAgent, n) for n in "ab"]
            for wid, meta in STORED.items():
                await a.run_workflow("QUICK", id=wid, metadata=meta)
            for agent, wid in [(b, "b-int"), (a, "gone")]:
                await agent.run_workflow("QUICK", id=wid, metadata={"v": 1, "a": {"b": "x"}})
            for wid in [*STORED, "b-int", "gone"]:
                await engine.wait_workflow(wid)
            assert await a.delete_workflow("gone")
            await trio.sleep(1)  # let every callback be delivered: reopening appends nothing

    _mock_run(build)
    yield path
    if server is not None:
        server.drop_database(path)


TYPED: list[tuple[dict[str, Any], set[str]]] = [
    ({"v": 1}, {"m-int", "m-real"}), ({"v": 1.0}, {"m-int", "m-real"}), ({"v": "1"}, {"m-str"}),
    ({"v": True}, {"m-true"}), ({"v": False}, {"m-false"}), ({"v": 0}, {"m-zero"}),
    ({"v": None}, {"m-null"}), ({"a.b": "x"}, {"m-int"}), ({"a.b": 1}, {"m-false"}),
    ({"a.c": None}, {"m-int"}), ({"n.deep.x": 1.5}, {"m-true"}), ({"a": "flat"}, {"m-real"}),
    ({"a.b": "y", "v": "1"}, {"m-str"}), ({"a.b": "x", "v": "1"}, set()),
    ({"missing": None}, set()), ({"tags": "t1"}, set()), ({}, set(STORED)),
    ({"v": 2**64 - 1}, {"m-big"}), ({"v": 2.0**64}, set()), ({"r": 2**64}, {"m-big"}),
    ({"w": 2.0**63}, {"m-big"}), ({"w": 2**63 - 1}, set()), ({"r": 2**70}, set()),
]


def test_metadata_filters_are_nested_typed_and_anded(stored_db: str) -> None:
    """T4: 1 == 1.0 (both JSON numbers), but 1 != "1" != True; None matches a stored null
    only; other agents' and deleted records never match; numbers compare exactly beyond
    SQLite's 64-bit integers (T11: 2**64 - 1 != 2.0**64)."""
    async def check() -> None:
        async with _open(stored_db) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            for query, expected in TYPED:
                page = await agent.get_workflows(metadata=query, limit=100)
                assert (set(_ids(page)), page.total) == (expected, len(expected)), query
            with pytest.raises(ValueError, match="metadata filter value"):
                await agent.get_workflows(metadata={"a": {"b": "x"}})

    _mock_run(check)
    assert all(_reference(query) == expected for query, expected in TYPED)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=6))
def test_metadata_keys_match_a_python_filter_and_hostile_keys_change_nothing(
        stored_db: str, queries: list[tuple[str, Any]]) -> None:
    """T4: keys and values are bound parameters; a key that could not be stored matches
    nothing; valid keys agree with a Python filter. Nothing raises, nothing is written."""
    before = _snapshot(stored_db)

    async def check() -> None:
        async with _open(stored_db) as engine:
            agent = await engine.get_agent(TestAgent, "a")
            for query in [*({k: v} for k, v in queries), dict(queries)]:
                page = await agent.get_workflows(metadata=query, limit=100)
                assert set(_ids(page)) == _reference(query), query
                assert page.total == len(page.workflows)
            for key, value in queries:
                if not _reference({key: value}):
                    assert await agent.delete_workflows(metadata={key: value}) == 0

    _mock_run(check)
    assert _snapshot(stored_db) == before


# -- T6, T7: deleting records ---------------------------------------------------------------


async def test_delete_workflow_is_true_once_per_own_record_and_survives_reopen(db: str) -> None:
    async with _open(db) as engine:  # T6
        a, b = [await engine.get_agent(TestAgent, n) for n in "ab"]
        for agent, wid in [(a, "d1"), (a, "d2"), (b, "b1")]:
            await agent.run_workflow("HOLD", id=wid)
        assert [await a.delete_workflow(w) for w in ["d1", "d1", "unknown", "b1"]] == [
            True, False, False, False]
        assert await b.get_workflow("b1") is not None
        assert event_types(db, "wf:d1").count("tracking.deleted") == 1
    async with _open(db) as engine:
        a = await engine.get_agent(TestAgent, "a")
        assert await a.get_workflow("d1") is None
        assert _ids(await a.get_workflows()) == ["d2"]
        assert await a.delete_workflow("d1") is False


async def test_delete_workflows_by_criteria_and_strict_created_before(db: str) -> None:
    async with _open(db) as engine:  # T6
        a, b = [await engine.get_agent(TestAgent, n) for n in "ab"]
        for agent, name, wid, team in [(a, "QUICK", "q1", "x"), (a, "HOLD", "h1", "x"),
                                       (b, "QUICK", "bq", "x"), (a, "QUICK", "q2", "y"),
                                       (a, "HOLD", "h2", "y"), (a, "QUICK", "q3", None)]:
            await agent.run_workflow(name, id=wid, metadata=team and {"team": team})
            await trio.sleep(10 if wid in ("bq", "h2") else 0)  # three created times
        bound = (await a.get_workflow("h2")).created_at  # type: ignore[union-attr]
        with pytest.raises(ValueError):
            await a.delete_workflows(created_before=datetime(2030, 1, 1))  # naive
        assert await a.delete_workflows(status="complete", metadata={"team": "x"}) == 1
        assert await a.delete_workflows(metadata={"team": "z"}) == 0
        assert await a.delete_workflows(workflow_name="HOLD", created_before=bound) == 1
        for edge in [bound, bound.timestamp()]:  # q2 and h2 sit exactly at the bound: kept
            assert await a.delete_workflows(created_before=edge) == 0
        assert sorted(_ids(await a.get_workflows())) == ["h2", "q2", "q3"]
        assert await a.delete_workflows(
            workflow_name="QUICK", status=["complete"], created_before=bound.timestamp() + 1) == 1
        assert await a.delete_workflows(status=[]) == 0
        assert await a.delete_workflows() == 2  # no criteria: every record of this agent
        assert await a.delete_workflows() == 0
        assert (await a.get_workflows()).total == 0
        assert _ids(await b.get_workflows()) == ["bq"]


# -- T8: migrating a renamed binding ----------------------------------------------------------


async def test_migrate_re_points_orphans_and_resumes_the_unfinished(db: str) -> None:
    ran.clear()  # T8, W4
    async with _open(db, {"OLD": Nap}) as engine:
        a, b = [await engine.get_agent(TestAgent, n) for n in "ab"]
        await a.run_workflow("OLD", id="done")
        await trio.sleep(3601)
        for agent, wid in [(a, "w1"), (a, "w2"), (b, "bw")]:
            await agent.run_workflow("OLD", id=wid)
        await trio.sleep(600)
    assert ran == ["after:done"]
    async with _open(db, {"NEW": Nap}) as engine:
        a, b = [await engine.get_agent(TestAgent, n) for n in "ab"]
        await trio.sleep(7200)
        assert ran == ["after:done"]  # orphans are left alone
        assert (await a.get_workflow("w1")).status == "waiting"  # type: ignore[union-attr]
        with pytest.raises(eventwf.WorkflowNotFoundError):
            await a.get_workflow_status("NEW", "w1")
        with pytest.raises(eventwf.UnknownWorkflowError, match="'GONE'"):
            await a.migrate_workflow_binding("OLD", "GONE")
        assert await a.migrate_workflow_binding("OLD", "NEW") == 3
        assert {w.workflow_name for w in (await a.get_workflows()).workflows} == {"NEW"}
        for wid in ["w1", "w2"]:
            assert (await engine.wait_workflow(wid)).status == "complete"
        assert sorted(ran) == ["after:done", "after:w1", "after:w2"]
        assert (await b.get_workflow("bw")).workflow_name == "OLD"  # type: ignore[union-attr]
        assert await a.migrate_workflow_binding("OLD", "NEW") == 0
        assert await a.migrate_workflow_binding("NEVER", "NEW") == 0
        assert await b.migrate_workflow_binding("OLD", "NEW") == 1
        assert (await engine.wait_workflow("bw")).status == "complete"
    assert event_types(db).count("binding.migrated") == 4


# -- T9: indexes ------------------------------------------------------------------------------


@pytest.mark.sqlite_only
async def test_tracking_projection_has_its_query_indexes(db: str) -> None:
    async with _open(db):  # T9
        pass
    with sqlite3.connect(db) as conn:
        names = [row[1] for row in conn.execute("PRAGMA index_list(workflows)")]
        columns = {tuple(r[2] for r in conn.execute(f"PRAGMA index_info('{name}')"))
                   for name in names}
    assert ("agent_class", "agent_name", "tracked", "created_us", "workflow_id") in columns
    assert ("status", "created_us", "workflow_id") in columns and ("workflow_name",) in columns


async def test_delete_workflows_drops_many_records_a_batch_at_a_time(db: str) -> None:
    # T6: a million records never make one transaction; every match is dropped, once
    from eventwf.runtime.tracking import DELETE_BATCH

    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        async with trio.open_nursery() as nursery:
            for i in range(2 * DELETE_BATCH + 500):
                nursery.start_soon(functools.partial(agent.run_workflow, "HOLD", id=f"w{i}"))
        await trio.sleep(1)
        commits = engine.statistics().commits
        assert await agent.delete_workflows() == 2 * DELETE_BATCH + 500
        assert engine.statistics().commits - commits == 3  # 1,000 + 1,000 + 500
        assert (await agent.get_workflows()).total == 0
        assert event_types(db).count("tracking.deleted") == 2 * DELETE_BATCH + 500


async def test_t6a_a_quarantined_workflow_keeps_its_record_and_blocks_no_deletion(
        db: str, caplog: pytest.LogCaptureFixture) -> None:
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        for wid in ("bad", "ok1", "ok2"):
            await agent.run_workflow("HOLD", id=wid)
    flip_last_byte(db, "wf:bad", "step.succeeded")
    async with _open(db) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        await agent.send_workflow_event("HOLD", "bad", {"type": "go"})  # it replays: damage
        await trio.sleep(1)
        bad = await agent.get_workflow("bad")
        assert bad is not None and bad.status == "unknown"
        for op in (agent.delete_workflow, agent.terminate_workflow, agent.restart_workflow):
            with pytest.raises(eventwf.TransitionError, match="quarantined"):
                await op("bad")
        assert await agent.delete_workflows() == 2  # the others go; a warning counts it
        assert "left 1 quarantined workflow(s)" in caplog.text
        assert [w.workflow_id for w in (await agent.get_workflows()).workflows] == ["bad"]
