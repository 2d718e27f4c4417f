// Replays: choose failed (or cancelled) deliveries by filter or by ticking rows, run a dry run,
// review exactly what it would create, then confirm; below, the batch history (the audit trail).
// #/replays/bat_... shows one batch.

import { get, post, query } from "./api.js";
import { h, fill, when, localTime, table, idLink, classBadge, localInputToIso } from "./dom.js";
import { CLASSIFICATIONS } from "./deliveries.js";

const PAGE = 50;

export async function render(main, ctx) {
  if (ctx.params[0]) return batchPage(main, ctx, ctx.params[0]);
  const review = h("section", { id: "review", "aria-live": "polite" });
  const history = h("section", { class: "card", id: "history", "aria-labelledby": "history-title" });
  const picker = h("div", { id: "picker" });
  fill(main,
    h("h1", {}, "Replays"),
    h("p", { class: "lead" }, "A replay creates a new delivery of the same request (the original stays as it was). ",
      "Choose what to replay, look at the dry run, then confirm. Every batch, dry runs included, is recorded below."),
    h("div", { class: "grid2" }, filterCard(ctx, review, history), picker),
    review,
    history);
  await Promise.all([pickCard(picker, ctx, review, history, "failed", ""), loadHistory(history, ctx, "")]);
}

function filterCard(ctx, review, history) {
  const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);
  const form = h("form", { class: "card", id: "replay-filter", "aria-labelledby": "by-filter" },
    h("h2", { id: "by-filter" }, "By filter"),
    field("r-status", "Status", h("select", { id: "r-status", name: "status" },
      h("option", { value: "failed" }, "failed"), h("option", { value: "cancelled" }, "cancelled"))),
    field("r-target", "Target URL starts with", h("input", { id: "r-target", name: "target_prefix", placeholder: "https://api.example.com/", autocomplete: "off" })),
    field("r-endpoint", "Endpoint", h("input", { id: "r-endpoint", name: "endpoint", autocomplete: "off" })),
    field("r-class", "Last classification", h("select", { id: "r-class", name: "classification" },
      h("option", { value: "" }, "Any"), CLASSIFICATIONS.filter((c) => c !== "SUCCESS").map((c) => h("option", { value: c }, c)))),
    h("div", { class: "field-pair" },
      field("r-since", "Created from", h("input", { id: "r-since", name: "since", type: "datetime-local" })),
      field("r-until", "Created to", h("input", { id: "r-until", name: "until", type: "datetime-local" }))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "dry-run-filter" }, "Dry run")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const data = new FormData(form);
    const filter = {};
    for (const k of ["status", "target_prefix", "endpoint", "classification"]) {
      const v = (data.get(k) || "").trim();
      if (v) filter[k] = v;
    }
    for (const k of ["since", "until"]) {
      const v = localInputToIso(data.get(k));
      if (v) filter[k] = v;
    }
    dryRun({ filter }, ctx, review, history);
  });
  return form;
}

// The tickable list of replayable deliveries.
async function pickCard(box, ctx, review, history, status, cursor) {
  let page;
  try {
    page = await get(`/v1/deliveries${query({ status, limit: PAGE, cursor })}`);
  } catch (err) {
    return ctx.fail(err, box, () => pickCard(box, ctx, review, history, status, cursor));
  }
  if (!ctx.alive()) return;
  const rows = page.data || [];
  const statusSelect = h("select", { id: "pick-status", onchange: (e) => pickCard(box, ctx, review, history, e.target.value, "") },
    ["failed", "cancelled"].map((s) => h("option", { value: s, selected: s === status }, s)));
  const count = h("span", { class: "muted", id: "picked-count", "aria-live": "polite" }, "0 selected");
  const go = h("button", { type: "button", class: "primary", id: "dry-run-selected", disabled: true }, "Dry run selected");
  const boxes = () => [...box.querySelectorAll("tbody input[type=checkbox]")];
  const update = () => {
    const n = boxes().filter((b) => b.checked).length;
    count.textContent = `${n} selected`;
    go.disabled = n === 0;
  };
  const all = h("input", { type: "checkbox", id: "pick-all", "aria-label": "Select every row shown", onchange: (e) => {
    boxes().forEach((b) => { b.checked = e.target.checked; });
    update();
  } });
  go.addEventListener("click", () => {
    const ids = boxes().filter((b) => b.checked).map((b) => b.value);
    dryRun({ delivery_ids: ids }, ctx, review, history);
  });
  fill(box, h("section", { class: "card", "aria-labelledby": "by-selection" },
    h("h2", { id: "by-selection" }, "By selection"),
    h("div", { class: "field inline" }, h("label", { for: "pick-status" }, "Show"), statusSelect),
    rows.length
      ? [
        h("div", { class: "scroll short" }, h("table", { id: "pick-table" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, all), ["ID", "Target", "Last classification", "Created"].map((x) => h("th", { scope: "col" }, x)))),
          h("tbody", {}, rows.map((d) => h("tr", {},
            h("td", {}, h("input", { type: "checkbox", value: d.id, "aria-label": `Select ${d.id}`, onchange: update })),
            h("td", {}, idLink(d.id)),
            h("td", { class: "mono target", title: d.target }, d.target),
            h("td", {}, classBadge(d.last_classification)),
            h("td", {}, when(d.created_at))))))),
        h("div", { class: "actions" }, count, go,
          page.next_cursor ? h("button", { type: "button", onclick: () => pickCard(box, ctx, review, history, status, page.next_cursor) }, "Older →") : null),
      ]
      : h("div", { class: "empty", id: "nothing-to-replay" },
        h("p", {}, status === "failed" ? "Nothing failed yet: there is nothing to replay." : "No cancelled deliveries."))));
}

async function dryRun(selection, ctx, review, history) {
  fill(review, h("p", { class: "loading" }, "Running a dry run…"));
  let batch;
  try {
    batch = await post("/v1/batches", { ...selection, dry_run: true });
  } catch (err) {
    return ctx.fail(err, review, null);
  }
  loadHistory(history, ctx, "");
  const sources = (batch.created || []).map((c) => c.source);
  const reason = h("input", { id: "replay-reason", required: true, maxlength: 500, autocomplete: "off" });
  const form = h("form", { class: "card review", id: "review-form", "aria-labelledby": "review-title" },
    h("h2", { id: "review-title", tabindex: "-1" }, "Review the dry run"),
    h("p", { id: "review-summary" },
      `Dry run ${batch.id}: `, h("strong", {}, `${sources.length} ${sources.length === 1 ? "delivery" : "deliveries"} would be replayed`),
      `, ${batch.skipped.length} skipped, of ${batch.requested} requested. Nothing has been created yet.`),
    sources.length
      ? h("details", { open: sources.length <= 20 }, h("summary", {}, `Would replay (${sources.length})`),
        h("ul", { class: "ids", id: "would-replay" }, sources.map((id) => h("li", {}, idLink(id)))))
      : null,
    skippedList(batch.skipped),
    sources.length
      ? [
        h("label", { for: "replay-reason" }, "Reason (kept in the audit trail)"), reason,
        h("div", { class: "actions" },
          h("button", { type: "submit", class: "primary", id: "confirm-replay" }, `Replay ${sources.length} ${sources.length === 1 ? "delivery" : "deliveries"}`),
          h("button", { type: "button", id: "discard", onclick: () => fill(review) }, "Discard")),
      ]
      : h("p", { class: "empty" }, "Nothing to replay with this choice."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("#confirm-replay");
    button.disabled = true;
    let done;
    try {
      // Exactly the deliveries reviewed, not the filter again: what was shown is what runs.
      done = await post("/v1/batches", { delivery_ids: sources, dry_run: false, reason: reason.value.trim() });
    } catch (err) {
      button.disabled = false;
      return ctx.fail(err, review, null);
    }
    loadHistory(history, ctx, "");
    const made = (done.created || []).filter((c) => c.delivery);
    fill(review, h("section", { class: "card done", id: "replay-done", "aria-labelledby": "done-title" },
      h("h2", { id: "done-title", tabindex: "-1" }, "Replay created"),
      h("p", { id: "done-summary" }, `Batch `, h("a", { href: `#/replays/${done.id}` }, done.id), ` created ${made.length} new ${made.length === 1 ? "delivery" : "deliveries"}`,
        done.skipped.length ? `, ${done.skipped.length} skipped` : "", "."),
      createdTable(made),
      skippedList(done.skipped)));
    review.querySelector("#done-title").focus();
  });
  fill(review, form);
  review.querySelector("#review-title").focus();
}

function skippedList(skipped) {
  if (!skipped || !skipped.length) return null;
  return h("details", {}, h("summary", {}, `Skipped (${skipped.length})`),
    h("ul", { class: "ids" }, skipped.map((s) => h("li", {}, h("code", {}, s.id), " — ", s.reason.replace("_", " ")))));
}

function createdTable(created) {
  if (!created.length) return null;
  return table(["Source", "New delivery"], created.map((c) => h("tr", {},
    h("td", {}, idLink(c.source)), h("td", {}, c.delivery ? idLink(c.delivery) : h("span", { class: "muted" }, "—")))));
}

async function loadHistory(box, ctx, cursor) {
  let page;
  try {
    page = await get(`/v1/batches${query({ limit: PAGE, cursor })}`);
  } catch (err) {
    return ctx.fail(err, box, () => loadHistory(box, ctx, cursor));
  }
  if (!ctx.alive()) return;
  const rows = page.data || [];
  fill(box,
    h("h2", { id: "history-title" }, "Batch history"),
    rows.length
      ? table(["Batch", "When", "Kind", "Reason", "Requested", "Created", "Skipped"], rows.map((b) => h("tr", { "data-id": b.id },
        h("td", {}, h("a", { href: `#/replays/${b.id}`, class: "mono" }, b.id)),
        h("td", {}, when(b.created_at)),
        h("td", {}, b.dry_run ? h("span", { class: "badge" }, "dry run") : h("span", { class: "badge s-delivered" }, "replay")),
        h("td", {}, b.reason || h("span", { class: "muted" }, "—")),
        h("td", { class: "num" }, b.requested),
        h("td", { class: "num" }, b.dry_run ? h("span", { class: "muted", title: "a dry run creates nothing" }, `${(b.created || []).length} would be`) : (b.created || []).length),
        h("td", { class: "num" }, (b.skipped || []).length))), "Replay batches, newest first")
      : h("p", { class: "empty", id: "no-batches" }, "No replay batches yet."),
    page.next_cursor ? h("button", { type: "button", onclick: () => loadHistory(box, ctx, page.next_cursor) }, "Older →") : null);
}

async function batchPage(main, ctx, id) {
  let b;
  try {
    b = await get(`/v1/batches/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 404) {
      fill(main, h("h1", {}, "Batch not found"), h("p", { class: "empty" }, "No batch has the id ", h("code", {}, id), ". ", h("a", { href: "#/replays" }, "Back to replays")));
      return;
    }
    return ctx.fail(err, main, () => batchPage(main, ctx, id));
  }
  if (!ctx.alive()) return;
  const f = b.filter;
  fill(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/replays" }, "Replays"), " / "),
    h("div", { class: "title-row" }, h("h1", { class: "mono", id: "batch-id" }, b.id),
      b.dry_run ? h("span", { class: "badge" }, "dry run") : h("span", { class: "badge s-delivered" }, "replay")),
    h("section", { class: "card" },
      h("dl", { class: "facts" },
        h("dt", {}, "When"), h("dd", {}, localTime(b.created_at), " (", when(b.created_at), ")"),
        h("dt", {}, "Reason"), h("dd", { id: "batch-reason" }, b.reason || h("span", { class: "muted" }, "none given")),
        h("dt", {}, "Chosen by"), h("dd", {}, f
          ? h("code", {}, Object.entries(f).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`).join(" "))
          : "delivery ids"),
        h("dt", {}, "Requested"), h("dd", {}, String(b.requested)),
        h("dt", {}, b.dry_run ? "Would create" : "Created"), h("dd", {}, String((b.created || []).length)),
        h("dt", {}, "Skipped"), h("dd", {}, String((b.skipped || []).length)))),
    h("section", { class: "card" }, h("h2", {}, b.dry_run ? "Would replay" : "Created"),
      (b.created || []).length ? createdTable(b.created) : h("p", { class: "empty" }, "Nothing.")),
    (b.skipped || []).length ? h("section", { class: "card" }, h("h2", {}, "Skipped"),
      table(["Delivery", "Reason"], b.skipped.map((s) => h("tr", {}, h("td", { class: "mono" }, s.id), h("td", {}, s.reason))))) : null);
}
