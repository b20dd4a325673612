"""The console's filters, its followed tail and the agent's outbox (specs/console.md CN16,
CN18) on the log tool's reference log (tests/eventlog_factory.py: job-1 has the metadata
``{"team": "a"}``; alice's callbacks are scheduled and delivered).

Real sockets need the real clock (``realtime``); no assertion depends on time.
"""

from __future__ import annotations

import pytest

from tests.eventlog_kit import build
from tests.test_console import api, console, get

pytestmark = pytest.mark.realtime


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("console") / "ref.db")


def _ids(data: dict[str, object]) -> list[str]:
    return [w["workflow_id"] for w in data["workflows"]]  # type: ignore[attr-defined]


async def test_metadata_filter_matches_with_the_json_type(reference: str) -> None:
    """CN16: ``meta=key=value`` pairs, typed as Agent.get_workflows types them."""
    async with console(reference) as base:
        assert _ids(await api(base + "/api/?meta=team%3Da")) == ["job-1"]
        assert _ids(await api(base + '/api/?meta=team%3D%22a%22')) == ["job-1"]
        assert _ids(await api(base + "/api/?meta=team%3Db")) == []
        assert _ids(await api(base + "/api/?meta=team%3D1")) == []  # 1 is not "a"
        both = base + "/api/?meta=team%3Da&status=complete&agent=TestAgent/alice"
        assert _ids(await api(both)) == ["job-1"]
        assert _ids(await api(base + "/api/?meta=team%3Da&status=errored")) == []
        status, body = await get(base + "/api/?meta=team")
        assert status == 400 and "'team'" in body and "key=value" in body
        status, page = await get(base + "/?meta=team%3Da")
        assert status == 200 and 'href="/workflows/job-1"' in page and "job-fail" not in page
        assert 'name="meta" value="team=a"' in page


async def test_tail_filters_by_stream_type_workflow_and_agent(reference: str) -> None:
    """CN16: each filter keeps only its rows, newest ``n`` of them, in log order."""
    async with console(reference) as base:
        *rows, meta = await api(base + "/api/log?workflow=job-1&n=500")
        assert rows and {r["stream"] for r in rows} == {"wf:job-1"}
        assert [r["position"] for r in rows] == sorted(r["position"] for r in rows)
        assert meta["filter"] == {"stream": "wf:job-1"}
        *same, _ = await api(base + "/api/log?stream=wf%3Ajob-1&n=500")
        assert same == rows
        *last, _ = await api(base + "/api/log?workflow=job-1&n=2")
        assert last == rows[-2:]
        *agent_rows, _ = await api(base + "/api/log?agent=TestAgent/alice&n=500")
        assert {r["stream"] for r in agent_rows} == {"agent:TestAgent/alice"}
        *steps, meta = await api(base + "/api/log?type=step.succeeded&n=500")
        assert steps and {r["type"] for r in steps} == {"step.succeeded"}
        assert meta["scanned"] >= len(steps)
        *typed, _ = await api(base + "/api/log?workflow=job-1&type=step.attempt_failed")
        assert [r["type"] for r in typed] == ["step.attempt_failed"] * 2
        for bad in ("agent=alice", "workflow=job-1&agent=TestAgent/alice"):
            status, body = await get(base + "/api/log?" + bad)
            assert status == 400, bad
        status, page = await get(base + "/workflows/job-1")
        assert 'href="/log?workflow=job-1"' in page
        status, page = await get(base + "/agents/TestAgent/alice")
        assert 'href="/log?agent=TestAgent%2Falice"' in page
        status, page = await get(base + "/log?workflow=job-1&n=3")
        assert status == 200 and 'data-follow="/api/log?n=3&amp;stream=wf%3Ajob-1"' in page


async def test_the_live_tail_reads_only_what_came_after_its_cursor(reference: str) -> None:
    """CN16: ``after=N`` answers the matches after N and where the next poll starts."""
    async with console(reference) as base:
        head = (await api(base + "/api/"))["head"]
        *rows, meta = await api(base + f"/api/log?after={head - 3}")
        assert [r["position"] for r in rows] == [head - 2, head - 1, head]
        assert meta["next_after"] == head and meta["scanned"] == 3
        *rows, meta = await api(base + f"/api/log?after={head}")
        assert rows == [] and meta["next_after"] == head and meta["scanned"] == 0
        *rows, meta = await api(base + "/api/log?after=0&n=2")
        assert [r["position"] for r in rows] == [1, 2] and meta["next_after"] == 2
        *all_job1, _ = await api(base + "/api/log?workflow=job-1&n=500")
        middle = all_job1[len(all_job1) // 2]["position"]
        *later, meta = await api(base + f"/api/log?workflow=job-1&after={middle}&n=500")
        assert later == [r for r in all_job1 if r["position"] > middle]
        assert meta["next_after"] == head
        *none, meta = await api(base + f"/api/log?type=no.such&after={head - 10}")
        assert none == [] and meta["next_after"] == head and meta["scanned"] == 10


async def test_agent_page_shows_the_outbox_its_cursor_and_no_clients_from_a_file(
        reference: str) -> None:
    """CN18: callbacks scheduled for the agent, delivered or pending by its cursor; a
    console on a file says the connected clients are not available."""
    async with console(reference) as base:
        records = await api(base + "/api/agents/TestAgent/alice")
        agent = records[0]
        box = next(r for r in records if r["record"] == "outbox")
        calls = [r for r in records if r["record"] == "callback"]
        assert box["scheduled"] >= len(calls) > 0
        assert {c["kind"] for c in calls} >= {"complete", "error"}
        for c in calls:
            assert c["delivered"] == (c["position"] <= agent["delivered_through"])
        first = calls[0]["position"]
        early = await api(base + f"/api/agents/TestAgent/alice?at={first}")
        assert [r["position"] for r in early if r["record"] == "callback"] == [first]
        clients = next(r for r in records if r["record"] == "clients")
        assert clients["available"] is False and "log file" in clients["note"]
        status, page = await get(base + "/agents/TestAgent/alice")
        assert status == 200 and "Callback outbox" in page and "delivery cursor" in page
        assert "not available: read from the log file" in page
