"""The PostgreSQL backend of the storage interface (``eventwf.store.interface.LogStore``).

Theory of operation. Several engines may share one database (specs/postgres.md PG6-PG13):
positions come from the ``events`` identity column (unique, with gaps) and a commit tells
the writer which ones its rows got; every row names the version its stream must reach,
so a stream another engine took commits nothing (``StreamsTakenError``: ownership lost,
not fatal). Shard leases and claims are ``sharding`` (``shards.py``). Like the SQLite
store, it is called synchronously from the trio thread: each call is one short
transaction (autocommit reads; ``BEGIN … COMMIT`` for an append, with the event rows,
the projection rows they change and the inbox rows they consume, PG15), and nothing
awaits inside it (PG20). An inbox row found gone rolls the batch back
(``RequestsWithdrawnError``, not fatal).

A commit that fails with the session alive was rolled back: ``StorageError``, nothing of
it is in the log. One whose session was lost has an unknown outcome, settled as PG10 says:
on a new session, the old one is ended and waited for, then the batch's first row is
looked up (landed: the positions are returned; absent: ``StorageError``, retry).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from typing import Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import psycopg

from eventwf.errors import RequestsWithdrawnError, StorageError, StreamsTakenError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Recorded
from eventwf.model.inbox_codec import PENDING_REPLY
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import Consumed, OpenReport, PendingRow, Project, TrackingQuery
from eventwf.store.postgres import lock, log, schema, sql
from eventwf.store.postgres import projections as proj
from eventwf.store.postgres.rebuild import rebuild_projections
from eventwf.store.postgres.shards import PgSharding
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
        with self.lock:  # one user of the session at a time (a commit runs in a thread)
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
        self._url = url
        self._uncertain: str | None = None
        self._rebuild = False
        # The writer commits from a worker thread (``commits_in_thread``) while the engine's
        # thread may call the other methods: each holds this lock while it uses the session,
        # so no statement runs inside another caller's transaction.
        self.lock = threading.RLock()
        self.conn: Conn = self._connect()
        try:
            self._open()
        except psycopg.Error as exc:
            self.conn.close()
            raise StorageError(f"{self.path} cannot be opened as an eventwf log: {exc}"
                               ) from exc
        except BaseException:
            self.conn.close()
            raise

    def _connect(self) -> Conn:
        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=10,
                                   application_name=lock.application_name())
        except psycopg.Error as exc:
            raise StorageError(f"{self.path} cannot be opened: {exc}") from exc

    def _open(self) -> None:
        if self.readonly:
            self.conn.execute("SET default_transaction_read_only = on")
            if self.conn.execute("SELECT to_regclass('eventwf.meta')").fetchone() == (None,):
                raise StorageError(f"{self.path} holds no eventwf log (no eventwf.meta table)")
            genesis = schema.get_meta(self.conn, "genesis")
            if genesis is None:
                raise StorageError(f"{self.path} is not an eventwf log (no genesis in meta)")
            self.genesis = bytes.fromhex(genesis)
            shards = int(schema.get_meta(self.conn, "shards") or sql.DEFAULT_SHARDS)
        else:
            info, self._rebuild = schema.create(self.conn, self.path)
            self.genesis, shards = info.genesis, info.shards
        row = self.conn.execute("SELECT max(position) FROM eventwf.events").fetchone()
        self.head: int = 0 if row is None or row[0] is None else int(row[0])
        self._heads = log.Heads(self.genesis)
        self._sharding = PgSharding(lambda: self.conn, self.genesis, shards,
                                    self._heads.forget, self.lock)

    @property
    def commits_in_thread(self) -> bool:
        """True: a commit waits on the server; the engine goes on meanwhile (:attr:`lock`)."""
        return True

    @property
    def sharding(self) -> PgSharding:
        """Shard leases and claims (PG12-PG13): several engines may share this log."""
        return self._sharding

    def close(self) -> None:
        """Record what is verified (if it can), then let the session, and its lock, go."""
        with self.lock:
            self._close()

    def _close(self) -> None:
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
               agents: Sequence[AgentSummary] = (), *, project: Project | None = None,
               consumes: Sequence[Consumed] = ()) -> list[int]:
        """Append ``rows``, consume the inbox requests ``consumes`` names (PG15) and upsert
        the projection rows in one transaction; the positions the rows got from the
        identity (see the module's docstring for failures)."""
        with self.lock:
            return self._commit(rows, workflows, agents, project, consumes)

    def _commit(self, rows: Sequence[PendingRow], workflows: Sequence[WorkflowSummary],
                agents: Sequence[AgentSummary], project: Project | None,
                consumes: Sequence[Consumed]) -> list[int]:
        if self._uncertain is not None:
            raise StorageError(self._uncertain, fatal=True)
        conn = self.conn
        positions: list[int] = []
        new: list[sql.NewEvent] = []

        def insert(cur: psycopg.Cursor[psycopg.rows.TupleRow],
                   batch: Sequence[sql.NewEvent]) -> list[int]:
            positions[:] = sql.insert_rows(cur, batch)
            return positions

        def then(c: Conn) -> None:
            if consumes:
                sql.consume_requests(c, consumes, PENDING_REPLY)
            wfs, ags = (workflows, agents) if project is None else project(positions)
            if wfs:
                proj.write_workflows(c, [workflow_row(s) for s in wfs])
            if ags:
                proj.write_agents(c, [agent_row(s) for s in ags])

        try:
            new, heads = self._heads.chain(conn, rows)
            sql.commit_batch(conn, new, insert=insert, then=then)
        except sql.VersionConflict as exc:
            self._heads.forget()
            raise StreamsTakenError(f"{self.path}: {exc}",
                                    tuple(s for s, _, _ in exc.conflicts)) from exc
        except sql.RequestsGone as exc:
            raise RequestsWithdrawnError(f"{self.path}: {exc}; nothing of this batch was "
                                         "committed", exc.request_ids) from exc
        except psycopg.Error as exc:
            self._heads.forget()
            if not (conn.closed or conn.broken):
                self._failed(exc, len(rows))
            positions = self._settle(exc, conn, new)
        self.head = max(self.head, *positions)
        self._heads.advance(heads)
        return positions

    def _settle(self, exc: psycopg.Error, lost: Conn, new: Sequence[sql.NewEvent]
                ) -> list[int]:
        """The outcome of a commit whose session was lost (PG10): end that session on a
        new one, wait until it is gone, then look the batch's first row up. Landed: its
        positions; not landed: ``StorageError`` (final: nothing of it will appear)."""
        if not new:  # lost before anything was sent
            self.conn = self._reconnect(exc, lost)
            raise StorageError(f"could not commit to {self.path}: the connection was lost "
                               f"({exc}) before the batch was sent; it did not land") from exc
        return self._settle_sent(exc, lost, new)

    def _reconnect(self, exc: psycopg.Error, lost: Conn) -> Conn:
        try:
            conn = self._connect()
        except StorageError as again:
            self._uncertain = (f"{self.path}: the connection was lost during a commit ({exc}) "
                               f"and the database cannot be reached ({again}); reopen the "
                               "engine to replay what the log holds")
            raise StorageError(self._uncertain, fatal=True) from exc
        lost.close()
        return conn

    def _settle_sent(self, exc: psycopg.Error, lost: Conn, new: Sequence[sql.NewEvent]
                     ) -> list[int]:
        """The outcome of a commit whose session was lost (PG10): end that session on a
        new one, wait until it is gone, then look the batch's first row up. Landed: its
        positions; not landed: ``StorageError`` (final: nothing of it will appear)."""
        pid = lost.info.backend_pid
        conn = self.conn = self._reconnect(exc, lost)
        try:
            sql.settle_backend(conn, pid)
            landed = sql.batch_landed(conn, new[0])
            if landed:
                return log.positions_of(conn, [(e.stream, e.stream_position) for e in new])
        except sql.VersionConflict as taken:
            raise StreamsTakenError(f"{self.path}: {taken}",
                                    tuple(s for s, _, _ in taken.conflicts)) from exc
        except (psycopg.Error, TimeoutError) as failed:
            self._uncertain = (f"{self.path}: the outcome of a commit is unknown ({exc}; "
                               f"settling it failed: {failed}); reopen the engine")
            raise StorageError(self._uncertain, fatal=True) from exc
        raise StorageError(f"could not commit {len(new)} event(s) to {self.path}: the "
                           f"connection was lost ({exc}) and the batch did not land") from exc

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
            with self.lock:
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
    def workflow_statuses(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        return proj.workflow_statuses(self.conn, workflow_ids)

    @_translated
    def load_workflow(self, workflow_id: str) -> WorkflowSummary | None:
        summary = proj.load_workflow(self.conn, workflow_id, -1)
        if summary is None:
            return None
        return msgspec.structs.replace(summary, head=self.stream_head("wf:" + workflow_id))

    @_translated
    def unfinished_workflows(self, shards: Collection[int] | None = None
                             ) -> list[WorkflowSummary]:
        rows = proj.unfinished_rows(self.conn)
        if shards is not None:  # column 2, 3: the agent's class and name
            rows = [row for row in rows if self._sharding.shard_of(row[2], row[3]) in shards]
        return [summary_from_row(row, self.stream_head("wf:" + row[0])) for row in rows]

    @_translated
    def load_agent(self, agent_class: str, name: str) -> AgentSummary | None:
        head = self.stream_head(f"agent:{agent_class}/{name}")
        return proj.load_agent(self.conn, agent_class, name, head)

    @_translated
    def agents_with_pending_callbacks(self, shards: Collection[int] | None = None
                                      ) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT agent_class, agent_name FROM eventwf.agents WHERE last_callback > "
            "delivered_through AND corrupt_position IS NULL "
            "ORDER BY agent_class COLLATE \"C\", agent_name COLLATE \"C\"").fetchall()
        return [(str(a), str(b)) for a, b in rows
                if shards is None or self._sharding.shard_of(str(a), str(b)) in shards]

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
