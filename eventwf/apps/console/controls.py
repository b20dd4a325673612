"""The console's controls on a live engine: approve, reject, pause, resume, terminate,
restart and send an event (specs/console.md CN13, CN14).

Each control is ``POST /api/workflows/<id>/<action>`` with an optional JSON object body
(``reason``, ``metadata``; for ``event``: ``type`` and ``payload``), answered through the
public ``Agent`` API of the workflow's agent, which is read from the log the console
shows. The answer is JSON: 200 ``{"ok": true, "status": ...}``; 404 for a workflow the
log does not know; 400 for a bad action or body; 409 with the eventwf error's message
when the engine refuses (approving a finished workflow, terminating a terminated one).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from eventwf.agent import Agent
from eventwf.apps.console import views
from eventwf.apps.console.site import Response, error
from eventwf.engine import Engine
from eventwf.errors import EventwfError, StorageError, WorkflowNotFoundError
from eventwf.logtool.render import to_json
from eventwf.logtool.source import NotFound, ToolError

__all__ = ["ACTIONS", "MAX_BODY", "act", "parse_body"]

ACTIONS = ("approve", "reject", "pause", "resume", "terminate", "restart", "event")
MAX_BODY = 65_536  # bytes of JSON a control request may carry


class BadControl(ValueError):
    """A control request the console cannot carry out as asked (a 400)."""


def parse_body(data: bytes) -> dict[str, Any]:
    """A control's JSON object body (empty: ``{}``); ``BadControl`` naming the problem."""
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadControl(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadControl(f"the body must be a JSON object, not {type(body).__name__}")
    return body


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadControl(f"{key!r} must be a string, not {type(value).__name__}")
    return value


def _summary(db: str, workflow_id: str) -> dict[str, Any]:
    """The workflow's tracking summary as the log ``db`` (a file or a PostgreSQL URL)
    shows it (blocking)."""
    with views.open_log(db) as log:
        summary = views.workflow(log, workflow_id)[0]["summary"]
    if not summary:
        raise NotFound(f"no tracked workflow {workflow_id!r}")
    return dict(summary)


async def _agent_of(engine: Engine, summary: dict[str, Any]) -> Agent:
    cls = engine.runtime.agent_classes.get(summary["agent_class"])
    if cls is None:
        raise WorkflowNotFoundError(
            f"the agent class {summary['agent_class']!r} of workflow "
            f"{summary['workflow_id']!r} is not registered with this engine")
    agent: Agent = await engine.get_agent(cls, summary["agent_name"])
    return agent


async def _apply(agent: Agent, summary: dict[str, Any], action: str,
                 body: dict[str, Any]) -> None:
    workflow_id = summary["workflow_id"]
    match action:
        case "approve":
            metadata = body.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise BadControl("'metadata' must be a JSON object")
            await agent.approve_workflow(workflow_id, reason=_text(body, "reason"),
                                         metadata=metadata)
        case "reject":
            await agent.reject_workflow(workflow_id, reason=_text(body, "reason"))
        case "pause":
            await agent.pause_workflow(workflow_id)
        case "resume":
            await agent.resume_workflow(workflow_id)
        case "terminate":
            await agent.terminate_workflow(workflow_id)
        case "restart":
            await agent.restart_workflow(workflow_id)
        case "event":
            event_type = _text(body, "type")
            if event_type is None:
                raise BadControl("an event needs a 'type' (a non-empty string)")
            await agent.send_workflow_event(summary["workflow_name"], workflow_id,
                                            {"type": event_type,
                                             "payload": body.get("payload")})
        case _:
            raise BadControl(f"no control {action!r}; the controls are {', '.join(ACTIONS)}")


async def act(engine: Engine, workflow_id: str, action: str, data: bytes, *,
              db: str | None = None) -> Response:
    """Carry out one control on the live engine and answer it (see the module doc).

    ``db`` is where the workflow is looked up read-only (the mount's: the engine's file,
    or its PostgreSQL URL with the password); by default the engine's SQLite file."""
    try:
        if action not in ACTIONS:
            raise BadControl(f"no control {action!r}; the controls are {', '.join(ACTIONS)}")
        body = parse_body(data)
        summary = await trio.to_thread.run_sync(_summary, db or engine.path, workflow_id)
        agent = await _agent_of(engine, summary)
        await _apply(agent, summary, action, body)
        info = await agent.get_workflow(workflow_id)
    except (NotFound, WorkflowNotFoundError) as exc:
        return error(404, str(exc), True)
    except BadControl as exc:
        return error(400, str(exc), True)
    except (ToolError, StorageError) as exc:
        return error(500, str(exc), True)
    except ValueError as exc:  # a payload the engine refuses (not JSON data, too large)
        return error(400, str(exc), True)
    except EventwfError as exc:
        return error(409, f"{type(exc).__name__}: {exc}", True)
    status = None if info is None else info.status
    return 200, b"application/json", to_json({"ok": True, "action": action,
                                              "workflow_id": workflow_id, "status": status})
