// The dashboard's shell: sign-in, navigation, and a hash router (#/jobs, #/jobs/42, ...).
// Each page is a module exporting render(main, params, ctx) -> optional cleanup function
// (pages that poll stop there when the user navigates away).

import { ApiError, del, get, post, whenSignedOut } from "./api.js";
import { clear, errorBox, field, h } from "./dom.js";
import * as jobs from "./pages/jobs.js";
import * as job from "./pages/job.js";
import * as submit from "./pages/submit.js";
import * as vcs from "./pages/vcs.js";
import * as nodes from "./pages/nodes.js";
import * as tenants from "./pages/tenants.js";
import * as usage from "./pages/usage.js";
import * as admin from "./pages/admin.js";
import * as tokens from "./pages/tokens.js";
import * as notebooks from "./pages/notebooks.js";
import * as services from "./pages/services.js";

const ROUTES = [
  [/^jobs$/, jobs], [/^jobs\/(\d+)$/, job], [/^submit$/, submit],
  [/^vcs$/, vcs], [/^vcs\/([^/]+)\/([a-z0-9-]+)$/, vcs],
  [/^nodes$/, nodes], [/^tenants$/, tenants], [/^usage$/, usage],
  [/^admin$/, admin], [/^tokens$/, tokens],
  [/^notebooks$/, notebooks], [/^services$/, services], [/^services\/([^/]+)\/([^/]+)$/, services],
];

const NAV = [
  ["jobs", "Jobs"], ["submit", "Submit"], ["notebooks", "Notebooks"], ["services", "Services"],
  ["vcs", "Virtual clusters"], ["nodes", "Nodes"],
  ["tenants", "Tenants"], ["usage", "Usage"], ["tokens", "Tokens"],
];

const main = document.getElementById("main");
let cleanup = null;
let ctx = null;

function route() {
  if (!ctx) return;
  if (cleanup) { try { cleanup(); } catch (e) { /* a page's cleanup must not stop navigation */ } cleanup = null; }
  const path = location.hash.replace(/^#\/?/, "").split("?")[0] || "jobs";
  const section = path.split("/")[0];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.section === section);
  for (const [pattern, page] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      clear(main);
      try {
        const result = page.render(main, match.slice(1).map(decodeURIComponent), ctx);
        Promise.resolve(result).then((fn) => { if (typeof fn === "function") cleanup = fn; })
          .catch((e) => main.append(errorBox(e)));
      } catch (e) { main.append(errorBox(e)); }
      return;
    }
  }
  clear(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/jobs" }, "Back to jobs")));
}

function showShell(me) {
  ctx = { me };
  const nav = document.getElementById("nav");
  const items = me.is_admin ? [...NAV, ["admin", "Admin"]] : NAV;
  clear(nav, items.map(([section, title]) => h("a", { href: `#/${section}`, dataset: { section } }, title)));
  const roles = me.tenants.map((t) => `${t.tenant} (${t.role})`).join(", ");
  clear(document.getElementById("me"),
    h("span", { title: roles || "no tenant" }, me.name, me.is_admin ? " · admin" : ""),
    h("button", { id: "logout", onclick: logout }, "Sign out"));
  document.getElementById("top").hidden = false;
  route();
}

async function logout() {
  try { await del("/session"); } catch (e) { /* signed out anyway */ }
  location.hash = "";
  showLogin();
}

async function showLogin(message) {
  ctx = null;
  if (cleanup) { cleanup(); cleanup = null; }
  document.getElementById("top").hidden = true;
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "off",
    placeholder: "vai_…", required: true });
  const status = h("div");
  if (message) status.append(h("div", { class: "notice" }, message));
  const form = h("form", { class: "card", onsubmit: async (event) => {
    event.preventDefault();
    clear(status);
    try {
      const me = await post("/session", { token: input.value.trim() });
      input.value = "";
      if (goNext()) return;
      showShell(me);
    } catch (e) { status.append(errorBox(e)); }
  } },
  h("h1", {}, "Sign in to virtuai"),
  field("API token", input),
  h("p", { class: "muted small" }, "Your administrator gave you a token; ",
    h("code", {}, "virtuai token create"), " makes more."),
  h("button", { type: "submit" }, "Sign in"), status);
  const box = h("div", { class: "login" }, form);
  clear(main, box);
  try {
    const options = await get("/session/options", { quiet401: true });
    if (options.oidc) {
      box.append(h("div", { class: "card" },
        h("a", { href: `/api/v1/session/oidc/login?next=${encodeURIComponent(
          new URLSearchParams(location.search).get("next") || "/" + location.hash)}` },
          h("button", { type: "button", id: "oidc" }, "Sign in with your organisation (OIDC)"))));
    }
  } catch (e) { /* token sign-in still works */ }
  input.focus();
}

// The proxy sends a browser without a session here with ?next=/user/...: back there once
// signed in.  Only the proxy's own paths, never another site (no open redirect).
function goNext() {
  const next = new URLSearchParams(location.search).get("next") || "";
  if (!/^\/(user|svc)\/[a-z0-9]/.test(next)) return false;
  location.assign(next);
  return true;
}

async function start() {
  whenSignedOut(() => { if (ctx) showLogin("Your session ended: sign in again."); });
  window.addEventListener("hashchange", route);
  try {
    const me = await get("/whoami", { quiet401: true });
    if (goNext()) return;
    showShell(me);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) showLogin();
    // The server did not answer (restarting, overloaded): the sign-in form all the same,
    // with what went wrong, so that the page is usable as soon as the server is back
    // instead of dead until reloaded.
    else showLogin(`The server did not answer (${e.message}): sign in again once it is back.`);
  }
}

start();
