"""The SQLite backend of the storage interface (``eventwf.store.interface.LogStore``).

One connection, used synchronously from the trio thread. Every write is one ``BEGIN
IMMEDIATE … COMMIT`` run without yielding, holding the event rows and the projection rows
they change. A commit that raises leaves the outcome unknown for an instant; since only
this engine writes (see ``lock.WriterLock``), reading the head back tells which it was.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

import msgspec

from eventwf import faults
from eventwf.errors import StorageError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.events import Recorded
from eventwf.model.workflow_fold import WorkflowSummary
from eventwf.store.interface import (
    Consumed,
    OpenReport,
    PendingRow,
    Project,
    Sharding,
    TrackingQuery,
)
from eventwf.store.sqlite import opening
from eventwf.store.sqlite import projections as proj
from eventwf.store.sqlite.anchor import Anchor, write_anchor
from eventwf.store.sqlite.lock import WriterLock, log_home
from eventwf.store.sqlite.log import chain_hash, read_stream, stream_head
from eventwf.store.sqlite.rebuild import Folded, fold_log, fold_tentatively
from eventwf.store.sqlite.schema import (
    connect,
    create_schema,
    get_meta,
    meta_position,
    parse_genesis,
    record_home,
    refuse_emptied,
    refuse_lost_log,
    set_meta,
)
from eventwf.store.sqlite.transaction import transaction

__all__ = ["SQLiteStore"]

logger = logging.getLogger("eventwf")


_INSERT = ("INSERT INTO events(position, stream, stream_position, time_us, type, data, hash) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")


_SQLITE_IOERR = 10


def _is_io_error(exc: sqlite3.Error) -> bool:
    """SQLITE_IOERR and its extended codes (fsync, write, ...); injected faults say so."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_IOERR
    return "disk i/o error" in str(exc).lower()


class SQLiteStore:
    """The log file and its projections (implements ``LogStore``)."""

    def __init__(self, path: str, *, readonly: bool = False, synchronous: str = "FULL") -> None:
        self.path = path
        self.readonly = readonly
        self._lock: WriterLock | None = None
        self._uncertain: str | None = None
        if not readonly and path != ":memory:":
            self._lock = WriterLock(path)
            self._lock.acquire()
        try:
            self.path = log_home(path)  # one name per file, so one WAL (see lock.py)
            if self._lock is not None:
                self._lock.name_holder(self.path)
            self._open(self.path, readonly, synchronous)
        except sqlite3.Error as exc:  # disk full, I/O error, a file that is no log: say so
            self.close()
            raise StorageError(f"{path} cannot be opened as an eventwf log: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, readonly: bool, synchronous: str) -> None:
        if not readonly and path != ":memory:" and os.path.getsize(path) == 0:
            refuse_emptied(path, "the file is empty")  # before WAL mode writes a header
        self.conn = connect(path, readonly=readonly, synchronous=synchronous)
        if not readonly:
            refuse_lost_log(self.conn, path)
            create_schema(self.conn)
            record_home(self.conn, self.path)
        try:
            genesis = get_meta(self.conn, "genesis")
        except sqlite3.Error as exc:
            raise StorageError(f"{path} cannot be read as an eventwf log (not one, or "
                               f"damaged): {exc}") from exc
        if genesis is None:
            raise StorageError(f"{path} is not an eventwf log (no genesis in its meta table)")
        self.genesis = parse_genesis(path, genesis)
        row = self.conn.execute(  # the hash as its bytes, whatever its storage class
            "SELECT position, CAST(hash AS BLOB) FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        self.head: int = 0 if row is None else int(row[0])
        self.head_hash: bytes = self.genesis if row is None else bytes(row[1] or b"")

    def close(self) -> None:
        """Record the verification mark and the anchor (if it can), then let the file go.

        The connection and the writer lock are released whatever happens, so a full disk
        at close never keeps the log locked; a mark that cannot be written is logged (the
        next open then verifies a longer tail).
        """
        conn = getattr(self, "conn", None)
        try:
            if conn is not None and self._lock is not None and self._uncertain is None \
                    and hasattr(self, "head_hash"):
                try:
                    self.mark_verified()
                except (sqlite3.Error, OSError) as exc:
                    logger.error("%s: could not record that the log is verified through "
                                 "position %d (%s); the next open verifies it again",
                                 self.path, self.head, exc)
        finally:
            if conn is not None:
                conn.close()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- writing -------------------------------------------------------------------------

    def commit(
        self,
        rows: Sequence[PendingRow],
        workflows: Sequence[WorkflowSummary] = (),
        agents: Sequence[AgentSummary] = (),
        *,
        project: Project | None = None,
        consumes: Sequence[Consumed] = (),
    ) -> list[int]:
        """Append ``rows`` and upsert the projection rows in one transaction.

        Returns the rows' positions (the head plus one on, gap-free). Raises
        ``StorageError`` when the commit did not happen; in that case nothing of it is in
        the log. ``project``: see ``LogStore.commit``. ``consumes`` must be empty: one
        engine owns a SQLite log, so it has no inbox (``ValueError`` before anything).
        """
        if consumes:
            raise ValueError(f"a SQLite log has no inbox: it cannot consume inbox requests "
                             f"{[c.request_id for c in consumes]}")
        first = self.head + 1
        values, prev = self._chain(rows, first)
        last = first + len(values) - 1
        if self._uncertain is not None:
            raise StorageError(self._uncertain, fatal=True)
        positions = list(range(first, last + 1))
        if project is not None:
            workflows, agents = project(positions)
        workflow_rows = [proj.workflow_row(s) for s in workflows]
        agent_rows = [proj.agent_row(s) for s in agents]
        self._write(values, workflow_rows, agent_rows, last)
        self.head, self.head_hash = last, prev
        return positions

    def _write(self, values: list[tuple[Any, ...]], workflow_rows: list[tuple[Any, ...]],
               agent_rows: list[tuple[Any, ...]], last: int) -> None:
        """The transaction of :meth:`commit`: one ``BEGIN IMMEDIATE … COMMIT`` with the
        event rows ``values`` (through position ``last``) and the projection rows, and its
        failure settled (:meth:`_failed`: it returns only when the commit landed anyway).
        The fault points of the crash campaigns fire just before and just after COMMIT."""
        conn = self.conn
        committing = False
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, values)
            if workflow_rows:
                proj.write_workflows(conn, workflow_rows)
            if agent_rows:
                proj.write_agents(conn, agent_rows)
            set_meta(conn, "projected_through", str(last))
            if faults.hit("append.before_commit"):
                raise sqlite3.OperationalError("disk I/O error (injected before COMMIT)")
            committing = True
            conn.execute("COMMIT")
            committing = False
            if faults.hit("append.after_commit"):
                raise sqlite3.OperationalError("disk I/O error (injected after COMMIT)")
        except sqlite3.Error as exc:
            self._failed(exc, last, len(values), committing)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _failed(self, exc: sqlite3.Error, last: int, count: int, committing: bool) -> None:
        """A commit raised: return if it landed anyway, else raise the right StorageError.

        A UNIQUE clash (memory disagrees with the log) and an I/O error during COMMIT (its
        frames may be in the WAL) are fatal: the engine stops and a reopen replays the log.
        """
        if isinstance(exc, sqlite3.IntegrityError):
            self._landed(last)
            self._uncertain = f"{self.path}: the log disagrees with this engine ({exc})"
            raise StorageError(self._uncertain, fatal=True) from exc
        if committing and _is_io_error(exc):
            self._landed(last)
            self._uncertain = (f"{self.path}: an I/O error during a commit ({exc}) leaves its "
                               "outcome unknown; reopen the log to replay what it holds")
            raise StorageError(self._uncertain, fatal=True) from exc
        if not self._landed(last):
            raise StorageError(f"could not commit {count} event(s) to {self.path}: {exc}"
                               ) from exc

    def _chain(self, rows: Sequence[PendingRow], first: int
               ) -> tuple[list[tuple[Any, ...]], bytes]:
        """The insert values for ``rows`` from position ``first``, and the last hash."""
        prev = self.head_hash
        values: list[tuple[Any, ...]] = []
        for position, row in enumerate(rows, start=first):
            prev = chain_hash(prev, position, row.stream, row.stream_position, row.time_us,
                              row.type, row.data)
            values.append((position, *row, prev))
        return values, prev

    def _landed(self, last: int) -> bool:
        """After a failed COMMIT: roll back if still open, then look whether it landed."""
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            row = self.conn.execute("SELECT max(position) FROM events").fetchone()
        except sqlite3.Error as exc:
            self._uncertain = (f"{self.path}: a commit failed and the log cannot be read "
                               f"back ({exc}); reopen it once the storage works")
            raise StorageError(self._uncertain, fatal=True) from exc
        return row[0] is not None and int(row[0]) >= last

    # -- opening -------------------------------------------------------------------------

    def open_checks(self, *, quiet: bool = False) -> OpenReport:
        """Rebuild lagging or damaged projections, then verify the rows written since the
        last verification and the anchor (see ``opening``)."""
        return opening.open_checks(self, quiet=quiet)

    def mark_verified(self) -> None:
        """Record that the log is verified through its head, in the log and its anchor."""
        if self.path == ":memory:" or self.readonly:
            return
        with transaction(self.conn):
            set_meta(self.conn, "verified_through", str(self.head))
        write_anchor(self.path, Anchor(self.head, self.head_hash))

    # -- reading -------------------------------------------------------------------------

    def read_stream(
        self, stream: str, from_stream_position: int = 0, *, after_position: int = 0
    ) -> list[Recorded]:
        return read_stream(self.conn, self.genesis, stream, from_stream_position,
                           after_position=after_position)

    def stream_head(self, stream: str) -> int:
        return stream_head(self.conn, stream)

    def workflow_statuses(self, workflow_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        return proj.workflow_statuses(self.conn, workflow_ids)

    def load_workflow(self, workflow_id: str) -> WorkflowSummary | None:
        summary = proj.load_workflow(self.conn, workflow_id, -1)
        if summary is None:
            return None
        return msgspec.structs.replace(summary, head=self.stream_head("wf:" + workflow_id))

    @property
    def sharding(self) -> Sharding | None:
        """None: one engine owns a SQLite log (its file lock), so it has no shards."""
        return None

    @property
    def commits_in_thread(self) -> bool:
        """False: a commit is a local write, made from the engine's thread."""
        return False

    def unfinished_workflows(self, shards: Collection[int] | None = None
                             ) -> list[WorkflowSummary]:
        out = []
        for row in proj.load_workflows(self.conn, unfinished=True):
            out.append(proj.summary_from_row(row, self.stream_head("wf:" + row[0])))
        return out

    def load_agent(self, agent_class: str, name: str) -> AgentSummary | None:
        head = self.stream_head(f"agent:{agent_class}/{name}")
        return proj.load_agent(self.conn, agent_class, name, head)

    def agents_with_pending_callbacks(self, shards: Collection[int] | None = None
                                      ) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT agent_class, agent_name FROM agents WHERE last_callback > delivered_through "
            "AND corrupt_position IS NULL ORDER BY agent_class, agent_name"
        ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def binding_counts(self) -> list[tuple[str, int, int]]:
        """(binding, active, finished) for every binding with workflows in the log."""
        rows = self.conn.execute(
            "SELECT workflow_name, "
            "sum(status NOT IN ('complete', 'errored', 'terminated')), "
            "sum(status IN ('complete', 'errored', 'terminated')) "
            "FROM workflows GROUP BY workflow_name ORDER BY workflow_name"
        ).fetchall()
        return [(str(name), int(active), int(finished)) for name, active, finished in rows]

    def query_workflows(self, query: TrackingQuery, *, ascending: bool, limit: int | None,
                        after: tuple[int, str] | None = None) -> list[WorkflowSummary]:
        return proj.query_workflows(self.conn, query, ascending=ascending, limit=limit,
                                    after=after)

    def count_workflows(self, query: TrackingQuery) -> int:
        return proj.count_workflows(self.conn, query)

    def workflow_ids(self, agent_class: str, agent_name: str, binding: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT workflow_id FROM workflows WHERE agent_class = ? AND agent_name = ? "
            "AND workflow_name = ? AND status != 'unknown' ORDER BY workflow_id",
            (agent_class, agent_name, binding)).fetchall()
        return [str(row[0]) for row in rows]

    def write_projections(
        self, workflows: Sequence[WorkflowSummary] = (), agents: Sequence[AgentSummary] = ()
    ) -> None:
        """Projection rows that no event changes (a quarantine found while reading)."""
        rows = [proj.workflow_row(s) for s in workflows]
        agent_rows = [proj.agent_row(s) for s in agents]
        with transaction(self.conn):
            proj.write_workflows(self.conn, rows)
            proj.write_agents(self.conn, agent_rows)

    def projected_through(self) -> int:
        """The last position the projections reflect (-1 if the meta value is damaged:
        they are then rebuilt, as if they lagged)."""
        return meta_position(self.conn, "projected_through", self.path, damaged=-1)

    def check_projections(self) -> bool:
        """Check every projection row against its check value; if one fails, rebuild the
        tables from the log (logged). True if they were rebuilt."""
        count, named = proj.damaged_rows(self.conn)
        if not count:
            return False
        logger.warning("%s: %d projection row(s) do not match their check value (%s%s); "
                       "rebuilding the projections from the log", self.path, count,
                       "; ".join(named), "; ..." if count > len(named) else "")
        self.rebuild_projections()
        return True

    # -- projections ---------------------------------------------------------------------

    def fold(self) -> Folded:
        """The projections as the log says they must be (a full verified pass)."""
        return fold_log(self.conn, self.genesis, path=self.path)

    def rebuild_projections(self) -> Folded:
        """Replace the projection tables with a fold of the log, in one transaction.

        On a large log the tentative workflows are written while the checking process
        finishes (the agents and the head come with its verdict); if it disagrees, the
        checked fold replaces them before the commit."""
        conn = self.conn
        with fold_tentatively(conn, self.genesis, path=self.path) as pending, \
                transaction(conn):
            self._write_workflows(pending.tentative)
            folded = pending.result()
            if folded is not pending.tentative:
                self._write_workflows(folded)
            conn.execute("DELETE FROM agents")
            proj.write_agents(conn, [proj.agent_row(s) for s in folded.agents.values()])
            set_meta(conn, "projected_through", str(folded.head))
        return folded

    def _write_workflows(self, folded: Folded) -> None:
        self.conn.execute("DELETE FROM workflows")
        proj.write_workflows(self.conn,
                             [proj.workflow_row(s) for s in folded.workflows.values()])
