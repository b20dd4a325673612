"""The oracles (reliability plan §5.2), as a pure function of what a campaign left behind.

Inputs: the final log (read through ``eventwf.store.sqlite``), the ledger, the fake service, the
client history, the plan and the list of runs (which ones were killed). Nothing here
writes. Every violation is one precise sentence naming the workflow, step, position and
run involved.

- O1 acknowledged operations survive: every ``ok`` start, send, approval and state change
  is in the log (its token found in the logged payload); a ``fail`` never landed; nothing
  landed that no client invoked, and nothing landed twice.
- O2 exactly one terminal event per workflow.
- O3 each step outcome (and each timer, attempt and event consumption) recorded once.
- O4 no re-execution of a logged step: every execution happened at a log head before
  the outcome of its attempt; every executed attempt has an outcome.
- O5 at-least-once stays bounded: within one run an attempt runs once (more only with
  injected in-process faults, up to their number).
- O6 effectively once: each service step's recorded result is the receipt of the one
  effect made with its idempotency key; keys are ``<workflow>/…`` and stable per step.
- O7 model agreement: status and output (or error) equal the model's; agent states too;
  each outcome callback delivered, again only after a killed run.
- O8 log integrity: ``tools.eventlog`` verify finds nothing; ``integrity_check`` is ok.
- O9 projections equal the fold of the log, row for row.
- O12 liveness: every workflow that is not quarantined finished.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from eventwf.logtool.verify import verify
from eventwf.model.events import (
    AgentStateSet,
    EventConsumed,
    EventReceived,
    Recorded,
    SleepCompleted,
    StepAttemptFailed,
    StepFailed,
    StepSucceeded,
    WorkflowCompleted,
    WorkflowErrored,
    WorkflowRestarted,
    WorkflowStarted,
    WorkflowTerminated,
)

from .history import Op, read_history
from .ledger import Ledger
from .logview import fold_agents, projection_mismatch, read_events
from .programs import SERVICE, Plan, expected, expected_agent_states
from .service import Service
from .workload import CLIENT_AGENT, Config

__all__ = ["KNOWN_BUGS", "Report", "check"]

# Engine bugs the campaign found and that are not fixed yet, each pinned by a strict xfail
# test in tests/test_campaign_bugs.py; their symptoms are counted apart (Report.known).
# B1-B8 are fixed (specs/guarantees.md): their symptoms are violations again.
KNOWN_BUGS: dict[str, str] = {}

_TERMINAL = (WorkflowCompleted, WorkflowErrored, WorkflowTerminated)


@dataclass
class Report:
    workflows: int = 0
    events: int = 0
    executions: int = 0
    attempts: int = 0
    reexec: int = 0  # executions beyond one per attempt (at least once, re-run)
    acked: int = 0
    acked_lost: int = 0
    info_ops: int = 0  # invoked, no answer (the process died)
    info_landed: int = 0  # ... of which the log holds them (durable but unacknowledged)
    failed_ops: int = 0
    dup_records: int = 0
    effects: int = 0
    absorbed: int = 0  # service requests beyond the first per key (idempotency at work)
    redelivered: int = 0  # callbacks delivered again after a killed run
    quarantined: int = 0
    violations: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)  # known engine bugs (KNOWN_BUGS), not new

    def summary(self) -> str:
        return (f"workflows={self.workflows} events={self.events} acked={self.acked} "
                f"acked_lost={self.acked_lost} ambiguous_acks={self.info_ops} "
                f"ambiguous_landed={self.info_landed} dup_records={self.dup_records} "
                f"reexec={self.reexec} effects={self.effects} absorbed={self.absorbed} "
                f"redelivered={self.redelivered} known_bug_hits={len(self.known)} "
                f"violations={len(self.violations)}")


def check(
    cfg: Config,
    *,
    killed: AbstractSet[str] = frozenset(),
    inrun_faults: int = 0,
    quarantined: AbstractSet[str] = frozenset(),
    lost_allowed: bool = False,
    after_run: str | None = None,
) -> Report:
    """Check every oracle. ``killed``: runs that died (their in-flight work may repeat).
    ``inrun_faults``: injected in-process faults (each may repeat one attempt in its run).
    ``quarantined``: workflows expected to be quarantined (excluded from O2/O7/O12).
    ``lost_allowed``: the campaign destroyed acknowledged data on purpose (torn tail): O1
    and O4 are checked only for runs from ``after_run`` on."""
    plan = Plan.load(cfg.plan)
    report = Report(workflows=len(plan.workflows))
    events, undecodable = read_events(cfg.db)
    report.events = len(events)
    ledger = Ledger(cfg.ledger)
    service = Service(cfg.service)
    try:
        executions = ledger.executions()
        callbacks = ledger.callbacks()
        run_order = [o.run for o in ledger.opens()]
        effects = service.effects()
    finally:
        ledger.close()
        service.close()
    history = read_history(cfg.history)

    streams: dict[str, list[Recorded]] = defaultdict(list)
    for rec in events:
        streams[rec.stream].append(rec)
    checked_runs = set(run_order) if after_run is None or after_run not in run_order else set(
        run_order[run_order.index(after_run):])

    _o1(report, history, events, lost_allowed, checked_runs)
    _o2_o3(report, plan, streams, quarantined)
    _o4_o5(report, executions, streams, inrun_faults, lost_allowed, checked_runs)
    _o6(report, executions, streams, effects)
    _o7(report, plan, events, streams, effects, executions, callbacks, killed, quarantined)
    _o8_o9(report, cfg.db, undecodable, quarantined)
    report.quarantined = len(quarantined)
    return report


# -- O1 ------------------------------------------------------------------------------------


def _token_of(rec: Recorded) -> str | None:
    event = rec.event
    if isinstance(event, WorkflowStarted) and isinstance(event.params, dict):
        return str(event.params.get("token"))
    if isinstance(event, EventReceived) and isinstance(event.payload, dict):
        payload = event.payload
        return str(payload["tok"] if "tok" in payload else payload.get("reason"))
    if isinstance(event, AgentStateSet) and isinstance(event.state, dict):
        return str(event.state.get("tok"))
    return None


def _o1(report: Report, history: list[Op], events: list[Recorded], lost_allowed: bool,
        checked_runs: set[str]) -> None:
    bad = report.violations
    logged: dict[str, list[int]] = defaultdict(list)
    for rec in events:
        token = _token_of(rec)
        if token is not None:
            logged[token].append(rec.position)
    invoked = {op.token: op for op in history}
    for token, positions in logged.items():
        if token not in invoked:
            bad.append(f"O1 the log holds an operation no client invoked (token {token} at "
                       f"position {positions[0]})")
        if len(positions) > 1:
            bad.append(f"O1 operation {token} landed {len(positions)} times: positions "
                       f"{positions}")
    per_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for op in history:
        here = logged.get(op.token)
        if here:
            per_key[op.op if op.op != "reject" else "approve", op.key].extend(here)
        if op.outcome == "ok":
            report.acked += 1
            if not here:
                report.acked_lost += 1
                if not lost_allowed or op.run in checked_runs:
                    bad.append(f"O1 acknowledged {op.op} {op.key} (token {op.token}, run "
                               f"{op.run}) is not in the log")
        elif op.outcome == "fail":
            report.failed_ops += 1
            if here and "outcome unknown" in op.error:
                report.info_landed += 1  # reported as unknown (B5's fix): it may land
            elif here:
                bad.append(f"O1 {op.op} {op.key} (token {op.token}, run {op.run}) was "
                           f"reported failed ({op.error}) but landed at position {here[0]}")
        else:
            report.info_ops += 1
            report.info_landed += bool(here)
    for (kind, key), positions in per_key.items():
        if kind != "set_state" and len(positions) > 1:
            bad.append(f"O1 {kind} {key} landed more than once: positions {sorted(positions)}")


# -- O2, O3 --------------------------------------------------------------------------------


def _o2_o3(report: Report, plan: Plan, streams: dict[str, list[Recorded]],
           quarantined: AbstractSet[str]) -> None:
    bad = report.violations
    for workflow in plan.workflows:
        recs = streams.get("wf:" + workflow.id, [])
        if workflow.id in quarantined:
            continue
        terminals = [r.position for r in recs if isinstance(r.event, _TERMINAL)]
        if len(terminals) > 1:
            bad.append(f"O2 workflow {workflow.id} has {len(terminals)} terminal events at "
                       f"positions {terminals}")
        runs = 1
        outcomes: Counter[tuple[Any, ...]] = Counter()
        where: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for rec in recs:
            event = rec.event
            if isinstance(event, WorkflowRestarted):
                runs += 1
            key: tuple[Any, ...] | None = None
            if isinstance(event, StepSucceeded | StepFailed):
                key = ("outcome", runs, event.seq)
            elif isinstance(event, StepAttemptFailed):
                key = ("attempt", runs, event.seq, event.attempt)
            elif isinstance(event, SleepCompleted):
                key = ("timer", runs, event.seq)
            elif isinstance(event, EventConsumed):
                key = ("consumed", runs, event.seq)
                outcomes["received", runs, event.received] += 1
                where["received", runs, event.received].append(rec.position)
            if key is not None:
                outcomes[key] += 1
                where[key].append(rec.position)
        for key, count in outcomes.items():
            if count > 1:
                report.dup_records += count - 1
                bad.append(f"O3 workflow {workflow.id}: {key[0]} {key[2:]} recorded {count} "
                           f"times, at positions {where[key]}")


# -- O4, O5 --------------------------------------------------------------------------------


def _attempt_outcomes(streams: dict[str, list[Recorded]]) -> dict[tuple[str, str, int], int]:
    """(workflow, step name, attempt) -> position of that attempt's outcome (first run)."""
    out: dict[tuple[str, str, int], int] = {}
    for stream, recs in streams.items():
        if not stream.startswith("wf:"):
            continue
        for rec in recs:
            event = rec.event
            if isinstance(event, StepSucceeded | StepFailed | StepAttemptFailed) and \
                    event.name is not None:
                out.setdefault((stream[3:], event.name, event.attempt), rec.position)
    return out


def _o4_o5(report: Report, executions: list[Any], streams: dict[str, list[Recorded]],
           inrun_faults: int, lost_allowed: bool, checked_runs: set[str]) -> None:
    bad = report.violations
    outcomes = _attempt_outcomes(streams)
    per_attempt: dict[tuple[str, str, int], list[Any]] = defaultdict(list)
    for ex in executions:
        per_attempt[ex.workflow, ex.step, ex.attempt].append(ex)
    report.executions = len(executions)
    report.attempts = len(per_attempt)
    report.reexec = len(executions) - len(per_attempt)
    finished = {stream[3:] for stream, recs in streams.items()
                if any(isinstance(r.event, _TERMINAL) for r in recs)}
    same_run = 0
    for (wid, step, attempt), runs in per_attempt.items():
        position = outcomes.get((wid, step, attempt))
        for ex in runs:
            if lost_allowed and ex.run not in checked_runs:
                continue
            if position is not None and position <= ex.head:
                bad.append(f"O4 step {wid}/{step} attempt {attempt} ran again in run {ex.run} "
                           f"at log head {ex.head}, although its outcome was logged at "
                           f"position {position}")
        if position is None and wid in finished:
            bad.append(f"O4 step {wid}/{step} attempt {attempt} ran ({len(runs)} time(s)) but "
                       "its workflow finished without logging that attempt's outcome")
        counts = Counter(ex.run for ex in runs)
        same_run += sum(c - 1 for c in counts.values())
    if same_run > inrun_faults:
        bad.append(f"O5 {same_run} attempt(s) ran more than once within one run, with only "
                   f"{inrun_faults} injected in-process fault(s) to explain them")


# -- O6 ------------------------------------------------------------------------------------


def _o6(report: Report, executions: list[Any], streams: dict[str, list[Recorded]],
        effects: dict[str, tuple[str, int, int]]) -> None:
    bad = report.violations
    keys: dict[tuple[str, str], set[str]] = defaultdict(set)
    for ex in executions:
        keys[ex.workflow, ex.step].add(ex.key)
    owners: dict[str, tuple[str, str]] = {}
    for (wid, step), found in keys.items():
        if len(found) != 1:
            bad.append(f"O6 step {wid}/{step} ran with {len(found)} different idempotency "
                       f"keys: {sorted(found)}")
        for key in found:
            if not key.startswith(wid + "/") or not key.endswith("/" + step):
                bad.append(f"O6 idempotency key {key!r} of step {wid}/{step} does not name "
                           "its workflow and step")
            if key in owners and owners[key] != (wid, step):
                bad.append(f"O6 idempotency key {key!r} is shared by {owners[key]} and "
                           f"{(wid, step)}")
            owners[key] = (wid, step)
    report.effects = len(effects)
    report.absorbed = sum(requests - 1 for _, _, requests in effects.values())
    for key in effects:
        if key not in owners:
            bad.append(f"O6 the service holds an effect for key {key!r}, which no step used")
    for stream, recs in streams.items():
        for rec in recs:
            event = rec.event
            if isinstance(event, StepSucceeded) and event.name and event.name.startswith("svc-"):
                found = keys.get((stream[3:], event.name), set())
                used = next(iter(found), None)
                if used is None or used not in effects:
                    bad.append(f"O6 service step {stream[3:]}/{event.name} is logged at "
                               f"position {rec.position} but the service has no effect for it")
                elif effects[used][0] != event.value:
                    bad.append(f"O6 service step {stream[3:]}/{event.name} logged "
                               f"{event.value!r} but the service's one effect is "
                               f"{effects[used][0]!r}")


# -- O7 ------------------------------------------------------------------------------------


def _o7(report: Report, plan: Plan, events: list[Recorded], streams: dict[str, list[Recorded]],
        effects: dict[str, tuple[str, int, int]], executions: list[Any],
        callbacks: list[tuple[str, str, str, str]], killed: AbstractSet[str],
        quarantined: AbstractSet[str]) -> None:
    bad = report.violations
    svc_keys = {(ex.workflow, ex.step): ex.key for ex in executions}
    delivered: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for run, wid, kind, value in callbacks:
        delivered[wid, kind].append((run, value))
    for workflow in plan.workflows:
        if workflow.id in quarantined:
            continue
        model = expected(workflow)
        recs = streams.get("wf:" + workflow.id, [])
        terminal = next((r.event for r in recs if isinstance(r.event, _TERMINAL)), None)
        if terminal is None:
            started = any(isinstance(r.event, WorkflowStarted) for r in recs)
            bad.append(f"O12 workflow {workflow.id} did not finish "
                       f"({'started' if started else 'never started'})")
            continue
        if model.status == "complete":
            want = [effects.get(svc_keys.get((workflow.id, f"svc-{i}"), ""), ("?",))[0]
                    if value == SERVICE else value
                    for i, value in zip(_indexes(workflow.program, model.output or []),
                                        model.output or [], strict=True)]
            if not isinstance(terminal, WorkflowCompleted) or terminal.output != want:
                bad.append(f"O7 workflow {workflow.id} ended with {_describe(terminal)}; the "
                           f"model says complete with {want!r}")
                continue
            kind, value = "complete", json.dumps(want, sort_keys=True)
        else:
            if not isinstance(terminal, WorkflowErrored) or \
                    terminal.error.message != model.error:
                bad.append(f"O7 workflow {workflow.id} ended with {_describe(terminal)}; the "
                           f"model says errored with {model.error!r}")
                continue
            kind, value = "error", ""
        got = delivered.get((workflow.id, kind), [])
        if not got:
            bad.append(f"O7 the {kind} callback of workflow {workflow.id} was never delivered")
        elif kind == "complete" and any(v != value for _, v in got):
            bad.append(f"O7 the complete callback of {workflow.id} carried {got[0][1]}, not "
                       f"{value}")
        for (run, _), _later in zip(got, got[1:], strict=False):
            report.redelivered += 1
            if run not in killed:
                bad.append(
                    f"C4 the {kind} callback of {workflow.id} was delivered again after run "
                    f"{run}, which was closed cleanly, not killed")
    states = expected_agent_states(plan, skip=quarantined)
    folded = fold_agents(events, "agent:CampaignAgent/")
    for agent, merged in states.items():
        have = folded.get(agent)
        if have != merged:
            bad.append(f"O7 agent CampaignAgent/{agent} state is {_short(have)}; the model "
                       f"says {_short(merged)}")
    client = [r for r in events if r.stream == f"agent:CampaignAgent/{CLIENT_AGENT}" and
              isinstance(r.event, AgentStateSet)]
    if client and folded.get(CLIENT_AGENT) != client[-1].event.state:  # type: ignore[attr-defined]
        bad.append("O7 the client agent's state is not its last logged set_state")


def _indexes(program: list[list[Any]], output: list[Any]) -> list[int]:
    """The program index that produced each output element."""
    producing = {"do", "svc", "flaky", "fail", "exhaust", "wait", "timeout", "approval"}
    out = [i for i, (op, _) in enumerate(program) if op in producing]
    return out[:len(output)]


def _describe(event: Any) -> str:
    if isinstance(event, WorkflowCompleted):
        return f"complete with {event.output!r}"
    if isinstance(event, WorkflowErrored):
        return f"errored with {event.error.message!r}"
    return type(event).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 300 else text[:300] + "…"


# -- O8, O9 --------------------------------------------------------------------------------


def _o8_o9(report: Report, db: str, undecodable: list[str],
           quarantined: AbstractSet[str]) -> None:
    bad = report.violations
    if not quarantined:
        for text in undecodable:
            bad.append(f"O8 {text}")
        result = verify(db)
        for problem in result.problems:
            bad.append(f"O8 verify: {problem.kind} at {problem.position}: {problem.message}")
    conn = sqlite3.connect(db)
    try:
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    if integrity != "ok":
        bad.append(f"O8 integrity_check: {integrity}")
    for mismatch in projection_mismatch(db):
        bad.append(f"O9 {mismatch}")
