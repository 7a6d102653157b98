// The dashboard's loader, a classic script: it imports the application (app.js and every
// module it imports) and, if any of them fails to come, loads the page again, a few times.
//
// Why: a browser gives up a module graph as a whole when one of its files fails to load,
// and keeps that failure for the page's life.  One failed file (the client's network
// changed mid-load, which Chromium answers with ERR_NETWORK_CHANGED for every request in
// flight; the server restarting) would leave the page at "Loading…" until reloaded by hand.
(function () {
  "use strict";
  const KEY = "virtuai.reloads";
  const RELOADS = 3;

  function reloads() {
    try { return Number(sessionStorage.getItem(KEY)) || 0; } catch (e) { return RELOADS; }
  }
  function remember(count) {
    try {
      if (count) sessionStorage.setItem(KEY, String(count)); else sessionStorage.removeItem(KEY);
    } catch (e) { /* no storage: no reload either (reloads() says RELOADS) */ }
  }

  function giveUp(error) {
    const main = document.getElementById("main");
    const box = document.createElement("div");
    box.className = "error";
    box.textContent = `The dashboard's files did not load (${error && error.message}). ` +
      "Check the connection to the server, then reload the page.";
    const again = document.createElement("button");
    again.type = "button";
    again.textContent = "Reload";
    again.addEventListener("click", () => location.reload());
    main.replaceChildren(box, again);
  }

  import("./app.js").then(
    () => remember(0),
    (error) => {
      const count = reloads();
      if (count >= RELOADS) { remember(0); giveUp(error); return; }
      remember(count + 1);
      setTimeout(() => location.reload(), 300 * (count + 1));
    });
})();
