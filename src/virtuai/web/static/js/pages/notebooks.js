// Notebooks: the caller's JupyterLabs (live ones first, then the ended ones with why
// they ended, e.g. "culled after 1h idle"; how long a running one has been idle), a
// launch form, Open and Stop.
//
// Open is a plain link to the proxy's /user/<user>/<name>/: the browser sends the
// dashboard's session cookie with it (same site), so JupyterLab opens without a second
// sign-in; a browser without a session is sent to the sign-in page and back.

import { ApiError, del, get, post, query, submittableTenants } from "../api.js";
import {
  clear, clearErrors, duration, errorBox, field, FINISHED, h, localPager, resources, showError,
  since, stateBadge, table, when,
} from "../dom.js";

const PAGE = 50;
const POLL_MS = 2000;
const ENV_RETRY_MS = 3000;

export function render(main, _params, ctx) {
  let stopped = false;
  let timer = null;
  let rows = [];
  const box = h("div", { id: "notebooks-table" }, h("p", { class: "muted" }, "Loading…"));
  const messages = h("div", { id: "notebook-messages" });
  const pager = localPager(PAGE, () => show());
  const form = launchForm(ctx, messages, () => refresh(), () => stopped);
  main.append(h("h1", {}, "Notebooks"), messages, box, pager.element,
    h("h2", {}, "Launch a notebook"), form);

  function show() {
    clear(box, table([
      { title: "Name", cell: (n) => h("strong", { dataset: { notebook: n.name } }, n.name) },
      { title: "State", cell: (n) => stateBadge(n.state) },
      { title: "Why", cell: (n) => h("span", { class: "reason" }, n.reason) },
      { title: "Resources", cell: (n) => resources(n.resources) },
      { title: "Environment", cell: (n) => n.environment || "default" },
      { title: "Age", cell: (n) => since(n.started_at || n.submitted_at, n.finished_at), num: true },
      // Idle as the proxy sees it (the culler also counts busy kernels), and when it is stopped.
      { title: "Idle", cell: (n) => (n.state === "running"
        ? h("span", { class: "idle", title: "since the last request through the proxy" },
          `${since(n.last_activity_at || n.started_at)} (stops at ${duration(n.idle_timeout)})`)
        : FINISHED.has(n.state) ? "—" : h("span", { class: "muted small" }, `stops after ${duration(n.idle_timeout)} idle`)) },
      { title: "Started", cell: (n) => when(n.started_at) },
      { title: "URL", cell: (n) => (n.state === "running"
        ? h("a", { href: n.path, target: "_blank", rel: "noopener", class: "open", title: n.url }, "Open")
        : h("span", { class: "muted small" }, n.path)) },
      { title: "", cell: (n) => (FINISHED.has(n.state) ? ""
        : h("button", { class: "danger", dataset: { action: "stop" }, onclick: (e) => stop(n, e.target) }, "Stop")) },
    ], pager.slice(rows), { empty: "No notebook yet: launch one below." }));
  }

  async function stop(notebook, button) {
    if (!confirm(`Stop notebook ${notebook.name}? Its kernels are shut down; the files in your home stay.`)) return;
    button.disabled = true;
    clear(messages);
    try { await del(`/notebooks/${encodeURIComponent(notebook.name)}`); } catch (e) { messages.append(errorBox(e)); }
    refresh();
  }

  async function refresh() {
    clearTimeout(timer);
    // A hidden tab asks nothing of the server; it catches up when shown again.
    if (document.hidden && rows.length) { timer = setTimeout(refresh, POLL_MS); return; }
    try {
      const list = await get(`/notebooks${query({ finished: "true" })}`);
      if (stopped) return;
      // Live ones first, each group newest first.
      rows = list.sort((a, b) => (FINISHED.has(a.state) - FINISHED.has(b.state)) || b.id - a.id);
      show();
    } catch (e) { if (!stopped) clear(box, errorBox(e)); }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function launchForm(ctx, messages, launched, isStopped) {
  const input = (name, fieldName, attrs = {}) => h("input", { name, id: `nb-${name}`, dataset: { field: fieldName }, ...attrs });
  const tenant = h("select", { id: "nb-tenant", dataset: { field: "tenant" } });
  const environment = h("select", { id: "nb-environment", dataset: { field: "environment" } });
  const form = h("form", { class: "card", id: "notebook-form", novalidate: true },
    h("div", { class: "grid" },
      field("Name", input("name", "name", { value: "lab", required: true })),
      field("Tenant", tenant),
      field("CPUs", input("cpu", "resources.cpu", { value: "1" })),
      field("Memory", input("memory", "resources.memory", { value: "1Gi" })),
      field("GPUs", input("gpu", "resources.gpu", { type: "number", min: 0, value: "0" })),
      field("Time limit", input("time", "time", { placeholder: "the server's (8h)" })),
      field("Environment", environment)),
    h("p", { class: "muted small" }, "It runs in your home in the tenant's workspace, so your files outlive it; ",
      "it is stopped after a while without activity (the tenant's idle timeout)."),
    h("div", { class: "toolbar" }, h("button", { type: "submit", id: "nb-launch" }, "Launch")));

  async function environments() {
    clear(environment, h("option", { value: "" }, "default (JupyterLab)"));
    if (!tenant.value) return;
    try {
      const list = await get(`/environments${query({ tenant: tenant.value })}`);
      for (const e of list.filter((x) => x.state === "ready")) environment.append(h("option", { value: e.name }, e.name));
    } catch (e) { /* the default still works */ }
  }
  tenant.addEventListener("change", environments);
  submittableTenants(ctx.me).then((list) => {
    tenant.append(...list.map((t) => h("option", { value: t }, t)));
    if (!list.length) messages.append(h("div", { class: "notice" }, "You cannot launch: you are not a member of any tenant."));
    environments();
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    clearErrors(form);
    const v = (name) => form.querySelector(`#nb-${name}`).value.trim();
    const body = {
      name: v("name") || undefined, tenant: tenant.value || undefined,
      resources: { cpu: v("cpu") || "1", memory: v("memory") || "1Gi", gpu: Number(v("gpu") || 0) },
      time: v("time") || undefined, environment: environment.value || undefined,
    };
    const button = form.querySelector("#nb-launch");
    button.disabled = true;
    try {
      // The tenant's default environment is built on first use: wait for it, as the CLI does.
      for (;;) {
        try {
          await post("/notebooks", body);
          break;
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 409 && e.field === "environment") || isStopped()) throw e;
          clear(messages, h("div", { class: "notice" }, `${e.message}. Waiting…`));
          await new Promise((resolve) => setTimeout(resolve, ENV_RETRY_MS));
        }
      }
      clear(messages);
      launched();
    } catch (e) {
      clear(messages);
      showError(form, messages, e);
    } finally { button.disabled = false; }
  });
  return form;
}
