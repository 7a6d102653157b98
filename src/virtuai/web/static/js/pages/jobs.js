// Jobs: filter by state, tenant and user; newest first, 50 a page (keyset pages over
// ?before_id=); refreshed every 2 s while the page is open.

import { get, query } from "../api.js";
import { clear, errorBox, field, h, resources, since, stateBadge, table, when } from "../dom.js";

const PAGE = 50;
const POLL_MS = 2000;
const STATES = ["", "pending", "admitted", "starting", "running", "preempting", "succeeded",
  "failed", "cancelled", "timed_out", "preempted"];

function filtersFromHash() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "");
  return { state: q.get("state") || "", tenant: q.get("tenant") || "", user: q.get("user") || "" };
}

export function render(main, _params, ctx) {
  const filters = filtersFromHash();
  const pages = [];  // before_id of each page shown before this one
  let before = null;
  let timer = null;
  let stopped = false;
  let rendered = false;

  const state = h("select", { name: "state", id: "filter-state" },
    STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s || "any")));
  const tenant = h("select", { name: "tenant", id: "filter-tenant" }, h("option", { value: "" }, "any"));
  const user = h("input", { name: "user", id: "filter-user", placeholder: "any", value: filters.user, size: 12 });
  const live = h("input", { type: "checkbox", checked: true, id: "live" });
  const body = h("div", { id: "jobs-table" }, h("p", { class: "muted" }, "Loading…"));
  const newer = h("button", { class: "secondary", disabled: true, onclick: () => { before = pages.pop() ?? null; refresh(); } }, "← Newer");
  const older = h("button", { class: "secondary", disabled: true, onclick: () => { pages.push(before); before = older.dataset.next; refresh(); } }, "Older →");
  const status = h("span", { class: "muted small" });

  const apply = () => { pages.length = 0; before = null; refresh(); };
  state.addEventListener("change", apply);
  tenant.addEventListener("change", apply);
  user.addEventListener("change", apply);
  live.addEventListener("change", () => { if (live.checked) refresh(); });

  main.append(
    h("h1", {}, "Jobs"),
    h("div", { class: "toolbar" }, field("State", state), field("Tenant", tenant), field("User", user),
      h("label", { class: "small" }, h("span", {}, live, " live")), h("a", { href: "#/submit" }, h("button", {}, "Submit a job"))),
    body, h("div", { class: "pager" }, newer, older, status));

  get("/tenants").then((list) => {
    for (const t of list) tenant.append(h("option", { value: t.name, selected: t.name === filters.tenant }, t.name));
  }).catch(() => {});

  async function refresh() {
    clearTimeout(timer);
    // A hidden tab asks nothing of the server; it catches up when shown again.
    if (document.hidden && rendered) { timer = setTimeout(refresh, POLL_MS); return; }
    rendered = true;
    const params = { limit: PAGE + 1, state: state.value, tenant: tenant.value, user: user.value.trim(), before_id: before };
    try {
      const rows = await get(`/jobs${query(params)}`);
      if (stopped) return;
      const more = rows.length > PAGE;
      const shown = rows.slice(0, PAGE);
      clear(body, jobsTable(shown));
      older.disabled = !more;
      if (more) older.dataset.next = shown[shown.length - 1].id;
      newer.disabled = pages.length === 0 && before === null;
      status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      if (stopped) return;
      clear(body, errorBox(e));
    }
    if (live.checked && !stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

export function jobsTable(rows) {
  return table([
    { title: "ID", cell: (j) => h("a", { href: `#/jobs/${j.id}` }, String(j.id)), num: true },
    { title: "Name", cell: (j) => j.name },
    { title: "Tenant", cell: (j) => j.tenant },
    { title: "User", cell: (j) => j.user },
    { title: "State", cell: (j) => stateBadge(j.state) },
    { title: "Why / where", cell: whyCell },
    { title: "Per task", cell: (j) => `${j.tasks > 1 ? j.tasks + " × " : ""}${resources(j.resources)}` },
    { title: "Submitted", cell: (j) => when(j.submitted_at) },
    { title: "Ran", cell: (j) => (j.started_at ? since(j.started_at, j.finished_at) : "—"), num: true },
  ], rows, { empty: "No job matches." });
}

function whyCell(j) {
  const parts = [];
  if (j.queue_position) parts.push(h("strong", {}, `#${j.queue_position} in queue`), " ");
  if (j.reason) parts.push(j.reason);
  return h("span", { class: "reason" }, parts);
}
