"""Hostile inputs to the tracking queries (specs/agents.md T3, T4, T6, T10-T13).

Every query input either gets the correct answer or a ``ValueError`` naming it (a bad
cursor gets the one cursor message); nothing raises ``RecursionError``,
``OverflowError``, ``UnicodeEncodeError`` or a raw SQLite error, and nothing is logged.
"""

from __future__ import annotations

import base64
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import eventwf
from tests.wfkit import TestAgent, count_events, virtual_wall

BAD_CURSOR = "Invalid pagination cursor. The cursor may be malformed or corrupted."
# Integers at and beyond SQLite's 64-bit range (a msgpack log holds ints up to 2**64 - 1),
# and floats that equal (or only nearly equal) them.
STORED: dict[str, dict[str, Any]] = {
    "w-big": {"big": 2**64 - 1, "huge": 2**63, "neg": -(2**63), "r": 2.0**64, "e": 2.0**70},
    "w-small": {"big": 1, "huge": 3.0, "neg": -1, "r": 3, "s": "x"},
}


class Quick(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        return await step.do("only", lambda: event.payload)


@asynccontextmanager
async def _stored(db: str) -> AsyncIterator[tuple[Any, TestAgent]]:
    async with eventwf.open_engine(db, agents=[TestAgent], workflows={"QUICK": Quick},
                                   wall_clock=virtual_wall) as engine:
        agent, other = [await engine.get_agent(TestAgent, name) for name in "ab"]
        for owner, wid, meta in [(agent, wid, meta) for wid, meta in STORED.items()] + [
                (other, "b-big", STORED["w-big"]), (agent, "gone", STORED["w-big"])]:
            await owner.run_workflow("QUICK", id=wid, metadata=meta)
            await engine.wait_workflow(wid)
        assert await agent.delete_workflow("gone")  # neither b's nor deleted records match
        await trio.sleep(1)  # every callback delivered: from here on a query logs nothing
        yield engine, agent


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _python_equal(stored: Any, value: Any) -> bool:
    """T4 as Python compares JSON numbers: exactly, across int and float."""
    if value is None or isinstance(value, bool) or isinstance(stored, bool):
        return stored is value
    if isinstance(value, int | float):
        return isinstance(stored, int | float) and stored == value
    return stored == value


FORGED = [
    _b64(b"[" * 100_000),  # deeply nested JSON
    _b64(b'{"c":' + b"[" * 100_000 + b"]" * 100_000 + b',"i":"x"}'),
    _b64(b'{"c":%d,"i":"x"}' % 2**70),  # a number SQLite cannot bind
    _b64(b'{"c":%d,"i":"x"}' % 2**63),
    _b64(b'{"c":%d,"i":"x"}' % -(2**63 + 1)),
    _b64(b'{"c":' + b"9" * 5000 + b',"i":"x"}'),
    _b64(b'{"c":1e300,"i":"x"}'), _b64(b'{"c":true,"i":"x"}'), _b64(b'{"c":1.0,"i":"x"}'),
    _b64(b'{"c":1,"i":"\\ud800"}'),  # a lone surrogate
    _b64(b'{"c":1,"i":"a\\u0000b"}'), _b64(b'{"c":1,"i":"' + b"x" * 5000 + b'"}'),
    _b64(b'{"c":1,"i":"x","extra":[[[[]]]]}'), _b64(b'{"c":1}'), _b64(b"null"),
    "A" * 10_000_000, "é" * 40, "\ud800", "\x00",
]


@pytest.mark.parametrize("cursor", FORGED, ids=range(len(FORGED)))
async def test_forged_cursors_raise_the_cursor_value_error(db: str, cursor: str) -> None:
    async with _stored(db) as (_, agent):
        with pytest.raises(ValueError) as err:
            await agent.get_workflows(cursor=cursor)
        assert str(err.value) == BAD_CURSOR


NUMBERS = [2**64 - 1, 2**64, 2**63, 2**63 - 1, -(2**63), -(2**63) - 1, 2**70, 10**400, 1,
           3, 1.0, 3.0, 2.0**63, 2.0**64, 2.0**70, float(2**64 - 1), 1e300, -0.0,
           math.nan, math.inf, -math.inf, True]


async def test_metadata_numbers_compare_exactly_at_any_magnitude(db: str) -> None:
    """T4, T11: no OverflowError, and 2**64 - 1 != 2.0**64 although SQLite reads both as
    the same REAL; a value no metadata can hold matches nothing."""
    async with _stored(db) as (_, agent):
        head = count_events(db)
        for key in ["big", "huge", "neg", "r", "e"]:
            for value in NUMBERS:
                expected = {wid for wid, meta in STORED.items()
                            if _python_equal(meta.get(key, ...), value)}
                page = await agent.get_workflows(metadata={key: value})
                found = {w.workflow_id for w in page.workflows}
                assert (found, page.total) == (expected, len(expected)), (key, value)
                if not expected:
                    assert await agent.delete_workflows(metadata={key: value}) == 0
        assert count_events(db) == head
        assert await agent.delete_workflows(metadata={"big": 2**64 - 1, "e": 2**70}) == 1


async def test_without_the_json_text_operator_such_numbers_are_refused_by_name(
        db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """T11 on SQLite before 3.38 (no ``->``): a ValueError naming the value, never a wrong
    answer or a raw SQLite error; every other number is still compared exactly."""
    monkeypatch.setattr("eventwf.store.sqlite.projections.JSON_TEXT_OPERATOR", False)
    async with _stored(db) as (_, agent):
        for value in [2**63, 2**64 - 1, 2.0**63]:
            with pytest.raises(ValueError, match="needs SQLite 3.38"):
                await agent.get_workflows(metadata={"big": value})
        assert {w.workflow_id for w in (await agent.get_workflows(
            metadata={"r": 2**64})).workflows} == {"w-big"}
        assert (await agent.get_workflows(metadata={"big": 2**70})).total == 0


async def test_filters_that_no_stored_value_can_satisfy_match_nothing(db: str) -> None:
    """T10, T11: strings that are not UTF-8 or longer than metadata may be, names that could
    not be a binding, keys deeper than metadata may nest: the answer is 'none'."""
    async with _stored(db) as (_, agent):
        head = count_events(db)
        for query in [{"s": "\ud800"}, {"s": "x" * 100_000}, {"s": "x" * 2_000_000},
                      {"\ud800": 1}, {"a." * 40 + "a": 1}, {"x" * 10_000_000: 1}]:
            page = await agent.get_workflows(metadata=query)
            assert (page.workflows, page.total) == ([], 0), list(query)[0][:20]
            assert await agent.delete_workflows(metadata=query) == 0
        for name in ["\ud800", "x" * 100_000, "", "QUI\x00CK"]:
            page = await agent.get_workflows(workflow_name=name)
            assert (page.workflows, page.total, page.next_cursor) == ([], 0, None), name[:20]
            assert await agent.delete_workflows(workflow_name=name) == 0
        assert (await agent.get_workflows(workflow_name="QUICK")).total == 2
        assert count_events(db) == head


async def test_statuses_are_a_str_or_a_collection_of_known_statuses(db: str) -> None:
    """T10: a million repeated statuses is a valid (if odd) query; a non-collection, bytes
    or an unknown status is a ValueError naming it, cut short."""
    async with _stored(db) as (_, agent):
        assert (await agent.get_workflows(status=["complete"] * 1_000_000)).total == 2
        assert (await agent.get_workflows(status={"complete", "running"})).total == 2
        assert (await agent.get_workflows(status=[])).total == 0
        for status in [5, True, b"complete", (s for s in ["complete"]), {"complete": 1},
                       ["complete", 7], ["x" * 1_000_000]]:
            with pytest.raises(ValueError, match="status") as err:
                await agent.get_workflows(status=status)  # type: ignore[arg-type]
            assert len(str(err.value)) < 500
            with pytest.raises(ValueError, match="status"):
                await agent.delete_workflows(status=status)  # type: ignore[arg-type]


async def test_metadata_filters_with_too_many_keys_raise_value_error(db: str) -> None:
    """T10: SQLite would refuse the query (expression depth); the filter is refused first."""
    async with _stored(db) as (_, agent):
        assert (await agent.get_workflows(metadata={f"k{i}": 1 for i in range(64)})).total == 0
        for size in [65, 1_000, 100_000]:
            with pytest.raises(ValueError, match=f"{size:,} keys"):
                await agent.get_workflows(metadata={f"k{i}": 1 for i in range(size)})
            with pytest.raises(ValueError, match=f"{size:,} keys"):
                await agent.delete_workflows(metadata={f"k{i}": 1 for i in range(size)})
        with pytest.raises(ValueError, match="metadata filter value") as err:
            await agent.get_workflows(metadata={"s": ["x" * 1_000_000]})
        assert len(str(err.value)) < 500


async def test_created_before_far_in_the_past_or_future_is_answered(db: str) -> None:
    """T12: every finite instant is answered exactly; non-finite or unrepresentable ones are
    a ValueError naming them (cut short)."""
    async with _stored(db) as (_, agent):
        for bad in [math.inf, -math.inf, math.nan, 10**400, True, "2026-01-01"]:
            with pytest.raises(ValueError, match="invalid instant") as err:
                await agent.delete_workflows(created_before=bad)  # type: ignore[arg-type]
            assert len(str(err.value)) < 500
        assert await agent.delete_workflows(created_before=-1e300) == 0
        assert await agent.delete_workflows(created_before=-(2**70)) == 0
        assert await agent.delete_workflows(created_before=-0.0) == 0
        assert await agent.delete_workflows(created_before=1.7e308) == 2


async def test_ids_that_cannot_exist_are_not_found(db: str) -> None:
    """T13: lookups by an id no workflow can have answer 'not found', never a raw error."""
    async with _stored(db) as (_, agent):
        head = count_events(db)
        for wid in ["\ud800", "x" * 10_000_000, "a\x00b"]:
            assert await agent.get_workflow(wid) is None
            assert await agent.delete_workflow(wid) is False
            with pytest.raises(eventwf.WorkflowNotFoundError) as err:
                await agent.get_workflow_status("QUICK", wid)
            assert len(str(err.value)) < 500
            with pytest.raises(eventwf.WorkflowNotFoundError):
                await agent.approve_workflow(wid)
            with pytest.raises(eventwf.WorkflowNotFoundError):
                await agent.send_workflow_event("QUICK", wid, {"type": "go"})
        assert count_events(db) == head


async def test_names_that_cannot_be_logged_are_refused_by_name_checks(db: str) -> None:
    """A lone surrogate cannot be encoded as UTF-8: it is refused like a control character."""
    async with _stored(db) as (engine, _):
        with pytest.raises(ValueError, match="invalid agent name"):
            await engine.get_agent(TestAgent, "a\ud800")
        with pytest.raises(ValueError, match="invalid workflow binding name"):
            async with eventwf.open_engine(db + "2", agents=[TestAgent],
                                           workflows={"Q\ud800": Quick}):
                pass
