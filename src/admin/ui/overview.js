// Overview: counts by state, attempts and success rate per minute over the last hour, attempt
// latency, oldest pending age, the pause switch, and the hosts with the most pending work.
// Refreshes itself every few seconds while open.

import { get, post, query } from "./api.js";
import { h, fill, duration, when, confirmDialog, table } from "./dom.js";
import { attemptsChart, latencyChart, pct } from "./chart.js";

const REFRESH_MS = 5000;
const STATES = ["pending", "in_progress", "delivered", "failed", "cancelled"];
const TOP_HOSTS = 5;

export async function render(main, ctx) {
  const body = h("div", { id: "overview" });
  const updated = h("p", { class: "muted small", id: "updated", "aria-live": "polite" });
  fill(main, h("div", { class: "title-row" }, h("h1", {}, "Overview"), updated), body);
  const load = async () => {
    try {
      const [stats, series, pause, hosts] = await Promise.all([
        get("/v1/stats"),
        get(`/v1/series${query({ minutes: 60 })}`),
        get("/v1/pause"),
        get("/v1/hosts"),
      ]);
      if (!ctx.alive()) return;
      draw(body, ctx, load, stats, series, pause, hosts.data || []);
      updated.textContent = `Updated ${new Date().toLocaleTimeString(undefined, { hour12: false })} · refreshes every ${REFRESH_MS / 1000} s`;
    } catch (err) {
      ctx.fail(err, body, load);
      ctx.refreshPause();
      updated.textContent = "Not updated: the last refresh failed. Retrying…";
    }
  };
  const loop = async () => {
    await load();
    ctx.later(REFRESH_MS, loop);
  };
  await loop();
}

function draw(body, ctx, load, stats, series, pause, hosts) {
  const counts = stats.counts || {};
  const total = STATES.reduce((a, s) => a + (counts[s] || 0), 0);
  const attempts = series.points.reduce((a, p) => a + p.attempts, 0);
  const successes = series.points.reduce((a, p) => a + p.successes, 0);

  const tiles = h("ul", { class: "tiles", "aria-label": "Deliveries by state" },
    STATES.map((s) => h("li", { class: `tile t-${s}` },
      h("a", { href: `#/deliveries${query({ status: s })}`, id: `count-${s}` },
        h("span", { class: "n" }, String(counts[s] || 0)),
        h("span", { class: "label" }, s === "in_progress" ? "In progress" : s[0].toUpperCase() + s.slice(1))))),
    h("li", { class: "tile" },
      h("span", { class: "n", id: "success-rate" }, pct(successes, attempts)),
      h("span", { class: "label" }, "Attempt success, last hour")),
    h("li", { class: "tile" },
      h("span", { class: "n", id: "oldest-pending" },
        stats.oldest_pending_age_seconds === null || stats.oldest_pending_age_seconds === undefined
          ? "—" : duration(stats.oldest_pending_age_seconds)),
      h("span", { class: "label" }, "Oldest pending")));

  const top = [...hosts].sort((a, b) => b.pending - a.pending).slice(0, TOP_HOSTS);
  const hostsCard = h("section", { class: "card", "aria-labelledby": "top-hosts" },
    h("h2", { id: "top-hosts" }, "Hosts with the most pending"),
    top.length
      ? table(["Host", "Pending", "In flight", "State"], top.map((x) => h("tr", {},
        h("td", { class: "mono" }, h("a", { href: `#/deliveries${query({ status: "pending", target: hostPrefix(x.host) })}` }, x.host)),
        h("td", { class: "num" }, x.pending),
        h("td", { class: "num" }, x.in_progress ?? x.in_flight ?? 0),
        h("td", {}, x.paused ? h("span", { class: "badge s-failed" }, "paused")
          : pause.paused ? h("span", { class: "muted" }, "held by the global pause") : "flowing"))))
      : h("p", { class: "empty" }, "No host has pending work."),
    h("p", {}, h("a", { href: "#/hosts" }, "All hosts →")));

  const focused = document.activeElement && document.activeElement.id;
  fill(body,
    pauseCard(pause, ctx, load),
    total === 0
      ? h("div", { class: "empty card" }, h("p", {}, "No deliveries yet. Send a webhook to the ingest listener, for example (with the default ",
        h("code", {}, "ingest.listen"), ") ",
        h("code", {}, "curl -X POST 127.0.0.1:7700/https://example.com/hook -d '{}'"), "."))
      : null,
    tiles,
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "chart-attempts" },
        h("h2", { id: "chart-attempts" }, "Attempts per minute, last hour"),
        attemptsChart(series.points)),
      h("section", { class: "card", "aria-labelledby": "chart-latency" },
        h("h2", { id: "chart-latency" }, "Attempt latency, last hour"),
        latencyChart(series.latency.bounds_seconds, series.latency.counts))),
    hostsCard);
  // A refresh must not throw a keyboard user's focus back to the top of the page.
  if (focused && body.querySelector(`#${CSS.escape(focused)}`)) document.getElementById(focused).focus();
}

function pauseCard(pause, ctx, redraw) {
  const button = pause.paused
    ? h("button", { type: "button", id: "resume", class: "primary", onclick: resume }, "Resume delivery")
    : h("button", { type: "button", id: "pause", class: "danger", onclick: pauseAll }, "Pause delivery…");
  async function pauseAll() {
    const ok = await confirmDialog({
      title: "Pause all delivery?",
      text: "Ingest keeps accepting and storing webhooks, but no new attempt starts until you resume. Attempts in flight finish.",
      confirm: "Pause delivery",
      danger: true,
      reason: "required",
    });
    if (!ok) return;
    await act(() => post("/v1/pause", { reason: ok.reason }));
  }
  async function resume() {
    const ok = await confirmDialog({
      title: "Resume delivery?",
      text: "Delivery starts again and the backlog drains.",
      confirm: "Resume delivery",
    });
    if (!ok) return;
    await act(() => post("/v1/resume"));
  }
  async function act(call) {
    button.disabled = true;
    try {
      await call();
    } catch (err) {
      ctx.fail(err, card.querySelector(".msg"), null);
      button.disabled = false;
      return;
    }
    ctx.refreshPause();
    redraw();
  }
  const card = h("section", { class: `card pause ${pause.paused ? "is-paused" : ""}`, id: "pause-state", "aria-labelledby": "pause-title" },
    h("div", {},
      h("h2", { id: "pause-title" }, pause.paused ? "Delivery is paused" : "Delivery is running"),
      pause.paused
        ? h("p", {}, "Paused ", when(pause.since), pause.reason ? [" — ", h("q", { id: "pause-reason" }, pause.reason)] : " (no reason given)",
          ". New webhooks are stored and wait.")
        : h("p", {}, "Attempts start as deliveries fall due.")),
    button,
    h("div", { class: "msg" }));
  return card;
}

// The list filter `target` is a prefix of the URL; a host key is host:port.
export function hostPrefix(host) {
  const [name, port] = host.split(/:(?=\d+$)/);
  const scheme = port === "443" ? "https" : "http";
  const defaultPort = (scheme === "https" && port === "443") || (scheme === "http" && port === "80");
  return `${scheme}://${name}${defaultPort ? "" : `:${port}`}/`;
}
