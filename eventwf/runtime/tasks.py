"""The tasks of a workflow run: their stable names, and which of them wait (replay.md R14).

``run`` may start tasks in trio nurseries and call durable steps from each. Replay matches
commands per task, so every task needs a name that is the same on every replay: its path,
``()`` for ``run`` itself and ``parent + (k,)`` for the k-th task a run task started in a
nursery of the run. Trio has no hook at ``start_soon`` other than an instrument's
``task_spawned`` (called synchronously in the spawner, before the child first runs), so
one instrument per trio run names the tasks of every run and notices when they exit.
Tasks started inside a step callable, or into nurseries the run does not own (the
engine's, an agent's), are not the run's: they cannot call durable steps.

The tree also knows which tasks are *busy*, so the run's status can be exact: a task is
quiet while it waits in a durable timer or wait, or while it only waits for its own child
tasks (it has live children and is not inside a command). The run is ``waiting`` when
every task is quiet and one of them waits durably.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

__all__ = ["RunTask", "TaskTree"]

logger = logging.getLogger("eventwf")


class RunTask:
    """One task of a run: its path and what it is doing now."""

    __slots__ = ("children", "command", "idle", "parent", "path", "spawned", "tree")

    def __init__(self, tree: TaskTree, path: tuple[int, ...], parent: RunTask | None) -> None:
        self.tree = tree
        self.path = path
        self.parent = parent
        self.spawned = 0  # how many run tasks it has started (the next child's number)
        self.children = 0  # how many of them are alive
        self.command: str | None = None  # the durable command it is inside (one at a time)
        self.idle: int | None = None  # the command number of the durable wait it is in

    @property
    def busy(self) -> bool:
        if self.idle is not None:
            return False
        return self.command is not None or self.children == 0


class TaskTree:
    """The live tasks of one run. ``changed`` is called (synchronously) when a task exits,
    so the run can log that it now only waits."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed
        self.members: set[RunTask] = set()  # the live tasks of the run
        self.root: RunTask | None = None
        self._instrument = _instrument()

    @property
    def live(self) -> int:
        return len(self.members)

    def enter(self) -> RunTask:
        """The current task becomes the run's root task ``()``."""
        root = self.root = RunTask(self, (), None)
        self._instrument.nodes[trio.lowlevel.current_task()] = root
        self.members = {root}
        return root

    def leave(self) -> None:
        """The root task is done with the run (its children are gone by now)."""
        self._instrument.nodes.pop(trio.lowlevel.current_task(), None)
        self.members.clear()

    def current(self) -> RunTask | None:
        """The run task calling now, None for a task that is not the run's."""
        node = self._instrument.nodes.get(trio.lowlevel.current_task())
        return node if node is not None and node.tree is self else None

    def quiet(self) -> bool:
        """Every task waits (durably or for its children), and one waits durably."""
        members = self.members
        return not any(n.busy for n in members) and any(n.idle is not None for n in members)

    def idle_seq(self) -> int | None:
        """The command number of one durable wait in progress (for ``WorkflowWaiting``)."""
        for node in self.members:
            if node.idle is not None:
                return node.idle
        return None


class _Instrument(trio.abc.Instrument):
    """Names the run tasks each run task starts, and forgets them when they exit."""

    def __init__(self) -> None:
        self.nodes: dict[trio.lowlevel.Task, RunTask] = {}

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        nodes = self.nodes
        if not nodes:
            return
        try:
            spawner = nodes.get(trio.lowlevel.current_task())
        except RuntimeError:  # spawned by trio itself, not from a task
            return
        if spawner is None or spawner.command is not None:
            return  # not a run task, or inside a step callable: not the run's
        nursery = task.parent_nursery
        owner = nodes.get(nursery.parent_task) if nursery is not None else None
        if owner is None or owner.tree is not spawner.tree:
            return  # into a nursery the run does not own (the engine's, an agent's)
        child = RunTask(spawner.tree, (*spawner.path, spawner.spawned), spawner)
        spawner.spawned += 1
        spawner.children += 1
        spawner.tree.members.add(child)
        nodes[task] = child

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        if not self.nodes:
            return
        node = self.nodes.pop(task, None)
        if node is None or node.parent is None:
            return
        node.parent.children -= 1
        node.tree.members.discard(node)
        try:
            node.tree.changed()
        except Exception:  # an instrument that raises is removed by trio: never raise
            logger.exception("eventwf: updating the status of a run after a task exited")


_INSTRUMENT: trio.lowlevel.RunVar[_Instrument] = trio.lowlevel.RunVar("eventwf_tasks")


def _instrument() -> _Instrument:
    """The instrument of this trio run, added on first use (one per ``trio.run``)."""
    try:
        return _INSTRUMENT.get()
    except LookupError:
        instrument = _Instrument()
        trio.lowlevel.add_instrument(instrument)
        _INSTRUMENT.set(instrument)
        return instrument
