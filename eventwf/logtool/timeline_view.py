"""Printing a workflow timeline: a readable report, or JSON lines tagged by ``record``."""

from __future__ import annotations

from typing import Any

from .render import Output, compact, duration, error_text, iso
from .timeline import Attempt, Command, Run, Timeline

__all__ = ["render"]


def render(timeline: Timeline, out: Output, *, full: bool = False) -> int:
    """Print the timeline; 1 when part of the stream could not be used, else 0."""
    if out.json:
        _json(timeline, out)
    else:
        _text(timeline, out, None if full else 70)
    return 1 if timeline.problem is not None else 0


# -- text ---------------------------------------------------------------------------------


def _text(t: Timeline, out: Output, limit: int | None) -> None:
    s, started = t.summary, t.started
    if started is not None:
        out.line(f"workflow {t.workflow_id} · binding {s.workflow_name if s else '?'} · agent "
                 f"{started.agent_class}/{started.agent_name}")
    else:
        out.line(f"workflow {t.workflow_id}")
    if s is not None:
        agrees = ("projection agrees" if t.stored_status == s.status else
                  f"!! the projection table says {t.stored_status or 'nothing (no row)'}")
        out.line(f"status    {s.status} (fold of {t.events} event(s), positions "
                 f"{t.first_position}..{t.last_position}; {agrees})")
        out.line(f"times     created {iso(s.created_us)} · updated {iso(s.updated_us)} · "
                 f"completed {iso(s.completed_us)}")
        if s.error_name:
            out.line(f"error     {s.error_name}: {s.error_message}")
    if started is not None:
        out.line(f"params    {compact(started.params, limit)}")
        if started.metadata is not None:
            out.line(f"metadata  {compact(started.metadata, limit)}")
    if s is not None and s.status == "complete":
        out.line(f"output    {compact(s.output, limit)}")
    for run in t.runs:
        held = s.status if s is not None and run is t.runs[-1] and s.status in (
            "paused", "unknown") else None
        _run_text(run, out, limit, held)
    if t.problem is not None:
        position, problem = t.problem
        out.line()
        out.line(f"!! stopped at log position {position}: {problem}")
        if t.unread:
            out.line(f"!! {t.unread} later event(s) of this stream are not shown; the engine "
                     "quarantines this workflow (status unknown)")


def _run_text(run: Run, out: Output, limit: int | None, held: str | None) -> None:
    out.line()
    out.line(f"run {run.number} · from log position {run.start_position} · {iso(run.start_us)}")
    if run.commands:
        out.line("  steps (~ = start not logged: the time of the event before it)")
        rows: list[list[str]] = []
        for command in sorted(run.commands.values(), key=lambda c: c.seq):
            rows.append(_command_cells(command, limit, run.ended, held))
            rows.extend(_attempt_cells(a, limit) for a in _shown_attempts(command))
        out.table(["SEQ", "STEP", "ATTEMPTS", "STARTED", "ENDED", "DURATION", "OUTCOME"],
                  rows, indent="  ")
    out.line("  status changes")
    out.table(["POSITION", "TIME", "EVENT", "STATUS", "DETAIL"],
              [[str(c.position), iso(c.time_us), c.type, c.status, c.detail[:limit or None]]
               for c in run.changes], indent="    ")
    if run.received:
        out.line("  events received")
        out.table(["POSITION", "TIME", "TYPE", "TAKEN BY", "PAYLOAD"],
                  [[str(r.position), iso(r.time_us), r.event_type,
                    "-" if r.consumed_by is None else
                    f"#{r.consumed_by} (position {r.consumed_at})",
                    compact(r.payload, limit)] for r in run.received.values()], indent="    ")


def _started(command: Command) -> str:
    return ("~" if command.inferred else "") + iso(command.started_us)


def _command_cells(c: Command, limit: int | None, ended: str | None, held: str | None
                   ) -> list[str]:
    attempts = str(len(c.attempts)) if c.kind == "do" and c.attempts else "-"
    outcome = _outcome(c, limit)
    if c.outcome == "in progress" and ended is not None:
        outcome = f"cut short ({ended}); was {outcome}"
    elif c.outcome == "in progress" and held is not None:
        outcome = f"on hold (workflow {held}); {outcome}"
    return [str(c.seq), f"{c.kind} {c.name}" if c.name else c.kind, attempts, _started(c),
            iso(c.ended_us), duration(c.duration_us), outcome]


def _shown_attempts(c: Command) -> list[Attempt]:
    """Attempts worth a line: all of them once any failed."""
    return c.attempts if any(a.error is not None for a in c.attempts) else []


def _attempt_cells(a: Attempt, limit: int | None) -> list[str]:
    took = (None if a.started_us is None or a.ended_us is None
            else a.ended_us - a.started_us)
    what = "running" if a.ended_us is None else "ok"
    if a.error is not None:
        what = f"failed: {error_text(a.error)}"[: limit or None]
        if a.retry_at_us is not None:
            what += f" · next attempt at {iso(a.retry_at_us)}"
    start = ("~" if a.inferred else "") + iso(a.started_us)
    return ["", f"  attempt {a.number}", "", start, iso(a.ended_us), duration(took), what]


def _outcome(c: Command, limit: int | None) -> str:
    if c.outcome == "succeeded":
        return "succeeded" if c.value is None else f"succeeded: {compact(c.value, limit)}"
    if c.outcome == "failed" and c.error is not None:
        return f"failed: {error_text(c.error)}"[: limit or None]
    if c.outcome == "completed":
        return f"woke (wake at {iso(c.wake_at_us)})"
    if c.outcome == "consumed":
        source = c.consumed
        took = "" if source is None else (f" from position {source.position}: "
                                          f"{compact(source.payload, limit)}")
        return f"took {c.event_type!r}{took}"
    if c.outcome == "timed out":
        return f"timed out waiting for {c.event_type!r}"
    return _pending(c)


def _pending(c: Command) -> str:
    if c.kind.startswith("sleep"):
        return f"sleeping until {_shifted(c.wake_at_us, c.paused_us)}"
    if c.kind == "wait":
        return f"waiting for {c.event_type!r} until {_shifted(c.timeout_at_us, c.paused_us)}"
    last = c.attempts[-1] if c.attempts else None
    if last is not None and last.ended_us is not None and last.retry_at_us is not None:
        return (f"backing off: attempt {last.number + 1} at "
                f"{_shifted(last.retry_at_us, c.paused_us)}")
    return "in progress"


def _shifted(at_us: int | None, paused_us: int) -> str:
    """A pending deadline, moved by the time spent paused (specs/replay.md R5)."""
    if at_us is None or not paused_us:
        return iso(at_us)
    return f"{iso(at_us + paused_us)} (logged {iso(at_us)}, +{duration(paused_us)} paused)"


# -- JSON ---------------------------------------------------------------------------------


def _json(t: Timeline, out: Output) -> None:
    s = t.summary
    header: dict[str, Any] = {
        "record": "workflow", "workflow_id": t.workflow_id, "stream": t.stream,
        "events": t.events, "first_position": t.first_position,
        "last_position": t.last_position, "stored_status": t.stored_status,
        "summary": s, "params": None if t.started is None else t.started.params,
    }
    out.record(header)
    for run in t.runs:
        out.record({"record": "run", "run": run.number, "start_position": run.start_position,
                    "start_time_us": run.start_us, "start_time": iso(run.start_us),
                    "ended": run.ended})
        for command in sorted(run.commands.values(), key=lambda c: c.seq):
            out.record(_command_record(run, command))
        for change in run.changes:
            out.record({"record": "status", "run": run.number, "position": change.position,
                        "time_us": change.time_us, "time": iso(change.time_us),
                        "type": change.type, "status": change.status, "detail": change.detail})
        for r in run.received.values():
            out.record({"record": "received", "run": run.number, "position": r.position,
                        "stream_position": r.stream_position, "time_us": r.time_us,
                        "time": iso(r.time_us), "event_type": r.event_type,
                        "payload": r.payload, "consumed_by": r.consumed_by,
                        "consumed_at": r.consumed_at})
    if t.problem is not None:
        out.record({"record": "problem", "position": t.problem[0], "problem": t.problem[1],
                    "unread": t.unread})


def _command_record(run: Run, c: Command) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record": "step", "run": run.number, "seq": c.seq, "kind": c.kind, "name": c.name,
        "outcome": c.outcome, "positions": c.positions,
        "started_us": c.started_us, "started": iso(c.started_us), "started_inferred": c.inferred,
        "ended_us": c.ended_us, "ended": iso(c.ended_us), "duration_us": c.duration_us,
        "paused_us": c.paused_us,
        "attempts": [{"attempt": a.number, "started_us": a.started_us,
                      "started_inferred": a.inferred, "ended_us": a.ended_us,
                      "error": a.error, "retry_at_us": a.retry_at_us} for a in c.attempts],
    }
    if c.outcome == "succeeded":
        record["value"] = c.value
    if c.error is not None:
        record["error"] = c.error
    if c.kind.startswith("sleep"):
        record["wake_at_us"], record["wake_at"] = c.wake_at_us, iso(c.wake_at_us)
    if c.kind == "wait":
        record.update(event_type=c.event_type, timeout_at_us=c.timeout_at_us,
                      received_position=None if c.consumed is None else c.consumed.position)
    return record
