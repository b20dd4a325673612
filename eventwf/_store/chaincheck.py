"""Check a log's rows in a second process while the first folds them (a full rebuild).

    python -m eventwf._store.chaincheck PATH THROUGH

Runs exactly the checks of :func:`checked_batches` (positions, UTF-8 text, hash chain,
stream versions) on rows 1..THROUGH through its own read-only connection and prints one
JSON object: ``{"rows": N, "problem": null}`` or the first problem as ``[position, text]``.
Hashing is the costliest part of a rebuild and holds the GIL, so another process, not a
thread, is what lets it run beside the fold. Arguments and results are JSON, never pickle.
"""

from __future__ import annotations

import sys

import msgspec

from .log import checked_batches
from .schema import connect, get_meta

__all__ = ["check_rows"]


def check_rows(path: str, through: int) -> tuple[int, tuple[int, str] | None]:
    """(rows checked, first problem or None) for rows 1..``through`` of the log at ``path``."""
    conn = connect(path, readonly=True)
    try:
        genesis = get_meta(conn, "genesis")
        if genesis is None:
            return 0, (0, f"{path} has no genesis in its meta table")
        rows = 0
        for batch in checked_batches(conn, bytes.fromhex(genesis)):
            for raw, problem in batch:
                if raw[0] > through:
                    return rows, None
                rows += 1
                if problem is not None:
                    return rows, (raw[0], problem)
        return rows, None
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m eventwf._store.chaincheck PATH THROUGH", file=sys.stderr)
        return 2
    rows, problem = check_rows(argv[0], int(argv[1]))
    sys.stdout.buffer.write(msgspec.json.encode({"rows": rows, "problem": problem}) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
