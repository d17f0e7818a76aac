// Data: import history, the quarantine browser (rows rejected at ingest, with their reason), and
// the sources with their keys (prefixes only: secrets are never shown after creation).

import { api } from "../api.js";
import { dateTime, errorBox, h, integer, stateBox, table } from "../format.js";

export const title = "Data";
export const controls = false; // this page shows everything ever received, not a period

const PAGE_SIZE = 25;

/** The received row, one "field: value" per line, empty fields left out. */
function payloadText(text) {
  if (!text) return "—";
  try {
    const row = JSON.parse(text);
    if (row && typeof row === "object" && !Array.isArray(row)) {
      return Object.entries(row).filter(([k, v]) => v !== null && v !== "" && k !== "_row")
        .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join("\n");
    }
  } catch {
    // not JSON (a raw line of a file): show it as it came
  }
  return text;
}

function importsTable(data) {
  if (!data.imports.length) {
    return stateBox("empty", "No imports yet",
      "Load a file with funnelscope import FILE; events sent by SDKs appear under Sources.");
  }
  return table([
    { key: "started_at", label: "Started", format: dateTime },
    { key: "source", label: "Source" },
    { key: "kind", label: "Kind" },
    { key: "rows", label: "Rows", num: true, format: integer },
    { key: "accepted", label: "Accepted", num: true, format: integer },
    { key: "rejected", label: "Rejected", num: true, format: integer,
      testid: (r, i) => `import-rejected-${i}` },
    { key: "inserted", label: "Inserted", num: true, format: integer },
  ], data.imports, { testid: "imports-table", rowTestid: (r, i) => `import-row-${i}` });
}

function sourcesTable(data) {
  const rows = data.sources || [];
  if (!rows.length) {
    return stateBox("empty", "No sources yet",
      "Create a write key per source with funnelscope keys create --kind write --source NAME.");
  }
  return table([
    { key: "source", label: "Source", testid: (r, i) => `source-name-${i}` },
    { key: "events", label: "Events", num: true, format: integer,
      testid: (r, i) => `source-events-${i}` },
    { key: "last_event_at", label: "Last event", format: dateTime },
    { key: "keys", label: "Keys", format: (keys) => (keys && keys.length
      ? h("span", {}, keys.map((k) => h("span", {
        class: `badge ${k.revoked ? "bad" : k.kind === "read" ? "warn" : "good"}`,
        title: k.created_at ? `created ${dateTime(k.created_at)}` : "",
      }, `${k.is_admin ? "admin" : k.kind} ${k.prefix}…${k.revoked ? " (revoked)" : ""}`, " ")))
      : "—") },
  ], rows, { testid: "sources-table", rowTestid: (r, i) => `source-row-${i}` });
}

async function quarantineSection(section, ctx) {
  const offset = Number.parseInt(ctx.state.q_offset || "0", 10) || 0;
  const reason = ctx.state.q_reason || "";
  const data = await api("/api/v1/quarantine", {
    params: { offset, limit: PAGE_SIZE, reason }, signal: ctx.signal,
  });
  const reasons = h("select", { testid: "quarantine-reason", "aria-label": "Reason" },
    h("option", { value: "" }, "All reasons"),
    data.reasons.map((r) => h("option", { value: r.reason_code },
      `${r.reason_code} (${integer(r.count)})`)));
  reasons.value = reason;
  reasons.addEventListener("change", () =>
    ctx.setState({ q_reason: reasons.value, q_offset: null }));
  const head = h("div", { class: "page-head" },
    h("h2", {}, "Quarantine ", h("span", { class: "badge bad", testid: "quarantine-total",
      "data-value": data.total }, integer(data.total))),
    data.reasons.length ? reasons : "");
  if (!data.total) {
    section.replaceChildren(head, stateBox("empty", reason ? "No rows with this reason"
      : "Nothing in quarantine",
    reason ? "Choose another reason." : "Every row received so far was valid."));
    return;
  }
  const last = Math.min(offset + PAGE_SIZE, data.total);
  const pager = h("div", { class: "pager" },
    h("button", { type: "button", class: "secondary", disabled: offset === 0,
      testid: "quarantine-prev",
      onclick: () => ctx.setState({ q_offset: Math.max(0, offset - PAGE_SIZE) || null }) },
    "Previous"),
    h("span", { class: "muted small", testid: "quarantine-range" },
      `${integer(offset + 1)}–${integer(last)} of ${integer(data.total)}`),
    h("button", { type: "button", class: "secondary", disabled: last >= data.total,
      testid: "quarantine-next", onclick: () => ctx.setState({ q_offset: offset + PAGE_SIZE }) },
    "Next"));
  section.replaceChildren(head, table([
    { key: "quarantined_at", label: "When", format: dateTime },
    { key: "source", label: "Source" },
    { key: "row_number", label: "Row", num: true },
    { key: "reason_code", label: "Reason",
      format: (v) => h("span", { class: "badge bad" }, v), testid: (r, i) => `quarantine-reason-${i}` },
    { key: "message", label: "Message" },
    { key: "payload", label: "Row as received", format: (v) => h("pre", {}, payloadText(v)) },
  ], data.rows, { testid: "quarantine-table", rowTestid: (r, i) => `quarantine-row-${i}` }), pager);
}

export async function render(root, ctx) {
  const imports = h("section", { class: "panel", testid: "section-imports" },
    h("p", { class: "muted loading" }, "Loading imports…"));
  const quarantine = h("section", { class: "panel", testid: "section-quarantine" },
    h("p", { class: "muted loading" }, "Loading quarantine…"));
  const sources = h("section", { class: "panel", testid: "section-sources" },
    h("p", { class: "muted loading" }, "Loading sources…"));
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Data"),
      h("span", { class: "muted" }, `${integer(ctx.info.events)} events from `
        + `${integer(ctx.info.persons)} persons in the store`)),
    sources, imports, quarantine);
  const guard = (section, what) => (err) => {
    if (err.name === "AbortError" || err.isAuth) throw err;
    section.replaceChildren(errorBox(err, what));
  };
  await Promise.all([
    api("/api/v1/imports", { signal: ctx.signal }).then((data) => imports.replaceChildren(
      h("h2", {}, "Imports"), importsTable(data))).catch(guard(imports, "the imports")),
    api("/api/v1/sources", { signal: ctx.signal }).then((data) => sources.replaceChildren(
      h("h2", {}, "Sources and keys"), sourcesTable(data))).catch(guard(sources, "the sources")),
    quarantineSection(quarantine, ctx).catch(guard(quarantine, "the quarantine")),
  ]);
}
