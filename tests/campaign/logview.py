"""Every private eventwf name the campaign harness reads a log with, in one place.

The engine's internals move; when they do, this is the one file of the harness to adapt.
Nothing here writes to a log.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import apply_agent
from eventwf.model.codec import decode_event
from eventwf.model.events import Recorded
from eventwf.store.sqlite import SQLiteStore
from eventwf.store.sqlite.anchor import read_anchor
from eventwf.store.sqlite.log import chain_hash, decode_row, scan
from eventwf.store.sqlite.projections import agent_row, load_agents, load_workflows, workflow_row

__all__ = [
    "chain_hash",
    "decode_event",
    "fold_agents",
    "projection_mismatch",
    "read_anchor",
    "read_events",
    "readonly_connection",
]


def readonly_connection(db: str) -> sqlite3.Connection:
    """A read-only connection (safe beside a running engine)."""
    return sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)


def read_events(db: str) -> tuple[list[Recorded], list[str]]:
    """Every decodable event in log order, and what could not be decoded (with positions)."""
    store = SQLiteStore(db, readonly=True)
    out: list[Recorded] = []
    problems: list[str] = []
    try:
        for item in scan(store.conn, store.genesis):
            try:
                out.append(decode_row(item.row))
            except CorruptLogError as exc:
                problems.append(str(exc))
    finally:
        store.close()
    return out, problems


def fold_agents(events: list[Recorded], prefix: str) -> dict[str, Any]:
    """name -> folded state of every agent stream starting with ``prefix`` that has one."""
    summaries: dict[str, Any] = {}
    for rec in events:
        if rec.stream.startswith(prefix):
            name = rec.stream[len(prefix):]
            summaries[name] = apply_agent(summaries.get(name), rec)
    return {name: s.state for name, s in summaries.items() if s.has_state}


def projection_mismatch(db: str) -> list[str]:
    """How the stored projection tables differ from a fold of the log (O9); [] if equal."""
    store = SQLiteStore(db, readonly=True)
    try:
        folded = store.fold()
        live_wf = sorted(load_workflows(store.conn, unfinished=False))
        live_ag = sorted(load_agents(store.conn))
        want_wf = sorted(workflow_row(s) for s in folded.workflows.values())
        want_ag = sorted(agent_row(s) for s in folded.agents.values())
    finally:
        store.close()
    out = []
    if live_wf != want_wf:
        diff = [(a, b) for a, b in zip(live_wf, want_wf, strict=False) if a != b][:2]
        out.append(f"the workflows table differs from the fold of the log ({len(live_wf)} vs "
                   f"{len(want_wf)} rows; first differences {diff})")
    if live_ag != want_ag:
        out.append(f"the agents table differs from the fold of the log ({len(live_ag)} vs "
                   f"{len(want_ag)} rows)")
    return out
