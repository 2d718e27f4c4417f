// Small helpers every page shares: building elements (text only, never HTML strings, since
// targets, headers and response snippets come from outside), formatting times and durations,
// the confirmation dialog, and the empty and error states.

// h("a", {href: "#/x", class: "y"}, "text", child...) -> element. Attributes whose value is
// null, undefined or false are left out; `on*` functions become listeners.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// Replaces everything inside `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function statusBadge(status) {
  return h("span", { class: `badge s-${status}` }, (status || "?").replace("_", " "));
}

export function classBadge(c) {
  if (!c) return h("span", { class: "muted" }, "—");
  return h("span", { class: `badge ${c === "SUCCESS" ? "c-ok" : "c-bad"}` }, c);
}

// "3 s", "4 min", "2 h 5 min", "3 d".
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min${s % 60 && s < 600 ? ` ${s % 60} s` : ""}`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function ms(n) {
  if (n === null || n === undefined) return "—";
  return n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
}

// A time as "5 min ago" / "in 3 s", with the exact time in the title.
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: localTime(iso) }, relative(iso));
}

export function relative(iso) {
  const delta = (Date.parse(iso) - Date.now()) / 1000;
  if (Math.abs(delta) < 1) return "now";
  return delta > 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
}

// "2026-11-28 14:31:47" in the browser's time zone.
export function localTime(iso) {
  const d = new Date(iso);
  if (isNaN(d)) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// An <input type="datetime-local"> value (local time) as RFC 3339 UTC, or "".
export function localInputToIso(value) {
  if (!value) return "";
  const d = new Date(value);
  return isNaN(d) ? "" : d.toISOString();
}

export function isoToLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (isNaN(d)) return "";
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

// Asks for confirmation in a modal dialog. Resolves to null when cancelled, else to
// {reason} (the reason field is shown when `reason` is set: "optional" or "required").
export function confirmDialog({ title, text, confirm, danger, reason, extra }) {
  const dialog = document.getElementById("confirm");
  const form = document.getElementById("confirm-form");
  const reasonInput = document.getElementById("confirm-reason");
  const yes = document.getElementById("confirm-yes");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text || "";
  fill(document.getElementById("confirm-extra"), extra || null);
  document.getElementById("confirm-reason-label").hidden = !reason;
  reasonInput.value = "";
  reasonInput.required = reason === "required";
  yes.textContent = confirm;
  yes.className = danger ? "danger" : "primary";
  // Cancel is a plain button, so Enter in the reason field confirms rather than cancels.
  document.getElementById("confirm-no").onclick = () => dialog.close("cancel");
  return new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      resolve(dialog.returnValue === "ok" ? { reason: reasonInput.value.trim() } : null);
    };
    dialog.addEventListener("close", done);
    form.reset();
    dialog.returnValue = "";
    dialog.showModal();
    (reason ? reasonInput : yes).focus();
  });
}

export function table(headers, rows, caption) {
  return h("div", { class: "scroll" },
    h("table", {},
      caption ? h("caption", {}, caption) : null,
      h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows)));
}

export function idLink(id) {
  return h("a", { href: `#/deliveries/${id}`, class: "mono", title: id }, id);
}
