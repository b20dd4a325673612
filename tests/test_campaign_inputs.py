"""Bad input: oversize and malformed payloads (F19), WebSocket handshake abuse (F17) and
hostile metadata keys (F18). Each is refused before anything is logged, with a specific
error, and the engine keeps serving.

Most of F17 and F18 was already covered where the feature lives; this module adds what
the campaign needed beside it:

- F17 WebSocket abuse: tests/test_server.py ``test_bad_frames_close_only_the_offender``
  (oversize frame -> 1009, bad JSON -> 1007, binary -> 1003),
  ``test_origin_allow_list_and_connection_limit`` (403 before accept, cap -> 503),
  ``test_authenticate_hook_refuses_handshakes``, ``test_a_raising_authenticate_hook_...``,
  ``test_200_clients_each_receive_every_state_in_order``,
  ``test_a_stalled_client_blocks_nobody_and_is_closed_with_1013`` and
  ``test_a_client_that_never_reads_again_is_cut_off``; here: stalled handshakes.
- F18 SQL/JSON-path injection in metadata keys: tests/test_tracking.py
  ``test_metadata_keys_match_a_python_filter_and_hostile_keys_change_nothing`` (Hypothesis
  differential check against a Python filter, hostile corpus, nothing written),
  ``test_malformed_cursors_raise_value_error_with_the_exact_message``; here: its slow-tier
  run with 10,000 examples.
- F19 payload limits: tests/test_events.py ``test_e6_*``, tests/test_agents.py,
  tests/test_control.py; here: every limit in one run, with the log head unchanged and a
  concurrent workflow finishing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventwf
from eventwf.errors import EventwfError, PayloadTooLargeError
from tests import test_tracking
from tests.campaign.driver import summary
from tests.test_server import running
from tests.test_tracking import stored_db  # noqa: F401 - the fixture of the F18 slow run
from tests.wfkit import TestAgent, virtual_wall

MIB = 1024 * 1024


class Probe(eventwf.AgentWorkflow[TestAgent]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> Any:
        if event.payload == "huge result":
            try:
                await step.do("huge", lambda: "x" * (2 * MIB))
            except PayloadTooLargeError as exc:
                return f"refused: {exc}"
            return "accepted"
        if event.payload == "wait":
            await step.wait_for_event("mail", type="mail", timeout="30 days")
            return "waited"
        total = 0
        for i in range(20):
            total += await step.do(f"tick-{i}", lambda i=i: i)
            await step.sleep(f"nap-{i}", 1)
        return total


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_f19_oversize_and_malformed_inputs_are_refused_before_commit(db: str) -> None:
    refused: list[str] = []
    async with eventwf.open_engine(db, agents=[TestAgent], workflows=[Probe],
                                   wall_clock=virtual_wall) as engine:
        agent = await engine.get_agent(TestAgent, "a")
        busy = await agent.run_workflow("Probe", "busy")  # runs through all the probes
        waiting = await agent.run_workflow("Probe", "wait", id="waiting")
        stuffed = await agent.run_workflow("Probe", "wait", id="stuffed")
        await trio.sleep(0.5)

        async def refuses(what: str, error: type[BaseException], call: Any) -> None:
            head = engine.statistics().head
            with pytest.raises(error):
                await call()
            assert engine.statistics().head == head, f"{what}: something was logged"
            refused.append(what)

        await refuses("agent state of 1 MiB + 1", PayloadTooLargeError,
                      lambda: agent.set_state("x" * MIB))
        await refuses("params of 1 MiB + 1", PayloadTooLargeError,
                      lambda: agent.run_workflow("Probe", "x" * MIB))
        await refuses("event payload of 1 MiB + 1", PayloadTooLargeError,
                      lambda: agent.send_workflow_event("Probe", waiting, {
                          "type": "other", "payload": "x" * MIB}))
        await refuses("100,000-deep nested params", ValueError,
                      lambda: agent.run_workflow("Probe", _nested(100_000)))
        await refuses("workflow id of 101 characters", ValueError,
                      lambda: agent.run_workflow("Probe", None, id="w" * 101))
        await refuses("agent name of 257 characters", ValueError,
                      lambda: engine.get_agent(TestAgent, "a" * 257))
        await refuses("65 metadata keys", ValueError, lambda: agent.run_workflow(
            "Probe", None, metadata={f"k{i}": i for i in range(65)}))
        await refuses("metadata key with a JSON path", ValueError, lambda: agent.run_workflow(
            "Probe", None, metadata={"a.b[0]": 1}))
        await refuses("an unencodable payload", ValueError,
                      lambda: agent.run_workflow("Probe", object()))
        for n in range(1000):  # the mailbox limit: 1,000 undelivered events
            await agent.send_workflow_event("Probe", stuffed, {"type": "other", "payload": n})
        await refuses("the 1,001st undelivered event", EventwfError,
                      lambda: agent.send_workflow_event("Probe", stuffed, {
                          "type": "other", "payload": 1000}))
        # (a full mailbox also refuses the event the workflow waits for: K7 as specified)
        await agent.terminate_workflow(stuffed)
        huge = await agent.run_workflow("Probe", "huge result")
        info = await engine.wait_workflow(huge)
        status = await agent.get_workflow_status("Probe", huge)
        assert info.status == "complete" and str(status.output).startswith("refused: ")
        refused.append("step result of 2 MiB (the step fails at once)")
        assert (await engine.wait_workflow(busy)).status == "complete"  # still serving
        await agent.send_workflow_event("Probe", waiting, {"type": "mail", "payload": 1})
        assert (await engine.wait_workflow(waiting)).status == "complete"
    conn = sqlite3.connect(db)
    (largest,) = conn.execute("SELECT max(length(data)) FROM events").fetchone()
    conn.close()
    assert largest <= MIB + 1024
    summary(f"F19 refused={len(refused)} ({'; '.join(refused)}) largest_event={largest} "
            f"violations=0")


@pytest.mark.realtime
async def test_f17_stalled_handshakes_neither_block_nor_count(db: str) -> None:
    """TCP connections that never send a handshake (connect_timeout drops them after 10 s)
    do not hold up real clients and do not count against max_connections."""
    async with running(db, max_connections=2) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        stalled = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(200)]
        try:
            with trio.fail_after(5):
                async with eventwf.connect_agent(url, "Counter", "c") as first, \
                        eventwf.connect_agent(url, "Counter", "c") as second:
                    assert await first.call("increment") == 1
                    assert await second.call("increment") == 2
        finally:
            for stream in stalled:
                await stream.aclose()
    summary("F17 stalled_handshakes=200 real_clients_served=2 cap=2 violations=0")


@pytest.fixture
def f18_examples() -> Iterator[list[int]]:
    counted: list[int] = []
    began = time.monotonic()
    yield counted
    summary(f"F18-slow examples_passed={len(counted)} queries={sum(counted)} "
            f"wall_s={time.monotonic() - began:.1f}")


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(queries=st.lists(st.tuples(test_tracking.KEYS, test_tracking.VALUES), min_size=1,
                        max_size=6))
def test_f18_slow_hostile_metadata_queries(stored_db: str,  # noqa: F811
                                           f18_examples: list[int],
                                           queries: list[tuple[str, Any]]) -> None:
    inner = test_tracking.test_metadata_keys_match_a_python_filter_and_hostile_keys_change_nothing
    inner.hypothesis.inner_test(stored_db, queries)  # type: ignore[attr-defined]
    f18_examples.append(len(queries) + 1)
