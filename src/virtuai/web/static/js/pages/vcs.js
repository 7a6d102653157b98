// Virtual clusters: list, create, suspend, resume, delete; one cluster's nodes and events.

import { del, get, post, query, submittableTenants } from "../api.js";
import { clear, errorBox, field, fields, h, resources, stateBadge, table, when } from "../dom.js";

const POLL_MS = 2000;
const STABLE = new Set(["running", "suspended", "deleted", "failed"]);

export function render(main, params, ctx) {
  return params.length === 2 ? detail(main, params[0], params[1]) : list(main, ctx);
}

function actionsFor(vc, after, box) {
  const act = (label, cls, fn) => h("button", { class: cls, dataset: { action: label.toLowerCase() }, onclick: async (e) => {
    e.target.disabled = true;
    try { await fn(); } catch (err) { box.append(errorBox(err)); }
    after();
  } }, label);
  const q = query({ tenant: vc.tenant });
  const path = `/vcs/${encodeURIComponent(vc.name)}`;
  const buttons = [];
  if (vc.state === "running") buttons.push(act("Suspend", "secondary", () => post(`${path}/suspend${q}`)));
  if (vc.state === "suspended") buttons.push(act("Resume", "secondary", () => post(`${path}/resume${q}`)));
  if (!["deleting", "deleted"].includes(vc.state)) buttons.push(act("Delete", "danger", () => {
    if (!confirm(`Delete virtual cluster ${vc.name} and its disks?`)) return null;
    return del(`${path}${q}`);
  }));
  return h("span", { class: "toolbar" }, buttons);
}

function list(main, ctx) {
  let stopped = false;
  let timer = null;
  const box = h("div", { id: "vcs-table" }, h("p", { class: "muted" }, "Loading…"));
  const messages = h("div");
  const input = (name, attrs = {}) => h("input", { name, id: `vc-${name}`, ...attrs });
  const form = h("form", { class: "card", id: "vc-form" },
    h("div", { class: "grid" },
      field("Name", input("name", { required: true, placeholder: "lab" })),
      field("Tenant", h("select", { id: "vc-tenant" })),
      field("Nodes", input("nodes", { type: "number", min: 1, value: "2" })),
      field("CPUs per node", input("cpu", { value: "1" })),
      field("Memory per node", input("memory", { value: "1Gi" })),
      field("GPUs per node", input("gpu", { type: "number", min: 0, value: "0" })),
      field("Image", input("image", { value: "host" })),
      h("label", {}, "Outbound NAT", h("input", { type: "checkbox", id: "vc-gateway" }))),
    h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const v = (n) => form.querySelector(`#vc-${n}`).value.trim();
    try {
      await post("/vcs", {
        name: v("name"), tenant: v("tenant") || undefined, nodes: Number(v("nodes")),
        resources: { cpu: v("cpu"), memory: v("memory"), gpu: Number(v("gpu") || 0) },
        image: v("image") || "host", gateway: form.querySelector("#vc-gateway").checked,
      });
      form.reset();
      refresh();
    } catch (e) { messages.append(errorBox(e)); }
  });
  main.append(h("h1", {}, "Virtual clusters"), box, messages, h("h2", {}, "Create a virtual cluster"), form);
  submittableTenants(ctx.me).then((list) => {
    form.querySelector("#vc-tenant").append(...list.map((t) => h("option", { value: t }, t)));
  });

  async function refresh() {
    clearTimeout(timer);
    try {
      const vcs = await get("/vcs");
      if (stopped) return;
      clear(box, table([
        { title: "Name", cell: (c) => h("a", { href: `#/vcs/${encodeURIComponent(c.tenant)}/${c.name}` }, c.name) },
        { title: "Tenant", cell: (c) => c.tenant },
        { title: "State", cell: (c) => stateBadge(c.state) },
        { title: "Why", cell: (c) => h("span", { class: "reason" }, c.queue_position ? `#${c.queue_position} in queue. ` : "", c.reason) },
        { title: "Nodes", cell: (c) => `${c.node_count} × ${resources(c.resources)}` },
        { title: "Subnet", cell: (c) => c.subnet },
        { title: "Image", cell: (c) => c.image },
        { title: "Created", cell: (c) => when(c.created_at) },
        { title: "", cell: (c) => actionsFor(c, refresh, messages) },
      ], vcs, { empty: "No virtual cluster." }));
      if (vcs.some((c) => !STABLE.has(c.state))) timer = setTimeout(refresh, POLL_MS);
    } catch (e) { if (!stopped) clear(box, errorBox(e)); }
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

function detail(main, tenant, name) {
  let stopped = false;
  let timer = null;
  const head = h("h1", {}, `Virtual cluster ${name}`);
  const actions = h("div");
  const messages = h("div");
  const summary = h("div", { class: "card" }, "Loading…");
  const nodes = h("div", { id: "vc-nodes" });
  const events = h("div");
  main.append(head, actions, messages, summary, h("h2", {}, "Nodes"), nodes, h("h2", {}, "Events"), events);
  async function refresh() {
    clearTimeout(timer);
    try {
      const vc = await get(`/vcs/${encodeURIComponent(name)}${query({ tenant })}`);
      if (stopped) return;
      clear(actions, actionsFor(vc, refresh, messages));
      clear(summary, fields([
        ["State", stateBadge(vc.state)], ["Why", vc.reason || "—"], ["Tenant / owner", `${vc.tenant} / ${vc.user}`],
        ["Nodes", `${vc.node_count} × ${resources(vc.resources)}`], ["Image", vc.image], ["Subnet", vc.subnet],
        ["Outbound NAT", vc.gateway ? "yes" : "no"], ["Created", when(vc.created_at)], ["Observed", when(vc.observed_at)],
      ]));
      clear(nodes, table([
        { title: "#", cell: (n) => n.index, num: true }, { title: "Hostname", cell: (n) => n.hostname },
        { title: "Address", cell: (n) => n.address }, { title: "State", cell: (n) => stateBadge(n.state) },
        { title: "Host", cell: (n) => n.host || "—" }, { title: "GPUs", cell: (n) => n.gpu_indices.join(",") || "—" },
        { title: "Problems", cell: (n) => h("span", { class: "reason" }, n.problems.join("; ")) },
      ], vc.nodes));
      clear(events, table([
        { title: "When", cell: (e) => when(e.at) },
        { title: "Change", cell: (e) => [e.from_state ? `${e.from_state} → ` : "", stateBadge(e.to_state)] },
        { title: "Why", cell: (e) => h("span", { class: "reason" }, e.reason) }, { title: "By", cell: (e) => e.actor },
      ], vc.events));
      if (!STABLE.has(vc.state)) timer = setTimeout(refresh, POLL_MS);
    } catch (e) { if (!stopped) clear(summary, errorBox(e)); }
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
