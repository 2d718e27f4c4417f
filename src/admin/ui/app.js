// The dashboard's shell: hash routes to pages, the token form, the pause indicator in the
// header, and the timers a page starts (stopped when the operator leaves the page).

import { ApiError, get, token, setToken } from "./api.js";
import { h, fill } from "./dom.js";
import * as overview from "./overview.js";
import * as deliveries from "./deliveries.js";
import * as detail from "./detail.js";
import * as replays from "./replays.js";
import * as hosts from "./hosts.js";

// [pattern, page, nav entry]; the first match wins.
const ROUTES = [
  [/^\/?$/, overview, "overview"],
  [/^\/deliveries\/([^/]+)$/, detail, "deliveries"],
  [/^\/deliveries$/, deliveries, "deliveries"],
  [/^\/replays\/([^/]+)$/, replays, "replays"],
  [/^\/replays$/, replays, "replays"],
  [/^\/hosts$/, hosts, "hosts"],
];

const main = () => document.getElementById("main");
// Bumped on every navigation; a page's late answer or timer checks it before touching the DOM.
let generation = 0;
let timers = [];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

async function route() {
  generation += 1;
  const mine = generation;
  timers.forEach(clearTimeout);
  timers = [];
  const { path, query } = parseHash();
  const match = ROUTES.map(([re, page, nav]) => [path.match(re), page, nav]).find(([m]) => m);
  for (const a of document.querySelectorAll("nav a")) {
    if (match && a.dataset.page === match[2]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const el = main();
  if (!match) {
    fill(el, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Back to the overview")));
    return;
  }
  const [m, page] = match;
  const ctx = {
    query,
    params: m.slice(1).map(decodeURIComponent),
    alive: () => mine === generation,
    // Runs fn after `delay` ms, unless the operator has left the page by then.
    later(delay, fn) {
      timers.push(setTimeout(() => { if (mine === generation) fn(); }, delay));
    },
    // Shows a failed call: the token form for 401, else an error box (with retry) in `box`.
    fail(err, box, retry) {
      if (mine !== generation) return;
      if (err instanceof ApiError && err.kind === "unauthorized") return askToken();
      if (!(err instanceof ApiError)) console.error(err);
      fill(box, errorFor(err, retry));
    },
    go(hash) { location.hash = hash; },
    refreshPause,
  };
  el.dataset.page = match[2];
  delete el.dataset.rendered;
  fill(el, h("p", { class: "loading" }, "Loading…"));
  try {
    await page.render(el, ctx);
  } catch (err) {
    ctx.fail(err, el, route);
  }
  // Which address the page now shows, for tests and scripts that wait on it.
  if (ctx.alive()) el.dataset.rendered = location.hash || "#/";
  refreshPause();
}

function errorFor(err, retry) {
  const title = err.kind === "unreachable" ? "Server unreachable"
    : err.status ? `Error ${err.status}` : "Something went wrong";
  return h("div", { class: "error", role: "alert" },
    h("strong", {}, title), " ", err.message, " ",
    err.kind === "http" ? h("code", {}, err.code) : null,
    retry ? h("button", { type: "button", onclick: () => retry() }, "Try again") : null);
}

// The token form. Shown whenever a call answers 401: first visit, or a token that was refused.
function askToken() {
  generation += 1;
  timers.forEach(clearTimeout);
  timers = [];
  const refused = token() !== null;
  setToken(null);
  updateTokenButton();
  const input = h("input", { id: "token-input", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const form = h("form", { class: "card token", id: "token-form" },
    h("h1", {}, "Admin token required"),
    h("p", {}, "This hookrelay sidecar has ", h("code", {}, "admin.token"), " set. Enter it to use the dashboard. ",
      "It is kept for this browser tab only (sessionStorage) and sent as a Bearer token to the admin API."),
    refused ? h("p", { class: "error", role: "alert" }, "That token was refused. Check ", h("code", {}, "admin.token"), " and try again.") : null,
    h("label", { for: "token-input" }, "Admin token"), input,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Unlock")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    updateTokenButton();
    route();
  });
  fill(main(), form);
  document.getElementById("pause-pill").hidden = true;
  input.focus();
}

// The header pill: delivering or paused, on every page; unknown while the server is away.
async function refreshPause() {
  const pill = document.getElementById("pause-pill");
  try {
    const p = await get("/v1/pause");
    pill.hidden = false;
    pill.className = `pill ${p.paused ? "paused" : "running"}`;
    pill.textContent = p.paused ? "Delivery paused" : "Delivering";
    pill.title = p.paused ? `Paused${p.reason ? `: ${p.reason}` : ""}` : "Delivery is running";
  } catch (e) {
    pill.hidden = !(e instanceof ApiError && e.kind === "unreachable");
    pill.className = "pill unknown";
    pill.textContent = "Server unreachable";
    pill.title = "";
  }
}

function updateTokenButton() {
  document.getElementById("forget-token").hidden = token() === null;
}

window.addEventListener("hashchange", () => {
  route();
  main().focus({ preventScroll: true });
});
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("forget-token").addEventListener("click", () => {
    setToken(null);
    updateTokenButton();
    route();
  });
  updateTokenButton();
  route();
});
