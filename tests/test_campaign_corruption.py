"""Damaged logs: single bit flips in the file (F8), rows with valid checksums but bad
contents, unknown types and a newer schema (F9/F10), in process under MockClock.

A base log is built once by the campaign workload: 30 workflows, some left waiting for
events that never came (unfinished), cleanly closed and checkpointed, so every row lives
in the main database file. Each trial damages a copy.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import trio
import trio.testing

import eventwf
from eventwf.logtool.cli import main as eventlog
from eventwf.model.codec import encode_event
from eventwf.model.events import EventReceived, WorkflowRunning
from eventwf.store.sqlite.schema import SCHEMA_VERSION
from tests.campaign import programs
from tests.campaign.driver import seed_for, summary
from tests.campaign.ledger import Ledger
from tests.campaign.logview import chain_hash
from tests.campaign.programs import BINDING, CampaignAgent, CampaignWorkflow, Plan, make_plan
from tests.campaign.service import Service
from tests.campaign.workload import Config, session
from tests.wfkit import virtual_wall


class Base(NamedTuple):
    db: Path
    plan: Plan
    stuck: dict[str, list[Any]]  # unfinished workflow -> the sends it never got
    unfinished: set[str]


def _build(directory: Path, seed: int) -> Base:
    plan = make_plan(seed, 30)
    stuck: dict[str, list[Any]] = {}
    for workflow in plan.workflows:
        if workflow.sends and len(stuck) < 8:
            stuck[workflow.id] = workflow.sends
            workflow.sends = []
    directory.mkdir(parents=True)
    cfg = Config(str(directory), ledger_clock="trio", stop_after=3600.0, state_every=120.0)
    plan.dump(cfg.plan)

    async def run() -> None:
        await session(cfg, wall_clock=virtual_wall)

    trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
    conn = sqlite3.connect(cfg.db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        unfinished = {str(r[0]) for r in conn.execute(
            "SELECT workflow_id FROM workflows WHERE status NOT IN "
            "('complete', 'errored', 'terminated')")}
    finally:
        conn.close()
    assert len(unfinished) >= 2 and unfinished <= set(stuck), unfinished
    return Base(Path(cfg.db), plan, stuck, unfinished)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Base]:
    yield _build(tmp_path_factory.mktemp("corruption") / "base", seed_for("F8-base", 1111))


def _copy(base: Base, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    db = target / "log.db"
    shutil.copyfile(base.db, db)
    shutil.copyfile(str(base.db) + ".anchor", str(db) + ".anchor")
    return db


def _verify(db: Path) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    status = eventlog([str(db), "verify", "--json"], stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    verdict = next((r for r in lines if r.get("record") == "verdict"), {})
    return status, verdict


async def _statuses(db: Path, base: Base, *, hibernate_after: float | None = None,
                    feed: str | None = None) -> dict[str, tuple[str, str]]:
    """Open the engine on a damaged copy; (status, error message) of every unfinished
    workflow once every run that could replay did; ``feed``: also send that workflow the
    events it waited for (it must then finish)."""
    runtime = programs.Runtime("check", Ledger(str(db.parent / "ledger.db")),
                               Service(str(db.parent / "service.db")))
    programs.RUNTIME = runtime
    try:
        async with eventwf.open_engine(db, agents=[CampaignAgent],
                                       workflows={BINDING: CampaignWorkflow},
                                       wall_clock=virtual_wall,
                                       hibernate_after=hibernate_after) as engine:
            await trio.sleep(1)
            if feed is not None:
                await _feed(engine, base, feed)
            out = {}
            for wid in sorted(base.unfinished):
                agent = await engine.get_agent(CampaignAgent, base.plan.by_id()[wid].agent)
                info = await agent.get_workflow(wid)
                assert info is not None
                out[wid] = (info.status, info.error_message or "")
    finally:
        programs.RUNTIME = None
        runtime.ledger.close()
        runtime.service.close()
    return out


async def _feed(engine: eventwf.Engine, base: Base, wid: str) -> None:
    agent = await engine.get_agent(CampaignAgent, base.plan.by_id()[wid].agent)
    for send in base.stuck[wid]:
        if send.type == "approval":
            if send.decision == "yes":
                await agent.approve_workflow(wid, reason="feed", metadata={"i": send.index})
            else:
                await agent.reject_workflow(wid, reason="feed")
        else:
            await agent.send_workflow_event(BINDING, wid, {"type": send.type, "payload": {
                "id": f"{wid}/{send.key}", "v": f"{send.type}:{send.j}", "tok": "feed"}})
    info = await engine.wait_workflow(wid, timeout=86400)
    assert info.status in ("complete", "errored"), info


# -- F8: single bit flips in the file --------------------------------------------------------


class Flip(NamedTuple):
    position: int
    stream: str
    column: str
    offset: int
    bit: int


def _flip(db: Path, rng: random.Random, unfinished: set[str]) -> Flip:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT position, stream, type, data, hash FROM events").fetchall()
    finally:
        conn.close()
    blob = bytearray(db.read_bytes())
    candidates = rows
    if rng.random() < 0.5:  # half the flips land in a workflow that the engine replays
        candidates = [r for r in rows if r[1][3:] in unfinished] or rows
    while True:
        position, stream, type_name, data, digest = rng.choice(candidates)
        needle = type_name.encode() + bytes(data) + bytes(digest)
        at = blob.find(needle)
        if at >= 0 and blob.find(needle, at + 1) < 0:
            break
    column = rng.choices(("data", "hash", "type"), weights=(70, 15, 15))[0]
    start, length = {"type": (at, len(type_name.encode())),
                     "data": (at + len(type_name.encode()), len(data)),
                     "hash": (at + len(type_name.encode()) + len(data), len(digest))}[column]
    offset = start + rng.randrange(length)
    bit = rng.randrange(8)
    blob[offset] ^= 1 << bit
    db.write_bytes(bytes(blob))
    return Flip(position, stream, column, offset, bit)


async def _f8(base: Base, tmp_path: Path, label: str, default_seed: int, flips: int) -> None:
    seed = seed_for(label, default_seed)
    rng = random.Random(seed)
    verify_detected = engine_eligible = engine_detected = b4 = 0
    by_column: dict[str, int] = {}
    misses: list[str] = []
    for trial in range(flips):
        db = _copy(base, tmp_path / f"flip{trial % 3}")
        flip = _flip(db, rng, base.unfinished)
        by_column[flip.column] = by_column.get(flip.column, 0) + 1
        status, verdict = _verify(db)
        if status == 1 and verdict.get("position") == flip.position:
            verify_detected += 1
        else:
            misses.append(f"verify missed {flip}: exit {status}, verdict {verdict}")
        wid = flip.stream[3:]
        if flip.column == "type" and flip.bit == 7:
            b4 += 1  # invalid UTF-8 in a TEXT column (B4, fixed): quarantined like the rest
        if wid in base.unfinished:
            engine_eligible += 1
            statuses = await _statuses(db, base)
            state, message = statuses[wid]
            others = {w: m for w, (s, m) in statuses.items() if w != wid and s == "unknown"}
            if state == "unknown" and f"position {flip.position} " in message and not others:
                engine_detected += 1
            else:
                misses.append(f"engine missed {flip}: {wid} is {state} ({message}); "
                              f"also quarantined: {others}")
    summary(f"{label} seed={seed} flips={flips} columns={by_column} "
            f"verify_detected={verify_detected}/{flips} "
            f"engine_detected={engine_detected}/{engine_eligible} (flips in unfinished "
            f"workflows, exact position) of_which_invalid_utf8={b4} "
            f"violations={len(misses)}")
    assert not misses, misses[:10]


async def test_f8_every_flipped_bit_is_found_at_its_exact_position(base: Base,
                                                                   tmp_path: Path) -> None:
    await _f8(base, tmp_path, "F8", 1212, flips=50)


@pytest.mark.slow
async def test_f8_slow_1000_bit_flips(base: Base, tmp_path: Path) -> None:
    await _f8(base, tmp_path, "F8-slow", 1213, flips=1000)


# -- F8h: one flipped bit in a record header changes a value's storage class -----------------


def _varint(value: int) -> bytes:
    """SQLite's big-endian varint (values below 2**56 here)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(out))


def _integer(value: int) -> tuple[int, bytes]:
    """The serial type and bytes SQLite stores an integer as (file format 4)."""
    if value in (0, 1):
        return 8 + value, b""
    for serial, size in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 6), (6, 8)):
        if -(1 << (8 * size - 1)) <= value < 1 << (8 * size - 1):
            return serial, value.to_bytes(size, "big", signed=True)
    raise AssertionError(value)


# The columns whose class one low bit of their serial type changes, keeping the record's
# length: text <-> blob, and an 8-byte integer <-> a float.
_HEADER_COLUMNS = ("stream", "type", "data", "hash", "time_us")


def _flip_class(db: Path, rng: random.Random, unfinished: set[str]) -> Flip:
    """Flip the low bit of one column's serial type in one row's record header."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT position, stream, stream_position, time_us, type, data, "
                            "hash FROM events").fetchall()
    finally:
        conn.close()
    if rng.random() < 0.5:
        rows = [r for r in rows if r[1][3:] in unfinished] or rows
    blob = bytearray(db.read_bytes())
    while True:
        position, stream, version, time_us, type_name, data, digest = rng.choice(rows)
        texts = [stream.encode(), type_name.encode()]
        ints = [_integer(version), _integer(time_us)]
        serials = [0, 2 * len(texts[0]) + 13, ints[0][0], ints[1][0], 2 * len(texts[1]) + 13,
                   2 * len(data) + 12, 2 * len(digest) + 12]
        types = b"".join(_varint(t) for t in serials)
        header = _varint(len(types) + 1) + types  # (header length below 128 here)
        body = texts[0] + ints[0][1] + ints[1][1] + texts[1] + bytes(data) + bytes(digest)
        at = blob.find(header + body)
        column = rng.choice(_HEADER_COLUMNS)
        if at >= 0 and blob.find(header + body, at + 1) < 0 and (
                column != "time_us" or ints[1][0] == 6):
            break
    index = ("position", "stream", "stream_position", "time_us", "type", "data",
             "hash").index(column)
    end = at + 1 + sum(len(_varint(t)) for t in serials[:index + 1])  # its varint's last byte
    blob[end - 1] ^= 1
    db.write_bytes(bytes(blob))
    return Flip(position, stream, f"header:{column}", end - 1, 0)


async def test_f8h_a_bit_flipped_in_a_record_header_is_found_at_its_exact_position(
        base: Base, tmp_path: Path) -> None:
    """The bytes are intact, only a value's storage class changed, and integrity_check
    passes (but for the indexed stream column): verify and the engine name the row, and
    only its workflow stops (log.md L4a)."""
    seed = seed_for("F8h", 1214)
    rng = random.Random(seed)
    misses: list[str] = []
    verify_detected = engine_eligible = engine_detected = 0
    flips = 20
    for trial in range(flips):
        db = _copy(base, tmp_path / f"class{trial % 3}")
        flip = _flip_class(db, rng, base.unfinished)
        if flip.column != "header:stream":  # the stream index still holds it as text
            conn = sqlite3.connect(db)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            finally:
                conn.close()
        status, verdict = _verify(db)
        if status == 1 and verdict.get("position") == flip.position and \
                "storage class" in verdict.get("message", ""):
            verify_detected += 1
        else:
            misses.append(f"verify missed {flip}: exit {status}, verdict {verdict}")
        wid = flip.stream[3:]
        if wid in base.unfinished:
            statuses = await _statuses(db, base)
            state, message = statuses[wid]
            others = {w for w, (s, _) in statuses.items() if w != wid and s == "unknown"}
            if flip.column == "header:stream":  # replay finds the row through the index,
                if state == "unknown" or others:  # which holds its name intact as text
                    misses.append(f"engine stopped {flip}: {statuses}")
                continue
            engine_eligible += 1
            if state == "unknown" and f"position {flip.position} " in message and not others:
                engine_detected += 1
            else:
                misses.append(f"engine missed {flip}: {wid} is {state} ({message}); also "
                              f"quarantined: {others}")
    summary(f"F8h seed={seed} flips={flips} verify_detected={verify_detected}/{flips} "
            f"engine_detected={engine_detected}/{engine_eligible} violations={len(misses)}")
    assert not misses, misses[:10]


# -- F9/F10: valid checksums, bad contents ---------------------------------------------------


def _append_row(db: Path, stream: str, type_name: str, data: bytes) -> int:
    """Append one row with a correct chain hash, bypassing the engine; its position."""
    conn = sqlite3.connect(db)
    try:
        position, prev, time_us = conn.execute(
            "SELECT position, hash, time_us FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        (version,) = conn.execute("SELECT max(stream_position) FROM events WHERE stream = ?",
                                  (stream,)).fetchone()
        position += 1
        digest = chain_hash(bytes(prev), position, stream, version + 1, time_us, type_name,
                            data)
        with conn:
            conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (position, stream, version + 1, time_us, type_name, data, digest))
    finally:
        conn.close()
    return int(position)


def _rewrite_row(db: Path, position: int, type_name: str, data: bytes) -> None:
    """Replace a middle row's type and data and re-chain every later row (a forger
    without a key)."""
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("DROP TRIGGER events_no_update")
            prev = bytes(conn.execute("SELECT hash FROM events WHERE position = ?",
                                      (position - 1,)).fetchone()[0])
            conn.execute("UPDATE events SET type = ?, data = ? WHERE position = ?",
                         (type_name, data, position))
            for row in conn.execute("SELECT position, stream, stream_position, time_us, type, "
                                    "data FROM events WHERE position >= ? ORDER BY position",
                                    (position,)).fetchall():
                prev = chain_hash(prev, row[0], row[1], row[2], row[3], row[4], bytes(row[5]))
                conn.execute("UPDATE events SET hash = ? WHERE position = ?", (prev, row[0]))
    finally:
        conn.close()


_GOOD = encode_event(EventReceived("go", {"id": "x", "v": "go:9", "tok": "t"}))
_VARIANTS: dict[str, tuple[str, bytes]] = {
    "truncated msgpack": ("event.received", _GOOD[:-1]),
    "trailing bytes": ("event.received", _GOOD + b"\x00"),
    "random bytes": ("event.received", bytes(random.Random(7).randrange(256)
                                             for _ in range(64))),
    "100k-deep nesting": ("event.received", b"\x91" * 100_000 + b"\xc0"),
    "invalid UTF-8": ("event.received", _GOOD.replace(b"\xa2go", b"\xa2\xff\xfe")),
    "unknown event type": ("approval_granted_v2",
                           b"\x82\xa1t\xb3approval_granted_v2\xa1v\x03"),
    "tag differs from type": ("event.received", encode_event(WorkflowRunning())),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
@pytest.mark.parametrize("where", ["appended", "middle"])
async def test_f9_f10_undecodable_rows_quarantine_only_their_workflow(
        base: Base, tmp_path: Path, variant: str, where: str) -> None:
    db = _copy(base, tmp_path / "bad")
    victim, other = sorted(base.unfinished)[:2]
    type_name, data = _VARIANTS[variant]
    if where == "appended":
        position = _append_row(db, "wf:" + victim, type_name, data)
    else:  # its workflow.running row, re-chained after (the chain alone cannot tell)
        conn = sqlite3.connect(db)
        (position,) = conn.execute("SELECT min(position) FROM events WHERE stream = ? AND "
                                   "type = 'workflow.running'", ("wf:" + victim,)).fetchone()
        conn.close()
        _rewrite_row(db, position, type_name, data)
    before = _row_bytes(db, position)
    statuses = await _statuses(db, base, feed=other)
    state, message = statuses[victim]
    assert state == "unknown", (variant, statuses[victim])
    assert f"position {position}" in message
    assert statuses[other][0] in ("complete", "errored")  # another workflow finished
    assert all(s != "unknown" for w, (s, _) in statuses.items() if w != victim), statuses
    assert _row_bytes(db, position) == before  # never rewritten
    conn = sqlite3.connect(db)
    (after,) = conn.execute("SELECT count(*) FROM events WHERE stream = ? AND position > ?",
                            ("wf:" + victim, position)).fetchone()
    conn.close()
    assert after == (0 if where == "appended" else _later_rows(base, victim, position))
    async with eventwf.open_engine(db, agents=[CampaignAgent],
                                   workflows={BINDING: CampaignWorkflow},
                                   wall_clock=virtual_wall) as engine:
        with pytest.raises(eventwf.CorruptLogError) as error:
            await engine.wait_workflow(victim)
    assert error.value.position == position
    summary(f"F9/F10 [{variant}, {where}] position={position} quarantined={victim} "
            f"others_served=1 violations=0")


def _row_bytes(db: Path, position: int) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        return tuple(conn.execute("SELECT * FROM events WHERE position = ?",
                                  (position,)).fetchone())
    finally:
        conn.close()


def _later_rows(base: Base, wid: str, position: int) -> int:
    conn = sqlite3.connect(base.db)
    try:
        return int(conn.execute("SELECT count(*) FROM events WHERE stream = ? AND position > ?",
                                ("wf:" + wid, position)).fetchone()[0])
    finally:
        conn.close()


async def test_f10_a_log_from_a_newer_schema_is_refused_and_left_untouched(
        base: Base, tmp_path: Path) -> None:
    db = _copy(base, tmp_path / "newer")
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    conn.close()
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    for _ in range(2):  # refused both times: the first refusal released the writer lock
        with pytest.raises(eventwf.SchemaVersionError, match="newer than this eventwf"):
            async with eventwf.open_engine(db, agents=[CampaignAgent],
                                           workflows={BINDING: CampaignWorkflow},
                                           wall_clock=virtual_wall):
                pass  # pragma: no cover
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    summary("F10 [newer schema] refused=2 file_unchanged=1 violations=0")
