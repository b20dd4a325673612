"""Which inbox request an append consumes (specs/postgres.md PG15).

Theory of operation. While the inbox applies a request for another engine
(:func:`applying`), a context variable holds its :class:`Consumption`. ``Writer.append``
and ``Writer.submit`` read it (:func:`current`) into their ``Append``: for the applying
task and the tasks it starts in nurseries of its own, not for long-lived tasks it spawns
into the engine's nurseries (a workflow run it starts inherits the variable too). The
first group commit that carries an *open* consumption passes it to the store
(``LogStore.commit(consumes=...)``), which deletes the inbox row and writes its
placeholder reply in the transaction of the events: the request is applied exactly when
that commit lands. After it the consumption is *consumed*, and later appends of the
request consume nothing. A commit that did not land leaves it *open* again; one that found
the row gone (the requester withdrew it, or another engine took it over) leaves it
*withdrawn*: every append of the request is then refused ("withdrawn; nothing was
logged"). When the method has returned, the inbox closes it (:meth:`Consumption.close`)
and learns whether a commit consumed it: then only the final reply is left to write;
else it deletes the row and writes the reply itself, as for a request that logs nothing.

A batch that carries no consumption costs one attribute read per request, no statement.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal, Protocol, TypeVar

import trio

from eventwf.errors import StorageError
from eventwf.store.interface import Consumed

__all__ = ["Carrier", "Consumption", "State", "applying", "begin", "current", "end",
           "withdrawn"]

State = Literal["open", "committing", "consumed", "withdrawn", "closed"]


class Consumption:
    """One inbox request being applied, and whether a commit has consumed its row."""

    __slots__ = ("_settled", "_task", "claim", "state")

    def __init__(self, claim: Consumed, task: trio.lowlevel.Task) -> None:
        self.claim = claim
        self.state: State = "open"
        self._task = task
        self._settled: trio.Event | None = None  # set when a commit carrying it ends

    @property
    def request_id(self) -> int:
        return self.claim.request_id

    def covers(self, task: trio.lowlevel.Task) -> bool:
        """Whether ``task`` is the applying task or runs in a nursery opened under it."""
        current: trio.lowlevel.Task | None = task
        while current is not None:
            if current is self._task:
                return True
            nursery = current.parent_nursery
            current = None if nursery is None else nursery.parent_task
        return False

    def refusal(self) -> StorageError:
        return StorageError(
            f"inbox request {self.request_id} was withdrawn (by its requester, or taken over "
            "by another engine) before its first events were committed; nothing was logged")

    def settle(self, state: State) -> None:
        """A commit that carried it ended, leaving it ``state``."""
        self.state = state
        if self._settled is not None:
            self._settled.set()
            self._settled = None

    def committing(self) -> None:
        self.state = "committing"
        self._settled = trio.Event()

    async def close(self) -> State:
        """The method returned: wait for a commit still carrying it, then let nothing
        consume it any more. Its last state: ``"consumed"`` (a commit deleted the row),
        ``"withdrawn"`` (the row was gone) or ``"closed"`` (nothing consumed it)."""
        while self._settled is not None:
            await self._settled.wait()
        if self.state == "open":
            self.state = "closed"
        return self.state


_CURRENT: ContextVar[Consumption | None] = ContextVar("eventwf_consuming", default=None)


@contextmanager
def applying(claim: Consumed) -> Iterator[Consumption]:
    """Appends made in this block (by this task and its own nurseries' tasks) consume
    ``claim``'s inbox row with the first of them that commits."""
    consumption = Consumption(claim, trio.lowlevel.current_task())
    token = _CURRENT.set(consumption)
    try:
        yield consumption
    finally:
        _CURRENT.reset(token)


def current() -> Consumption | None:
    """The consumption an append made now carries: None unless an inbox request is being
    applied by this task, or its first commit is still to come. ``StorageError`` if the
    request was withdrawn (nothing of it may be logged any more)."""
    consumption = _CURRENT.get()
    if consumption is None or consumption.state in ("consumed", "closed"):
        return None
    if not consumption.covers(trio.lowlevel.current_task()):
        return None
    if consumption.state == "withdrawn":
        raise consumption.refusal()
    return consumption


class Carrier(Protocol):
    """An append request (``writer.Append``) as seen here: the consumption it carries."""

    @property
    def consumes(self) -> Consumption | None: ...


C = TypeVar("C", bound=Carrier)


def begin(requests: Iterable[Carrier]) -> list[Consumed]:
    """The inbox rows a batch consumes: each open consumption its requests carry, once
    (then *committing*). Empty, and nothing changed, when none carries one."""
    claims: list[Consumed] = []
    for request in requests:
        consumption = request.consumes
        if consumption is not None and consumption.state == "open":
            consumption.committing()
            claims.append(consumption.claim)
    return claims


def end(requests: Iterable[Carrier], committed: bool) -> None:
    """After the batch's commit: what it was consuming is consumed, or open again."""
    for request in requests:
        consumption = request.consumes
        if consumption is not None and consumption.state == "committing":
            consumption.settle("consumed" if committed else "open")


def withdrawn(requests: list[C], request_ids: Collection[int],
              answer: Callable[[C, BaseException], None]) -> list[C]:
    """After a commit refused because the rows ``request_ids`` were gone: answer every
    request carrying one of them (nothing was logged) and return the others, to retry."""
    retry: list[C] = []
    for request in requests:
        consumption = request.consumes
        if consumption is not None and consumption.request_id in request_ids:
            consumption.settle("withdrawn")
            answer(request, consumption.refusal())
        else:
            retry.append(request)
    return retry
