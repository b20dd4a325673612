"""An inbox request is consumed in the transaction of its first events (specs/postgres.md
PG15, issue 15 item 3): the store's ``commit(consumes=...)``, the writer carrying the
request from ``consuming.applying``, and what a requester learns when its owner dies.

The PostgreSQL tests use a fresh database on the session's throwaway cluster; the engine
tests run with the real clock (PG3a) and wait for conditions with generous deadlines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")
import trio  # noqa: E402

import eventwf  # noqa: E402
from eventwf.agent import call_method  # noqa: E402
from eventwf.errors import RequestsWithdrawnError, StorageError  # noqa: E402
from eventwf.model.codec import encode_event, event_type  # noqa: E402
from eventwf.model.events import AgentCreated  # noqa: E402
from eventwf.model.inbox_codec import PENDING_REPLY, decode_reply, encode_reply  # noqa: E402
from eventwf.runtime import consuming, inbox  # noqa: E402
from eventwf.store import open_store  # noqa: E402
from eventwf.store.interface import Consumed, PendingRow  # noqa: E402
from eventwf.store.postgres import sql  # noqa: E402
from eventwf.store.postgres.inbox import InboxTable  # noqa: E402
from tests.pg_engines import Running, owned_name, until  # noqa: E402

TTL = 1.5
SHARDS = 256  # the default shard count of a new database
URL: list[str] = []  # the database of the running test, for the agents' methods
SEEN: list[BaseException] = []


class Owned(eventwf.Agent):
    initial_state: Any = {}

    @eventwf.callable
    async def withdrawn_first(self) -> None:
        """Its request's row disappears before its first append (a withdrawal or another
        engine's takeover between the take and the commit)."""
        with psycopg.connect(URL[0], autocommit=True) as conn:
            conn.execute("DELETE FROM eventwf.inbox")
        try:
            await self.set_state({"n": 1})
        except StorageError as exc:
            SEEN.append(exc)
            raise

    @eventwf.callable
    async def logs_then_hangs(self) -> None:
        """Logs its state, then never answers (as an owner that dies after logging)."""
        await self.set_state({"n": 2})
        await trio.sleep_forever()


def _open(url: str) -> Any:
    return eventwf.open_engine(url, agents=[Owned], lease_ttl=TTL)


def _row(stream: str, version: int) -> PendingRow:
    event = AgentCreated("T", stream)
    return PendingRow(stream, version, 1, event_type(event), encode_event(event))


def _query(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return list(conn.execute(sql, args).fetchall())


def _inbox(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The inbox's rows (id, taken_by) and the replies' (id, reply)."""
    return (_query(url, "SELECT id, taken_by FROM eventwf.inbox ORDER BY id"),
            _query(url, "SELECT id, reply FROM eventwf.inbox_replies ORDER BY id"))


def _types(url: str, stream: str) -> list[str]:
    return [str(r[0]) for r in _query(url, "SELECT type FROM eventwf.events WHERE stream = %s "
                                      "ORDER BY stream_position", stream)]


@pytest.fixture
def table(fresh_postgres_url: str) -> Iterator[Any]:
    """The inbox tables of a fresh database (and its log, made first)."""
    open_store(fresh_postgres_url).close()
    made = InboxTable(fresh_postgres_url)
    try:
        yield made
    finally:
        made.close()


# -- the store ----------------------------------------------------------------------------

def test_the_row_is_deleted_in_the_transaction_of_the_events_or_not_at_all(
        fresh_postgres_url: str, table: Any) -> None:
    request_id = table.enqueue(3, "{}", "eventwf_reply_test")
    assert table.take(request_id, "me")
    store = open_store(fresh_postgres_url)
    try:
        def failing(positions: Sequence[int]) -> Any:
            raise RuntimeError("the projection failed after the events and the delete")
        with pytest.raises(RuntimeError, match="projection failed"):
            store.commit([_row("agent:T/a", 0)], project=failing,
                         consumes=[Consumed(request_id, "me")])
        assert _inbox(fresh_postgres_url) == ([(request_id, "me")], [])  # rolled back, whole
        assert _types(fresh_postgres_url, "agent:T/a") == []
        store.commit([_row("agent:T/a", 0)], consumes=[Consumed(request_id, "me")])
    finally:
        store.close()
    assert _inbox(fresh_postgres_url) == ([], [(request_id, PENDING_REPLY)])
    assert _types(fresh_postgres_url, "agent:T/a") == ["agent.created"]
    assert table.reply(request_id) is None  # the placeholder is no reply to read
    assert table.finish(request_id, encode_reply(result=5))
    assert decode_reply(table.reply(request_id)) == 5


def test_a_row_gone_or_held_by_another_engine_rolls_the_whole_batch_back(
        fresh_postgres_url: str, table: Any) -> None:
    mine, theirs, gone = (table.enqueue(1, "{}", "eventwf_reply_test") for _ in range(3))
    assert table.take(mine, "me") and table.take(theirs, "other") and table.take(gone, "me")
    assert table.answer(gone, encode_reply(None), "me")  # deleted meanwhile
    table.reply(gone)
    store = open_store(fresh_postgres_url)
    try:
        claims = [Consumed(mine, "me"), Consumed(theirs, "me"), Consumed(gone, "me")]
        with pytest.raises(RequestsWithdrawnError, match="nothing of this batch") as refused:
            store.commit([_row("agent:T/a", 0), _row("agent:T/b", 0)], consumes=claims)
        assert refused.value.request_ids == (theirs, gone)
        assert not refused.value.fatal
        assert _inbox(fresh_postgres_url) == ([(mine, "me"), (theirs, "other")], [])
        assert _types(fresh_postgres_url, "agent:T/a") == []
        store.commit([_row("agent:T/a", 0)], consumes=[Consumed(mine, "me")])  # goes on
    finally:
        store.close()
    assert _inbox(fresh_postgres_url) == ([(theirs, "other")], [(mine, PENDING_REPLY)])


# -- the writer ---------------------------------------------------------------------------

class _Commits:
    """The store's commits, recorded: (stream of each row, request ids consumed)."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[list[str], list[int]]] = []
        commit = store.commit

        def recorded(rows: Sequence[PendingRow], *args: Any, **kwargs: Any) -> Any:
            claims = kwargs.get("consumes", ())
            self.calls.append(([r.stream for r in rows], [c.request_id for c in claims]))
            return commit(rows, *args, **kwargs)
        monkeypatch.setattr(store, "commit", recorded)


async def _one_engine(nursery: trio.Nursery, url: str) -> eventwf.Engine:
    engine: eventwf.Engine = await nursery.start(Running(_open).serve, url)
    await until(lambda: len(engine.runtime.ownership.held) == SHARDS, "all shards held")
    return engine


@pytest.mark.realtime
async def test_only_the_first_commit_of_a_request_consumes_it(
        fresh_postgres_url: str, table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            engine = await _one_engine(nursery, fresh_postgres_url)
            agent = await engine.get_agent(Owned, "a")
            owner = engine.runtime.ownership.owner
            request_id = table.enqueue(0, "{}", "eventwf_reply_test")
            assert table.take(request_id, owner)
            commits = _Commits(engine.runtime.store, monkeypatch)
            statements: list[Any] = []  # the inbox statement runs for the consuming batch only
            consume = sql.consume_requests
            monkeypatch.setattr(sql, "consume_requests",
                                lambda *a: statements.append(a[1]) or consume(*a))
            with consuming.applying(Consumed(request_id, owner)) as consumption:
                await agent.set_state({"n": 1})
                await agent.set_state({"n": 2})
            assert await consumption.close() == "consumed"
            await agent.set_state({"n": 3})  # after the request: carries nothing
            nursery.cancel_scope.cancel()
    assert [ids for _, ids in commits.calls] == [[request_id], [], []]
    assert statements == [[Consumed(request_id, owner)]]
    assert _inbox(fresh_postgres_url) == ([], [(request_id, PENDING_REPLY)])
    assert _types(fresh_postgres_url, "agent:Owned/a").count("agent.state_set") == 3


@pytest.mark.realtime
async def test_a_withdrawn_request_refuses_its_appends_and_the_batch_retries_the_rest(
        fresh_postgres_url: str, table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            engine = await _one_engine(nursery, fresh_postgres_url)
            first, second = [await engine.get_agent(Owned, n) for n in ("w", "k")]
            owner = engine.runtime.ownership.owner
            request_id = table.enqueue(0, "{}", "eventwf_reply_test")
            assert table.take(request_id, owner)
            with psycopg.connect(fresh_postgres_url, autocommit=True) as conn:
                conn.execute("DELETE FROM eventwf.inbox")  # between the take and the commit
            commits = _Commits(engine.runtime.store, monkeypatch)
            errors: list[BaseException] = []

            async def applying() -> None:
                with consuming.applying(Consumed(request_id, owner)):
                    try:
                        await first.set_state({"n": 1})
                    except StorageError as exc:
                        errors.append(exc)
                    with pytest.raises(StorageError, match="withdrawn"):  # and after it
                        await first.set_state({"n": 2})

            async with trio.open_nursery() as batch:  # one group commit holds both
                batch.start_soon(applying)
                batch.start_soon(second.set_state, {"n": 1})
            nursery.cancel_scope.cancel()
    calls = [(sorted(streams), ids) for streams, ids in commits.calls]
    assert calls == [(["agent:Owned/k", "agent:Owned/w"], [request_id]),
                     (["agent:Owned/k"], [])]  # refused whole, the rest retried
    assert len(errors) == 1 and "withdrawn" in str(errors[0])
    assert "nothing was logged" in str(errors[0]) and not getattr(errors[0], "fatal", True)
    assert _types(fresh_postgres_url, "agent:Owned/w") == ["agent.created"]
    assert _types(fresh_postgres_url, "agent:Owned/k") == ["agent.created", "agent.state_set"]
    assert _inbox(fresh_postgres_url) == ([], [])


# -- through the inbox, between engines ---------------------------------------------------

@pytest.mark.realtime
async def test_a_request_withdrawn_between_take_and_commit_logs_nothing_and_is_not_answered(
        fresh_postgres_url: str) -> None:
    URL[:] = [fresh_postgres_url]
    SEEN.clear()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            engine = await _one_engine(nursery, fresh_postgres_url)
            name = owned_name(engine, "Owned", "x")
            await engine.get_agent(Owned, name)  # made (and logged) before the request
            table = InboxTable(fresh_postgres_url)
            try:
                shard = engine.runtime.ownership.shard("Owned", name)
                table.enqueue(shard, inbox.encode_request(
                    "Owned", name, "rpc", ["withdrawn_first", []], {}), "eventwf_reply_test")
            finally:
                table.close()
            assert engine.runtime.inbox is not None
            served = engine.runtime.inbox
            await until(lambda: served.applied == 1, "the request applied")
            nursery.cancel_scope.cancel()
    assert len(SEEN) == 1 and "withdrawn" in str(SEEN[0])
    assert "nothing was logged" in str(SEEN[0])
    assert _types(fresh_postgres_url, f"agent:Owned/{name}") == ["agent.created"]
    assert _inbox(fresh_postgres_url) == ([], [])  # no reply: its requester withdrew it


@pytest.mark.realtime
async def test_a_requester_whose_owner_logged_the_request_then_went_silent_learns_it_was_applied(
        fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox, "MARGIN", 3.0)  # deadlines of lease_ttl + 3 s (not 5)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            owner = await nursery.start(Running(_open).serve, fresh_postgres_url)
            other = await nursery.start(Running(_open).serve, fresh_postgres_url)

            def settled() -> bool:
                a, b = owner.runtime.ownership.held, other.runtime.ownership.held
                return len(a) == len(b) == SHARDS // 2
            await until(settled, "the shares settling")
            name = owned_name(owner, "Owned", "h")
            remote = await other.get_agent(Owned, name)
            with pytest.raises(StorageError, match=r"was applied \(its events are logged\) but "
                               r"its result was lost") as lost:
                await call_method(remote, "logs_then_hangs", remote.logs_then_hangs, [])
            nursery.cancel_scope.cancel()
    assert "inbox request" in str(lost.value) and "died after logging it" in str(lost.value)
    assert _types(fresh_postgres_url, f"agent:Owned/{name}").count("agent.state_set") == 1
    assert _inbox(fresh_postgres_url) == ([], [])  # the requester took the placeholder away
