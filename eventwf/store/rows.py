"""Projection rows, whatever the backend: summaries to row values and back, and their checks.

A row holds every summary field except ``head`` (the stream version, read from the log),
in the column order of :data:`WORKFLOW_COLUMNS` / :data:`AGENT_COLUMNS`, and ends with
``row_check``, a BLAKE2b-64 of every other value (:func:`row_check`): every row read into
a summary is checked first (:func:`checked`; a mismatch is ``CorruptLogError`` naming the
table and row, never a state the log does not hold). The values are plain Python values
(text, integers, bytes, None), so every backend stores the same row and the same check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import msgspec

from eventwf.errors import CorruptLogError
from eventwf.model.agent_fold import AgentSummary
from eventwf.model.codec import decode_value, encode_value
from eventwf.model.workflow_fold import WorkflowSummary

__all__ = ["AGENT_COLUMNS", "WORKFLOW_COLUMNS", "agent_from_row", "agent_row", "checked",
           "row_check", "summary_from_row", "workflow_row"]

WORKFLOW_COLUMNS = (
    "workflow_id", "workflow_name", "agent_class", "agent_name", "status", "metadata",
    "error_name", "error_message", "created_us", "updated_us", "completed_us", "tracked",
    "run", "started_at", "run_start", "mailbox", "output", "corrupt_position", "wake_at_us",
    "wake_span_us", "wait_type", "paused_us", "inbox", "commands", "pending", "row_check",
)
AGENT_COLUMNS = (
    "agent_class", "agent_name", "state", "has_state", "delivered_through", "last_callback",
    "corrupt_position", "state_position", "row_check",
)
# One encoder, made once: ``json.dumps`` with options builds a new encoder per call (the
# same text, several times slower, and a rebuild encodes every workflow's metadata).
_METADATA_JSON = json.JSONEncoder(separators=(",", ":")).encode
# The inbox column: JSON ``[[stream position, event type], ...]`` (NULL when empty); the
# ``mailbox`` column beside it is its length, for queries.
_INBOX_JSON = msgspec.json.Encoder().encode
_INBOX_DECODE = msgspec.json.Decoder(tuple[tuple[int, str], ...]).decode
# The pending column: JSON ``[[kind, command number, [task path]], ...]`` (NULL when none).
_PENDING_DECODE = msgspec.json.Decoder(tuple[tuple[str, int, tuple[int, ...]], ...]).decode


_CHECK_ENCODE = msgspec.msgpack.Encoder().encode


def row_check(values: Sequence[Any]) -> int:
    """The check value of a projection row's other columns: BLAKE2b-64 of their msgpack
    encoding (a value's type counts: the text ``"1"`` is not the integer 1), signed."""
    digest = blake2b(_CHECK_ENCODE(values), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def workflow_row(s: WorkflowSummary) -> tuple[Any, ...]:
    row = (
        s.workflow_id, s.workflow_name, s.agent_class, s.agent_name, s.status,
        None if s.metadata is None else _METADATA_JSON(s.metadata),
        s.error_name, s.error_message, s.created_us, s.updated_us, s.completed_us,
        int(s.tracked), s.run, s.started_at, s.run_start, s.mailbox,
        None if s.output is None else encode_value(s.output, "output", limit=1 << 62),
        s.corrupt_position, s.wake_at_us, s.wake_span_us, s.wait_type, s.paused_us,
        _INBOX_JSON(s.inbox) if s.inbox else None,
        s.commands, _INBOX_JSON(s.pending) if s.pending else None,
    )
    return (*row, row_check(row))


def checked(table: str, row: Sequence[Any]) -> Sequence[Any]:
    """``row`` without its check value; ``CorruptLogError`` if that does not match."""
    values = row[:-1]
    try:
        matches = row_check(values) == row[-1]
    except (TypeError, ValueError, msgspec.EncodeError):
        matches = False
    if not matches:
        raise CorruptLogError(
            f"the {table} row of {_name(table, row)} does not match its check value: the "
            "projection was changed or damaged outside eventwf, and is not served; close "
            "the engine and open the log again to rebuild it from the log")
    return values


def _name(table: str, row: Sequence[Any]) -> str:
    shown = [str(value)[:100] for value in row[:2]]
    return f"workflow {shown[0]!r}" if table == "workflows" else f"agent {'/'.join(shown)}"


def summary_from_row(row: Sequence[Any], head: int) -> WorkflowSummary:
    """The summary a checked ``workflows`` row holds (``CorruptLogError`` if it fails)."""
    (workflow_id, workflow_name, agent_class, agent_name, status, metadata, error_name,
     error_message, created_us, updated_us, completed_us, tracked, run, started_at,
     run_start, _mailbox, output, corrupt_position, wake_at_us, wake_span_us, wait_type,
     paused_us, inbox, commands, pending) = checked("workflows", row)
    try:
        decoded_metadata = None if metadata is None else json.loads(metadata)
        decoded_output = None if output is None else decode_value(output)
        decoded_inbox = () if inbox is None else _INBOX_DECODE(inbox)
        decoded_pending = () if pending is None else _PENDING_DECODE(pending)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise CorruptLogError(f"the workflows row of workflow {str(workflow_id)[:100]!r} "
                              f"holds a value that does not decode: {exc}") from exc
    return WorkflowSummary(
        workflow_id=workflow_id, workflow_name=workflow_name, agent_class=agent_class,
        agent_name=agent_name, status=status, created_us=created_us, updated_us=updated_us,
        completed_us=completed_us, metadata=decoded_metadata,
        error_name=error_name, error_message=error_message, output=decoded_output,
        tracked=bool(tracked), run=run, started_at=started_at, run_start=run_start,
        head=head, corrupt_position=corrupt_position, wake_at_us=wake_at_us,
        wake_span_us=wake_span_us, wait_type=wait_type, paused_us=paused_us,
        inbox=decoded_inbox,
        commands=commands,
        pending=decoded_pending,
    )


def agent_row(s: AgentSummary) -> tuple[Any, ...]:
    state = encode_value(s.state, "agent state", limit=1 << 62) if s.has_state else None
    row = (s.agent_class, s.name, state, int(s.has_state), s.delivered_through,
           s.last_callback, s.corrupt_position, s.state_position)
    return (*row, row_check(row))


def agent_from_row(row: Sequence[Any], head: int) -> AgentSummary:
    agent_class, name, state, has_state, delivered, last_callback, corrupt, state_at = \
        checked("agents", row)
    try:
        decoded = None if state is None else decode_value(state)
    except (ValueError, TypeError, msgspec.DecodeError) as exc:
        raise CorruptLogError(f"the agents row of agent {agent_class}/{name} holds a state "
                              f"that does not decode: {exc}") from exc
    return AgentSummary(
        agent_class=agent_class, name=name, state=decoded, has_state=bool(has_state),
        head=head, delivered_through=delivered, last_callback=last_callback,
        corrupt_position=corrupt, state_position=state_at,
    )
