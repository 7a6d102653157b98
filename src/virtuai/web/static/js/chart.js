// Charts drawn as SVG by hand: a stacked bar chart is all the usage page needs, and a
// charting library would be the largest file of the dashboard.

const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2b5797", "#e07b39", "#3a9e5c", "#c0392b", "#8e44ad", "#16a2b8", "#b58900",
  "#7f8c8d", "#d35400", "#2c3e50"];

function el(tag, attrs, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

export function short(value) {
  if (value === 0) return "0";
  if (value >= 1000) return `${+(value / 1000).toFixed(1)}k`;
  if (value >= 10) return `${Math.round(value)}`;
  return `${+value.toPrecision(2)}`;
}

// labels: x labels; series: [{ name, values: number[] }]; returns an <svg> with a <title>.
export function stackedBars({ labels, series, unit, title, width = 720, height = 260 }) {
  const pad = { left: 52, right: 12, top: 26, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" },
    el("title", {}, title || ""));
  for (let t = 0; t <= 4; t += 1) {
    const y = pad.top + plotH - (plotH * t) / 4;
    svg.append(el("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, stroke: "#e3e6eb" }),
      el("text", { x: pad.left - 6, y: y + 4, "text-anchor": "end" }, short((max * t) / 4)));
  }
  svg.append(el("text", { x: 4, y: 12 }, unit));
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, slot * 0.7);
  const every = Math.ceil(labels.length / 12);
  labels.forEach((label, i) => {
    const x = pad.left + i * slot + (slot - barW) / 2;
    let y = pad.top + plotH;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (v <= 0) return;
      const hgt = (v / max) * plotH;
      y -= hgt;
      svg.append(el("rect", { x, y, width: barW, height: hgt, fill: PALETTE[k % PALETTE.length] },
        el("title", {}, `${s.name}, ${label}: ${short(v)} ${unit}`)));
    });
    if (i % every === 0) {
      svg.append(el("text", { x: x + barW / 2, y: height - 8, "text-anchor": "middle" }, label));
    }
  });
  return svg;
}
