"""Shard leases and stream claims of a PostgreSQL log several engines share (PG12-PG13).

Theory of operation. Agents (and their workflows) are spread over a fixed number of shards
(``shard_sql.shard_of``); an engine works a shard only while it holds its lease row, timed
by the database's clock alone. Engines also say they are alive (``eventwf.engines``), so each
can tell its fair share of the shards. Taking a shard over is not enough to fence off a
previous owner that is paused past its lease: the new owner claims each stream it resumes
(a ``stream.claimed`` row at the stream's head), so the old owner's next append collides on
``UNIQUE(stream, stream_position)`` and commits nothing. This module runs the statements on
the store's connection; the engine's runtime decides when (``runtime/ownership.py``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Concatenate, ParamSpec, TypeVar

import psycopg

from eventwf.errors import StorageError, StreamsTakenError
from eventwf.store.interface import Lease
from eventwf.store.postgres import shard_sql, sql
from eventwf.store.postgres.sql import Conn

__all__ = ["PgSharding"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _translated(method: Callable[Concatenate[PgSharding, _P], _T]
                ) -> Callable[Concatenate[PgSharding, _P], _T]:
    """Driver errors as ``StorageError`` (not fatal: the lease task tries again)."""

    def call(self: PgSharding, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            with self.lock:  # the store's session is shared with its commits (a thread)
                return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise StorageError(f"{method.__name__} of shard leases failed: {exc}") from exc

    functools.update_wrapper(call, method)
    return call


class PgSharding:
    """The ``Sharding`` of a PostgreSQL store (``eventwf.store.interface.Sharding``)."""

    def __init__(self, conn: Callable[[], Conn], genesis: bytes, shards: int,
                 claimed: Callable[[], None],
                 lock: AbstractContextManager[object] | None = None) -> None:
        self._conn = conn  # the store's current connection (it may reconnect)
        self.lock = lock if lock is not None else threading.RLock()  # the store's
        self._genesis = genesis
        self._shards = shards
        self._claimed = claimed  # tells the store its cached stream heads moved

    @property
    def shards(self) -> int:
        return self._shards

    def shard_of(self, agent_class: str, name: str) -> int:
        return shard_sql.shard_of(agent_class, name, self._shards)

    @_translated
    def heartbeat(self, owner: str, ttl: float) -> tuple[int, int]:
        return shard_sql.heartbeat(self._conn(), owner, ttl)

    @_translated
    def take(self, owner: str, ttl: float, limit: int) -> list[Lease]:
        if limit <= 0:
            return []
        conn = self._conn()
        chosen = shard_sql.free_shards(conn)[:limit]
        released = [shard for shard, free in chosen if free]
        expired = [shard for shard, free in chosen if not free]
        won = [Lease(lease.shard, lease.epoch, True) for lease in
               shard_sql.take_shards(conn, owner, released, ttl, only_free=True)
               ] if released else []
        if expired:  # (a lease released meanwhile is taken as if expired: claims are safe)
            won += [Lease(lease.shard, lease.epoch) for lease in
                    shard_sql.take_shards(conn, owner, expired, ttl)]
        return sorted(won)

    @_translated
    def renew(self, owner: str, held: Sequence[Lease], ttl: float) -> list[Lease]:
        if not held:
            return []
        kept = shard_sql.renew_leases(self._conn(), owner, [_row(lease) for lease in held], ttl)
        return [Lease(lease.shard, lease.epoch) for lease in kept]

    @_translated
    def release(self, owner: str, held: Sequence[Lease]) -> None:
        if held:
            shard_sql.release_leases(self._conn(), owner, [_row(lease) for lease in held])

    @_translated
    def leave(self, owner: str) -> None:
        shard_sql.leave(self._conn(), owner)

    @_translated
    def claim(self, streams: Sequence[str], data: bytes, time_us: int) -> dict[str, int]:
        if not streams:
            return {}
        try:
            claimed = shard_sql.claim_streams(self._conn(), list(streams),
                                              genesis=self._genesis, time_us=time_us, data=data)
        except sql.VersionConflict as exc:
            raise StreamsTakenError(f"claiming {len(streams)} stream(s): {exc}",
                                    tuple(s for s, _, _ in exc.conflicts)) from exc
        finally:
            self._claimed()
        return claimed


def _row(lease: Lease) -> shard_sql.Lease:
    return shard_sql.Lease(lease.shard, None, lease.epoch, None)
