// The eventwf console: live pages (<main data-live>) re-read themselves every 2 s and
// swap in the new <main>; the time-travel slider shows its value and submits on release;
// the control buttons (only on a console served with controls) POST to
// /api/workflows/<id>/<action> and show the answer, then the page is re-read at once.
"use strict";
(function () {
  const PERIOD_MS = 2000;
  let lastResult = "";

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
      const response = await fetch(`/api/workflows/${id}/${action}`, {
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
  });
})();
