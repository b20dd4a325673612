// The eventwf console: live pages (<main data-live>) re-read themselves every 2 s and
// swap in the new <main>; the time-travel slider shows its value and submits on release.
"use strict";
(function () {
  const PERIOD_MS = 2000;

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
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    setInterval(refresh, PERIOD_MS);
  });
})();
