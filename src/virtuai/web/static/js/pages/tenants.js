// Tenants the caller can see: quotas per pool (nominal, borrowing and lending limits),
// what is used, borrowed and lent now, and the fair-share standing (as `virtuai fairshare`).

import { get } from "../api.js";
import { bytes, clear, cpus, errorBox, h, table } from "../dom.js";

const fmt = { cpu: cpus, memory: bytes, gpu: (v) => (v === null || v === undefined ? "—" : String(v)) };

function limit(value, kind) { return value === null || value === undefined ? "∞" : fmt[kind](value); }

function usedCell(q, kind) {
  const used = q.used[kind] ?? 0;
  const nominal = q.nominal[kind];
  const share = nominal ? used / nominal : 0;
  return [
    `${fmt[kind](used)} / ${limit(nominal, kind)}`,
    nominal ? h("div", { class: `bar${share > 1 ? " over" : ""}`, title: `${Math.round(share * 100)}% of nominal` },
      h("span", { style: `width:${Math.min(100, share * 100)}%` })) : null,
    q.borrowed[kind] ? h("div", { class: "small muted" }, `borrowed ${fmt[kind](q.borrowed[kind])}`) : null,
    q.lent[kind] ? h("div", { class: "small muted" }, `lent ${fmt[kind](q.lent[kind])}`) : null,
  ];
}

export async function render(main) {
  const box = h("div", { id: "tenants" }, h("p", { class: "muted" }, "Loading…"));
  const share = h("div", { id: "fairshare" });
  main.append(h("h1", {}, "Tenants and quotas"), box, h("h2", {}, "Fair share"), share);
  try {
    const tenants = await get("/tenants");
    clear(box, tenants.length ? null : h("p", { class: "muted" }, "You belong to no tenant."));
    for (const t of tenants) {
      box.append(h("div", { class: "card", dataset: { tenant: t.name } },
        h("h2", { style: "margin-top:0" }, t.name,
          h("span", { class: "muted small" }, `  weight ${t.weight}${t.cohort ? ` · cohort ${t.cohort}` : ""}${t.role ? ` · you: ${t.role}` : ""}`)),
        table([
          { title: "Pool", cell: (q) => (q.pool === "*" ? "all pools" : q.pool) },
          { title: "CPU used / nominal", cell: (q) => usedCell(q, "cpu") },
          { title: "Memory used / nominal", cell: (q) => usedCell(q, "memory") },
          { title: "GPU used / nominal", cell: (q) => usedCell(q, "gpu") },
          { title: "May borrow", cell: (q) => `${limit(q.borrowing_limit.cpu, "cpu")} CPU, ${limit(q.borrowing_limit.memory, "memory")}, ${limit(q.borrowing_limit.gpu, "gpu")} GPU` },
          { title: "Lends at most", cell: (q) => `${limit(q.lending_limit.cpu, "cpu")} CPU, ${limit(q.lending_limit.memory, "memory")}, ${limit(q.lending_limit.gpu, "gpu")} GPU` },
        ], t.quotas, { empty: "No quota: unlimited." })));
    }
  } catch (e) { clear(box, errorBox(e)); }
  try {
    const rows = await get("/fairshare");
    clear(share, table([
      { title: "Tenant", cell: (r) => r.tenant }, { title: "Weight", cell: (r) => r.weight, num: true },
      { title: "Norm. shares", cell: (r) => r.norm_shares.toFixed(3), num: true },
      { title: "Decayed CPU·h", cell: (r) => r.decayed_usage.cpu_hours.toFixed(1), num: true },
      { title: "Decayed GPU·h", cell: (r) => r.decayed_usage.gpu_hours.toFixed(1), num: true },
      { title: "Usage (dominant)", cell: (r) => `${(r.usage * 100).toFixed(1)}% (${r.dominant})`, num: true },
      { title: "Factor", cell: (r) => r.factor.toFixed(3), num: true },
    ], rows));
  } catch (e) { clear(share, errorBox(e)); }
}
