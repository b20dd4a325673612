"""The external anchor: the log's head (position and hash) kept in a sidecar file.

A hash chain catches a changed row but not a cut tail; the anchor, written outside the
database when the engine closes and after it verifies the log on open, does.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import NamedTuple

__all__ = ["Anchor", "anchor_mismatch", "preserve_anchor", "read_anchor", "write_anchor"]


class Anchor(NamedTuple):
    position: int
    hash: bytes


def anchor_path(db_path: str) -> str:
    return db_path + ".anchor"


def read_anchor(db_path: str) -> Anchor | None:
    """The anchor, or None when there is none (a new log) or it is unreadable (said so)."""
    try:
        with open(anchor_path(db_path)) as handle:
            data = json.load(handle)
        return Anchor(int(data["position"]), bytes.fromhex(data["hash"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{anchor_path(db_path)} is unreadable: {exc}") from exc


def preserve_anchor(db_path: str) -> str:
    """Move an anchor that disagrees with the log aside (``.anchor.mismatch-<n>``)."""
    path = anchor_path(db_path)
    number = 1
    while os.path.exists(f"{path}.mismatch-{number}"):
        number += 1
    kept = f"{path}.mismatch-{number}"
    os.replace(path, kept)
    return kept


def write_anchor(db_path: str, anchor: Anchor) -> None:
    """Replace the anchor atomically and durably (temp file, fsync, rename, fsync dir)."""
    path = anchor_path(db_path)
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump({"position": anchor.position, "hash": anchor.hash.hex()}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def anchor_mismatch(conn: sqlite3.Connection, path: str, head: int) -> str | None:
    """What the anchor says is wrong with the log's tail (lost or rewritten), or None."""
    if path == ":memory:":
        return None
    try:
        anchor = read_anchor(path)
    except ValueError as exc:
        return str(exc)
    if anchor is None:
        return None
    if anchor.position > head:
        return (f"{path} ends at position {head}, but its anchor says {anchor.position}: "
                "events were lost (truncated file or torn tail)")
    row = conn.execute("SELECT CAST(hash AS BLOB) FROM events WHERE position = ?",
                       (anchor.position,)).fetchone()
    if anchor.position and (row is None or row[0] != anchor.hash):
        return (f"{path}: the event at position {anchor.position} differs from the anchor's "
                "hash: the log was rewritten")
    return None
