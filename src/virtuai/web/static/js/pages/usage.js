// Usage over time, per tenant and per user, as `virtuai usage` sums it (allocated
// CPU-, GPU-, memory- and wall-hours of tasks that finished).  The API sums usage since
// a time; a bucket [a, b) is usage since a minus usage since b.

import { get, query } from "../api.js";
import { PALETTE, short, stackedBars } from "../chart.js";
import { clear, errorBox, field, h, table } from "../dom.js";

const METRICS = { cpu_s: "CPU·h", gpu_s: "GPU·h", memory_gb_s: "GiB·h", wall_s: "task·h" };
const RANGES = { 7: "last 7 days", 14: "last 14 days", 30: "last 30 days", 90: "last 90 days (weeks)" };

export function render(main) {
  const range = h("select", { id: "usage-range" }, Object.entries(RANGES).map(([d, t]) => h("option", { value: d, selected: d === "14" }, t)));
  const metric = h("select", { id: "usage-metric" }, Object.entries(METRICS).map(([m, t]) => h("option", { value: m }, t)));
  const byTenant = h("div", { class: "card", id: "chart-tenants" });
  const byUser = h("div", { class: "card", id: "chart-users" });
  const totals = h("div", { id: "usage-totals" });
  main.append(h("h1", {}, "Usage"), h("div", { class: "toolbar" }, field("Range", range), field("Measure", metric)),
    h("div", { class: "row" }, h("div", {}, h("h2", {}, "Per tenant"), byTenant), h("div", {}, h("h2", {}, "Per user"), byUser)),
    h("h2", {}, "Totals over the range"), totals);
  let data = null;

  async function load() {
    clear(byTenant, h("p", { class: "muted" }, "Loading…"));
    clear(byUser);
    const days = Number(range.value);
    const step = days > 30 ? 7 : 1;
    const now = new Date();
    const end = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
    const starts = [];
    for (let d = days; d > 0; d -= step) starts.push(new Date(end.getTime() - d * 86400e3));
    try {
      const cumulative = await Promise.all(starts.map((s) => get(`/usage${query({ since: s.toISOString() })}`)));
      data = { starts, step, cumulative };
      draw();
    } catch (e) { clear(byTenant, errorBox(e)); }
  }

  function draw() {
    const m = metric.value;
    const { starts, step, cumulative } = data;
    const labels = starts.map((s) => `${s.getUTCMonth() + 1}/${s.getUTCDate()}`);
    const seriesOf = (key, pick) => {
      const names = [...new Set(cumulative.flatMap((c) => pick(c).map(key)))].sort();
      return names.map((name) => ({
        name,
        values: starts.map((_, i) => {
          const at = (j) => (j < cumulative.length ? pick(cumulative[j]).filter((r) => key(r) === name).reduce((s, r) => s + r[m], 0) : 0);
          return Math.max(0, at(i) - at(i + 1)) / 3600;
        }),
      }));
    };
    const tenants = seriesOf((r) => r.tenant, (c) => c.totals);
    const users = seriesOf((r) => `${r.user} (${r.tenant})`, (c) => c.rows);
    const unit = METRICS[m];
    const per = step === 7 ? "week" : "day";
    const chart = (box, series, what) => clear(box,
      series.length ? stackedBars({ labels, series, unit: `${unit} per ${per}`, title: `${unit} per ${per} per ${what}` })
        : h("p", { class: "muted" }, "No usage in this range."),
      h("div", { class: "legend" }, series.map((s, k) => h("span", {}, h("i", { style: `background:${PALETTE[k % PALETTE.length]}` }), s.name))));
    chart(byTenant, tenants, "tenant");
    chart(byUser, users, "user");
    clear(totals, table([
      { title: "Tenant", cell: (r) => r.tenant }, { title: "User", cell: (r) => r.user },
      { title: "Jobs", cell: (r) => r.jobs, num: true }, { title: "Tasks", cell: (r) => r.tasks, num: true },
      { title: "CPU·h", cell: (r) => short(r.cpu_s / 3600), num: true },
      { title: "GPU·h", cell: (r) => short(r.gpu_s / 3600), num: true },
      { title: "GiB·h", cell: (r) => short(r.memory_gb_s / 3600), num: true },
      { title: "Task·h", cell: (r) => short(r.wall_s / 3600), num: true },
    ], cumulative[0].rows, { empty: "No usage in this range." }));
  }

  range.addEventListener("change", load);
  metric.addEventListener("change", () => data && draw());
  load();
}
