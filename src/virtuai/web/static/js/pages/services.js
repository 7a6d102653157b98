// Services: the tenant's inference services (replicas ready / wanted, scale, access),
// one service's replicas and their logs, create or change one from the same YAML or
// JSON document as `virtuai apply -f` (POST /services, the API `apply` uses), scale and
// delete.  Scaling re-applies the service's own document (`spec`) with new bounds, which
// restarts nothing.

import { ApiError, del, get, post, query, submittableTenants } from "../api.js";
import {
  clear, errorBox, fields, h, localPager, resources, since, stateBadge, table, when,
} from "../dom.js";
import { followLog } from "../logs.js";

const PAGE = 50;
const POLL_MS = 2000;
const SHELL = "/bin/sh";  // a command given as one string runs as `sh -c`, as in the CLI
const EXAMPLE = `type: service
name: hello
command: python3 -m http.server $PORT --bind $HOST
resources: {cpu: 0.5, memory: 256Mi}
replicas: {min: 1, max: 2}
readiness: {path: /, interval: 2}
auth: tenant
`;

export function render(main, params, ctx) {
  return params.length === 2 ? detail(main, params[0], params[1], ctx) : list(main, ctx);
}

const servicePath = (s) => `/services/${encodeURIComponent(s.name)}${query({ tenant: s.tenant })}`;

function openLink(s, asButton = false) {
  return h("a", { href: s.path, target: "_blank", rel: "noopener", class: "open", title: s.url },
    asButton ? h("button", { type: "button" }, "Open") : "Open");
}

// YAML is read by a vendored js-yaml, fetched only when a document is not plain JSON, so
// the first paint of the dashboard does not carry it.
async function yaml() { return import("../../vendor/js-yaml/js-yaml.mjs"); }

async function parseDocument(text) {
  let doc;
  try { doc = JSON.parse(text); } catch (notJson) {
    try { doc = (await yaml()).load(text); } catch (e) { throw new Error(`the document is neither JSON nor YAML: ${e.message}`); }
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw new Error("the document must be a mapping (type: service, name, command, …)");
  if (doc.type !== undefined && doc.type !== "service") throw new Error(`type: ${doc.type} is not a service (jobs are submitted on the Submit page)`);
  if (typeof doc.command === "string" && doc.command.trim()) doc.command = [SHELL, "-c", doc.command];
  else if (Array.isArray(doc.command)) doc.command = doc.command.map((c) => (typeof c === "number" ? String(c) : c));
  return doc;
}

function editor(ctx, result, { text = EXAMPLE, tenant = null } = {}) {
  const area = h("textarea", { id: "svc-spec", class: "spec", spellcheck: "false", rows: 14 }, text);
  const tenants = h("select", { id: "svc-tenant" });
  const form = h("form", { class: "card", id: "service-form" },
    h("label", { class: "wide" }, "Service document (YAML or JSON, as for virtuai apply -f)", area),
    h("div", { class: "toolbar" }, h("label", {}, "Tenant (unless the document names one)", tenants),
      h("button", { type: "submit", id: "svc-apply" }, "Apply")));
  submittableTenants(ctx.me).then((list) => {
    tenants.append(...list.map((t) => h("option", { value: t, selected: t === tenant }, t)));
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(result);
    const button = form.querySelector("#svc-apply");
    button.disabled = true;
    try {
      const doc = await parseDocument(area.value);
      if (doc.tenant === undefined && tenants.value) doc.tenant = tenants.value;
      const applied = await post("/services", doc);
      const what = applied.created ? "created" : applied.rolled ? "changed: its replicas roll one by one" : "changed";
      result.append(h("div", { class: "notice", id: "svc-applied" }, `Service ${applied.name} ${what}.`));
      location.hash = `#/services/${encodeURIComponent(applied.tenant)}/${encodeURIComponent(applied.name)}`;
    } catch (e) { result.append(errorBox(e)); } finally { button.disabled = false; }
  });
  return form;
}

async function remove(s, box, after) {
  if (!confirm(`Delete service ${s.name}? Its ${s.replicas.length} replica(s) are stopped and ${s.path} stops answering.`)) return;
  try { await del(servicePath(s)); } catch (e) { box.append(errorBox(e)); }
  after();
}

function list(main, ctx) {
  let stopped = false;
  let timer = null;
  let rows = [];
  const box = h("div", { id: "services-table" }, h("p", { class: "muted" }, "Loading…"));
  const messages = h("div", { id: "service-messages" });
  const pager = localPager(PAGE, () => show());
  main.append(h("h1", {}, "Services"), messages, box, pager.element,
    h("h2", {}, "Create or change a service"), editor(ctx, messages));

  function show() {
    clear(box, table([
      { title: "Name", cell: (s) => h("a", { href: `#/services/${encodeURIComponent(s.tenant)}/${encodeURIComponent(s.name)}`, dataset: { service: s.name } }, s.name) },
      { title: "Tenant", cell: (s) => s.tenant },
      { title: "State", cell: (s) => stateBadge(s.state) },
      { title: "Ready / wanted", cell: (s) => h("span", { class: "replicas" }, `${s.ready} / ${s.desired}`), num: true },
      { title: "Min–max", cell: (s) => `${s.replicas_min}–${s.replicas_max}${s.target_rps ? ` @ ${s.target_rps} req/s` : ""}` },
      { title: "Per replica", cell: (s) => resources(s.resources) },
      { title: "Auth", cell: (s) => s.auth },
      { title: "URL", cell: (s) => (s.state === "active" ? openLink(s) : h("span", { class: "muted small" }, s.path)) },
      { title: "Why", cell: (s) => h("span", { class: "reason" }, s.reason) },
      { title: "Updated", cell: (s) => when(s.updated_at) },
      { title: "", cell: (s) => (s.state === "active"
        ? h("button", { class: "danger", dataset: { action: "delete" }, onclick: () => remove(s, messages, refresh) }, "Delete") : "") },
    ], pager.slice(rows), { empty: "No service: apply a document below." }));
  }

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden && rows.length) { timer = setTimeout(refresh, POLL_MS); return; }
    try {
      rows = await get("/services");
      if (stopped) return;
      show();
    } catch (e) { if (!stopped) clear(box, errorBox(e)); }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function detail(main, tenant, name, ctx) {
  let stopped = false;
  let timer = null;
  let service = null;
  let logKey = null;  // "jobId:stream" shown now
  let stopLog = () => {};
  const actions = h("div", { class: "toolbar", id: "service-actions" });
  const messages = h("div", { id: "service-messages" });
  const summary = h("div", { class: "card", id: "service-summary" }, h("p", { class: "muted" }, "Loading…"));
  const replicas = h("div", { id: "service-replicas" });
  const tabs = h("div", { class: "tabs", id: "log-tabs" });
  const log = h("pre", { class: "log", id: "log" });
  const logStatus = h("p", { class: "muted small", id: "log-status" });
  const edit = h("div", { id: "service-edit" });
  main.append(h("h1", {}, `Service ${name}`), actions, messages, summary, h("h2", {}, "Replicas"), replicas,
    h("h2", {}, "Recent logs"), tabs, log, logStatus, edit);

  const scaleMin = h("input", { id: "scale-min", type: "number", min: 0, size: 4 });
  const scaleMax = h("input", { id: "scale-max", type: "number", min: 1, size: 4 });
  async function scale() {
    clear(messages);
    const replicasSpec = { ...service.spec.replicas, min: Number(scaleMin.value), max: Number(scaleMax.value) };
    try {
      await post("/services", { ...service.spec, replicas: replicasSpec });
      messages.append(h("div", { class: "notice" }, `Scaled to ${replicasSpec.min}–${replicasSpec.max} replicas.`));
    } catch (e) { messages.append(errorBox(e)); }
    refresh();
  }

  async function showEditor() {
    let text;
    try { text = (await yaml()).dump(service.spec, { lineWidth: 100 }); } catch (e) { text = JSON.stringify(service.spec, null, 2); }
    clear(edit, h("h2", {}, "Change the service"), editor(ctx, messages, { text, tenant }));
    edit.scrollIntoView();
  }

  function renderActions() {
    const live = service.state === "active";
    if (!live) { clear(actions, h("a", { href: "#/services" }, h("button", { class: "secondary" }, "All services"))); return; }
    if (!actions.childElementCount) {  // kept between polls, so typing in the inputs is not lost
      scaleMin.value = service.replicas_min;
      scaleMax.value = service.replicas_max;
      clear(actions, openLink(service, true),
        h("label", {}, "Min", scaleMin), h("label", {}, "Max", scaleMax),
        h("button", { class: "secondary", id: "scale", onclick: scale }, "Scale"),
        h("button", { class: "secondary", id: "edit", onclick: showEditor }, "Edit the document"),
        h("button", { class: "danger", id: "delete", onclick: () => remove(service, messages, refresh) }, "Delete"),
        h("a", { href: "#/services" }, h("button", { class: "secondary" }, "All services")));
    }
  }

  function renderLogs() {
    const keys = service.replicas.flatMap((r) => [`${r.job_id}:stdout`, `${r.job_id}:stderr`]);
    if (logKey !== null && !keys.includes(logKey) && !log.textContent) logKey = null;
    if (logKey === null && keys.length) { logKey = keys[0]; readLog(); }
    clear(tabs, keys.map((k) => {
      const [job, stream] = k.split(":");
      return h("button", { class: k === logKey ? "active" : "", dataset: { log: k },
        onclick: () => { logKey = k; renderLogs(); readLog(); } }, `job ${job} ${stream}`);
    }));
    if (!keys.length && logKey === null) logStatus.textContent = "no replica now (scaled to zero?)";
  }

  function readLog() {
    stopLog();
    const [job, stream] = logKey.split(":");
    stopLog = followLog(log, logStatus, job, 0, stream);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      service = await get(`/services/${encodeURIComponent(name)}${query({ tenant })}`);
    } catch (e) {
      if (stopped) return;
      if (e instanceof ApiError && e.status === 404 && service) {
        clear(summary, h("div", { class: "notice", id: "service-gone" }, `Service ${name} is deleted.`));
        clear(actions, h("a", { href: "#/services" }, h("button", { class: "secondary" }, "All services")));
        clear(replicas);
      } else clear(summary, errorBox(e));
      return;
    }
    if (stopped) return;
    const s = service;
    renderActions();
    clear(summary, fields([
      ["State", h("span", { id: "service-state" }, stateBadge(s.state))],
      ["Why", s.reason || "—"],
      ["URL", h("code", {}, s.url)],
      ["Tenant / applied by", `${s.tenant} / ${s.user}`],
      ["Replicas", h("span", { id: "service-ready" }, `${s.ready} ready, ${s.desired} wanted (min ${s.replicas_min}, max ${s.replicas_max}${s.target_rps ? `, ${s.target_rps} req/s each` : ""})`)],
      ["Per replica", resources(s.resources)],
      ["Command", h("code", {}, s.command.join(" "))],
      ["Environment", s.environment || "—"],
      ["Access", s.auth === "public" ? "public: anyone" : "tenant: its members only"],
      ["Readiness", `GET ${s.readiness_path}`],
      ["Idle timeout", s.replicas_min === 0 ? `${Math.round(s.idle_timeout / 60)} min, then scaled to zero` : "never scaled to zero (min ≥ 1)"],
      ["Last request", when(s.last_request_at)],
      ["Generation", s.generation], ["Created", when(s.created_at)], ["Updated", when(s.updated_at)],
    ]));
    clear(replicas, table([
      { title: "Job", cell: (r) => h("a", { href: `#/jobs/${r.job_id}` }, String(r.job_id)), num: true },
      { title: "Gen", cell: (r) => r.generation, num: true },
      { title: "State", cell: (r) => [stateBadge(r.state), r.draining ? " draining" : ""] },
      { title: "Ready", cell: (r) => (r.ready ? h("span", { class: "state ready" }, "ready") : "no") },
      { title: "Node", cell: (r) => r.node || "—" },
      { title: "Probe or reason", cell: (r) => h("span", { class: "reason" }, r.probe || r.reason) },
      { title: "Up for", cell: (r) => (r.started_at ? since(r.started_at) : "—"), num: true },
    ], s.replicas, { empty: "No replica now." }));
    renderLogs();
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }

  refresh();
  return () => { stopped = true; clearTimeout(timer); stopLog(); };
}
