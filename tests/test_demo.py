"""The demo app (``python -m eventwf demo``): page over HTTP, agent over WebSocket, one port."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

import eventwf
from eventwf.apps.demo import DemoAgent, DemoServer, serve_demo

pytestmark = pytest.mark.realtime
ROOT = Path(__file__).resolve().parent.parent
Task = dict[str, Any]
BOARDS = 64  # boards live at once (specs/demo.md M1)


@pytest.fixture(autouse=True)
def fast_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DemoAgent, "step_seconds", 0.2)


@asynccontextmanager
async def demo(db: str, **options: Any) -> AsyncIterator[DemoServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(lambda task_status: serve_demo(
            db, "127.0.0.1", 0, task_status=task_status, **options))
        yield server
        nursery.cancel_scope.cancel()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (real time, at most 10 s) until ``condition()`` holds."""
    with trio.fail_after(10):
        while not condition():
            await trio.sleep(0.01)


async def http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send one raw request; the status line, headers and body of the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines)}
    return status, headers, body


async def watch(conn: eventwf.AgentConnection, task_id: str,
                until: Callable[[Task], bool]) -> list[Task]:
    """Every state of one task the connection sees, until ``until(task)`` holds."""
    seen: list[Task] = []
    with trio.fail_after(10):
        async for message in conn:
            task = message.get("state", {}).get(task_id) if message["type"] == "state" else None
            if task is not None and (not seen or seen[-1] != task):
                seen.append(task)
                if until(task):
                    return seen
    raise AssertionError(f"the connection ended; saw {seen}")


def status_is(status: str) -> Callable[[Task], bool]:
    return lambda task: task["status"] == status


async def test_the_page_and_nothing_else_is_served_over_http(db: str) -> None:
    async with demo(db) as server:
        get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        status, headers, body = await http(server.port, get)
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert int(headers["content-length"]) == len(body)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert b"<title>Task board" in body and b"/agents/DemoAgent/" in body
        status, _, body = await http(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK" and body == b""
        status, *_ = await http(server.port, b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 404 Not Found"
        status, headers, _ = await http(server.port, b"POST / HTTP/1.1\r\nHost: x\r\n"
                                                     b"Content-Length: 0\r\n\r\n")
        assert status == "HTTP/1.1 405 Method Not Allowed" and headers["allow"] == "GET, HEAD"
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(b"\x16\x03\x01 garbage, not HTTP\r\n\r\n")
        with trio.fail_after(5):
            assert await stream.receive_some() == b""  # just that connection closes
        status, *_ = await http(server.port, get)
        assert status == "HTTP/1.1 200 OK"


async def test_a_task_runs_through_approval_in_every_tab(db: str) -> None:
    async with demo(db) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with eventwf.connect_agent(url, "DemoAgent", "demo") as tab1, \
                eventwf.connect_agent(url, "DemoAgent", "demo") as tab2:
            assert tab1.state == {}
            task_id = await tab1.call("start_task", "  Quarterly report  ")
            seen = await watch(tab1, task_id, status_is("waiting"))
            assert [t["progress"] for t in seen] == [0, 25, 50, 75, 75]
            assert seen[0]["title"] == "Quarterly report" and seen[1]["detail"].startswith("Found")
            with pytest.raises(eventwf.RpcError, match="needs a title"):
                await tab2.call("start_task", " ")
            await watch(tab2, task_id, status_is("waiting"))  # the other tab saw it all too
            await tab2.call("approve", task_id)
            done = (await watch(tab1, task_id, status_is("done")))[-1]
            assert done["progress"] == 100 and done["stage"] == 5 and done["finished"]
            await watch(tab2, task_id, status_is("done"))
            with pytest.raises(eventwf.RpcError, match="not waiting for approval"):
                await tab1.call("approve", task_id)
            assert tab1.state == tab2.state and tab1.position == tab2.position


async def test_a_rejected_task_can_run_again(db: str) -> None:
    async with demo(db) as server:
        async with eventwf.connect_agent(f"ws://127.0.0.1:{server.port}", "DemoAgent",
                                         "demo") as tab:
            task_id = await tab.call("start_task", "Risky change")
            with pytest.raises(eventwf.RpcError, match="not waiting for approval"):
                await tab.call("reject", task_id)
            await watch(tab, task_id, status_is("waiting"))
            await tab.call("reject", task_id)
            rejected = (await watch(tab, task_id, status_is("rejected")))[-1]
            assert rejected["detail"] == "Rejected in the browser" and rejected["progress"] == 75
            await tab.call("run_again", task_id)
            again = await watch(tab, task_id, status_is("waiting"))
            assert again[0]["progress"] == 0 and again[0]["status"] == "running"


async def test_stopping_mid_task_and_starting_again_carries_on(db: str) -> None:
    async with demo(db) as server:
        async with eventwf.connect_agent(f"ws://127.0.0.1:{server.port}", "DemoAgent",
                                         "demo") as tab:
            task_id = await tab.call("start_task", "Survives a restart")
            before = (await watch(tab, task_id, lambda t: t["progress"] >= 50))[-1]
    async with demo(db) as server:  # same log, new process state, new port
        async with eventwf.connect_agent(f"ws://127.0.0.1:{server.port}", "DemoAgent",
                                         "demo") as tab:
            first = tab.state[task_id]
            assert first["progress"] >= 50 and first["detail"] == before["detail"]
            seen = await watch(tab, task_id, status_is("waiting"))
            assert all(t["progress"] >= 50 for t in seen)  # it went on, not back to the start
            await tab.call("approve", task_id)
            await watch(tab, task_id, status_is("done"))


async def test_other_sites_cannot_open_the_socket(db: str) -> None:
    async with demo(db) as server:
        target = f"ws://127.0.0.1:{server.port}/agents/DemoAgent/demo"
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(target, extra_headers=[
                    (b"Origin", b"http://evil.example")]):
                pass
        assert refused.value.status_code == 403
        same_site = [(b"Origin", f"http://127.0.0.1:{server.port}".encode())]
        async with open_websocket_url(target, extra_headers=same_site) as ws:
            assert '"type":"state"' in await ws.get_message()


def test_the_command_prints_its_url_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventwf", "demo", "--db", str(tmp_path / "demo.db"),
         "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        assert ready, "the demo printed nothing within 20 s"
        line = proc.stdout.readline()
        assert line.startswith("eventwf demo: open http://127.0.0.1:"), line
        port = int(line.split("http://127.0.0.1:")[1].split("/")[0])
        status, _, _ = trio.run(http, port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "Goodbye" in out and "Traceback" not in out, out


async def test_boards_are_bounded_and_idle_ones_make_room(db: str) -> None:
    """M1, M2: 64 boards in use at once; the 65th is refused with 503 before the engine
    creates anything; once clients leave, new boards evict idle ones, so hundreds of names
    never hold more than 64 agents in memory."""
    async with demo(db) as server:
        url = f"ws://127.0.0.1:{server.port}"
        live = server.engine.statistics
        async with AsyncExitStack() as stack:
            for i in range(BOARDS):
                await stack.enter_async_context(eventwf.connect_agent(url, "DemoAgent", f"b{i}"))
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(f"{url}/agents/DemoAgent/one-too-many"):
                    pass
            assert refused.value.status_code == 503
            assert refused.value.body is not None and b"64 boards" in refused.value.body
            async with eventwf.connect_agent(url, "DemoAgent", "b7") as second_tab:
                assert second_tab.state == {}  # a board in use takes more clients
            assert live().live_agents == BOARDS
        await until(lambda: server.boards.clients == 0)
        for i in range(3 * BOARDS):
            async with eventwf.connect_agent(url, "DemoAgent", f"n{i}"):
                assert live().live_agents <= BOARDS


async def test_idle_boards_are_evicted_after_a_while(db: str) -> None:
    """M3: memory follows use: a board nobody uses is dropped by the periodic sweep, and
    comes back as it was."""
    async with demo(db, evict_every=0.05) as server:
        url = f"ws://127.0.0.1:{server.port}"
        async with eventwf.connect_agent(url, "DemoAgent", "quiet") as tab:
            task_id = await tab.call("start_task", "Then leave")
            await watch(tab, task_id, status_is("waiting"))
            await trio.sleep(0.2)
            assert server.engine.statistics().live_agents == 1  # it has a client
        await until(lambda: server.engine.statistics().live_agents == 0)
        async with eventwf.connect_agent(url, "DemoAgent", "quiet") as tab:
            assert tab.state[task_id]["status"] == "waiting"
            await tab.call("approve", task_id)
            await watch(tab, task_id, status_is("done"))


async def test_only_plain_board_names_reach_the_engine(db: str) -> None:
    """M1: a board name is 1-64 of [A-Za-z0-9_-], written as is: one spelling per board, so
    no escaped variant (%61 for a) can count as another board."""
    async with demo(db) as server:
        base = f"ws://127.0.0.1:{server.port}"
        for path, status in [("/agents/DemoAgent/%61", 400), ("/agents/DemoAgent/" + "x" * 65, 400),
                             ("/agents/DemoAgent/a%2Fb", 400), ("/agents/DemoAgent/a.b", 400),
                             ("/agents/DemoAgent/", 400), ("/agents/Other/x", 404),
                             ("/", 404), ("/agents/DemoAgent/a/b", 400)]:
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(base + path):
                    pass
            assert refused.value.status_code == status, path
        assert server.engine.statistics().live_agents == 0
        async with eventwf.connect_agent(base, "DemoAgent", "Team_2-b") as tab:
            assert tab.state == {}


async def test_a_hundred_tabs_starting_at_once_start_exactly_25(db: str) -> None:
    """M4 over real sockets: 100 clients call start_task at the same moment."""
    async with demo(db) as server:
        url = f"ws://127.0.0.1:{server.port}"
        go = trio.Event()
        results: list[Any] = []

        async def tab(i: int, task_status: trio.TaskStatus[None]) -> None:
            async with eventwf.connect_agent(url, "DemoAgent", "race") as conn:
                task_status.started()
                await go.wait()
                try:
                    results.append(await conn.call("start_task", f"task {i}"))
                except eventwf.RpcError as exc:
                    results.append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                await nursery.start(tab, i)
            go.set()
        started = [r for r in results if isinstance(r, str)]
        assert len(started) == 25, f"{len(started)} of 100 started against a cap of 25"
        assert all("25 tasks are already in progress" in str(r)
                   for r in results if not isinstance(r, str))
