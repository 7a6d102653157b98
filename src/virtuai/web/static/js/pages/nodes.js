// Nodes (grouped by site when there are several): capacity, what is allocated, GPUs.

import { get } from "../api.js";
import { bytes, clear, cpus, errorBox, h, table, when } from "../dom.js";

function usageBar(used, total) {
  const share = total ? Math.min(1, used / total) : 0;
  return h("div", { class: "bar", title: `${Math.round(share * 100)}%` }, h("span", { style: `width:${share * 100}%` }));
}

export async function render(main) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  main.append(h("h1", {}, "Nodes"), box);
  try {
    const nodes = await get("/nodes");
    const sites = [...new Set(nodes.map((n) => n.site))];
    clear(box);
    for (const site of sites) {
      if (sites.length > 1) box.append(h("h2", {}, `Site ${site}`));
      box.append(table([
        { title: "Node", cell: (n) => n.name }, { title: "Site", cell: (n) => n.site }, { title: "Pool", cell: (n) => n.pool },
        { title: "CPU", cell: (n) => [`${cpus(n.allocated.cpu)} / ${cpus(n.capacity.cpu)}`, usageBar(n.allocated.cpu, n.capacity.cpu)] },
        { title: "Memory", cell: (n) => [`${bytes(n.allocated.memory)} / ${bytes(n.capacity.memory)}`, usageBar(n.allocated.memory, n.capacity.memory)] },
        { title: "GPU", cell: (n) => (n.capacity.gpu ? [`${n.allocated.gpu} / ${n.capacity.gpu}`, usageBar(n.allocated.gpu, n.capacity.gpu)] : "—") },
        { title: "GPUs", cell: (n) => n.gpus.map((g) => `${g.index}: ${g.model} ${bytes(g.memory)}${g.busy ? " (busy)" : ""}`).join("; ") || "—" },
        { title: "Seen", cell: (n) => when(n.updated_at) },
      ], nodes.filter((n) => n.site === site)));
    }
  } catch (e) { clear(box, errorBox(e)); }
}
