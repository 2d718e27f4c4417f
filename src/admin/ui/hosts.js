// Hosts: per destination host (host:port), the pending and in-flight work, the circuit state
// when the server reports one, whether it is paused, and pause/resume for that host alone.

import { get, post, query } from "./api.js";
import { h, fill, when, table, confirmDialog } from "./dom.js";
import { hostPrefix } from "./overview.js";

const REFRESH_MS = 5000;

export async function render(main, ctx) {
  const body = h("div", { id: "hosts" });
  fill(main, h("h1", {}, "Hosts"),
    h("p", { class: "lead" }, "Destination hosts with pending work or a pause. Pausing a host holds its deliveries while every other host flows."),
    body);
  const load = async () => {
    let list;
    try {
      list = (await get("/v1/hosts")).data || [];
    } catch (err) {
      return ctx.fail(err, body, load);
    }
    if (!ctx.alive()) return;
    draw(body, ctx, list, load);
  };
  const loop = async () => {
    await load();
    ctx.later(REFRESH_MS, loop);
  };
  await loop();
}

function draw(body, ctx, list, load) {
  if (!list.length) {
    fill(body, h("div", { class: "empty", id: "no-hosts" }, h("p", {}, "No host has pending work, and none is paused.")));
    return;
  }
  const hasCircuit = list.some((x) => circuit(x) !== null);
  const hasError = list.some((x) => x.last_error);
  const focused = document.activeElement && document.activeElement.id;
  const msg = h("div", { class: "msg", role: "status" });
  fill(body, msg, table(
    ["Host", "Pending", "In flight", "Next attempt", hasCircuit ? "Circuit" : null, "State", hasError ? "Last error" : null, h("span", { class: "sr-only" }, "Actions")].filter(Boolean),
    list.map((x) => {
      const c = circuit(x);
      return h("tr", { "data-host": x.host },
        h("th", { scope: "row", class: "mono" },
          h("a", { href: `#/deliveries${query({ target: hostPrefix(x.host) })}` }, x.host)),
        h("td", { class: "num" }, x.pending),
        h("td", { class: "num" }, x.in_progress ?? x.in_flight ?? 0),
        h("td", {}, x.next_attempt_at ? when(x.next_attempt_at) : h("span", { class: "muted" }, "—")),
        hasCircuit ? h("td", {}, c ? h("span", { class: `badge circuit-${c}` }, c.replace("_", " ")) : "—") : null,
        h("td", {}, x.paused
          ? h("span", {}, h("span", { class: "badge s-failed" }, "paused"), " ", when(x.paused_since),
            x.pause_reason ? [" — ", h("q", {}, x.pause_reason)] : null)
          : "flowing"),
        hasError ? h("td", { class: "err" }, x.last_error || "") : null,
        h("td", {}, x.paused
          ? h("button", { type: "button", id: `resume-${slug(x.host)}`, onclick: () => resume(x.host, ctx, msg, load) }, "Resume")
          : h("button", { type: "button", class: "danger", id: `pause-${slug(x.host)}`, onclick: () => pause(x.host, ctx, msg, load) }, "Pause…")));
    }), "Destination hosts"));
  if (focused && body.querySelector(`#${CSS.escape(focused)}`)) document.getElementById(focused).focus();
}

// The circuit state as a word, whatever shape the server gives it in ("open", {state: "open"}).
function circuit(x) {
  const c = x.circuit ?? x.circuit_state;
  if (c === undefined || c === null) return null;
  return typeof c === "string" ? c : c.state || null;
}

// Host keys (host:port) as element ids.
function slug(host) {
  return host.replace(/[^A-Za-z0-9]+/g, "-");
}

async function pause(host, ctx, msg, load) {
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
