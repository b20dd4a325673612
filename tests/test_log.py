"""The SQLite log (eventwf/_store): append/read, triggers, hash chain, locks, projections
(specs/log.md L1-L12). Tampering uses a raw sqlite3 connection without the triggers."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventwf import errors
from eventwf.errors import CorruptLogError, StorageError
from eventwf.model import events as ev
from eventwf.model.agent_fold import AgentSummary, apply_agent
from eventwf.model.codec import encode_event, event_type
from eventwf.model.events import Event, Recorded, parse_stream
from eventwf.model.workflow_fold import WorkflowSummary, apply_workflow
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.log import scan

from .eventlog_kit import raw

STREAMS = ["wf:a", "wf:b", "agent:A/x"]
ERR = ev.ErrorInfo("builtins.ValueError", "boom")
PAYLOADS = st.none() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8) | st.lists(
    st.integers(0, 9), max_size=3)
EVENTS = st.one_of(
    st.builds(ev.EventReceived, st.text(max_size=5), PAYLOADS),
    st.builds(ev.StepSucceeded, st.integers(0, 99), st.just("do"), st.text(max_size=5), PAYLOADS),
    st.builds(ev.SleepCompleted, st.integers(0, 99)),
    st.just(ev.WorkflowRunning()),
    st.builds(ev.AgentStateSet, PAYLOADS),
)


def row(stream: str, stream_position: int, event: Event, time_us: int = 1_000) -> PendingRow:
    return PendingRow(stream, stream_position, time_us, event_type(event), encode_event(event))


def tables(store: SQLiteStore) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "workflows": store.conn.execute("SELECT * FROM workflows ORDER BY workflow_id").fetchall(),
        "agents": store.conn.execute(
            "SELECT * FROM agents ORDER BY agent_class, agent_name").fetchall(),
    }


def problems(store: SQLiteStore) -> list[int]:
    return [item.row.position for item in scan(store.conn, store.genesis) if item.problem]


@pytest.fixture
def path(tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "log.db")
    for store in OPEN:
        store.close()
    OPEN.clear()


OPEN: list[SQLiteStore] = []


def opened(path: str, *, readonly: bool = False) -> SQLiteStore:
    """A Store closed when the test ends (fixture ``path``)."""
    OPEN.append(SQLiteStore(path, readonly=readonly))
    return OPEN[-1]


def five_rows(path: str, streams: list[str] | None = None) -> None:
    """Rows 1-5 (values 0-4), all on wf:a unless ``streams`` spreads them."""
    streams = streams or ["wf:a"] * 5
    counts: dict[str, int] = {}
    store = SQLiteStore(path)
    for i, stream in enumerate(streams):
        sp = counts[stream] = counts.get(stream, -1) + 1
        store.commit([row(stream, sp, ev.StepSucceeded(i, "do", f"s{i}", i), 1_000 + i)])
    store.close()


# -- L1/L6: append and read back ---------------------------------------------------------------


@given(st.lists(st.tuples(st.sampled_from(STREAMS), EVENTS), max_size=25),
       st.lists(st.integers(1, 6), min_size=1, max_size=25))
@settings(max_examples=25, deadline=None)
def test_l1_l6_read_stream_returns_exactly_what_was_appended_in_order(
    items: list[tuple[str, Event]], sizes: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "log.db"), synchronous="NORMAL")
        expected: dict[str, list[Recorded]] = {s: [] for s in STREAMS}
        queue, batch_sizes = list(items), iter(sizes * 25)
        while queue:
            size = next(batch_sizes)
            batch, queue = queue[:size], queue[size:]
            batch_rows, head, time_us = [], store.head, 1_000 * store.head
            for stream, event in batch:
                sp = len(expected[stream])
                batch_rows.append(row(stream, sp, event, time_us))
                head += 1
                expected[stream].append(Recorded(head, stream, sp, time_us, event))
            positions = store.commit(batch_rows)
            assert positions == list(range(head - len(batch) + 1, head + 1))
            assert store.head == head
        for stream, records in expected.items():
            assert store.read_stream(stream) == records
            assert store.stream_head(stream) == len(records) - 1
            assert store.read_stream(stream, 2) == records[2:]
            if records:
                cut = records[0].position
                assert store.read_stream(stream, after_position=cut) == records[1:]
        positions = [p for (p,) in store.conn.execute("SELECT position FROM events ORDER BY 1")]
        assert positions == list(range(1, store.head + 1))
        assert problems(store) == []
        store.close()


def test_l1_commit_returns_the_positions_and_reopen_keeps_head_and_chain(path: str) -> None:
    store = SQLiteStore(path)
    rows = [row("wf:a", 0, ev.WorkflowRunning()), row("wf:a", 1, ev.PauseRequested())]
    assert store.commit(rows) == [1, 2]
    assert store.commit([row("wf:b", 0, ev.WorkflowRunning())]) == [3]
    head, head_hash = store.head, store.head_hash
    store.close()
    again = opened(path)
    assert (again.head, again.head_hash) == (head, head_hash)
    assert again.commit([row("wf:a", 2, ev.WorkflowPaused())]) == [4]
    assert [r.position for r in again.read_stream("wf:a")] == [1, 2, 4]


# -- L2: append-only triggers -------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql", ["UPDATE events SET time_us = 0", "UPDATE events SET data = x'00' WHERE position = 1",
            "DELETE FROM events WHERE position = 1", "DELETE FROM events"])
def test_l2_triggers_refuse_update_and_delete(path: str, sql: str) -> None:
    five_rows(path)
    store = opened(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.conn.execute(sql)
    assert len(store.read_stream("wf:a")) == 5


# -- L3/L4: hash chain ---------------------------------------------------------------------------


CHANGES = {"data": "data = ?", "time_us": "time_us = time_us + 1", "type": "type = 'step.failed'",
           "stream_position": "stream_position = stream_position + 100",
           "stream": "stream = 'wf:z'"}


def change(path: str, column: str, target: int) -> None:
    with raw(path) as conn:
        (data,) = conn.execute("SELECT data FROM events WHERE position = ?", (target,)).fetchone()
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x20
        params = (bytes(flipped), target) if column == "data" else (target,)
        conn.execute(f"UPDATE events SET {CHANGES[column]} WHERE position = ?", params)


@pytest.mark.parametrize("column", list(CHANGES))
@pytest.mark.parametrize("target", [1, 3, 5])
def test_l3_l4_changing_one_field_of_a_row_breaks_the_chain_at_that_row(
    path: str, column: str, target: int
) -> None:
    five_rows(path)
    change(path, column, target)
    store = opened(path)
    found = problems(store)
    assert found[0] == target  # a moved row also leaves a gap in wf:a, reported after it
    assert found == [target] or column in ("stream", "stream_position")
    stream, version = {"stream": ("wf:z", target - 1),
                       "stream_position": ("wf:a", target + 99)}.get(column, ("wf:a", 0))
    with pytest.raises(CorruptLogError) as info:
        store.read_stream(stream, version)
    assert info.value.position == target
    assert f"log position {target}" in str(info.value)


@given(st.integers(1, 5), st.data())
@settings(max_examples=20, deadline=None)
def test_l3_any_single_bit_flip_in_data_is_caught_at_its_position(target: int,
                                                                  data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log.db")
        five_rows(path)
        with raw(path) as conn:
            (blob,) = conn.execute("SELECT data FROM events WHERE position = ?",
                                   (target,)).fetchone()
            flipped = bytearray(blob)
            flipped[data.draw(st.integers(0, len(blob) - 1))] ^= 1 << data.draw(st.integers(0, 7))
            conn.execute("UPDATE events SET data = ? WHERE position = ?", (bytes(flipped), target))
        store = SQLiteStore(path)
        with pytest.raises(CorruptLogError) as info:
            store.read_stream("wf:a")
        assert info.value.position == target
        assert problems(store) == [target]
        store.close()


@pytest.mark.parametrize(
    ("streams", "deleted", "reads", "scan_problems"),
    [(["wf:a"] * 5, 3, [("wf:a", 0, 4, "jumps from version 1 to 3"),
                       ("wf:a", 3, 4, "before log position 4 is missing")], [4]),
     (["wf:a", "wf:b"] * 2 + ["wf:a"], 2, [("wf:a", 0, 3, "before log position 3 is missing"),
                                           ("wf:b", 0, 4, "jumps from version -1 to 1")], [3, 4])],
    ids=["same-stream", "other-stream"],
)
def test_l3_l4_deleting_a_middle_row_is_caught_at_the_next_row(
    path: str, streams: list[str], deleted: int, reads: list[tuple[str, int, int, str]],
    scan_problems: list[int],
) -> None:
    five_rows(path, streams)
    with raw(path) as conn:
        conn.execute("DELETE FROM events WHERE position = ?", (deleted,))
    store = opened(path)
    for stream, from_version, position, message in reads:
        with pytest.raises(CorruptLogError, match=message) as info:
            store.read_stream(stream, from_version)
        assert info.value.position == position
    assert problems(store) == scan_problems


def test_l3_l4_swapping_two_rows_data_is_caught_at_the_first(path: str) -> None:
    five_rows(path)
    with raw(path) as conn:
        two, four = (conn.execute("SELECT data FROM events WHERE position = ?", (p,)).fetchone()[0]
                     for p in (2, 4))
        conn.execute("UPDATE events SET data = ? WHERE position = 2", (four,))
        conn.execute("UPDATE events SET data = ? WHERE position = 4", (two,))
    store = opened(path)
    with pytest.raises(CorruptLogError, match="fails its checksum") as info:
        store.read_stream("wf:a")
    assert info.value.position == 2
    assert problems(store) == [2, 4]


def test_l3_an_inserted_row_with_a_forged_hash_is_caught(path: str) -> None:
    five_rows(path)
    store = opened(path)
    event = ev.StepSucceeded(5, "do", "forged", 1)
    store.conn.execute("INSERT INTO events VALUES (6, 'wf:a', 5, 9, ?, ?, ?)",
                       (event_type(event), encode_event(event), b"\x00" * 16))
    with pytest.raises(CorruptLogError) as info:
        store.read_stream("wf:a")
    assert info.value.position == 6 and problems(store) == [6]


@pytest.mark.parametrize("text_in", ["data", "previous hash"])
def test_l4_a_text_value_where_a_blob_belongs_is_corrupt_log_error(path: str, text_in: str
                                                                   ) -> None:
    five_rows(path)
    store = opened(path)
    data = encode_event(ev.WorkflowRunning())
    bad = ("text", b"\x00" * 16) if text_in == "data" else (data, "text")
    for position, (blob, digest) in [(6, bad), (7, (data, b"\x00" * 16))]:
        store.conn.execute("INSERT INTO events VALUES (?, 'wf:a', ?, 9, 'workflow.running', ?, ?)",
                           (position, position - 1, blob, digest))
    target = 6 if text_in == "data" else 7  # the row that cannot be verified
    with pytest.raises(CorruptLogError) as info:
        store.read_stream("wf:a", target - 1)
    assert info.value.position == target and problems(store)[0] == 6


@pytest.mark.parametrize("column", ["stream", "type"])
def test_l4_text_that_is_not_utf8_is_a_problem_even_where_the_other_column_was_seen(
        path: str, column: str) -> None:
    """Each row's text is checked, however often its stream or its type was seen before."""
    five_rows(path, ["wf:a", "wf:b", "wf:a", "wf:b", "wf:a"])
    with raw(path) as conn:  # wf:b -> wf:\xff / step.succeeded -> step.\xffucceeded
        spot = "x'77663aff'" if column == "stream" else "x'737465702eff7563636565646564'"
        conn.execute(f"UPDATE events SET {column} = CAST({spot} AS TEXT) "
                     "WHERE position IN (2, 4)")
    store = opened(path, readonly=True)
    found = [(item.row.position, item.problem) for item in scan(store.conn, store.genesis)
             if item.problem]
    assert found == [(p, "its stream or type column is not valid UTF-8 text") for p in (2, 4)]


def test_l3_genesis_differs_per_file(path: str) -> None:
    a, b = opened(path), opened(path + "2")
    assert a.genesis != b.genesis and len(a.genesis) == 16


# -- L10: all-or-nothing commits -----------------------------------------------------------------


@pytest.mark.parametrize("clash", ["inside the batch", "with a committed row"])
def test_l10_failing_commit_lands_nothing_and_keeps_head(path: str, clash: str) -> None:
    """A UNIQUE clash means memory disagrees with the log: nothing lands, and the store
    refuses every later commit as fatal, so the engine stops and a reopen replays the truth."""
    store = opened(path)
    started = apply_workflow(None, Recorded(1, "wf:a", 0, 5, ev.WorkflowStarted("F", "A", "a")))
    store.commit([row("wf:a", 0, ev.WorkflowStarted("F", "A", "a"), 5)], [started])
    before = (store.head, store.head_hash, store.projected_through(), tables(store))
    other = apply_workflow(None, Recorded(2, "wf:b", 0, 6, ev.WorkflowStarted("G", "A", "a")))
    clashing = ("wf:b", 1) if clash == "inside the batch" else ("wf:a", 0)
    batch = [row("wf:b", 0, ev.WorkflowStarted("G", "A", "a"), 6),
             row("wf:b", 1, ev.PauseRequested()), row(*clashing, ev.WorkflowRunning())]
    with pytest.raises(StorageError, match="disagrees") as err:
        store.commit(batch, [other])
    assert err.value.fatal
    assert (store.head, store.head_hash, store.projected_through(), tables(store)) == before
    assert store.conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    with pytest.raises(StorageError) as again:
        store.commit([row("wf:b", 0, ev.WorkflowRunning())])
    assert again.value.fatal
    store.close()
    reopened = opened(path)
    assert reopened.commit([row("wf:b", 0, ev.WorkflowRunning())]) == [2]  # no gap after reopen
    assert problems(reopened) == []


# -- L11/L12: locks and versions -------------------------------------------------------------------


def test_l11_second_writer_is_refused_naming_the_pid(path: str) -> None:
    first = SQLiteStore(path)
    with pytest.raises(errors.LogLockedError, match=f"pid {os.getpid()}"):
        SQLiteStore(path)
    opened(path, readonly=True)  # readers are never locked out
    first.close()
    SQLiteStore(path).close()  # closing released the lock


def test_readonly_store_reads_and_refuses_writes(path: str) -> None:
    five_rows(path)
    writer = SQLiteStore(path)
    reader = opened(path, readonly=True)
    assert reader.read_stream("wf:a") == writer.read_stream("wf:a")
    assert (reader.head, reader.genesis) == (writer.head, writer.genesis)
    with pytest.raises(StorageError):
        reader.commit([row("wf:a", 5, ev.WorkflowRunning())])
    writer.close()
    assert len(opened(path, readonly=True).read_stream("wf:a")) == 5  # with no writer open


def test_readonly_open_of_a_foreign_sqlite_file_is_storage_error(path: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other(x)")
    conn.close()
    with pytest.raises(StorageError, match="cannot be read as an eventwf log"):
        SQLiteStore(path, readonly=True)


def test_l12_newer_schema_version_is_refused_for_writing_and_unlocks(path: str) -> None:
    five_rows(path)
    with raw(path) as conn:
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    for _ in range(2):  # the lock was released: the second open fails the same way
        with pytest.raises(errors.SchemaVersionError, match="schema version 2"):
            SQLiteStore(path)
    reader = opened(path, readonly=True)
    assert len(reader.read_stream("wf:a")) == 5


# -- L7/L9: projections ---------------------------------------------------------------------------

# Event makers (summary, log position) -> event; the fold decides which are legal when.
WF_EVENTS: list[Callable[[WorkflowSummary | None, int], Event]] = [
    lambda s, p: ev.WorkflowStarted("Flow", "A", "a", {"n": p}, {"k": p, "tags": ["x"]}),
    lambda s, p: ev.WorkflowRunning(), lambda s, p: ev.StepSucceeded(0, "do", "a", [p]),
    lambda s, p: ev.SleepStarted(0, "nap", p, p), lambda s, p: ev.SleepCompleted(0),
    lambda s, p: ev.EventReceived("go", p), lambda s, p: ev.EventConsumed(1, "w", "go", 0),
    lambda s, p: ev.WorkflowCompleted({"out": p}), lambda s, p: ev.WorkflowErrored(ERR),
    lambda s, p: ev.PauseRequested(), lambda s, p: ev.WorkflowPaused(),
    lambda s, p: ev.WorkflowResumed(), lambda s, p: ev.WorkflowBlocked(2, ERR),
    lambda s, p: ev.WorkflowTerminated(), lambda s, p: ev.TrackingDeleted(),
    lambda s, p: ev.WorkflowRestarted(reset_tracking=p % 2 == 0),
    lambda s, p: ev.BindingMigrated(s.workflow_name if s else "x", f"Flow{p}"),
]
AG_EVENTS: list[Callable[[AgentSummary | None, int], Event]] = [
    lambda s, p: ev.AgentCreated("A", "x"), lambda s, p: ev.AgentStateSet({"n": p}),
    lambda s, p: ev.AgentStateMerged({"m": p}), lambda s, p: ev.AgentStateReset([p]),
    lambda s, p: ev.CallbackScheduled("complete", "Flow", "a", p),
    lambda s, p: ev.CallbacksDelivered(p),
]


def stage(store: SQLiteStore, wf: dict[str, WorkflowSummary],
          ag: dict[tuple[str, str], AgentSummary], picks: list[tuple[int, int]],
          time_us: int) -> None:
    """Stage legal events as staging.Batch.stage does, then commit with the dirty summaries."""
    rows: list[PendingRow] = []
    dirty_wf: set[str] = set()
    dirty_ag: set[tuple[str, str]] = set()
    for stream_index, pick in picks:
        stream = STREAMS[stream_index]
        kind, key, name = parse_stream(stream)
        position = store.head + len(rows) + 1
        try:
            if kind == "wf":
                current = wf.get(key)
                event = WF_EVENTS[pick % len(WF_EVENTS)](current, position)
                sp = 0 if current is None else current.head + 1
                rec = Recorded(position, stream, sp, time_us, event)
                wf[key] = apply_workflow(current, rec)
                dirty_wf.add(key)
            else:
                agent = ag.get((key, name))
                event = AG_EVENTS[pick % len(AG_EVENTS)](agent, position)
                sp = 0 if agent is None else agent.head + 1
                rec = Recorded(position, stream, sp, time_us, event)
                ag[key, name] = apply_agent(agent, rec)
                dirty_ag.add((key, name))
        except errors.TransitionError:  # refused by the fold: the writer would not stage it either
            continue
        rows.append(row(stream, rec.stream_position, event, time_us))
    if rows:
        store.commit(rows, [wf[k] for k in sorted(dirty_wf)], [ag[k] for k in sorted(dirty_ag)])


@given(st.lists(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 99)), max_size=8),
                max_size=8))
@settings(max_examples=30, deadline=None)
def test_l7_l9_rebuilt_projections_equal_the_live_ones(batches: list[list[tuple[int, int]]]
                                                       ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "log.db"), synchronous="NORMAL")
        wf: dict[str, WorkflowSummary] = {}
        ag: dict[tuple[str, str], AgentSummary] = {}
        for i, picks in enumerate(batches):
            stage(store, wf, ag, [(0, 0), (2, 0), *picks], time_us=1_000 * (i + 1))
        assert store.projected_through() == store.head
        for key, summary in wf.items():
            assert store.load_workflow(key) == summary
        for (cls, name), agent in ag.items():
            assert store.load_agent(cls, name) == agent
        live = tables(store)
        folded = store.rebuild_projections()
        assert folded.problems == [] and folded.head == store.head
        assert folded.workflows == wf and folded.agents == ag
        assert tables(store) == live
        assert store.projected_through() == store.head
        store.close()
