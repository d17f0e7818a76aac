// Customers and segments: RFM segment sizes, behavioural clusters described in words, CAC and
// CLV:CAC by acquisition channel, and the saved rule segments. "As of" is the end of the period
// picked above, so a shop's history can be looked at as it was.

import { api } from "../api.js";
import { plot, SERIES } from "../charts.js";
import { errorBox, h, integer, money, stateBox, table } from "../format.js";

export const controls = "dates"; // the as-of date matters; the event filters do not apply
export const title = "Customers";

function asOf(ctx) {
  return ctx.params.end; // the exclusive end of the period: midnight after its last day
}

async function rfmSection(section, ctx) {
  const data = await api("/api/v1/customers/rfm", { params: { now: asOf(ctx), limit: 1 },
    signal: ctx.signal });
  const sizes = Object.entries(data.sizes || {});
  if (!data.total) {
    section.replaceChildren(h("h2", {}, "RFM segments"), stateBox("empty", "No customers yet",
      "Customers appear once orders are in the store, before the end of the period."));
    return;
  }
  const chart = h("div", { class: "chart", testid: "chart-rfm" });
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, "RFM segments"),
      h("span", { class: "muted small", testid: "rfm-total", "data-value": data.total },
        `${integer(data.total)} customers as of ${asOf(ctx)}`)),
    chart,
    table([{ key: "segment", label: "Segment" },
      { key: "size", label: "Customers", num: true, format: integer,
        testid: (r) => `rfm-size-${r.segment.replace(/[^A-Za-z]+/g, "-").toLowerCase()}` }],
    sizes.map(([segment, size]) => ({ segment, size })), { testid: "rfm-table" }));
  await plot(chart, [{ type: "bar", orientation: "h", y: sizes.map(([s]) => s),
    x: sizes.map(([, n]) => n), marker: { color: SERIES[0] },
    hovertemplate: "%{y}: %{x} customers<extra></extra>" }],
  { yaxis: { autorange: "reversed", automargin: true }, margin: { l: 130, r: 16, t: 6, b: 30 },
    hovermode: "closest" });
}

async function clusterSection(section, ctx) {
  const data = await api("/api/v1/customers/clusters", { params: { now: asOf(ctx) },
    signal: ctx.signal });
  section.replaceChildren(h("div", { class: "page-head" }, h("h2", {}, "Behavioural clusters"),
    h("span", { class: "muted small" }, `k = ${data.k}, chosen by ${data.criterion}`)),
  table([{ key: "cluster", label: "Cluster", num: true },
    { key: "size", label: "Customers", num: true, format: integer,
      testid: (r) => `cluster-size-${r.cluster}` },
    { key: "description", label: "What sets it apart" }], data.clusters,
  { testid: "cluster-table" }));
}

async function acquisitionSection(section, ctx) {
  const data = await api("/api/v1/customers/acquisition", { params: { now: asOf(ctx) },
    signal: ctx.signal });
  const cur = data.currency || "USD";
  const rows = data.cohorts || [];
  section.replaceChildren(h("h2", {}, "CAC and CLV:CAC by acquisition channel and cohort"),
    rows.length ? table([
      { key: "cohort", label: "Cohort" },
      { key: "channel", label: "Channel" },
      { key: "new_customers", label: "New customers", num: true, format: integer },
      { key: "spend", label: "Spend", num: true, format: (v) => money(v, cur) },
      { key: "cac", label: "CAC", num: true, format: (v) => money(v, cur) },
      { key: "value_per_customer", label: "Value per customer", num: true,
        format: (v) => money(v, cur) },
      { key: "clv_to_cac", label: "CLV:CAC", num: true,
        format: (v) => (v === null ? "—" : `${Number(v).toFixed(2)}×`) },
      { key: "payback_months", label: "Payback (months)", num: true,
        format: (v) => (v === null ? "not yet" : Number(v).toFixed(0)) },
    ], rows, { testid: "acquisition-table" })
      : stateBox("empty", "No new customers in the data",
        "CAC needs orders and ad spend; import ad spend to see it."));
}

async function segmentSection(section, ctx) {
  const data = await api("/api/v1/segments", { signal: ctx.signal });
  const rows = data.segments || [];
  section.replaceChildren(h("h2", {}, "Saved segments"), rows.length ? table([
    { key: "name", label: "Segment" },
    { key: "description", label: "Description" },
    { key: "size", label: "Members", num: true, format: integer },
  ], rows, { testid: "segments-table" }) : stateBox("empty", "No saved segments",
    "Define one with funnelscope segments add (see docs/segments.md); it is listed here with "
    + "its size."));
}

export async function render(root, ctx) {
  const sections = [
    ["section-rfm", rfmSection, "the RFM segments"],
    ["section-clusters", clusterSection, "the clusters"],
    ["section-acquisition", acquisitionSection, "acquisition costs"],
    ["section-segments", segmentSection, "the saved segments"],
  ].map(([testid, fn, what]) => [h("section", { class: "panel", testid },
    h("p", { class: "muted loading" }, `Loading ${what}…`)), fn, what]);
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Customers and segments"),
      h("span", { class: "muted" }, `as of ${asOf(ctx)} (the end of the period)`)),
    h("div", { class: "grid cols-2" }, sections[0][0], sections[1][0]),
    sections[2][0], sections[3][0]);
  await Promise.all(sections.map(([section, fn, what]) => fn(section, ctx).catch((err) => {
    if (err.name === "AbortError" || err.isAuth) throw err;
    section.replaceChildren(errorBox(err, what));
  })));
}
