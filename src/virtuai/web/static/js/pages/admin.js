// Administration (admins): tenants (create, quota, weight, cohort) and users (create,
// membership, a new token).  Owners manage their tenant's members with the CLI.

import { get, patch, post, put } from "../api.js";
import { bytes, clear, cpus, errorBox, field, h, table, when } from "../dom.js";

function secretBox(label, token) {
  return h("div", { class: "notice" }, `${label} (shown only now; copy it):`, h("div", { class: "secret", id: "new-secret" }, token));
}

const opt = (v) => (v === "" ? undefined : v);

export function render(main, _params, ctx) {
  if (!ctx.me.is_admin) { main.append(h("h1", {}, "Admin"), h("p", {}, "Only administrators manage tenants and users.")); return; }
  const tenantsBox = h("div", { id: "admin-tenants" });
  const usersBox = h("div", { id: "admin-users" });
  const messages = h("div", { id: "admin-messages" });
  const input = (id, attrs = {}) => h("input", { id, name: id, ...attrs });

  const tenantForm = h("form", { class: "card", id: "tenant-form" }, h("div", { class: "grid" },
    field("Tenant", input("t-name", { required: true, placeholder: "physics" })),
    field("Pool", input("t-pool", { value: "*" })),
    field("CPU quota", input("t-cpu", { placeholder: "unlimited" })),
    field("Memory quota", input("t-memory", { placeholder: "unlimited" })),
    field("GPU quota", input("t-gpu", { placeholder: "unlimited" })),
    field("May borrow CPU", input("t-bcpu", { placeholder: "no limit" })),
    field("Weight", input("t-weight", { placeholder: "1" })),
    field("Cohort", input("t-cohort", { placeholder: "none" }))),
  h("div", { class: "toolbar" }, h("button", { type: "submit" }, "Create or update")),
  h("p", { class: "muted small" }, "An existing tenant gets the quota of the pool given, and the weight and cohort if given."));

  const userForm = h("form", { class: "card", id: "user-form" }, h("div", { class: "grid" },
    field("User", input("u-name", { required: true, placeholder: "alice" })),
    field("Tenant", input("u-tenant", { placeholder: "physics" })),
    field("Role", h("select", { id: "u-role" }, ["member", "owner", "viewer"].map((r) => h("option", { value: r }, r)))),
    h("label", {}, "Administrator", h("input", { type: "checkbox", id: "u-admin" }))),
  h("div", { class: "toolbar" }, h("button", { type: "submit" }, "Create user"),
    h("button", { type: "button", class: "secondary", id: "u-membership", onclick: setMembership }, "Set membership of existing user")));

  main.append(h("h1", {}, "Administration"), messages,
    h("h2", {}, "Tenants"), tenantsBox, tenantForm, h("h2", {}, "Users"), usersBox, userForm);

  const v = (id) => main.querySelector(`#${id}`).value.trim();

  tenantForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    const name = v("t-name");
    const quota = { pool: v("t-pool") || "*", cpu: opt(v("t-cpu")), memory: opt(v("t-memory")),
      gpu: v("t-gpu") === "" ? undefined : Number(v("t-gpu")) };
    if (v("t-bcpu") !== "") quota.borrowing = { cpu: v("t-bcpu") };
    try {
      const existing = (await get("/tenants")).some((t) => t.name === name);
      if (!existing) {
        await post("/tenants", { name, weight: v("t-weight") ? Number(v("t-weight")) : 1, cohort: opt(v("t-cohort")) });
      } else if (v("t-weight") || v("t-cohort")) {
        await patch(`/tenants/${encodeURIComponent(name)}`, { weight: v("t-weight") ? Number(v("t-weight")) : undefined, cohort: opt(v("t-cohort")) });
      }
      await put(`/tenants/${encodeURIComponent(name)}/quota`, quota);
      messages.append(h("div", { class: "notice" }, `Tenant ${name} saved.`));
      tenantForm.reset();
      refresh();
    } catch (e) { messages.append(errorBox(e)); }
  });

  userForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(messages);
    try {
      const created = await post("/users", { name: v("u-name"), tenant: opt(v("u-tenant")), role: v("u-role"),
        admin: main.querySelector("#u-admin").checked });
      messages.append(secretBox(`User ${created.user.name} created; their token`, created.token));
      userForm.reset();
      refresh();
    } catch (e) { messages.append(errorBox(e)); }
  });

  async function setMembership() {
    clear(messages);
    try {
      await put(`/users/${encodeURIComponent(v("u-name"))}/membership`, { tenant: v("u-tenant"), role: v("u-role") });
      messages.append(h("div", { class: "notice" }, `${v("u-name")} is now ${v("u-role")} of ${v("u-tenant")}.`));
      refresh();
    } catch (e) { messages.append(errorBox(e)); }
  }

  async function newToken(name) {
    clear(messages);
    try { messages.append(secretBox(`A new token for ${name}`, (await post(`/users/${encodeURIComponent(name)}/tokens`)).token)); } catch (e) { messages.append(errorBox(e)); }
  }

  async function refresh() {
    try {
      const [tenants, users] = await Promise.all([get("/tenants"), get("/users")]);
      const q = (t) => t.quota;
      clear(tenantsBox, table([
        { title: "Tenant", cell: (t) => t.name },
        { title: "CPU quota", cell: (t) => (q(t).cpu === null ? "∞" : cpus(q(t).cpu)), num: true },
        { title: "Memory quota", cell: (t) => (q(t).memory === null ? "∞" : bytes(q(t).memory)), num: true },
        { title: "GPU quota", cell: (t) => (q(t).gpu === null ? "∞" : q(t).gpu), num: true },
        { title: "In use", cell: (t) => `${cpus(t.usage.cpu)} CPU, ${bytes(t.usage.memory)}, ${t.usage.gpu ?? 0} GPU` },
        { title: "Weight", cell: (t) => t.weight, num: true }, { title: "Cohort", cell: (t) => t.cohort || "—" },
        { title: "Pools", cell: (t) => t.quotas.map((p) => p.pool).join(", ") || "—" },
        { title: "Created", cell: (t) => when(t.created_at) },
      ], tenants));
      clear(usersBox, table([
        { title: "User", cell: (u) => u.name }, { title: "Admin", cell: (u) => (u.is_admin ? "yes" : "") },
        { title: "Source", cell: (u) => u.source },
        { title: "Tenants", cell: (u) => u.tenants.map((t) => `${t.tenant} (${t.role})`).join(", ") || "—" },
        { title: "Created", cell: (u) => when(u.created_at) },
        { title: "", cell: (u) => (u.source !== "oidc" ? h("button", { class: "secondary", onclick: () => newToken(u.name) }, "New token") : "") },
      ], users));
    } catch (e) { clear(tenantsBox, errorBox(e)); }
  }
  refresh();
}
