"""Types a user sees, checked by mypy (``.ci/run`` type-checks this file; issue 16 item 5).

Nothing here runs in the test suite: ``assert_type`` fails the type check, not a test.
"""

from __future__ import annotations

from typing import Any, assert_type

import eventwf


class Board(eventwf.Agent[dict[str, int]]):
    initial_state = {"tasks": 0}


class Plain(eventwf.Agent):  # no type argument: the state is Any
    pass


async def fetch() -> bytes:
    return b"data"


class Report(eventwf.AgentWorkflow[Board]):
    async def run(self, event: eventwf.WorkflowEvent, step: eventwf.AgentWorkflowStep) -> int:
        assert_type(await step.do("count", lambda: 3), int)
        assert_type(await step.do("fetch", fetch), bytes)
        assert_type(self.agent, Board)
        assert_type(self.agent.state, dict[str, int])
        return 3


async def uses(engine: eventwf.Engine) -> None:
    board = await engine.get_agent(Board, "b")
    assert_type(board, Board)
    await board.set_state({"tasks": 1})
    plain = await engine.get_agent(Plain, "p")
    assert_type(plain.state, Any)
    wid = await board.run_workflow(Report, {"text": "x"}, id="r-1", if_exists="return")
    assert_type(wid, str)
