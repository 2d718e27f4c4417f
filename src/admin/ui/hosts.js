// Hosts: per destination host (host:port), the pending and in-flight work, its rate limit if it
// has one, whether it is paused
// (with pause/resume for that host alone, and "retry now" once its receiver is back), and its
// circuit state when the server reports one
// (from the host list itself or from GET /v1/health/hosts where that exists). Below, the
// configured endpoints (GET /v1/endpoints): state, events, signing with the public key of an
// ed25519 secret, and a button to enable one the server disabled (410 Gone).

import { ApiError, get, post, query } from "./api.js";
import { h, fill, when, table, confirmDialog } from "./dom.js";
import { hostPrefix } from "./overview.js";

const REFRESH_MS = 5000;

export async function render(main, ctx) {
  const body = h("div", { id: "hosts" });
  fill(main, h("h1", {}, "Hosts"),
    h("p", { class: "lead" }, "Destination hosts with pending work or a pause, then the configured endpoints. Pausing a host holds its deliveries while every other host flows."),
    body);
  const load = async () => {
    let list, health, pause, eps;
    try {
      [list, health, pause, eps] = await Promise.all([
        get("/v1/hosts").then((r) => r.data || []),
        optional("/v1/health/hosts"),
        get("/v1/pause"),
        optional("/v1/endpoints"),
      ]);
    } catch (err) {
      return ctx.fail(err, body, load);
    }
    if (!ctx.alive()) return;
    draw(body, ctx, merge(list, health), health, pause, eps, load);
  };
  const loop = async () => {
    await load();
    ctx.later(REFRESH_MS, loop);
  };
  await loop();
}

// Routes this server turned out not to have; not asked again until the page is reloaded.
const missing = new Set();

// A route this server may not have: null when it answers 404.
async function optional(path) {
  if (missing.has(path)) return null;
  try {
    return await get(path);
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      missing.add(path);
      return null;
    }
    throw err;
  }
}

// Host rows with their circuit, including hosts that only the health view knows (an open
// circuit with nothing pending).
function merge(list, health) {
  const rows = list.map((x) => ({ ...x }));
  for (const hh of (health && health.hosts) || []) {
    let row = rows.find((r) => r.host === hh.host);
    if (!row) {
      row = { host: hh.host, pending: 0, in_progress: 0, paused: false };
      rows.push(row);
    }
    row.health = hh;
  }
  return rows;
}

function draw(body, ctx, list, health, pause, eps, load) {
  const focused = document.activeElement && document.activeElement.id;
  const msg = h("div", { class: "msg", role: "status" });
  const note = pause.paused
    ? h("p", { class: "note", id: "global-pause-note" }, "Delivery is paused globally, so no host is flowing. ", h("a", { href: "#/" }, "Resume on the overview"), ".")
    : null;
  const endpoints = endpointsCard(eps, health, ctx, msg, load);
  if (!list.length) {
    fill(body, note, msg, h("div", { class: "empty", id: "no-hosts" }, h("p", {}, "No host has pending work, and none is paused.")), endpoints);
    return;
  }
  const hasCircuit = list.some((x) => circuit(x) !== null);
  const hasError = list.some((x) => x.last_error);
  const hasRate = list.some((x) => x.rate_limit);
  fill(body, note, msg, table(
    ["Host", "Pending", "In flight", hasRate ? "Rate limit" : null, "Next attempt", hasCircuit ? "Circuit" : null, "State", hasError ? "Last error" : null, h("span", { class: "sr-only" }, "Actions")].filter(Boolean),
    list.map((x) => {
      const c = circuit(x);
      return h("tr", { "data-host": x.host },
        h("th", { scope: "row", class: "mono" },
          h("a", { href: `#/deliveries${query({ target: hostPrefix(x.host) })}` }, x.host)),
        h("td", { class: "num" }, x.pending,
          x.held_for_disabled_endpoint ? h("span", { class: "muted" }, ` (${x.held_for_disabled_endpoint} held)`) : null),
        h("td", { class: "num" }, x.in_progress ?? x.in_flight ?? 0),
        hasRate ? h("td", { class: "mono" }, x.rate_limit || "—") : null,
        h("td", {}, x.next_attempt_at ? ["due ", when(x.next_attempt_at)]
          : x.held_for_disabled_endpoint ? h("span", { class: "muted" }, "held: endpoint disabled (see below)")
          : h("span", { class: "muted" }, "—")),
        hasCircuit ? h("td", {}, c ? circuitCell(c, x.health) : "—") : null,
        h("td", {}, x.paused
          ? h("span", {}, h("span", { class: "badge s-failed" }, "paused"), " ", when(x.paused_since),
            x.pause_reason ? [" — ", h("q", {}, x.pause_reason)] : null)
          : pause.paused ? h("span", { class: "muted" }, "held by the global pause") : "flowing"),
        hasError ? h("td", { class: "err" }, x.last_error || "") : null,
        h("td", {}, x.paused
          ? h("button", { type: "button", id: `resume-${slug(x.host)}`, onclick: () => resume(x.host, ctx, msg, load) }, "Resume")
          : h("button", { type: "button", class: "danger", id: `pause-${slug(x.host)}`, onclick: () => pause_(x.host, ctx, msg, load) }, "Pause…"),
          x.pending - (x.held_for_disabled_endpoint || 0) > 0
            ? [" ", h("button", { type: "button", id: `retry-${slug(x.host)}`, onclick: () => retryNow(x.host, x.pending - (x.held_for_disabled_endpoint || 0), ctx, msg, load) }, "Retry now…")]
            : null));
    }), "Destination hosts"), endpoints);
  if (focused && body.querySelector(`#${CSS.escape(focused)}`)) document.getElementById(focused).focus();
}

// The configured endpoints, or (from a server without GET /v1/endpoints) only the disabled
// ones; names a 410 disabled that are no longer configured, with their Enable button too.
function endpointsCard(eps, health, ctx, msg, load) {
  const enableButton = (name) =>
    h("button", { type: "button", id: `enable-${slug(name)}`, onclick: () => enable(name, ctx, msg, load) }, "Enable");
  const configured = eps ? eps.data || [] : [];
  const orphans = eps ? eps.disabled_not_configured || [] : (health && health.disabled_endpoints) || [];
  if (!configured.length && !orphans.length) return null;
  const signing = (keys) => keys.length
    ? keys.map((k) => h("div", {}, h("span", { class: "badge" }, k.scheme),
      k.public_key ? [" ", h("code", { class: "pubkey", title: "public key for the receiver" }, k.public_key)] : null))
    : h("span", { class: "muted" }, "unsigned");
  return h("section", { class: "card", id: "endpoints", "aria-labelledby": "endpoints-title" },
    h("h2", { id: "endpoints-title" }, "Endpoints"),
    configured.length
      ? table(["Name", "State", "Events", "Signing", "URL", h("span", { class: "sr-only" }, "Actions")],
        configured.map((e) => h("tr", { "data-endpoint": e.name },
          h("th", { scope: "row", class: "mono" },
            h("a", { href: `#/deliveries${query({ endpoint: e.name })}` }, e.name)),
          h("td", {}, e.disabled ? h("span", { class: "badge s-failed" }, "disabled (410)") : "enabled"),
          h("td", { class: "mono" }, (e.events || []).join(", ") || (e.notify ? null : h("span", { class: "muted" }, "—")),
            e.notify ? h("span", { class: "muted", title: "notify.endpoint: delivery.failed and endpoint.disabled are delivered here" }, " hookrelay's own events") : null),
          h("td", {}, signing(e.signing || [])),
          h("td", { class: "mono" }, e.url),
          h("td", {}, e.disabled ? enableButton(e.name) : null))),
        "Configured endpoints")
      : null,
    configured.some((e) => e.disabled)
      ? h("p", { class: "muted" }, "A disabled endpoint answered 410 Gone; its deliveries wait until it is enabled again.")
      : null,
    orphans.length
      ? [h("p", { class: "muted" }, eps ? "Disabled after a 410 Gone and no longer configured:" : "Disabled after a 410 Gone; their deliveries wait until the endpoint is enabled again."),
        h("ul", {}, orphans.map((name) => h("li", {}, h("code", {}, name), " ", enableButton(name))))]
      : null);
}

// The circuit state as a word, whatever shape the server gives it in ("open", {state: "open"}).
function circuit(x) {
  const c = x.circuit ?? x.circuit_state ?? (x.health && x.health.circuit);
  if (c === undefined || c === null) return null;
  return typeof c === "string" ? c : c.state || null;
}

function circuitCell(c, hh) {
  return h("span", {}, h("span", { class: `badge circuit-${c}` }, c.replace("_", " ")),
    hh && hh.consecutive_failures ? ` ${hh.consecutive_failures} failures` : null,
    hh && hh.next_probe_at ? [" · probe ", when(hh.next_probe_at)] : null,
    hh && hh.retry_after_until ? [" · Retry-After until ", when(hh.retry_after_until)] : null);
}

// Host keys (host:port) and endpoint names as element ids.
function slug(s) {
  return s.replace(/[^A-Za-z0-9]+/g, "-");
}

async function pause_(host, ctx, msg, load) {
  const ok = await confirmDialog({
    title: `Pause ${host}?`,
    text: "No new attempt starts for this host until you resume it; other hosts keep flowing. New webhooks are stored and wait.",
    confirm: "Pause host",
    danger: true,
    reason: "required",
  });
  if (!ok) return;
  try {
    await post(`/v1/hosts/${encodeURIComponent(host)}/pause`, { reason: ok.reason });
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  load();
}

async function resume(host, ctx, msg, load) {
  const ok = await confirmDialog({ title: `Resume ${host}?`, text: "Its pending deliveries start again.", confirm: "Resume host" });
  if (!ok) return;
  try {
    await post(`/v1/hosts/${encodeURIComponent(host)}/resume`);
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  load();
}

async function retryNow(host, pending, ctx, msg, load) {
  const ok = await confirmDialog({
    title: `Retry ${host} now?`,
    text: `Its ${pending} pending deliveries are attempted now instead of after their backoff, and an open circuit or Retry-After hold is cleared (a probe already in flight still decides). Use it once the receiver is back.`,
    confirm: "Retry now",
  });
  if (!ok) return;
  let r;
  try {
    r = await post(`/v1/hosts/${encodeURIComponent(host)}/retry`);
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  await load();
  // The redraw made a new message line.
  const line = document.querySelector("#hosts .msg");
  if (line) {
    line.textContent = `${r.due_now} pending deliveries to ${host} are due now (${r.brought_forward} brought forward); an open circuit or Retry-After hold is cleared.`;
  }
}

async function enable(name, ctx, msg, load) {
  const ok = await confirmDialog({ title: `Enable endpoint ${name}?`, text: "Its waiting deliveries are attempted again.", confirm: "Enable" });
  if (!ok) return;
  try {
    await post(`/v1/endpoints/${encodeURIComponent(name)}/enable`);
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  load();
}
