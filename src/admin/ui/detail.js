// Delivery detail: the stored request (headers redacted by the API, body pretty-printed when it
// is JSON), links to the replay source and batch, a countdown to the next attempt, the attempt
// timeline, and the retry-now, cancel and replay actions, each behind a confirmation.

import { get, post } from "./api.js";
import { h, fill, statusBadge, classBadge, when, localTime, duration, ms, confirmDialog, idLink } from "./dom.js";

const POLL_MS = 3000;

export async function render(main, ctx) {
  const id = ctx.params[0];
  let shown = "";
  const load = async () => {
    let d;
    try {
      d = await get(`/v1/deliveries/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status === 404) {
        fill(main, h("h1", {}, "Delivery not found"),
          h("p", { class: "empty" }, "No delivery has the id ", h("code", {}, id),
            ". It may have been pruned after the retention period. ", h("a", { href: "#/deliveries" }, "Back to deliveries")));
        return;
      }
      return ctx.fail(err, main, load);
    }
    if (!ctx.alive()) return;
    // Redraw only when something changed, so open snippets and focus stay as they are.
    const version = `${d.status}|${d.updated_at}|${d.attempt_count}`;
    if (version !== shown) {
      shown = version;
      draw(main, ctx, d, load);
    }
    if (!["delivered", "failed", "cancelled"].includes(d.status)) ctx.later(POLL_MS, load);
  };
  await load();
}

function draw(main, ctx, d, reload) {
  const msg = h("div", { class: "msg", id: "action-msg", role: "status" });
  const actions = h("div", { class: "actions" },
    d.status === "pending" && d.next_attempt_at
      ? h("button", { type: "button", id: "retry-now", onclick: () => retryNow(d, ctx, msg, reload) }, "Retry now…") : null,
    d.status === "pending"
      ? h("button", { type: "button", class: "danger", id: "cancel", onclick: () => cancel(d, ctx, msg, reload) }, "Cancel delivery…") : null,
    ["failed", "cancelled"].includes(d.status)
      ? h("button", { type: "button", class: "primary", id: "replay", onclick: () => replay(d, ctx, msg) }, "Replay…") : null);
  const countdown = h("span", { id: "countdown" });
  if (d.status === "pending" && d.next_attempt_at) tick(countdown, d.next_attempt_at, ctx);

  fill(main,
    h("p", { class: "crumbs" }, h("a", { href: "#/deliveries" }, "Deliveries"), " / "),
    h("div", { class: "title-row" },
      h("h1", { class: "mono", id: "delivery-id" }, d.id), statusBadge(d.status), actions),
    msg,
    h("section", { class: "card", "aria-labelledby": "summary-title" },
      h("h2", { id: "summary-title" }, "Summary"),
      h("dl", { class: "facts" },
        fact("Method", h("code", { id: "method" }, d.method)),
        fact("Target", h("span", { class: "mono break", id: "target" }, d.target)),
        d.endpoint ? fact("Endpoint", h("code", {}, d.endpoint)) : null,
        d.event_id ? fact("Event", h("code", {}, d.event_id)) : null,
        fact("Idempotency key", d.idempotency_key ? h("code", { id: "idempotency-key" }, d.idempotency_key) : h("span", { class: "muted" }, "none")),
        fact("Created", h("span", {}, localTime(d.created_at), " (", when(d.created_at), ")")),
        d.finished_at ? fact("Finished", h("span", {}, localTime(d.finished_at), " (", when(d.finished_at), ")")) : null,
        d.status === "pending" ? fact("Next attempt", d.next_attempt_at ? countdown : h("span", { class: "muted" }, "waiting")) : null,
        fact("Attempts", String(d.attempt_count)),
        fact("Last result", h("span", {}, classBadge(d.last_classification), d.last_status_code ? ` HTTP ${d.last_status_code}` : "")),
        d.replay_of ? fact("Replay of", idLink(d.replay_of)) : null,
        d.batch_id ? fact("Batch", h("a", { href: `#/replays/${d.batch_id}`, class: "mono", id: "batch-link" }, d.batch_id)) : null)),
    requestCard(d),
    timeline(d));
}

function fact(name, value) {
  return [h("dt", {}, name), h("dd", {}, value)];
}

// Counts down to the next attempt, once a second, until the page changes.
function tick(el, iso, ctx) {
  if (!el.isConnected && el.textContent) return; // replaced by a redraw, which ticks its own
  const left = (Date.parse(iso) - Date.now()) / 1000;
  el.textContent = left > 0.5 ? `in ${duration(left)}` : "due now";
  el.title = localTime(iso);
  if (left > 0.5) ctx.later(1000, () => tick(el, iso, ctx));
}

function requestCard(d) {
  const headers = d.headers || [];
  return h("section", { class: "card", "aria-labelledby": "request-title" },
    h("h2", { id: "request-title" }, "Request"),
    h("h3", {}, "Headers"),
    headers.length
      ? h("table", { class: "kv", id: "headers" },
        h("tbody", {}, headers.map((x) => h("tr", {},
          h("th", { scope: "row", class: "mono" }, x.name),
          h("td", { class: `mono break ${x.redacted ? "redacted" : ""}` }, x.value)))))
      : h("p", { class: "muted" }, "No stored headers."),
    h("p", { class: "muted small" }, "Values that look like credentials are redacted. Headers configured on a named endpoint are added at send time and never stored."),
    h("h3", {}, `Body (${d.body_bytes} bytes)`),
    body(d));
}

function body(d) {
  if (d.body_preview === null) return h("p", { class: "muted" }, "Binary body (not UTF-8 text); not shown.");
  if (d.body_preview === undefined) return h("p", { class: "muted" }, "This server does not expose request bodies.");
  if (d.body_preview === "") return h("p", { class: "muted" }, "Empty body.");
  let text = d.body_preview;
  let kind = "text";
  if (!d.body_truncated) {
    try {
      text = JSON.stringify(JSON.parse(d.body_preview), null, 2);
      kind = "JSON";
    } catch (e) { /* not JSON: shown as it is */ }
  }
  return h("figure", {},
    h("pre", { class: "body", id: "body-preview", tabindex: "0" }, text),
    h("figcaption", { class: "muted small" }, kind === "JSON" ? "JSON, pretty-printed." : "",
      d.body_truncated ? " Only the first part of the body is shown." : ""));
}

function timeline(d) {
  const attempts = d.attempts || [];
  return h("section", { class: "card", "aria-labelledby": "attempts-title" },
    h("h2", { id: "attempts-title" }, `Attempts (${attempts.length})`),
    attempts.length
      ? h("ol", { class: "timeline", id: "timeline" }, attempts.map((a, i) => h("li", { class: a.classification === "SUCCESS" ? "ok" : "bad" },
        h("div", { class: "head" },
          h("strong", {}, `#${a.number}`), " ",
          h("time", { datetime: a.started_at }, localTime(a.started_at)), " · ",
          ms(a.duration_ms), " · ",
          a.status_code ? `HTTP ${a.status_code}` : "no response", " ",
          classBadge(a.classification)),
        // "HTTP 503" says nothing the head does not; transport errors do.
        a.error && a.error !== `HTTP ${a.status_code}` ? h("p", { class: "err" }, a.error) : null,
        a.response_snippet
          ? h("details", { open: i === attempts.length - 1 }, h("summary", {}, "Response body"), h("pre", { class: "body" }, a.response_snippet))
          : null)))
      : h("p", { class: "empty" }, d.status === "pending" ? "No attempt yet." : "No attempts were made."));
}

async function retryNow(d, ctx, msg, reload) {
  const ok = await confirmDialog({
    title: "Retry this delivery now?",
    text: `${d.method} ${d.target} is attempted now instead of after its backoff (its host's pause, open circuit or Retry-After still hold it).`,
    confirm: "Retry now",
  });
  if (!ok) return;
  try {
    await post(`/v1/deliveries/${encodeURIComponent(d.id)}/retry`);
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  reload();
}

async function cancel(d, ctx, msg, reload) {
  const ok = await confirmDialog({
    title: "Cancel this delivery?",
    text: `${d.method} ${d.target} will not be attempted again. You can replay it later.`,
    confirm: "Cancel delivery",
    danger: true,
  });
  if (!ok) return;
  try {
    await post(`/v1/deliveries/${encodeURIComponent(d.id)}/cancel`);
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  reload();
}

async function replay(d, ctx, msg) {
  const ok = await confirmDialog({
    title: "Replay this delivery?",
    text: `A new delivery of the same request to ${d.target} is created and attempted. This one stays as it is.`,
    confirm: "Replay",
    reason: "optional",
  });
  if (!ok) return;
  let batch;
  try {
    batch = await post("/v1/batches", { delivery_ids: [d.id], dry_run: false, reason: ok.reason || undefined });
  } catch (err) {
    return ctx.fail(err, msg, null);
  }
  const created = (batch.created || [])[0];
  if (created && created.delivery) {
    fill(msg, h("p", { class: "ok" }, "Replayed as ", idLink(created.delivery), " in batch ",
      h("a", { href: `#/replays/${batch.id}` }, batch.id), "."));
  } else {
    const skipped = (batch.skipped || [])[0];
    fill(msg, h("p", { class: "error" }, `Not replayed: ${skipped ? skipped.reason : "nothing was created"}.`));
  }
}
