"""The console's pages as HTML, rendered on the server from the views' records.

Every value that came from the log (ids, names, params, outputs, errors, states) passes
through :func:`esc` or :func:`value` on its way into the page, and every link is built
with :func:`link` from quoted parts (specs/console.md CN8), under the mount's prefix
(CN19: a :class:`Site` knows it, and puts it in ``<body data-prefix>`` for the script).
The page loads one script and one stylesheet from ``/static/`` and nothing inline, so
the Content-Security-Policy can forbid inline script altogether.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from eventwf.logtool.render import compact, duration, iso

__all__ = ["ACTIONS", "Site", "esc", "link", "value"]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def value(data: Any, limit: int | None = 400) -> str:
    """A logged value as compact JSON, escaped, in a ``<code>``."""
    return f"<code>{esc(compact(data, limit))}</code>"


def link(prefix: str, *parts: str, query: Mapping[str, str] | None = None) -> str:
    """An escaped href: ``prefix`` (the mount's path, or "") then the quoted parts."""
    path = prefix + "/" + "/".join(quote(p, safe="") for p in parts)
    return esc(path + ("?" + urlencode(query) if query else ""))


def _table(headers: Iterable[str], rows: Iterable[Iterable[str]], cls: str = "",
           attrs: str = "") -> str:
    """A table of already escaped cells; ``attrs``: more (escaped) attributes."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return (f'<table class="{esc(cls)}"{attrs}><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table>')


def _step_rows(steps: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for s in steps:
        attempts = []
        for a in s["attempts"]:
            text = f'#{a["attempt"]}'
            if a.get("error"):
                text += f': {a["error"]["type"]}: {a["error"]["message"]}'
            if a.get("retry_at_us"):
                text += f' (retry at {iso(a["retry_at_us"])})'
            attempts.append(f"<li>{esc(text)}</li>")
        detail = ""
        if "value" in s:
            detail = value(s["value"])
        elif "error" in s:
            detail = esc(f'{s["error"]["type"]}: {s["error"]["message"]}')
        if s.get("wake_at"):
            detail += esc(f' wakes {s["wake_at"]}')
        if s.get("event_type"):
            detail += esc(f' waits for {s["event_type"]!r}')
        rows.append([esc(s["run"]), esc(s["seq"]), esc(s["kind"]), esc(s["name"] or ""),
                     f'<span class="outcome">{esc(s["outcome"])}</span>',
                     esc(s["started"]), esc(duration(s["duration_us"])),
                     f'<ul class="attempts">{"".join(attempts)}</ul>', detail])
    return rows



ACTIONS = ("approve", "reject", "pause", "resume", "terminate", "restart")


def controls_form(workflow_id: str) -> str:
    """The control buttons of a workflow (CN13): console.js posts each to
    ``<prefix>/api/workflows/<id>/<action>`` and shows the answer in the ``<output>``."""
    buttons = "".join(f'<button type="button" data-action="{a}">{a}</button> '
                      for a in ACTIONS)
    return (f'<form class="controls" data-workflow="{esc(workflow_id)}"><h2>Controls</h2>'
            f'<p>{buttons}<label>reason <input name="reason"></label></p>'
            f'<p><label>event type <input name="event_type"></label> '
            f'<label>payload (JSON) <input name="payload" value="null"></label> '
            f'<button type="button" data-action="event">send event</button></p>'
            f'<p><output class="control-result"></output></p></form>')


def _input(name: str, label: str, current: str, hint: str = "") -> str:
    placeholder = f' placeholder="{esc(hint)}"' if hint else ""
    return (f'<label>{esc(label)} <input name="{esc(name)}" value="{esc(current)}"'
            f'{placeholder}></label> ')


class Site:
    """The pages of one console: its mount ``prefix`` ("" at the root, else ``/path``)
    and whether workflow pages show the controls."""

    def __init__(self, prefix: str, *, controls: bool = False) -> None:
        self.prefix = prefix
        self.controls = controls

    def link(self, *parts: str, query: Mapping[str, str] | None = None) -> str:
        return link(self.prefix, *parts, query=query)

    def layout(self, title: str, body: str, *, live: bool = False) -> bytes:
        """A whole page; ``live`` pages are refreshed by console.js every 2 seconds (CN9)."""
        nav = (f'<nav><a href="{self.link("")}">Workflows</a> '
               f'<a href="{self.link("log")}">Log</a> '
               f'<a href="{self.link("log", "verify")}">Verify</a></nav>')
        static = esc(self.prefix + "/static/")
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f'<title>{esc(title)} · eventwf console</title>'
                f'<link rel="icon" href="data:,"><link rel="stylesheet" href="{static}console.css">'
                f'<script src="{static}console.js" defer></script></head>'
                f'<body data-prefix="{esc(self.prefix)}">{nav}'
                f'<main{" data-live" if live else ""}><h1>{esc(title)}</h1>{body}'
                f'</main></body></html>')
        return page.encode()

    def error_page(self, status: int, message: str) -> bytes:
        return self.layout(f"{status}", f'<p class="problem">{esc(message)}</p>')

    def overview_page(self, data: Mapping[str, Any]) -> bytes:
        flt = data["filter"]
        counts = "".join(
            f'<a class="count status-{esc(s)}" href="{self.link("", query={"status": s})}">'
            f'{esc(s)} <b>{n:,}</b></a>' for s, n in data["counts"].items() if n)
        options = "".join(f'<option value="{esc(s)}"{" selected" if s == flt["status"] else ""}>'
                          f'{esc(s)}</option>' for s in ["", *data["counts"]])
        form = (f'<form class="filter" method="get" action="{self.link("")}">'
                f'<label>status <select name="status">{options}</select></label> '
                + _input("name", "name", flt["name"])
                + _input("agent", "agent", flt["agent"], "Class or Class/name")
                + _input("meta", "metadata", flt["meta"], 'key=value, n=1, s="1"')
                + '<button>Filter</button></form>')
        rows = [[f'<a class="wf" href="{self.link("workflows", w["workflow_id"])}">'
                 f'{esc(w["workflow_id"])}</a>', esc(w["workflow_name"]),
                 f'<a href="{self.link("agents", w["agent_class"], w["agent_name"])}">'
                 f'{esc(w["agent_class"])}/{esc(w["agent_name"])}</a>',
                 f'<span class="status status-{esc(w["status"])}">{esc(w["status"])}</span>',
                 esc(iso(w["created_us"])), esc(iso(w["updated_us"])),
                 esc(f'{w["error_name"]}: {w["error_message"]}' if w["error_name"] else "")]
                for w in data["workflows"]]
        table = _table(["ID", "NAME", "AGENT", "STATUS", "CREATED", "UPDATED", "ERROR"], rows,
                       "workflows") if rows else "<p>No workflows match.</p>"
        more = ""
        if data["next_cursor"]:
            query = {k: v for k, v in flt.items() if v} | {"cursor": data["next_cursor"],
                                                            "limit": str(data["limit"])}
            more = (f'<p><a class="next" href="{self.link("", query=query)}">'
                    'Older workflows →</a></p>')
        body = (f'<p class="counts">{counts or "No workflows yet."}</p>{form}{table}{more}'
                f'<p class="head">log head: position {data["head"]:,}</p>')
        return self.layout("Workflows", body, live=True)

    def workflow_page(self, records: list[dict[str, Any]]) -> bytes:
        head = records[0]
        summary = head["summary"] or {}
        steps = [r for r in records if r["record"] == "step"]
        changes = [r for r in records if r["record"] == "status"]
        outcome = ""
        if summary.get("error_name"):
            outcome = (f'<p class="problem">error: {esc(summary["error_name"])}: '
                       f'{esc(summary.get("error_message") or "")}</p>')
        elif summary.get("status") == "complete":
            outcome = f'<p>output: {value(summary.get("output"), None)}</p>'
        agent = (f'<a href="{self.link("agents", summary["agent_class"], summary["agent_name"])}">'
                 f'{esc(summary["agent_class"])}/{esc(summary["agent_name"])}</a>'
                 if summary else "")
        body = (f'<p>name <b>{esc(summary.get("workflow_name", ""))}</b> · agent {agent} · '
                f'status <span class="status status-{esc(summary.get("status", ""))}">'
                f'{esc(summary.get("status", "?"))}</span> · <a class="events" href="'
                f'{self.link("log", query={"workflow": head["workflow_id"]})}">'
                f'{head["events"]:,} events</a></p>'
                f'<p>params: {value(head["params"], None)}</p>{outcome}'
                + (controls_form(head["workflow_id"]) if self.controls else "")
                + '<h2>Steps</h2>'
                + (_table(["RUN", "SEQ", "KIND", "NAME", "OUTCOME", "STARTED", "DURATION",
                           "ATTEMPTS", "DETAIL"], _step_rows(steps), "timeline")
                   if steps else "<p>No steps yet.</p>")
                + "<h2>Status changes</h2>"
                + _table(["RUN", "POSITION", "TIME", "EVENT", "STATUS", "DETAIL"],
                         [[esc(c["run"]), esc(c["position"]), esc(c["time"]), esc(c["type"]),
                           esc(c["status"]), esc(c["detail"])] for c in changes], "changes"))
        for problem in (r for r in records if r["record"] == "problem"):
            body += (f'<p class="problem">stopped at log position {esc(problem["position"])}: '
                     f'{esc(problem["problem"])}</p>')
        return self.layout(f"Workflow {head['workflow_id']}", body, live=True)

    def agent_page(self, records: list[dict[str, Any]]) -> bytes:
        a = records[0]
        who = f'{a["agent_class"]}/{a["name"]}'
        low = a["created_position"] or 0
        here = self.link("agents", a["agent_class"], a["name"])
        slider = (f'<form class="travel" method="get" action="{here}"><label>state as of log '
                  f'position <input type="range" name="at" min="{esc(low)}" '
                  f'max="{esc(a["head"])}" value="{esc(a["at"])}"> <output>{esc(a["at"])}'
                  f'</output></label> <button>Show</button> <a href="{here}">now</a></form>')
        state = value(a["state"], None) if a["has_state"] else "<i>initial state</i>"
        changes = [[esc(c["position"]), esc(c["time"]), esc(c["type"]),
                    esc(c["workflow_id"] or "-"), value(c["state"], 200)]
                   for c in records[1:] if c["record"] == "change"]
        events = self.link("log", query={"agent": who})
        body = (f'{slider}<p>as of position <b class="at">{esc(a["at"])}</b> '
                f'({esc(a["at_time"])}) of {esc(a["head"])} · <a class="events" '
                f'href="{events}">its events</a></p>'
                f'<p class="state">state: {state}</p>'
                + self._outbox(records) + _clients(records) + '<h2>State changes</h2>'
                + _table(["POSITION", "TIME", "EVENT", "WORKFLOW", "STATE"], changes,
                         "changes"))
        if a["problem"]:
            body += (f'<p class="problem">stopped at log position '
                     f'{esc(a["problem"]["position"])}: {esc(a["problem"]["problem"])}</p>')
        return self.layout(f"Agent {who}", body, live=a["at"] == a["head"])

    def _outbox(self, records: list[dict[str, Any]]) -> str:
        """The callback outbox (CN18): the newest scheduled callbacks, each delivered or
        pending by the agent's delivery cursor."""
        a = records[0]
        box = next((r for r in records if r["record"] == "outbox"), None)
        calls = [[esc(c["position"]), esc(c["time"]), esc(c["kind"]),
                  f'<a href="{self.link("workflows", c["workflow_id"])}">'
                  f'{esc(c["workflow_id"])}</a>', value(c["value"], 120),
                  '<span class="delivered">delivered</span>' if c["delivered"]
                  else '<span class="pending">pending</span>']
                 for c in reversed(records) if c["record"] == "callback"]
        shown = "" if box is None else (f' · {box["scheduled"]:,} scheduled, the newest '
                                        f'{box["shown"]} below')
        text = (f'<h2>Callback outbox</h2><p class="cursor">delivery cursor: delivered '
                f'through position <b>{esc(a["delivered_through"])}</b>, last scheduled at '
                f'{esc(a["last_callback"])}'
                f'{" (pending)" if a["callbacks_pending"] else ""}{shown}</p>')
        return text + (_table(["POSITION", "TIME", "CALLBACK", "WORKFLOW", "VALUE", "STATE"],
                              calls, "outbox") if calls else "")

    def log_page(self, records: list[dict[str, Any]]) -> bytes:
        """The tail, newest first, with its filter; console.js follows it live by polling
        ``/api/log?after=<next_after>`` with the same filter (CN16)."""
        meta = records[-1]
        rows = [_tail_row(r) for r in reversed(records[:-1])]
        flt = meta["filter"]
        form = (f'<form class="filter" method="get" action="{self.link("log")}">'
                + _input("stream", "stream", flt.get("stream", ""), "wf:<id> or agent:C/n")
                + _input("type", "event type", flt.get("type", ""), "step.succeeded")
                + f'<label>show <input name="n" size="4" value="{esc(meta["count"])}"></label> '
                + '<button>Filter</button></form>')
        query = {"n": str(meta["count"]), **flt}
        body = (f'<p>The newest {meta["count"]} matching events, newest first (read '
                f'{meta["scanned"]:,} of at most {meta["limit"]:,} rows); new events appear '
                f'as they are committed. <a class="verify" href="{self.link("log", "verify")}">'
                f'Verify the whole log</a></p>{form}'
                + _table(["POSITION", "STREAM", "TIME", "TYPE", "EVENT"], rows, "tail",
                         f' data-follow="{self.link("api", "log", query=query)}" '
                         f'data-after="{esc(meta["next_after"])}"'))
        return self.layout("Log", body)

    def verify_page(self, records: list[dict[str, Any]]) -> bytes:
        verdict = records[-1]
        problems = [[esc(p["position"]), esc(p["kind"]), esc(p["stream"] or "-"),
                     esc(p["message"])] for p in records[:-1]]
        text = ("INTACT" if verdict["intact"] else
                f'DAMAGED: {verdict["verdict"]} at position {verdict["position"]}: '
                f'{verdict["message"]}')
        body = (f'<p class="verdict {"intact" if verdict["intact"] else "damaged"}">'
                f'{esc(text)}</p><p>{verdict["events"]:,} events in {verdict["streams"]:,} '
                f'streams; {verdict["workflows"]:,} workflows, {verdict["agents"]:,} agents.</p>'
                + "".join(f'<p class="warning">{esc(w)}</p>' for w in verdict["warnings"])
                + (_table(["POSITION", "KIND", "STREAM", "PROBLEM"], problems) if problems
                   else ""))
        return self.layout("Verify", body)


def _tail_row(r: dict[str, Any]) -> list[str]:
    return [esc(r["position"]), esc(r["stream"]), esc(r["time"]), esc(r["type"]),
            esc(r.get("problem", "")) if "problem" in r else value(r.get("event"), 200)]


def _clients(records: list[dict[str, Any]]) -> str:
    """The agent's connected clients (CN18): only a console mounted in the live engine
    knows them; a console on a log says so."""
    found = next((r for r in records if r["record"] == "clients"), None)
    if found is None or not found["available"]:
        note = found["note"] if found else "not available: read from the log"
        return f'<h2>Connected clients</h2><p class="clients">{esc(note)}</p>'
    rows = [[esc(c["id"]), esc(c["remote"] or "unknown"), esc(c["path"]),
             esc(f'{c["queued_bytes"]:,}')] for c in found["clients"]]
    return (f'<h2>Connected clients</h2><p class="clients">{len(rows)} connected now</p>'
            + (_table(["ID", "REMOTE", "PATH", "QUEUED BYTES"], rows, "clients")
               if rows else ""))
