"""``backup OUT``: a consistent copy of a (possibly live) SQLite log (specs/tools.md V19).

Copying a log file while an engine runs loses whatever its ``-wal`` file holds (committed,
acknowledged events not yet checkpointed into the main file) and may catch the file in the
middle of a checkpoint. This command uses SQLite's online backup API instead
(``eventwf.store.sqlite.backup``): the copy is the log as of one commit, taken without
stopping or slowing the engine, and it never overwrites a file.
"""

from __future__ import annotations

import time

from eventwf.errors import StorageError
from eventwf.store import is_url
from eventwf.store.sqlite import backup as copy_log

from .render import Output
from .source import Damaged, LogSource, ToolError

__all__ = ["backup"]


def backup(path: str, target: str, out: Output) -> int:
    """Copy the log at ``path`` to the new file ``target``; 0 when the copy is made."""
    if is_url(path):
        raise ToolError(f"backup is for SQLite log files; {path.split('@')[-1]} is a "
                        "PostgreSQL database: back it up with pg_dump")
    LogSource(path).close()  # a clear error for a missing file or one that is no eventwf log
    started = time.monotonic()
    try:
        report = copy_log(path, target)
    except FileExistsError as exc:
        raise ToolError(str(exc)) from exc
    except OSError as exc:
        raise ToolError(f"cannot write the backup {target}: {exc}") from exc
    except StorageError as exc:  # SQLite failed: a damaged log (or a full disk)
        raise Damaged(f"{exc}; run `verify` on {path} for a diagnosis") from exc
    seconds = time.monotonic() - started
    if out.json:
        out.record({"record": "backup", "source": path, "target": target, "head": report.head,
                    "bytes": report.size, "seconds": round(seconds, 3)})
    else:
        out.line(f"backed up {path} to {target}: positions 1-{report.head}, "
                 f"{report.size:,} bytes, in {seconds:.2f}s")
    return 0
