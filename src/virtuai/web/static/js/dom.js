// Building the page from data: every value becomes a text node, never HTML, so nothing a
// user submitted (job names, commands, logs) can inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    // Through the CSSOM: the page's CSP forbids style attributes, not this.
    else if (key === "style") el.style.cssText = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

export function stateBadge(state) { return h("span", { class: `state ${state}` }, state); }

export function errorBox(error) { return h("div", { class: "error", role: "alert" }, error.message || String(error)); }

export function table(columns, rows, { empty = "Nothing here." } = {}) {
  // columns: [{ title, cell: (row) => node|string, num?: bool }]
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.title)));
  const body = rows.length
    ? rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.num ? "num" : null }, c.cell(r)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

export function field(label, input) { return h("label", {}, label, input); }

export function fields(pairs) {
  return h("dl", { class: "fields" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "—")]));
}

// Formatting --------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function bytes(n) {
  if (n === null || n === undefined) return "—";
  let i = 0; let v = n;
  while (v >= 1024 && i < UNITS.length - 1) { v /= 1024; i += 1; }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${UNITS[i]}`;
}

export function cpus(n) { return n === null || n === undefined ? "—" : `${+n.toFixed(3)}`; }

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return h("time", { datetime: iso, title: d.toISOString() }, d.toLocaleString());
}

export function since(iso, until) {
  if (!iso) return "—";
  const end = until ? new Date(until) : new Date();
  return duration((end - new Date(iso)) / 1000);
}

export function resources(r) {
  const parts = [`${cpus(r.cpu)} CPU`, bytes(r.memory)];
  if (r.gpu) parts.push(`${r.gpu} GPU`);
  return parts.join(", ");
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled", "timed_out", "preempted"]);

// A refusal naming a field (the API's `field`, e.g. "resources.cpu") is shown under the
// input that carries that data-field (or the nearest enclosing one); anything else in `box`.
export function showError(form, box, error) {
  clearErrors(form);
  let name = error.field || "";
  let input = null;
  while (name && !(input = form.querySelector(`[data-field="${CSS.escape(name)}"]`))) {
    name = name.includes(".") ? name.slice(0, name.lastIndexOf(".")) : "";
  }
  if (!input) { box.append(errorBox(error)); return; }
  input.classList.add("invalid");
  input.setAttribute("aria-invalid", "true");
  input.after(h("span", { class: "field-error", role: "alert" }, error.message));
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll(".field-error")) el.remove();
  for (const el of form.querySelectorAll(".invalid")) { el.classList.remove("invalid"); el.removeAttribute("aria-invalid"); }
}

// Pages of an in-memory list (notebooks and services come whole from the API; the jobs
// list is paged by the server instead): `slice(rows)` gives the rows of the page shown
// and sets the buttons; `element` holds them.
export function localPager(size, onChange) {
  let page = 0;
  const prev = h("button", { class: "secondary", disabled: true, onclick: () => { page -= 1; onChange(); } }, "← Previous");
  const next = h("button", { class: "secondary", disabled: true, onclick: () => { page += 1; onChange(); } }, "Next →");
  const status = h("span", { class: "muted small" });
  return {
    element: h("div", { class: "pager" }, prev, next, status),
    slice(rows) {
      const pages = Math.max(1, Math.ceil(rows.length / size));
      page = Math.min(page, pages - 1);
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
      status.textContent = rows.length > size
        ? `${page * size + 1}–${Math.min(rows.length, (page + 1) * size)} of ${rows.length}` : "";
      return rows.slice(page * size, (page + 1) * size);
    },
  };
}
