"""A consistent copy of a live SQLite log, taken with SQLite's online backup API.

Theory of operation. The source is opened read-only by its home (lock.log_home), so a
hard link or a symlink reads the writer's WAL; it never takes the writer lock and never
blocks a running engine. One ``Connection.backup(pages=-1)`` copies every page inside one
read transaction: in WAL mode a reader and the writer never wait for each other, so the
copy is the log exactly as of one commit (a prefix of what the engine acknowledges). A
copy in smaller steps would start over at every commit of a busy engine.

The copy is written to a temporary file beside the target, made durable
(``synchronous=FULL``, then fsync), checked (``PRAGMA quick_check``) and only then linked
to the target's name, which must not exist: an existing file is never overwritten, and a
crash leaves no half-written copy under the target's name. The copy keeps the log's
format (WAL mode, its meta and hash chain); the engine's ``.anchor`` is not copied, since
it vouches for the source's head, not the copy's.
"""

from __future__ import annotations

import os
import sqlite3
from typing import NamedTuple

from eventwf.errors import StorageError
from eventwf.store.sqlite.lock import log_home
from eventwf.store.sqlite.schema import connect

__all__ = ["BackupReport", "backup"]

# SQLite's files beside a database: a stale one beside the target would be read as part
# of the copy (a -wal is replayed into it), so none may exist.
_SIDE_FILES = ("", "-wal", "-shm", "-journal")


class BackupReport(NamedTuple):
    """What was copied: the last log position in the copy and its size in bytes."""

    head: int
    size: int


def _refuse_existing(target: str) -> None:
    for suffix in _SIDE_FILES:
        if os.path.lexists(target + suffix):
            what = "the backup target" if not suffix else f"a leftover {suffix} file of the target"
            raise FileExistsError(f"{target + suffix} already exists ({what}): choose a new "
                                  "name; a backup never overwrites a file")


def _fsync(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy(source_path: str, temporary: str) -> int:
    """Copy every page of the log into ``temporary``; the copy's head position."""
    source = connect(log_home(source_path), readonly=True)
    try:
        target = sqlite3.connect(temporary, isolation_level=None)
        try:
            target.execute("PRAGMA synchronous=FULL")
            source.backup(target)  # pages=-1: one read transaction, one commit
            check = target.execute("PRAGMA quick_check").fetchall()
            if check != [("ok",)]:
                raise StorageError(f"the copy of {source_path} fails SQLite's quick_check: "
                                   f"{check[:5]}")
            row = target.execute("SELECT max(position) FROM events").fetchone()
        finally:
            target.close()  # the last connection: checkpoints and removes the copy's -wal
    finally:
        source.close()
    return 0 if row[0] is None else int(row[0])


def backup(source: str, target: str) -> BackupReport:
    """Copy the (possibly live) log at ``source`` to the new SQLite file ``target``.

    Raises ``FileExistsError`` when ``target`` (or a ``-wal``/``-shm``/``-journal`` file of
    it) exists, another ``OSError`` when its directory cannot be written, and
    ``StorageError`` when SQLite fails (a damaged source, a full disk); a failed copy
    leaves nothing behind.
    """
    _refuse_existing(target)
    directory = os.path.dirname(os.path.abspath(target))
    temporary = os.path.join(directory, f".{os.path.basename(target)}.partial-{os.getpid()}")
    for suffix in _SIDE_FILES:
        if os.path.lexists(temporary + suffix):  # left by a crashed backup of this pid
            os.unlink(temporary + suffix)
    try:
        # made here first, so a missing or unwritable directory is an OSError naming it
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        try:
            head = _copy(source, temporary)
        except sqlite3.Error as exc:
            raise StorageError(f"backing up {source} to {target} failed: {exc}") from exc
        _fsync(temporary)
        os.link(temporary, target)  # fails, rather than overwrites, if target appeared
    finally:
        for suffix in _SIDE_FILES:
            if os.path.lexists(temporary + suffix):
                os.unlink(temporary + suffix)
    _fsync(directory, directory=True)
    return BackupReport(head=head, size=os.path.getsize(target))
