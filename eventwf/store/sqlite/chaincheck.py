"""The second process of a large rebuild: it checks every row while the first folds.

    python -m eventwf.store.sqlite.chaincheck PATH THROUGH   (start_checker starts it leaner)

On rows 1..THROUGH, through its own read-only connection, it runs exactly the checks of
:func:`checked_batches` (positions, UTF-8 text, hash chain, stream versions), folds the
agent streams (the rows the folding process does not read), decodes the steps' outcomes
(of which the folding process reads only the command numbers), and notes each workflow
stream's last version. It writes one msgpack :class:`Report` to stdout (never pickle). A
report with a problem sends the first process back to the fully checked fold, which alone
decides quarantines. Hashing holds the GIL, so another process, not a thread, is what lets
it run beside the fold.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from eventwf.errors import CorruptLogError, TransitionError
from eventwf.model.agent_fold import AgentSummary, apply_agent
from eventwf.model.codec import OUTCOME_TYPES, decode_event
from eventwf.model.events import Recorded, parse_stream
from eventwf.store.sqlite.log import checked_batches
from eventwf.store.sqlite.schema import connect, get_meta

__all__ = ["Report", "check_rows", "read_report", "start_checker"]

logger = logging.getLogger("eventwf")


class Report(msgspec.Struct):
    """What the checker found: the rows checked (with a problem: its position), the first
    problem (position, text) or None, the agents' summaries and every workflow stream's
    last version (``wf:…`` -> version)."""

    rows: int
    problem: tuple[int, str] | None
    agents: list[AgentSummary] = []
    heads: dict[str, int] = {}


def check_rows(path: str, through: int) -> Report:
    """The report for rows 1..``through`` of the log at ``path`` (stops at the first problem)."""
    conn = connect(path, readonly=True)
    try:
        genesis = get_meta(conn, "genesis")
        if genesis is None:
            return Report(0, (0, f"{path} has no genesis in its meta table"))
        return _check(conn, bytes.fromhex(genesis), through)
    finally:
        conn.close()


def _check(conn: sqlite3.Connection, genesis: bytes, through: int) -> Report:
    versions: dict[str, int] = {}  # every stream's last version, filled in by checked_batches
    agents: dict[tuple[str, str], AgentSummary] = {}
    # Workflow rows are checked there; of them only steps' outcomes come here, to be
    # decoded in full (the folding process reads only their command numbers).
    for batch in checked_batches(conn, genesis, through=through, versions=versions,
                                 wf_types=OUTCOME_TYPES):
        for raw, problem in batch:  # the hot loop
            if problem is None:
                try:
                    _take(raw, agents)
                    continue
                except (CorruptLogError, TransitionError) as exc:
                    problem = str(exc)
            return Report(raw[0], (raw[0], problem))
    # No problem: each stream holds versions 0..last, so these are all the rows checked.
    rows = sum(versions.values()) + len(versions)
    heads = {stream: version for stream, version in versions.items() if stream[:3] == "wf:"}
    return Report(rows, None, list(agents.values()), heads)


def _take(raw: tuple[Any, ...], agents: dict[tuple[str, str], AgentSummary]) -> None:
    """Decode a row the folding process does not decode in full; fold it if it is an
    agent's."""
    position, stream, version, time_us, type_name, data, _ = raw
    event = decode_event(type_name, data, position=position)
    if stream[:3] == "wf:":
        return
    kind, agent_class, name = parse_stream(stream)
    if kind != "agent":
        raise CorruptLogError(f"event at log position {position} is on unknown stream "
                              f"{stream!r}", position=position)
    key = (agent_class, name)
    agents[key] = apply_agent(agents.get(key),
                              Recorded(position, stream, version, time_us, event))


# The child's entry: ``eventwf`` as a bare package over this copy's directory, so it imports
# only what checking needs (the model and this store), not trio, the engine and the server
# that ``eventwf/__init__`` brings (0.2 s of a 2.5 s check of a million rows).
_BOOT = """import sys, types
sys.modules["eventwf"] = package = types.ModuleType("eventwf")
package.__path__ = [sys.argv[1]]
from eventwf.store.sqlite.chaincheck import main
sys.exit(main(sys.argv[2:]))
"""


def start_checker(path: str, through: int) -> subprocess.Popen[bytes] | None:
    """This module as a child process on rows 1..``through``; None (logged) if it cannot
    start."""
    package = Path(__file__).resolve().parents[2]  # .../eventwf
    try:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
            [sys.executable, "-c", _BOOT, str(package), path, str(through)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        logger.warning("rebuild of %s: cannot start the checking process (%s); checking "
                       "in this one", path, exc)
        return None


def read_report(checker: subprocess.Popen[bytes], path: str) -> Report | None:
    """The child's report (waits for it); None, logged, if it failed to give one."""
    out, err = checker.communicate()
    try:
        return msgspec.msgpack.decode(out, type=Report)
    except msgspec.DecodeError:
        logger.warning("rebuild of %s: the checking process failed (exit %s: %s); checking "
                       "in this one", path, checker.returncode,
                       err.decode(errors="replace").strip()[-500:])
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m eventwf.store.sqlite.chaincheck PATH THROUGH", file=sys.stderr)
        return 2
    report = check_rows(argv[0], int(argv[1]))
    sys.stdout.buffer.write(msgspec.msgpack.encode(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
