"""The console mounted in an application: ``eventwf.serve(..., console=True)``
(specs/console.md CN11-CN14).

A live engine serves its agents and its console on one port (port 0); pages and controls
are requested with urllib in a worker thread, and each control's effect is read back from
the engine itself. Real sockets need the real clock (``realtime``); no assertion depends
on how long anything takes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

import eventwf
from eventwf.apps.serving import serve
from eventwf.server.front import HttpRequest
from tests.console_app import WORKFLOWS
from tests.wfkit import TestAgent

pytestmark = pytest.mark.realtime


@asynccontextmanager
async def app(db: str, **options: Any) -> AsyncIterator[tuple[eventwf.Agent, str]]:
    """An engine with two workflows waiting, and its server with the console."""
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=WORKFLOWS) as engine:
        alice = await engine.get_agent(TestAgent, "alice")
        await alice.run_workflow("Approval", {"order": 1}, id="a-1")
        await alice.run_workflow("Approval", {"order": 2}, id="a-2")
        await alice.run_workflow("Waiter", None, id="w-1")
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                lambda task_status: serve(engine, "127.0.0.1", 0, console=True,
                                          task_status=task_status, **options))
            yield alice, f"http://127.0.0.1:{server.port}"
            nursery.cancel_scope.cancel()


def _request(url: str, body: Any = None, method: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method or (
        "GET" if data is None else "POST"), headers={"content-type": "application/json",
                                                     **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def call(url: str, body: Any = None, method: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, str]:
    return await trio.to_thread.run_sync(_request, url, body, method, headers)


async def control(base: str, workflow_id: str, action: str, body: Any = None,
                  headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, text = await call(f"{base}/api/workflows/{workflow_id}/{action}",
                              {} if body is None else body, "POST", headers)
    return status, json.loads(text)


async def output_of(agent: eventwf.Agent, workflow_name: str, workflow_id: str) -> Any:
    """The output once the workflow completes (polled: the engine runs it meanwhile)."""
    while (status := await agent.get_workflow_status(workflow_name, workflow_id)).status \
            != "complete":
        assert status.status in ("running", "waiting", "queued"), status
        await trio.sleep(0.01)
    return status.output


async def status_of(agent: eventwf.Agent, workflow_id: str) -> str:
    info = await agent.get_workflow(workflow_id)
    assert info is not None
    return info.status


async def test_read_only_by_default_pages_served_controls_refused(db: str) -> None:
    """CN11: without ``console_controls`` the pages read the live log; a POST is a 405."""
    async with app(db) as (alice, base):
        status, text = await call(base + "/api/")
        assert status == 200
        assert {w["workflow_id"] for w in json.loads(text)["workflows"]} == {"a-1", "a-2", "w-1"}
        status, page = await call(base + "/workflows/a-1")
        assert status == 200 and "Workflow a-1" in page and 'class="controls"' not in page
        status, answer = await control(base, "a-1", "approve")
        assert status == 405 and "read-only" in answer["error"]
        assert await status_of(alice, "a-1") == "waiting"
        status, _ = await call(base + "/api/", method="DELETE")
        assert status == 405


async def test_the_websocket_endpoint_still_serves_agents_on_the_same_port(db: str) -> None:
    """CN11: upgrades to ``/agents/...`` reach the agents, other requests the console."""
    async with app(db) as (alice, base):
        await alice.set_state({"count": 5})
        async with eventwf.connect_agent(base.replace("http", "ws"), "TestAgent",
                                         "alice") as conn:
            assert conn.state == {"count": 5}
        status, page = await call(base + "/agents/TestAgent/alice")
        assert status == 200 and "Agent TestAgent/alice" in page


async def test_approve_and_reject_act_on_the_live_engine(db: str) -> None:
    """CN13: approve completes the workflow with the metadata; reject errors it."""
    async with app(db, console_controls=True) as (alice, base):
        status, page = await call(base + "/workflows/a-1")
        assert status == 200 and 'data-action="approve"' in page
        status, answer = await control(base, "a-1", "approve", {"metadata": {"by": "ops"}})
        assert status == 200 and answer["ok"] is True, answer
        assert await output_of(alice, "Approval", "a-1") == {"by": "ops"}
        status, answer = await control(base, "a-2", "reject", {"reason": "too dear"})
        assert status == 200, answer
        while await status_of(alice, "a-2") != "errored":
            await trio.sleep(0.01)
        info = await alice.get_workflow("a-2")
        assert info is not None and info.error_name == "WorkflowRejectedError"
        assert "too dear" in (info.error_message or "")


async def test_pause_resume_terminate_restart_and_send_an_event(db: str) -> None:
    """CN13: each control's effect is the engine's own."""
    async with app(db, console_controls=True) as (alice, base):
        assert (await control(base, "w-1", "pause"))[0] == 200
        assert await status_of(alice, "w-1") in ("paused", "waitingForPause")
        assert (await control(base, "w-1", "resume"))[0] == 200
        assert await status_of(alice, "w-1") not in ("paused", "waitingForPause")
        status, answer = await control(base, "w-1", "event", {"type": "go", "payload": [1, 2]})
        assert status == 200, answer
        assert await output_of(alice, "Waiter", "w-1") == [1, 2]
        assert (await control(base, "a-1", "terminate"))[0] == 200
        assert await status_of(alice, "a-1") == "terminated"
        assert (await control(base, "a-1", "restart"))[0] == 200
        assert await status_of(alice, "a-1") not in ("terminated",)


async def test_control_errors_come_back_as_409_404_and_400(db: str) -> None:
    """CN14: the engine's refusal is a 409 with its message; unknown ids 404; bad input 400."""
    async with app(db, console_controls=True) as (alice, base):
        assert (await control(base, "a-1", "terminate"))[0] == 200
        status, answer = await control(base, "a-1", "terminate")
        assert status == 409 and "a-1" in answer["error"], answer
        status, answer = await control(base, "nope", "approve")
        assert status == 404 and "nope" in answer["error"]
        status, answer = await control(base, "a-2", "explode")
        assert status == 400 and "explode" in answer["error"]
        status, answer = await control(base, "w-1", "event", {"payload": 1})
        assert status == 400 and "type" in answer["error"]
        status, text = await call(f"{base}/api/workflows/a-2/approve", [1], "POST")
        assert status == 400 and "object" in json.loads(text)["error"]
        assert await status_of(alice, "a-2") == "waiting"


async def test_the_authenticate_hook_guards_pages_and_controls(db: str) -> None:
    """CN12: every request goes through ``authenticate``; a refusal is a 403."""
    seen: list[Any] = []

    async def authenticate(request: Any) -> bool:
        seen.append(request)
        return dict(request.headers).get(b"authorization") == b"Bearer s3cret"

    good = {"authorization": "Bearer s3cret"}
    async with app(db, console_controls=True, authenticate=authenticate) as (alice, base):
        for path in ("/", "/api/", "/workflows/a-1", "/static/console.js", "/log"):
            status, text = await call(base + path)
            assert status == 403 and "a-1" not in text, path
        status, _ = await control(base, "a-1", "approve")
        assert status == 403
        assert await status_of(alice, "a-1") == "waiting"
        assert (await call(base + "/api/", headers=good))[0] == 200
        assert (await control(base, "a-1", "terminate", headers=good))[0] == 200
        assert await status_of(alice, "a-1") == "terminated"
    assert {r.method for r in seen} == {"GET", "POST"}
    assert all(isinstance(r, HttpRequest) for r in seen)
    assert any(r.path == "/workflows/a-1" and r.agent_class is None for r in seen)


async def test_a_cross_origin_control_is_refused(db: str) -> None:
    """CN12: a control POST from another origin is a 403; the server's own passes."""
    async with app(db, console_controls=True) as (alice, base):
        status, answer = await control(base, "a-1", "terminate",
                                       headers={"origin": "http://evil.example"})
        assert status == 403 and "evil.example" in answer["error"]
        assert await status_of(alice, "a-1") == "waiting"
        status, _ = await control(base, "a-1", "terminate", headers={"origin": base})
        assert status == 200
    async with app(db + "2", console_controls=True,
                   allowed_origins=["https://ops.example"]) as (alice, base):
        status, _ = await control(base, "a-1", "terminate", headers={"origin": base})
        assert status == 403
        status, _ = await control(base, "a-1", "terminate",
                                  headers={"origin": "https://ops.example"})
        assert status == 200 and await status_of(alice, "a-1") == "terminated"


async def test_a_form_post_and_an_oversize_body_are_refused(db: str) -> None:
    """CN12: a control's body is JSON (a plain form cannot post one cross-site unasked)."""
    async with app(db, console_controls=True) as (alice, base):
        status, _ = await call(f"{base}/api/workflows/a-1/terminate", {}, "POST",
                               {"content-type": "application/x-www-form-urlencoded"})
        assert status == 415
        status, _ = await call(f"{base}/api/workflows/a-1/approve",
                               {"reason": "x" * 70_000}, "POST")
        assert status == 413
        assert await status_of(alice, "a-1") == "waiting"


async def test_console_needs_a_log_file() -> None:
    """CN11: an in-memory engine has no file for the console to read."""
    async with eventwf.open_engine(":memory:", agents=[TestAgent], workflows=WORKFLOWS) as e:
        with pytest.raises(eventwf.EventwfError, match="memory"):
            await serve(e, "127.0.0.1", 0, console=True)
        with pytest.raises(ValueError, match="console_controls"):
            await serve(e, "127.0.0.1", 0, console_controls=True)
