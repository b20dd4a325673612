"""``AgentWorkflow``: the base class of durable workflows started by an agent."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from eventwf.agent import Agent
from eventwf.errors import EventwfError, WorkflowRejectedError
from eventwf.model.types import WorkflowEvent
from eventwf.runtime.runner import WorkflowRunner
from eventwf.runtime.steps import AgentWorkflowStep

__all__ = ["AgentWorkflow"]

AgentT = TypeVar("AgentT", bound=Agent[Any])


class AgentWorkflow(Generic[AgentT]):
    """Subclass with ``async def run(self, event, step)``.

    ``run`` is re-executed from the top on every recovery: durable ``step.*`` calls are
    served from the log, while ``self.agent`` calls, ``report_progress`` and
    ``broadcast_to_clients`` run again (keep them idempotent).
    """

    _eventwf_runner: WorkflowRunner | None = None

    def _eventwf_bind(self, runner: WorkflowRunner) -> None:
        self._eventwf_runner = runner

    @property
    def _runner(self) -> WorkflowRunner:
        if self._eventwf_runner is None:
            raise EventwfError("Agent not initialized. Ensure you're accessing this.agent "
                               "inside run().")
        return self._eventwf_runner

    @property
    def agent(self) -> AgentT:
        """The agent that started this workflow (calls on it are not durable)."""
        agent = self._runner.agent
        if agent is None:
            raise EventwfError("Agent not initialized. Ensure you're accessing self.agent "
                               "inside run().")
        return agent  # type: ignore[no-any-return]

    @property
    def workflow_id(self) -> str:
        """The id of the workflow this object runs."""
        return self._runner.workflow_id

    @property
    def workflow_name(self) -> str:
        """The binding name the workflow was started under."""
        return self._runner.workflow_name

    async def run(self, event: WorkflowEvent, step: AgentWorkflowStep) -> Any:
        """Override: the durable body. Its return value is the workflow's output."""
        raise NotImplementedError(f"{type(self).__name__} must define async def run(event, step)")

    async def report_progress(self, progress: Any) -> None:
        """Call the agent's ``on_workflow_progress`` (not logged; not sent again while a
        recovered run replays the history it already ran, so at most the progress of the
        work in flight when the process stopped repeats)."""
        await self._runner.report_progress(progress)

    async def broadcast_to_clients(self, message: Any) -> None:
        """Send a message to every client of the agent (not logged; not sent again while a
        recovered run replays the history it already ran)."""
        await self._runner.broadcast(message)

    async def wait_for_approval(
        self,
        step: AgentWorkflowStep,
        *,
        timeout: Any = None,
        step_name: str = "wait-for-approval",
        event_type: str = "approval",
    ) -> Any:
        """Wait for ``approve_workflow``/``reject_workflow``; returns the approval metadata.

        On rejection it reports the error to the agent and raises ``WorkflowRejectedError``.
        """
        if timeout is None:
            received = await step.wait_for_event(step_name, type=event_type)
        else:
            received = await step.wait_for_event(step_name, type=event_type, timeout=timeout)
        payload = received.payload if isinstance(received.payload, dict) else {}
        if not payload.get("approved"):
            reason = payload.get("reason")
            reason = reason if isinstance(reason, str) and reason else None
            await step.report_error(reason or "Workflow rejected")
            raise WorkflowRejectedError(reason, self.workflow_id)
        return payload.get("metadata")
