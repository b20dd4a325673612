"""``AgentWorkflowStep``: the durable step API that ``run`` receives.

Every method validates its arguments before anything is decided or logged, asks the
host for the replay decision, and then either serves the logged outcome or executes and
logs it. Callables given to ``do`` run on the event loop (sync ones inline; a returned
awaitable is awaited); put blocking work in ``trio.to_thread.run_sync`` inside them.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import trio

from eventwf import faults
from eventwf.errors import EventwfError, NonRetryableError, WorkflowTimeoutError
from eventwf.model.codec import json_value, roundtrip_value
from eventwf.model.events import (
    CallbackScheduled,
    Event,
    EventConsumed,
    SleepCompleted,
    SleepStarted,
    StepAttemptFailed,
    StepFailed,
    StepRetrying,
    StepSucceeded,
    WaitStarted,
    WaitTimedOut,
)
from eventwf.model.failures import error_info, rebuild_exception
from eventwf.model.replay import (
    PATCHED,
    Execute,
    Raise,
    Replayed,
    ResumeAttempt,
    ResumeBackoff,
    ResumeSleep,
    ResumeWait,
)
from eventwf.model.types import ReceivedEvent, Retries
from eventwf.model.values import (
    check_event_type,
    check_patch_id,
    check_step_name,
    parse_duration,
    parse_instant,
    utc_from_us,
)
from eventwf.runtime.attempts import run_attempt
from eventwf.runtime.stephost import CURRENT_STEP, CommandInfo, StepContext, StepHost

__all__ = ["DEFAULT_RETRIES", "AgentWorkflowStep"]

T = TypeVar("T")

logger = logging.getLogger("eventwf")

DEFAULT_RETRIES = Retries(limit=5, delay="10 seconds", backoff="exponential")
DEFAULT_STEP_TIMEOUT = "10 minutes"
DEFAULT_WAIT_TIMEOUT = "24 hours"
_DEFAULT_TIMEOUT_S = parse_duration(DEFAULT_STEP_TIMEOUT)


def _us(seconds: float) -> int:
    return int(round(seconds * 1_000_000))


class AgentWorkflowStep:
    """Durable operations of one workflow run; each is logged once and replayed after."""

    def __init__(self, host: StepHost) -> None:
        self._host = host

    # -- step.do -------------------------------------------------------------------------

    @overload
    async def do(self, name: str, fn: Callable[[], Awaitable[T]], *,
                 retries: Retries | None = None,
                 timeout: float | str | timedelta | None = None) -> T: ...

    @overload
    async def do(self, name: str, fn: Callable[[], T], *, retries: Retries | None = None,
                 timeout: float | str | timedelta | None = None) -> T: ...

    async def do(
        self,
        name: str,
        fn: Callable[[], Any],
        *,
        retries: Retries | None = None,
        timeout: float | str | timedelta | None = None,
    ) -> Any:
        """Run ``fn()`` durably: its result is logged once and returned on every replay.

        Typed as ``fn``'s result; the value is the one the log holds (round-tripped through
        the codec on the first run too: a tuple comes back as a list every time)."""
        check_step_name(name)
        if not callable(fn):
            raise ValueError(f"step.do({name!r}): fn must be callable, got {fn!r}")
        policy = DEFAULT_RETRIES if retries is None else retries
        if not isinstance(policy, Retries):
            raise ValueError(f"step.do({name!r}): retries must be eventwf.Retries, got {policy!r}")
        timeout_s = _DEFAULT_TIMEOUT_S if timeout is None else parse_duration(
            timeout, what=f"timeout of step {name!r}", allow_zero=False)
        async with self._host.command("do", name) as cmd:
            return await self._do(cmd, name, fn, policy, timeout_s)

    async def _do(self, cmd: CommandInfo, name: str, fn: Callable[[], Any],
                  policy: Retries, timeout_s: float) -> Any:
        host = self._host
        match cmd.decision:
            case Replayed(value=value):
                return value
            case Raise(error=error) if error is not None:
                raise rebuild_exception(error)
            case ResumeAttempt(attempt=attempt):
                pass
            case ResumeBackoff(failed_attempt=failed, retry_at_us=retry_at, delay_us=delay):
                await host.waiting_again(cmd.seq)
                await host.idle_until(retry_at, delay, cmd.seq)
                attempt = failed + 1
                await host.append([(host.stream, StepRetrying(cmd.seq, name, attempt))])
            case _:
                attempt = 1
        while True:
            try:
                context = StepContext(host.workflow_id, host.run, cmd.index, name, attempt,
                                      cmd.task)
                token = CURRENT_STEP.set(context)
                try:
                    with host.trace.attempt(name, attempt):
                        value = await run_attempt(name, fn, timeout_s, attempt)
                finally:
                    CURRENT_STEP.reset(token)
            except NonRetryableError as exc:
                await self._fail(cmd, name, attempt, exc)
                raise
            except Exception as exc:
                if attempt > policy.limit:
                    await self._fail(cmd, name, attempt, exc)
                    raise
                attempt = await self._back_off(cmd, name, attempt, exc, policy)
                continue
            try:  # a result that cannot be logged fails the step at once: retrying won't help
                value = roundtrip_value(value, f"the result of step {name!r}")
            except ValueError as exc:
                await self._fail(cmd, name, attempt, exc)
                raise
            await host.append([(host.stream, StepSucceeded(
                cmd.seq, "do", name, value, attempt, task=cmd.task))])
            host.counters.steps_completed += 1
            return value

    async def _back_off(self, cmd: CommandInfo, name: str, attempt: int, exc: Exception,
                        policy: Retries) -> int:
        """Log the failed attempt with its retry time, wait for it, log the retry; the
        next attempt's number."""
        host = self._host
        # the jitter is drawn once, here: replays wait for the logged retry time
        draw = random.random() if policy.jitter else 0.0
        delay_us = _us(policy.delay_after(attempt, draw))
        retry_at = host.clock.now_us() + delay_us
        await host.append([(host.stream, StepAttemptFailed(
            cmd.seq, name, attempt, error_info(exc), retry_at, delay_us, task=cmd.task,
            concurrent=cmd.concurrent))])
        host.counters.attempts_failed += 1
        await host.idle_until(retry_at, delay_us, cmd.seq)
        await host.append([(host.stream, StepRetrying(cmd.seq, name, attempt + 1))])
        return attempt + 1

    async def _fail(self, cmd: CommandInfo, name: str, attempt: int,
                    exc: BaseException) -> None:
        info = error_info(exc)
        await self._host.append([(self._host.stream, StepFailed(
            cmd.seq, "do", name, attempt, info, task=cmd.task))])
        self._host.counters.steps_failed += 1

    # -- timers --------------------------------------------------------------------------

    async def sleep(self, name: str, duration: float | str | Any) -> None:
        """A durable timer: a restart waits only for what is left of it."""
        check_step_name(name)
        seconds = parse_duration(duration, what=f"duration of sleep {name!r}")
        await self._sleep("sleep", name, lambda now: now + _us(seconds))

    async def sleep_until(self, name: str, when: datetime | float) -> None:
        """Sleep until an aware datetime or epoch seconds (at once if it has passed)."""
        check_step_name(name)
        wake_at = _us(parse_instant(when))
        await self._sleep("sleep_until", name, lambda now: wake_at)

    async def _sleep(self, kind: str, name: str, wake: Callable[[int], int]) -> None:
        host = self._host
        async with host.command(kind, name) as cmd:
            match cmd.decision:
                case Replayed():
                    return
                case ResumeSleep(wake_at_us=wake_at, duration_us=duration):
                    await host.waiting_again(cmd.seq)
                case _:
                    now = host.clock.now_us()
                    wake_at = max(wake(now), now)
                    duration = wake_at - now
                    await host.append([(host.stream, SleepStarted(
                        cmd.seq, name, wake_at, duration, until=kind == "sleep_until",
                        task=cmd.task, concurrent=cmd.concurrent))])
                    faults.hit("sleep.after_record")
            await host.idle_until(wake_at, duration, cmd.seq)
            await host.append([(host.stream, SleepCompleted(cmd.seq))])

    # -- events --------------------------------------------------------------------------

    async def wait_for_event(
        self, name: str, *, type: str, timeout: float | str | Any = DEFAULT_WAIT_TIMEOUT
    ) -> ReceivedEvent:
        """The next event of ``type`` sent to this workflow (buffered FIFO per type)."""
        check_step_name(name)
        check_event_type(type)
        timeout_s = parse_duration(timeout, what=f"timeout of wait {name!r}", allow_zero=False)
        async with self._host.command("wait", name) as cmd:
            return await self._wait(cmd, name, type, timeout_s)

    async def _wait(self, cmd: CommandInfo, name: str, event_type: str,
                    timeout_s: float) -> ReceivedEvent:
        host = self._host
        match cmd.decision:
            case Replayed(value=(logged_type, payload, time_us)):
                return ReceivedEvent(logged_type, payload, utc_from_us(time_us))
            case Raise(timeout=True):
                raise self._timeout(name, event_type, timeout_s)
            case ResumeWait(timeout_at_us=deadline, timeout_us=timeout_us):
                await host.waiting_again(cmd.seq)
            case _:
                if (buffered := host.machine.buffered(event_type)) is not None:
                    return await self._consume(cmd, name, event_type, buffered)
                timeout_us = _us(timeout_s)
                deadline = host.clock.now_us() + timeout_us
                await host.append([(host.stream, WaitStarted(
                    cmd.seq, name, event_type, deadline, timeout_us, task=cmd.task,
                    concurrent=cmd.concurrent))])
        limit = min(deadline, host.clock.now_us() + timeout_us)
        with trio.move_on_at(host.clock.trio_time(limit)):
            while (buffered := host.machine.buffered(event_type, deadline)) is None:
                await host.wait_for_mail(limit, cmd.seq)
            return await self._consume(cmd, name, event_type, buffered)
        if (buffered := host.machine.buffered(event_type, deadline)) is not None:
            return await self._consume(cmd, name, event_type, buffered)
        await host.append([(host.stream, WaitTimedOut(cmd.seq, name, event_type))])
        raise self._timeout(name, event_type, timeout_us / 1_000_000)

    async def _consume(self, cmd: CommandInfo, name: str, event_type: str,
                       buffered: tuple[int, Any, int]) -> ReceivedEvent:
        position, payload, time_us = buffered
        machine = self._host.machine
        machine.reserve(position)  # a concurrent wait of this run cannot take it too
        try:
            await self._host.append([(self._host.stream, EventConsumed(
                cmd.seq, name, event_type, position, task=cmd.task))])
        except BaseException:
            machine.release(position)  # buffered again unless the consumption was logged
            raise
        faults.hit("event.after_consume")
        return ReceivedEvent(event_type, payload, utc_from_us(time_us))

    @staticmethod
    def _timeout(name: str, event_type: str, seconds: float) -> WorkflowTimeoutError:
        return WorkflowTimeoutError(
            f"wait_for_event {name!r} (type {event_type!r}) timed out after {seconds:g} seconds")

    # -- deterministic values ------------------------------------------------------------

    async def _value(self, kind: str, make: Callable[[], Any]) -> Any:
        host = self._host
        async with host.command(kind, None) as cmd:
            decision = cmd.decision
            if isinstance(decision, Replayed):
                return decision.value
            value = make()
            await host.append([(host.stream, StepSucceeded(
                cmd.seq, kind, None, value, task=cmd.task))])
            return value

    async def patched(self, patch_id: str) -> bool:
        """Workflow versioning (replay.md R15, Temporal's rule): True, and logged, when the
        run reaches this call as new progress; False while it replays a history that passed
        this point before the patch existed. Keep the old code path under ``False``."""
        check_patch_id(patch_id)
        host = self._host
        async with host.command(PATCHED, patch_id) as cmd:
            if isinstance(cmd.decision, Replayed):
                return bool(cmd.decision.value)
            await host.append([(host.stream, StepSucceeded(
                cmd.seq, PATCHED, patch_id, True, task=cmd.task))])
            return True

    async def now(self) -> datetime:
        """The current time, logged on the first run and the same on every replay."""
        return utc_from_us(await self._value("now", self._host.clock.now_us))

    async def random(self) -> float:
        """A random float in [0, 1), logged once."""
        return float(await self._value("random", random.random))

    async def uuid4(self) -> uuid.UUID:
        """A random UUID, logged once."""
        return uuid.UUID(await self._value("uuid4", lambda: str(uuid.uuid4())))

    # -- reports to the agent ------------------------------------------------------------

    async def _report(self, kind: str, value: Any, extra: list[tuple[str, Event]]) -> None:
        host = self._host
        async with host.command(kind, None) as cmd:
            if isinstance(cmd.decision, Execute):
                await host.append([(host.stream, StepSucceeded(
                    cmd.seq, kind, None, value, task=cmd.task)), *extra])

    def _callback(self, kind: str, value: Any) -> list[tuple[str, Event]]:
        host = self._host
        return [(host.agent_stream,
                 CallbackScheduled(kind, host.workflow_name, host.workflow_id, value))]

    async def report_complete(self, result: Any = None) -> None:
        """Deliver ``on_workflow_complete(result)`` now; the run's end will not deliver again."""
        machine = self._host.machine
        if machine.complete_reported and not machine.replaying:
            raise EventwfError(
                f"workflow {self._host.workflow_id!r} already called report_complete in this "
                "run; on_workflow_complete is delivered once per run")
        value = roundtrip_value(result, "the report_complete result")
        await self._report("report_complete", value, self._callback("complete", value))

    async def report_error(self, error: BaseException | str) -> None:
        """Deliver ``on_workflow_error(message)``; the workflow goes on."""
        if isinstance(error, BaseException):
            message = str(error)
        elif isinstance(error, str):
            message = error
        else:
            raise ValueError(f"report_error takes an exception or a str, got {error!r}")
        await self._report("report_error", message, self._callback("error", message))

    async def send_event(self, event: Any) -> None:
        """Deliver ``on_workflow_event(event)`` to the agent, once."""
        value = roundtrip_value(event, "the event sent to the agent")
        await self._report("send_event", value, self._callback("event", value))

    # -- agent state ---------------------------------------------------------------------

    async def _state(self, kind: str, action: str, value: Any) -> None:
        host = self._host
        async with host.command(kind, None) as cmd:
            if isinstance(cmd.decision, Execute):
                items = host.agent_state_items(action, value)
                await host.append([(host.stream, StepSucceeded(
                    cmd.seq, kind, task=cmd.task)), *items])
                await host.agent_state_committed()

    async def update_agent_state(self, state: Any) -> None:
        """Replace the agent's state and push it to its clients."""
        await self._state("update_state", "set", json_value(state, "agent state"))

    async def merge_agent_state(self, partial: dict[str, Any]) -> None:
        """Shallow-merge ``partial`` into the agent's (dict) state."""
        if not isinstance(partial, dict):
            raise ValueError(f"merge_agent_state takes a dict, got {partial!r}")
        await self._state("merge_state", "merge", json_value(partial, "agent state"))

    async def patch_agent_state(self, patch: Any) -> None:
        """Apply RFC 7396 JSON Merge Patch ``patch`` to the agent's state as it is when the
        patch commits: nested objects merge, ``None`` deletes a key, a non-object replaces,
        so workflows patching different keys lose nothing. A ``None`` patch is refused."""
        if patch is None:
            raise ValueError("patch_agent_state takes a merge patch, got None (it would "
                             "delete the whole state; use reset_agent_state or "
                             "update_agent_state)")
        await self._state("patch_state", "patch", json_value(patch, "agent state patch"))

    async def reset_agent_state(self) -> None:
        """Put the agent's state back to its ``initial_state``."""
        await self._state("reset_state", "reset", None)
