"""The PostgreSQL backend of the storage interface (``eventwf.store.interface.LogStore``).

Theory of operation. One engine per database in this version: the writer lock is a
session advisory lock on the one connection this store writes and reads with (``lock``).
Like the SQLite store, it is called synchronously from the trio thread: each call is one
short transaction (autocommit reads; ``BEGIN … COMMIT`` for an append, with the event rows
and the projection rows they change), and nothing awaits inside it. A hop to a worker
thread per call would cost ~140 µs (specs/postgres.md PG3) and let
``MockClock(autojump_threshold=0)`` jump past deadlines while a query runs (PG3a); inline,
the engine's timing and its tests are the SQLite ones. The cost: the event loop waits for
each round trip, which one engine per database on a nearby server can afford
(specs/postgres.md "One engine per database").

A commit that fails with the session alive was rolled back: ``StorageError``, nothing of
it is in the log. One that fails because the session was lost (its outcome unknown, and
the writer lock gone with it), or that the database refuses as contradicting memory
(a version or position already taken), is fatal: the engine stops, and reopening it
replays what the log holds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg

from eventwf.errors import StorageError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Recorded
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import OpenReport, PendingRow, TrackingQuery
from eventwf.store.postgres import lock, log, schema
from eventwf.store.postgres import projections as proj
from eventwf.store.postgres.rebuild import rebuild_projections
from eventwf.store.postgres.sql import Conn
from eventwf.store.rows import agent_row, summary_from_row, workflow_row

__all__ = ["PostgresStore", "shown_url"]

logger = logging.getLogger("eventwf")

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _translated(method: Callable[Concatenate[PostgresStore, _P], _T]
                ) -> Callable[Concatenate[PostgresStore, _P], _T]:
    """Driver errors of a store call as ``StorageError`` (fatal once the session is lost:
    the writer lock went with it, so this store writes nothing more)."""

    def call(self: PostgresStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise self.failed_call(exc, method.__name__) from exc

    functools.update_wrapper(call, method)
    return call


def shown_url(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class PostgresStore:
    """One engine's log in a PostgreSQL database (implements ``LogStore``)."""

    def __init__(self, url: str, *, readonly: bool = False) -> None:
        self.path = shown_url(url)
        self.readonly = readonly
        self._uncertain: str | None = None
        self._rebuild = False
        try:
            self.conn: Conn = psycopg.connect(url, autocommit=True, connect_timeout=10,
                                              application_name=lock.application_name())
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be opened: {exc}") from exc
        try:
            self._open()
        except psycopg.Error as exc:
            self.conn.close()
            raise StorageError(f"{self.path} cannot be opened as an eventwf log: {exc}"
                               ) from exc
        except BaseException:
            self.conn.close()
            raise

    def _open(self) -> None:
        if self.readonly:
            self.conn.execute("SET default_transaction_read_only = on")
            if self.conn.execute("SELECT to_regclass('eventwf.meta')").fetchone() == (None,):
                raise StorageError(f"{self.path} holds no eventwf log (no eventwf.meta table)")
            genesis = schema.get_meta(self.conn, "genesis")
            if genesis is None:
                raise StorageError(f"{self.path} is not an eventwf log (no genesis in meta)")
            self.genesis = bytes.fromhex(genesis)
        else:
            lock.acquire(self.conn, self.path)
            info, self._rebuild = schema.create(self.conn, self.path)
            self.genesis = info.genesis
        row = self.conn.execute("SELECT max(position) FROM eventwf.events").fetchone()
        self.head: int = 0 if row is None or row[0] is None else int(row[0])
        if not self.readonly and self.head:  # the identity follows the writer's positions
            self.conn.execute("SELECT setval(pg_get_serial_sequence('eventwf.events', "
                              "'position'), %s)", (self.head,))
        self._heads = log.Heads(self.genesis)

    def close(self) -> None:
        """Record what is verified (if it can), then let the session, and its lock, go."""
        try:
            if not self.readonly and self._uncertain is None and not self.conn.closed:
                try:
                    self.mark_verified()
                except (psycopg.Error, StorageError) as exc:
                    logger.error("%s: could not record that the log is verified through "
                                 "position %d (%s); the next open verifies it again",
                                 self.path, self.head, exc)
        finally:
            self.conn.close()

    # -- writing -------------------------------------------------------------------------

    def commit(self, rows: Sequence[PendingRow], workflows: Sequence[WorkflowSummary] = (),
               agents: Sequence[AgentSummary] = ()) -> int:
        """Append ``rows`` (positions from the head on) and upsert the projection rows in
        one transaction; the position of the first row (see the module's docstring for
        what a failure means)."""
        if self._uncertain is not None:
            raise StorageError(self._uncertain, fatal=True)
        first = self.head + 1
        conn = self.conn
        try:
            values, heads = self._heads.chain(conn, first, rows)
            with conn.transaction(), conn.cursor() as cur:
                log.insert_events(cur, values)
                if workflows:
                    proj.write_workflows(conn, [workflow_row(s) for s in workflows])
                if agents:
                    proj.write_agents(conn, [agent_row(s) for s in agents])
        except psycopg.Error as exc:
            self._heads.forget()
            self._failed(exc, len(rows))
        self.head = first + len(values) - 1
        self._heads.advance(heads)
        return first

    def _failed(self, exc: psycopg.Error, count: int) -> None:
        """Raise the StorageError a failed commit means (fatal when memory and the log may
        disagree: see the module's docstring)."""
        if isinstance(exc, psycopg.errors.IntegrityError):
            self._uncertain = f"{self.path}: the log disagrees with this engine ({exc})"
        elif self.conn.closed or self.conn.broken:
            self._uncertain = (f"{self.path}: the connection was lost during a commit ({exc}); "
                               "its outcome is unknown: reopen the engine to replay what the "
                               "log holds")
        if self._uncertain is not None:
            raise StorageError(self._uncertain, fatal=True) from exc
        raise StorageError(f"could not commit {count} event(s) to {self.path}: {exc}") from exc

    def failed_call(self, exc: psycopg.Error, what: str) -> StorageError:
        """The ``StorageError`` for a call other than ``commit`` that the driver failed."""
        if self.conn.closed or self.conn.broken:
            self._uncertain = self._uncertain or (
                f"{self.path}: the connection was lost ({exc}); reopen the engine")
            return StorageError(self._uncertain, fatal=True)
        return StorageError(f"{self.path}: {what} failed: {exc}")

    @_translated
    def write_projections(self, workflows: Sequence[WorkflowSummary] = (),
                          agents: Sequence[AgentSummary] = ()) -> None:
        """Projection rows that no event changes (a quarantine found while reading)."""
        with self.conn.transaction():
            proj.write_workflows(self.conn, [workflow_row(s) for s in workflows])
            proj.write_agents(self.conn, [agent_row(s) for s in agents])

    # -- opening -------------------------------------------------------------------------

    @_translated
    def open_checks(self, *, quiet: bool = False) -> OpenReport:
        """Rebuild projections of another shape or that fail their row checks, then verify
        the rows written since the last verification (each against its stream's chain)."""
        if self._rebuild:
            if self.head and not quiet:
                logger.warning("projections of %s have another shape; rebuilding them",
                               self.path)
            rebuild_projections(self.conn, self.genesis)
            self._rebuild = False
        else:
            self.check_projections()
        start = int(schema.get_meta(self.conn, "verified_through") or "0")
        problems = [(row.position, row.stream,
                     f"event at log position {row.position}: {row.problem}")
                    for row in log.checked_rows(self.conn, self.genesis, after=start)
                    if row.problem is not None]
        self.mark_verified()
        return OpenReport(problems, None)

    @_translated
    def check_projections(self) -> bool:
        """Check every projection row; rebuild the tables from the log if one fails."""
        count, named = proj.damaged_rows(self.conn)
        if not count:
            return False
        logger.warning("%s: %d projection row(s) do not match their check value (%s%s); "
                       "rebuilding the projections from the log", self.path, count,
                       "; ".join(named), "; ..." if count > len(named) else "")
        rebuild_projections(self.conn, self.genesis)
        return True

    def mark_verified(self) -> None:
        """Record that the log is verified through its head."""
        if not self.readonly:
            schema.set_meta(self.conn, "verified_through", str(self.head))

    # -- reading -------------------------------------------------------------------------

    @_translated
    def read_stream(self, stream: str, from_stream_position: int = 0, *,
                    after_position: int = 0) -> list[Recorded]:
        return log.read_stream(self.conn, self.genesis, stream, from_stream_position,
                               after_position=after_position)

    @_translated
    def stream_head(self, stream: str) -> int:
        return log.stream_head(self.conn, stream)

    @_translated
    def load_workflow(self, workflow_id: str) -> WorkflowSummary | None:
        summary = proj.load_workflow(self.conn, workflow_id, -1)
        if summary is None:
            return None
        return msgspec.structs.replace(summary, head=self.stream_head("wf:" + workflow_id))

    @_translated
    def unfinished_workflows(self) -> list[WorkflowSummary]:
        return [summary_from_row(row, self.stream_head("wf:" + row[0]))
                for row in proj.unfinished_rows(self.conn)]

    @_translated
    def load_agent(self, agent_class: str, name: str) -> AgentSummary | None:
        head = self.stream_head(f"agent:{agent_class}/{name}")
        return proj.load_agent(self.conn, agent_class, name, head)

    @_translated
    def agents_with_pending_callbacks(self) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT agent_class, agent_name FROM eventwf.agents WHERE last_callback > "
            "delivered_through AND corrupt_position IS NULL "
            "ORDER BY agent_class COLLATE \"C\", agent_name COLLATE \"C\"").fetchall()
        return [(str(a), str(b)) for a, b in rows]

    @_translated
    def binding_counts(self) -> list[tuple[str, int, int]]:
        """(binding, active, finished) for every binding with workflows in the log."""
        rows = self.conn.execute(
            "SELECT workflow_name, "
            "count(*) FILTER (WHERE status NOT IN ('complete', 'errored', 'terminated')), "
            "count(*) FILTER (WHERE status IN ('complete', 'errored', 'terminated')) "
            "FROM eventwf.workflows GROUP BY workflow_name "
            "ORDER BY workflow_name COLLATE \"C\"").fetchall()
        return [(str(name), int(active), int(finished)) for name, active, finished in rows]

    @_translated
    def query_workflows(self, query: TrackingQuery, *, ascending: bool, limit: int | None,
                        after: tuple[int, str] | None = None) -> list[WorkflowSummary]:
        return proj.query_workflows(self.conn, query, ascending=ascending, limit=limit,
                                    after=after)

    @_translated
    def count_workflows(self, query: TrackingQuery) -> int:
        return proj.count_workflows(self.conn, query)

    @_translated
    def workflow_ids(self, agent_class: str, agent_name: str, binding: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT workflow_id FROM eventwf.workflows WHERE agent_class = %s AND "
            "agent_name = %s AND workflow_name = %s AND status != 'unknown' "
            "ORDER BY workflow_id COLLATE \"C\"", (agent_class, agent_name, binding)).fetchall()
        return [str(row[0]) for row in rows]
