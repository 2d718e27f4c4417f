// Deliveries: the filterable, cursor-paged table, and the id search. Filters live in the
// address (#/deliveries?status=failed&since=1h), so a filtered view can be linked and reloaded.

import { get, query } from "./api.js";
import { h, fill, statusBadge, classBadge, when, table, idLink, isoToLocalInput, localInputToIso } from "./dom.js";
import { hostPrefix } from "./overview.js";

export const STATUSES = ["pending", "in_progress", "delivered", "failed", "cancelled"];
export const CLASSIFICATIONS = [
  "SUCCESS", "HTTP_5XX_RETRYABLE", "HTTP_4XX_PERMANENT", "HTTP_3XX_PERMANENT", "RATE_LIMITED",
  "TIMEOUT", "NETWORK_ERROR", "TLS_ERROR", "DNS_ERROR", "INVALID_REQUEST", "EGRESS_BLOCKED",
  "INTERNAL_ERROR",
];
const RANGES = [["", "Any time"], ["15m", "Last 15 minutes"], ["1h", "Last hour"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"], ["custom", "Between…"]];
const FILTERS = ["status", "target", "endpoint", "classification", "since", "until"];
const PAGE = 50;
// Stands for the first page (no cursor) in the stack of earlier pages.
const FIRST = "-";
const fromStack = (c) => (!c || c === FIRST ? "" : c);

export async function render(main, ctx) {
  const q = ctx.query;
  const filters = Object.fromEntries(FILTERS.map((k) => [k, q.get(k) || ""]));
  const results = h("div", { id: "results" });
  fill(main,
    h("h1", {}, "Deliveries"),
    searchForm(ctx),
    filterPanel(filters, ctx),
    results);
  // Earlier pages' cursors, so "Newer" can go back without the API paging backwards.
  const stack = (q.get("back") || "").split(",").filter(Boolean);
  // Page size: the API's default unless the address asks for another (?limit=, 1 to 500).
  const limit = /^\d+$/.test(q.get("limit") || "") ? q.get("limit") : "";
  await load(results, ctx, filters, limit, q.get("cursor") || "", stack);
}

function searchForm(ctx) {
  const input = h("input", { id: "search-id", name: "id", placeholder: "dlv_01…", autocomplete: "off", spellcheck: "false", required: true });
  const msg = h("span", { class: "msg", role: "status" });
  return h("form", { class: "search", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const id = input.value.trim();
    if (!/^dlv_[0-9A-Za-z]{26}$/.test(id)) {
      msg.textContent = "A delivery id looks like dlv_ followed by 26 letters and digits.";
      return;
    }
    ctx.go(`#/deliveries/${id}`);
  } },
  h("label", { for: "search-id" }, "Find by id"), input,
  h("button", { type: "submit" }, "Open"), msg);
}

// The filters, folded away on a phone unless one is set.
function filterPanel(f, ctx) {
  const active = FILTERS.filter((k) => f[k]).length;
  const wide = window.matchMedia("(min-width: 641px)").matches;
  return h("details", { class: "filter-panel", open: wide || active > 0 },
    h("summary", {}, active ? `Filters (${active} set)` : "Filters"),
    filterForm(f, ctx));
}

function filterForm(f, ctx) {
  const custom = f.since && !RANGES.some(([v]) => v === f.since);
  const select = (name, label, options, value) => h("div", { class: "field" },
    h("label", { for: `f-${name}` }, label),
    h("select", { id: `f-${name}`, name }, options.map(([v, text]) => h("option", { value: v, selected: v === value }, text))));
  const text = (name, label, value, placeholder) => h("div", { class: "field" },
    h("label", { for: `f-${name}` }, label),
    h("input", { id: `f-${name}`, name, value, placeholder, autocomplete: "off", spellcheck: "false" }));
  const range = select("range", "Created", RANGES, custom || f.until ? "custom" : f.since);
  const between = h("div", { class: "field-pair", id: "between", hidden: !(custom || f.until) },
    h("div", { class: "field" }, h("label", { for: "f-since" }, "From"),
      h("input", { id: "f-since", name: "since", type: "datetime-local", value: custom ? isoToLocalInput(f.since) : "" })),
    h("div", { class: "field" }, h("label", { for: "f-until" }, "To"),
      h("input", { id: "f-until", name: "until", type: "datetime-local", value: isoToLocalInput(f.until) })));
  range.querySelector("select").addEventListener("change", (e) => { between.hidden = e.target.value !== "custom"; });
  const form = h("form", { class: "filters card", id: "filters", "aria-label": "Filters" },
    select("status", "Status", [["", "Any"], ...STATUSES.map((s) => [s, s.replace("_", " ")])], f.status),
    text("target", "Host or target URL prefix", f.target, "api.example.com:443"),
    text("endpoint", "Endpoint", f.endpoint, "orders"),
    select("classification", "Last classification", [["", "Any"], ...CLASSIFICATIONS.map((c) => [c, c])], f.classification),
    range, between,
    h("div", { class: "actions" },
      h("button", { type: "submit", class: "primary" }, "Apply filters"),
      h("a", { href: "#/deliveries", class: "button" }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const rangeValue = data.get("range");
    let target = (data.get("target") || "").trim();
    // A bare host:port (as the hosts page shows it) becomes the URL prefix the API filters on.
    if (target && !target.includes("://") && /:\d+$/.test(target)) target = hostPrefix(target);
    const next = {
      status: data.get("status"),
      target,
      endpoint: (data.get("endpoint") || "").trim(),
      classification: data.get("classification"),
      since: rangeValue === "custom" ? localInputToIso(data.get("since")) : rangeValue,
      until: rangeValue === "custom" ? localInputToIso(data.get("until")) : "",
    };
    ctx.go(`#/deliveries${query(next)}`);
  });
  return form;
}

// A page examines a bounded number of rows, so a selective filter can answer an empty page
// with a cursor; follow a few of those before saying so.
const EMPTY_PAGES_FOLLOWED = 5;

async function load(box, ctx, filters, limit, cursor, stack) {
  let page;
  let at = cursor;
  try {
    for (let i = 0; i < EMPTY_PAGES_FOLLOWED; i++) {
      page = await get(`/v1/deliveries${query({ ...filters, limit: limit || PAGE, cursor: at })}`);
      if ((page.data || []).length || !page.next_cursor) break;
      at = page.next_cursor;
    }
  } catch (err) {
    return ctx.fail(err, box, () => load(box, ctx, filters, limit, cursor, stack));
  }
  if (!ctx.alive()) return;
  const rows = page.data || [];
  const filtered = FILTERS.some((k) => filters[k]);
  if (!rows.length && page.next_cursor) {
    fill(box, h("div", { class: "empty", id: "no-deliveries" },
      h("p", {}, "Nothing matched among the most recent deliveries examined; older ones remain."),
      h("p", {}, h("a", { class: "button", href: `#/deliveries${query({ ...filters, limit, cursor: page.next_cursor, back: [...stack, cursor || FIRST].join(",") })}` }, "Search older →"))));
    return;
  }
  if (!rows.length) {
    fill(box, h("div", { class: "empty", id: "no-deliveries" },
      h("p", {}, cursor ? "No more deliveries." : filtered ? "No deliveries match these filters." : "No deliveries yet."),
      filtered ? h("p", {}, h("a", { href: "#/deliveries" }, "Clear the filters")) : null));
    return;
  }
  const link = (c, back) => `#/deliveries${query({ ...filters, limit, cursor: c, back: back.join(",") })}`;
  const nav = h("nav", { class: "pager", "aria-label": "Pages" },
    cursor ? h("a", { href: link(fromStack(stack[stack.length - 1]), stack.slice(0, -1)), class: "button", id: "newer" }, "← Newer") : null,
    h("span", { class: "muted" }, `${rows.length} shown`),
    page.next_cursor ? h("a", { href: link(page.next_cursor, [...stack, cursor || FIRST]), class: "button", id: "older" }, "Older →") : null);
  fill(box,
    table(["ID", "Target", "Status", "Attempts", "Last classification", "Created", "Next attempt"],
      rows.map((d) => h("tr", { "data-id": d.id },
        h("td", {}, idLink(d.id)),
        h("td", { class: "target" }, d.endpoint ? h("span", { class: "badge" }, d.endpoint) : null, " ", h("span", { class: "mono", title: d.target }, d.target)),
        h("td", {}, statusBadge(d.status)),
        h("td", { class: "num" }, d.attempt_count),
        h("td", {}, classBadge(d.last_classification)),
        h("td", {}, when(d.created_at)),
        h("td", {}, d.status === "pending" ? when(d.next_attempt_at) : h("span", { class: "muted" }, "—")))),
      "Deliveries, newest first"),
    nav);
}
