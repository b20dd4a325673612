"""PostgreSQL statements of shard leases, live engines and stream claims (PG12, PG12a, PG13).

Theory of operation. Agents (and their workflows) are spread over a fixed number of
shards (:func:`shard_of`); a shard's lease row says which engine works it and until when,
timed by the database's clock alone, so engines whose clocks disagree still agree on who
holds what. Engines also record that they are alive (``eventwf.engines``), so each can
tell its fair share. A new owner fences off a paused previous one by appending a claim
marker (``CLAIM_TYPE``) at the head of each stream it resumes: the old owner's next
append then collides on ``UNIQUE(stream, stream_position)`` (:class:`VersionConflict`).

These statements are their own module because they are a job apart from the log's
(``sql.py``: the schema, appends and reads): who may write, not what is written. Only the
claim touches the log, through ``sql.commit_batch``. The functions take a psycopg 3
connection in autocommit mode, as ``sql.py``'s do, and bind every value. This module
imports only psycopg, the standard library and ``sql.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from hashlib import blake2b
from typing import Any, NamedTuple

from eventwf.store.postgres.sql import (
    Conn,
    NewEvent,
    VersionConflict,
    commit_batch,
    stream_hash,
    stream_heads,
)

__all__ = [
    "CLAIM_TYPE", "Lease", "claim_streams", "free_shards", "heartbeat", "leases", "leave",
    "release_leases", "renew_leases", "shard_of", "take_shards",
]

CLAIM_TYPE = "stream.claimed"


class Lease(NamedTuple):
    shard: int
    owner: str | None
    epoch: int
    expires_at: datetime | None  # by the database's clock; None: nobody holds it


@functools.lru_cache(maxsize=1 << 16)  # asked for every event staged: hash each agent once
def shard_of(agent_class: str, agent_name: str, shards: int) -> int:
    """The shard of an agent (and of its workflows): stable across processes and versions."""
    digest = blake2b(f"{agent_class}/{agent_name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def _leases(rows: Iterable[tuple[Any, ...]]) -> list[Lease]:
    return sorted(Lease(int(s), None if o is None else str(o), int(e), x)
                  for s, o, e, x in rows)


def take_shards(conn: Conn, owner: str, shards: Sequence[int], ttl: float, *,
                only_free: bool = False) -> list[Lease]:
    """Take the shards among ``shards`` whose lease has expired (by the database clock), a
    new epoch each; the leases won. Of engines racing for a shard, one wins. ``only_free``:
    only leases nobody holds (released), not expired ones."""
    return _leases(conn.execute(
        "UPDATE eventwf.shard_leases SET owner = %s, epoch = epoch + 1, "
        "expires_at = now() + %s WHERE shard = ANY(%s) "
        "AND (expires_at IS NULL OR expires_at < now()) AND (owner IS NULL OR NOT %s) "
        "RETURNING shard, owner, epoch, expires_at",
        (owner, timedelta(seconds=ttl), list(shards), only_free)).fetchall())


def renew_leases(conn: Conn, owner: str, held: Sequence[Lease], ttl: float) -> list[Lease]:
    """Extend every lease in ``held`` that is still this owner's, in that epoch, and not yet
    expired, in one statement; the leases kept. A missing shard was lost: stop its work."""
    return _leases(conn.execute(
        "UPDATE eventwf.shard_leases l SET expires_at = now() + %s "
        "FROM unnest(%s::int[], %s::bigint[]) AS mine(shard, epoch) "
        "WHERE l.shard = mine.shard AND l.epoch = mine.epoch AND l.owner = %s "
        "AND l.expires_at > now() RETURNING l.shard, l.owner, l.epoch, l.expires_at",
        (timedelta(seconds=ttl), [h.shard for h in held], [h.epoch for h in held], owner)
    ).fetchall())


def release_leases(conn: Conn, owner: str, held: Sequence[Lease]) -> list[int]:
    """Give leases up at once (a clean close), so others need not wait for them to expire."""
    rows = conn.execute(
        "UPDATE eventwf.shard_leases l SET owner = NULL, expires_at = NULL "
        "FROM unnest(%s::int[], %s::bigint[]) AS mine(shard, epoch) "
        "WHERE l.shard = mine.shard AND l.epoch = mine.epoch AND l.owner = %s "
        "RETURNING l.shard", ([h.shard for h in held], [h.epoch for h in held], owner)
    ).fetchall()
    return sorted(int(r[0]) for r in rows)


def free_shards(conn: Conn) -> list[tuple[int, bool]]:
    """The shards nobody holds now, each with whether it was released (True) or its lease
    expired (False: its last holder may still be paused, so a new owner claims, PG13)."""
    rows = conn.execute("SELECT shard, owner IS NULL FROM eventwf.shard_leases WHERE "
                        "expires_at IS NULL OR expires_at < now() ORDER BY shard").fetchall()
    return [(int(r[0]), bool(r[1])) for r in rows]


def heartbeat(conn: Conn, owner: str, ttl: float) -> tuple[int, int]:
    """Record that ``owner`` lives for ``ttl`` more seconds (by the database's clock) and
    forget engines long gone; how many engines are alive, ``owner`` included (PG12a), and
    the database's clock in µs since the epoch (PG19: the engine compares its own)."""
    with conn.transaction():
        conn.execute("INSERT INTO eventwf.engines (owner, expires_at) VALUES (%s, now() + %s) "
                     "ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at",
                     (owner, timedelta(seconds=ttl)))
        conn.execute("DELETE FROM eventwf.engines WHERE expires_at < now() - interval '1 hour'")
        row = conn.execute(
            "SELECT count(*), (extract(epoch FROM clock_timestamp()) * 1000000)::bigint "
            "FROM eventwf.engines WHERE expires_at > now()").fetchone()
    assert row is not None  # an aggregate always returns its row
    return max(1, int(row[0])), int(row[1])


def leave(conn: Conn, owner: str) -> None:
    """``owner`` closes cleanly: no longer counted among the live engines."""
    conn.execute("DELETE FROM eventwf.engines WHERE owner = %s", (owner,))


def leases(conn: Conn) -> list[Lease]:
    rows = conn.execute("SELECT shard, owner, epoch, expires_at FROM eventwf.shard_leases")
    return _leases(rows.fetchall())


def claim_streams(conn: Conn, streams: Sequence[str], *, genesis: bytes,
                  time_us: int, data: bytes, attempts: int = 5) -> dict[str, int]:
    """Append a claim marker (``CLAIM_TYPE``, ``data`` from the caller's codec) to each
    stream, in one transaction, after the head read just before; the claimed versions. A
    writer still holding an older head then collides (PG13). Retries while another writer
    keeps appending; :class:`VersionConflict` after ``attempts``."""
    for attempt in range(1, attempts + 1):
        heads = stream_heads(conn, streams)
        rows = []
        for stream in streams:
            head = heads[stream]
            prev = genesis if head.hash is None else head.hash
            version = head.version + 1
            rows.append(NewEvent(stream, version, time_us, CLAIM_TYPE, data,
                                 stream_hash(prev, stream, version, time_us, CLAIM_TYPE, data)))
        try:
            commit_batch(conn, rows)
        except VersionConflict:
            if attempt < attempts:
                continue
            raise
        break
    return {row.stream: row.stream_position for row in rows}
