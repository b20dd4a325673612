// The eventwf console: live pages (<main data-live>) re-read themselves every 2 s and
// swap in the new <main>; the log tail (<table data-follow>) asks only for what came
// after its cursor (GET <prefix>/api/log?after=N with its filter) and puts the new rows
// on top; the time-travel slider shows its value and submits on release; the control
// buttons (only on a console served with controls) POST to
// <prefix>/api/workflows/<id>/<action> and show the answer, then the page is re-read.
// Every value is put in the page as text (textContent), never as markup.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const MAX_ROWS = 500;
  let lastResult = "";

  function prefix() { return document.body ? document.body.dataset.prefix || "" : ""; }

  async function refresh() {
    const main = document.querySelector("main[data-live]");
    if (!main || document.hidden) return;
    try {
      const response = await fetch(location.href, { cache: "no-store" });
      if (!response.ok) return;
      const next = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = next.querySelector("main");
      if (fresh && fresh.innerHTML !== main.innerHTML && !main.contains(document.activeElement)) {
        main.innerHTML = fresh.innerHTML;
        wire();
      }
    } catch (err) {
      console.warn("eventwf console: refresh failed", err);
    }
  }

  function cell(row, text, code) {
    const td = row.insertCell();
    if (code) {
      const c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
  }

  function compact(value) {
    const text = JSON.stringify(value === undefined ? null : value);
    return text.length > 200 ? text.slice(0, 199) + "…" : text;
  }

  async function follow() {
    const table = document.querySelector("table[data-follow]");
    if (!table || document.hidden) return;
    const url = new URL(table.dataset.follow, location.href);
    url.searchParams.set("after", table.dataset.after);
    try {
      const response = await fetch(url, { cache: "no-store" });
      if (!response.ok) return;
      const records = await response.json();
      const meta = records.pop();
      const body = table.tBodies[0];
      for (const r of records) {  // oldest first: each goes on top
        const row = body.insertRow(0);
        row.className = "new";
        cell(row, String(r.position));
        cell(row, r.stream);
        cell(row, r.time);
        cell(row, r.type);
        if ("problem" in r) cell(row, r.problem); else cell(row, compact(r.event), true);
      }
      while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
      table.dataset.after = String(meta.next_after);
    } catch (err) {
      console.warn("eventwf console: following the log failed", err);
    }
  }

  function wire() {
    for (const range of document.querySelectorAll("form.travel input[type=range]")) {
      const shown = range.parentElement.querySelector("output");
      range.addEventListener("input", () => { if (shown) shown.textContent = range.value; });
      range.addEventListener("change", () => range.form.submit());
    }
    const result = document.querySelector("form.controls output.control-result");
    if (result) result.textContent = lastResult;
  }

  function controlBody(form, action) {
    const reason = form.elements.namedItem("reason").value;
    if (action === "approve" || action === "reject") return reason ? { reason } : {};
    if (action !== "event") return {};
    return { type: form.elements.namedItem("event_type").value,
             payload: JSON.parse(form.elements.namedItem("payload").value || "null") };
  }

  async function control(button) {
    const form = button.closest("form.controls");
    const action = button.dataset.action;
    const id = encodeURIComponent(form.dataset.workflow);
    try {
      const response = await fetch(`${prefix()}/api/workflows/${id}/${action}`, {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify(controlBody(form, action)) });
      const answer = await response.json();
      lastResult = response.ok ? `${action}: accepted (status then: ${answer.status})`
                               : `${action} refused (${response.status}): ${answer.error}`;
    } catch (err) {
      lastResult = `${action} failed: ${err}`;
    }
    button.blur();
    wire();
    await refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("form.controls button[data-action]");
    if (button) { event.preventDefault(); control(button); }
  });

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    setInterval(refresh, PERIOD_MS);
    setInterval(follow, PERIOD_MS);
  });
})();
