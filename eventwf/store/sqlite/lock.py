"""Where a log lives (its home path) and the writer lock on it.

SQLite names a log's ``-wal`` and ``-shm`` files after the path it is opened by: through a
symlink it resolves the link, through a hard link it takes that name. Two names of one file
would mean two WALs: a second name misses the first one's commits (after a crash, for
good), and SQLite's own locks do not see each other. So every eventwf connection opens a log
by its *home*, one name per file: the real path (symlinks and ``..`` resolved), or, for a
file with several hard links, the name its writer recorded in ``meta.home`` while that is
still a name of the same file. The sidecars (``.anchor``, ``.lock``) sit beside the home.

The writer lock is an exclusive ``flock`` on the database file itself, so it holds for the
file (device and inode) whatever the path; the kernel drops it when the holder dies.
Closing any descriptor of the database drops the POSIX locks SQLite holds on it in this
process, so a second writer in this process is refused from a table of held files without
opening the file, and the holder closes its descriptor only after its connection.
``<home>.lock`` holds the holder's name (``pid <n> on <host>``), for messages only.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sqlite3
import threading
from pathlib import Path

from eventwf.errors import LogLockedError, StorageError

__all__ = ["WriterLock", "log_home", "read_start"]

_HELD: dict[tuple[int, int], list[int]] = {}  # files this process writes -> spare descriptors
_GUARD = threading.Lock()


def log_home(path: str) -> str:
    """The one path every connection to the log at ``path`` uses (see the module's doc)."""
    if path == ":memory:":
        return path
    real = os.path.realpath(path)
    try:
        links = os.stat(real).st_nlink
    except OSError:
        return real  # a new log
    recorded = _recorded_home(real) if links > 1 else None
    if recorded is not None and recorded != real:
        try:
            if os.path.samefile(recorded, real):
                return recorded
        except OSError:
            pass  # the recorded name is gone: the log was moved
    return real


def _recorded_home(real: str) -> str | None:
    """``meta.home`` as the database file holds it (the writer checkpoints it there)."""
    try:
        conn = sqlite3.connect(Path(real).as_uri() + "?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'home'").fetchone()
    except sqlite3.Error:
        return None  # not (yet) an eventwf log
    finally:
        conn.close()
    return row[0] if row is not None and isinstance(row[0], str) else None


def read_start(path: str, size: int) -> bytes:
    """The first ``size`` bytes of the file at ``path``, read without ever closing a
    descriptor of a file this process writes (that would drop SQLite's locks on it: the
    descriptor is kept and closed by the holder, after its connection)."""
    with _GUARD:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size, 0)
        except BaseException:
            _close_or_keep(fd)
            raise
        _close_or_keep(fd)
        return data


def _close_or_keep(fd: int) -> None:
    status = os.fstat(fd)
    spare = _HELD.get((status.st_dev, status.st_ino))
    if spare is None:
        os.close(fd)
    else:
        spare.append(fd)


class WriterLock:
    """An exclusive ``flock`` on the log's database file: one writing engine per file."""

    def __init__(self, db_path: str) -> None:
        self.path = db_path
        self._fd: int | None = None
        self._key: tuple[int, int] | None = None

    def acquire(self) -> None:
        """Lock the file (creating it if new); ``LogLockedError`` naming the holder if taken."""
        with _GUARD:
            try:
                before = os.stat(self.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"{self.path} cannot be opened: {exc}") from exc
            else:
                if (before.st_dev, before.st_ino) in _HELD:
                    raise self._refused(f"pid {os.getpid()} on {socket.gethostname()} "
                                        "(this process)")
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StorageError(f"{self.path} cannot be opened: {exc}") from exc
            status = os.fstat(fd)
            key = (status.st_dev, status.st_ino)
            if key in _HELD:  # the path became another held file since the stat
                _HELD[key].append(fd)  # closed by the holder, after its connection
                raise self._refused(f"pid {os.getpid()} on {socket.gethostname()} "
                                    "(this process)")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)  # this process has no connection to the file yet
                if isinstance(exc, BlockingIOError):
                    raise self._refused(_holder(key, log_home(self.path))) from None
                raise StorageError(f"{self.path} cannot be locked for writing: {exc}") from exc
            _HELD[key] = []
            self._fd, self._key = fd, key

    def name_holder(self, home: str) -> None:
        """Write ``<home>.lock``: who holds the lock, for the message of a refused writer."""
        try:
            with open(home + ".lock", "w") as handle:
                handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        except OSError as exc:
            raise StorageError(f"{home}: cannot write {home}.lock: {exc}") from exc

    def release(self) -> None:
        """Let the file go; call it after the log's connection is closed."""
        with _GUARD:
            if self._fd is None or self._key is None:
                return
            for fd in [*_HELD.pop(self._key, []), self._fd]:
                os.close(fd)  # closing the last descriptor releases the flock
            self._fd = self._key = None

    def _refused(self, holder: str) -> LogLockedError:
        return LogLockedError(f"{self.path} is already open for writing by {holder}; close "
                              "that engine first (one writing engine per log file)")


def _holder(key: tuple[int, int], home: str) -> str:
    """Who holds the flock on file ``key``: from ``/proc/locks`` (Linux), else the
    ``.lock`` note (which a holder that just took the lock may not have written yet)."""
    device, inode = key
    wanted = f"{os.major(device):02x}:{os.minor(device):02x}:{inode}"
    try:
        with open("/proc/locks") as handle:
            for line in handle:  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:123 0 EOF"
                fields = line.split()
                if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5:6] == [wanted] \
                        and fields[4] != "0":
                    return f"pid {fields[4]} on {socket.gethostname()}"
    except (OSError, IndexError):
        pass
    try:
        with open(home + ".lock") as handle:
            return handle.read(200).strip() or "an unknown process"
    except OSError:
        return "an unknown process"
