// Inline SVG charts: no library, sized by viewBox so they scale with the page. Each chart has a
// text summary for screen readers (aria-label) and the numbers in <title> tooltips.

import { svg, h } from "./dom.js";

const W = 600;
const H = 160;
const PAD = { top: 10, right: 8, bottom: 22, left: 34 };

// Attempts per minute as stacked bars (successes below, failures above) with the success rate
// as a line on the right-hand scale.
export function attemptsChart(points) {
  const max = Math.max(2, ...points.map((p) => p.attempts));
  const top = niceCeil(max);
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const step = innerW / Math.max(1, points.length);
  const barW = Math.max(1, step * 0.8);
  const y = (v) => PAD.top + innerH - (v / top) * innerH;
  const total = points.reduce((a, p) => a + p.attempts, 0);
  const ok = points.reduce((a, p) => a + p.successes, 0);
  const label = total
    ? `${total} attempts in the last ${points.length} minutes, ${pct(ok, total)} succeeded`
    : `No attempts in the last ${points.length} minutes`;
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  for (const v of [0, top / 2, top]) {
    g.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid" }));
    g.append(svg("text", { x: PAD.left - 4, y: y(v) + 4, class: "axis", "text-anchor": "end" }, fmtCount(v)));
  }
  const rate = [];
  points.forEach((p, i) => {
    const x = PAD.left + i * step + (step - barW) / 2;
    const time = new Date(p.at).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
    const tip = `${time}: ${p.attempts} attempts, ${p.successes} succeeded`;
    if (p.successes) {
      g.append(svg("rect", { x, y: y(p.successes), width: barW, height: y(0) - y(p.successes), class: "ok" },
        svg("title", {}, tip)));
    }
    const failed = p.attempts - p.successes;
    if (failed) {
      g.append(svg("rect", { x, y: y(p.attempts), width: barW, height: y(0) - y(failed), class: "bad" },
        svg("title", {}, tip)));
    }
    if (p.attempts) rate.push([x + barW / 2, PAD.top + innerH - (p.successes / p.attempts) * innerH]);
  });
  if (rate.length > 1) {
    g.append(svg("polyline", { points: rate.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" "), class: "rate" }));
  }
  const first = points[0];
  const last = points[points.length - 1];
  if (first && last) {
    const t = (p) => new Date(p.at).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
    g.append(svg("text", { x: PAD.left, y: H - 6, class: "axis" }, t(first)));
    g.append(svg("text", { x: W - PAD.right, y: H - 6, class: "axis", "text-anchor": "end" }, t(last)));
  }
  return h("figure", { class: "figure" }, g,
    h("figcaption", {},
      h("span", { class: "key ok" }, "succeeded"), " ",
      h("span", { class: "key bad" }, "failed"), " ",
      h("span", { class: "key rate" }, "success rate (0–100 %)"), " · ", label));
}

// The latency histogram: one bar per bucket (non-cumulative counts).
export function latencyChart(bounds, counts) {
  const labels = bounds.map((b) => `≤${fmtSeconds(b)}`).concat([`>${fmtSeconds(bounds[bounds.length - 1])}`]);
  const total = counts.reduce((a, b) => a + b, 0);
  const max = Math.max(1, ...counts);
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const step = innerW / counts.length;
  const y = (v) => PAD.top + innerH - (v / max) * innerH;
  const label = total
    ? `Attempt latency: median ${quantile(bounds, counts, 0.5)}, 95th percentile ${quantile(bounds, counts, 0.95)} over ${total} attempts`
    : "No attempts yet to measure";
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  g.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0), class: "grid" }));
  counts.forEach((c, i) => {
    const x = PAD.left + i * step + step * 0.1;
    if (c) {
      g.append(svg("rect", { x, y: y(c), width: step * 0.8, height: y(0) - y(c), class: "lat" },
        svg("title", {}, `${labels[i]}: ${c} attempts`)));
    }
    if (i % 2 === 0) {
      g.append(svg("text", { x: x + step * 0.4, y: H - 6, class: "axis", "text-anchor": "middle" }, labels[i]));
    }
  });
  return h("figure", { class: "figure" }, g, h("figcaption", {}, label));
}

// The upper bound of the bucket holding quantile q, as text ("≤ 25 ms").
export function quantile(bounds, counts, q) {
  const total = counts.reduce((a, b) => a + b, 0);
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    seen += counts[i];
    if (seen >= q * total) return i < bounds.length ? `≤ ${fmtSeconds(bounds[i])}` : `> ${fmtSeconds(bounds[bounds.length - 1])}`;
  }
  return "—";
}

function fmtSeconds(s) {
  return s < 1 ? `${+(s * 1000).toFixed(1)} ms` : `${s} s`;
}

function fmtCount(v) {
  return v >= 1000 ? `${+(v / 1000).toFixed(1)}k` : String(+v.toFixed(1));
}

export function pct(part, whole) {
  if (!whole) return "—";
  // Rounded down, so 99.96 % never shows as a perfect 100 %.
  return `${Math.floor((1000 * part) / whole) / 10} %`;
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return v;
}
