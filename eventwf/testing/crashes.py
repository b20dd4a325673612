"""Crash a workflow at every logged event (or at chosen ones) and check that it recovers.

Theory of operation. A reference session (``session.drive``) runs the workflows to their
end on a fresh log under a mock clock, and records their outcomes. Since every append is
one transaction, a crash leaves the log cut after some event ``k``; for each ``k`` asked
for, the first ``k`` events are copied into a new file (``copy_log_prefix``), a fresh
engine reopens it in its own ``trio.run``, wall time resuming where the cut log stops,
and the same session finishes the job. The check then holds when

- every workflow ends with the reference's outcome (status, output, error), and
- no ``step.do`` body whose outcome is logged within the first ``k`` events runs again
  (bodies are counted by workflow, name and occurrence: ``ledger.counting``).

A failing position keeps its log and names it in the error, for ``eventwf log PATH show``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

import trio
import trio.testing

from eventwf.agent import Agent
from eventwf.engine import ReplayCheck, open_engine
from eventwf.errors import EventwfError, ReplayCheckError
from eventwf.store import copy_log_prefix, open_store
from eventwf.testing.determinism import check_determinism
from eventwf.testing.harness import VIRTUAL_EPOCH
from eventwf.testing.ledger import StepLedger, counting_bindings
from eventwf.testing.session import Outcome, Start, bindings, drive, logged_steps

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = ["CrashReplay", "check_crashes"]


class CrashReplay:
    """Crash checks for ``starts`` of ``workflows`` on one agent of class ``agent``.

    ``workflows`` is a class, a module (its ``AgentWorkflow`` subclasses), a list of
    classes or a binding map; ``engine_options`` go to ``open_engine``. ``before_run`` is
    called before every session (to reset what a workflow's bodies keep outside the log),
    ``after_run(path)`` after every successful crash check with its log. Each session may
    take ``timeout`` of mock time per workflow. Files live in ``directory`` (a new
    temporary one by default, removed by :meth:`close` unless a check failed).
    Synchronous: each session is its own ``trio.run``, so call it from a plain test.
    """

    def __init__(
        self,
        agent: type[Agent],
        workflows: Any,
        starts: Sequence[Start],
        *,
        agent_name: str = "test",
        directory: str | os.PathLike[str] | None = None,
        engine_options: Mapping[str, Any] | None = None,
        before_run: Callable[[], None] | None = None,
        after_run: Callable[[str], None] | None = None,
        timeout: Any = "365 days",
        wall_start: float = VIRTUAL_EPOCH,
    ) -> None:
        if not starts:
            raise ValueError("CrashReplay needs at least one Start")
        self.agent, self.agent_name, self.starts = agent, agent_name, list(starts)
        self.workflows = bindings(workflows)
        self.ledger = StepLedger()
        self._counted = counting_bindings(self.workflows, self.ledger)
        self._options = dict(engine_options or {})
        self._before, self._after = before_run, after_run
        self._timeout, self._wall_start = timeout, wall_start
        self._own_directory = directory is None
        self.directory = (tempfile.mkdtemp(prefix="eventwf-crashes-") if directory is None
                          else os.fspath(directory))
        os.makedirs(self.directory, exist_ok=True)
        self.failed = False
        self._outcomes: dict[str, Outcome] | None = None
        self._events = 0
        self._logged: dict[Any, int] = {}

    # -- the reference -------------------------------------------------------------------

    @property
    def reference_path(self) -> str:
        return os.path.join(self.directory, "reference.db")

    def reference(self) -> dict[str, Outcome]:
        """The outcome of each workflow, by id, in a run with no crash (run once)."""
        if self._outcomes is None:
            if os.path.exists(self.reference_path):
                raise ReplayCheckError(f"{self.reference_path} exists already: give each "
                                       "CrashReplay a directory of its own")
            self._outcomes = self._session(self.reference_path, self._wall_start, None)
            store = open_store(self.reference_path, readonly=True)
            try:
                self._events = store.head
            finally:
                store.close()
            self._logged = logged_steps(self.reference_path, [s.id for s in self.starts])
        return self._outcomes

    @property
    def events(self) -> int:
        """How many events the reference log holds: the positions a crash may follow."""
        self.reference()
        return self._events

    def positions(self) -> SearchStrategy[int]:
        """A hypothesis strategy of crash positions (1 to :attr:`events`)."""
        from hypothesis import strategies as st

        return st.integers(1, self.events)

    # -- crashes -------------------------------------------------------------------------

    def crash_at(self, position: int) -> dict[str, Outcome]:
        """Crash after event ``position`` of the reference log, recover, and check."""
        expected = self.reference()
        if isinstance(position, bool) or not isinstance(position, int) or \
                not 1 <= position <= self._events:
            raise ValueError(f"invalid crash position {position!r}: the reference log holds "
                             f"events 1 to {self._events}")
        where = os.path.join(self.directory, f"crash-{position}")
        shutil.rmtree(where, ignore_errors=True)
        os.makedirs(where)
        path = os.path.join(where, "eventwf.db")
        resume_us = copy_log_prefix(self.reference_path, path, position)
        context = f"crash after event {position} of {self._events}"
        got = self._session(path, resume_us / 1_000_000, context)
        for workflow_id, outcome in expected.items():
            if got.get(workflow_id) != outcome:
                self._fail(f"{context}: workflow {workflow_id!r} ended {got.get(workflow_id)} "
                           f"instead of {outcome}", path)
        for key in self.ledger.executions:
            logged_at = self._logged.get(key)
            if logged_at is not None and logged_at <= position:
                self._fail(f"{context}: the body of step {key.name!r} (occurrence "
                           f"{key.occurrence}) of workflow {key.workflow_id!r} ran again, "
                           f"although its outcome was logged at position {logged_at}", path)
        if self._after is not None:
            self._after(path)
        shutil.rmtree(where)
        return got

    def crash_everywhere(self, positions: Iterable[int] | None = None) -> int:
        """:meth:`crash_at` every position (or those given); returns how many ran."""
        chosen = range(1, self.events + 1) if positions is None else positions
        count = 0
        for position in chosen:
            self.crash_at(position)
            count += 1
        return count

    async def check_determinism(self, **options: Any) -> list[ReplayCheck]:
        """``check_determinism`` of the reference log, every workflow included."""
        self.reference()
        return await check_determinism(self.reference_path, agents=[self.agent],
                                       workflows=self.workflows,
                                       finished=[s.id for s in self.starts], **options)

    # -- sessions ------------------------------------------------------------------------

    def _session(self, path: str, wall_start: float, context: str | None
                 ) -> dict[str, Outcome]:
        try:
            trio.lowlevel.current_task()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("CrashReplay runs each session in its own trio.run: call it "
                               "from a synchronous test, not inside trio")
        self.ledger.clear()
        if self._before is not None:
            self._before()
        clock = trio.testing.MockClock(autojump_threshold=0)
        try:
            return trio.run(partial(self._drive, path, wall_start), clock=clock)
        except EventwfError as exc:
            what = context or "the reference run (no crash)"
            self._fail(f"{what}: {type(exc).__name__}: {exc}", path, exc)

    async def _drive(self, path: str, wall_start: float) -> dict[str, Outcome]:
        def wall() -> float:
            return wall_start + trio.current_time()

        options = {**self._options, "wall_clock": wall}
        async with open_engine(path, agents=[self.agent], workflows=self._counted,
                               **options) as engine:
            return await drive(engine, self.agent, self.agent_name, self.starts,
                               self._timeout)

    def _fail(self, message: str, path: str, cause: BaseException | None = None) -> NoReturn:
        self.failed = True
        raise ReplayCheckError(f"{message} (the log is kept at {path})") from cause

    # -- cleaning up ---------------------------------------------------------------------

    def close(self) -> None:
        """Remove the files, if the directory is this object's and every check passed."""
        if self._own_directory and not self.failed:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> CrashReplay:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def check_crashes(
    workflow: Any,
    agent: type[Agent],
    params: Any = None,
    *,
    events: Sequence[Mapping[str, Any]] = (),
    binding: str | None = None,
    positions: Iterable[int] | None = None,
    **options: Any,
) -> dict[str, Outcome]:
    """Run one workflow to its end, then crash it after every logged event (or after
    each of ``positions``) and check each recovery; returns the reference outcome.

    ``workflow`` is the workflow class (or a module/mapping with ``binding`` naming the
    one to start); ``events`` are sent to it; ``options`` go to :class:`CrashReplay`.
    Raises :class:`~eventwf.errors.ReplayCheckError` at the first position that fails.
    """
    if binding is None:
        if not isinstance(workflow, type):
            raise ValueError("name the workflow to start with binding= when workflow is not "
                             "a class")
        binding = workflow.__name__
    start = Start(binding, params, id="wf-1", events=tuple(events))
    with CrashReplay(agent, workflow, [start], **options) as replay:
        outcome = replay.reference()
        replay.crash_everywhere(positions)
        return outcome
