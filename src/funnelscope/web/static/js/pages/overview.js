// Overview: the stage funnel, KPI cards per stage (sparkline + change vs the previous period),
// revenue and orders over time, and the channel table. Each section loads on its own, so a
// slow or failing one does not hide the others. Charts are drawn only once every number is in
// the page: running plotly's 4 MB script takes the main thread for a second or more, and
// numbers arriving meanwhile would wait for it.

import { api } from "../api.js";
import { plot, sparkline, STAGE_COLOURS } from "../charts.js";
import {
  byUnit, change, errorBox, h, integer, money, percent, stateBox, table,
} from "../format.js";

export const title = "Overview";

function noData(ctx) {
  if (ctx.info.events === 0) {
    return stateBox("empty", "No events yet",
      "Import a file (funnelscope import events.csv), simulate a shop (funnelscope simulate), "
      + "or point your Segment, RudderStack, PostHog or Snowplow SDK at this server.");
  }
  return stateBox("empty", "No activity in this period",
    "Pick a longer period or clear the filters above.");
}

function stageStrip(report) {
  return h("div", { class: "stages", testid: "stage-funnel" }, report.stages.map((s, i) =>
    h("div", { class: `stage ${s.stage}`, testid: `stage-${s.stage}` },
      h("div", { class: "name" }, s.label),
      h("div", { class: "count", testid: `stage-count-${s.stage}`, "data-value": s.persons },
        integer(s.persons)),
      h("div", { class: "conv", testid: `stage-conv-${s.stage}`,
        "data-value": s.conversion_from_previous ?? "" },
      i === 0 ? "persons reached"
        : `${percent(s.conversion_from_previous)} of ${report.stages[i - 1].label}`))));
}

function funnelChart(el, report) {
  return plot(el, [{
    type: "funnel",
    y: report.stages.map((s) => s.label),
    x: report.stages.map((s) => s.persons),
    textinfo: "value+percent previous",
    marker: { color: report.stages.map((s) => STAGE_COLOURS[s.stage]) },
    connector: { line: { color: "#c8ced8" } },
    hovertemplate: "%{y}: %{x:,} persons<br>%{percentPrevious:.1%} of previous stage"
      + "<extra></extra>",
  }], { margin: { l: 90, r: 16, t: 6, b: 6 }, hovermode: "closest", height: 250 });
}

function kpiCard(kpi, currency) {
  const delta = kpi.unavailable ? { text: kpi.unavailable, cls: "flat" }
    : change(kpi.change, kpi.higher_is_better);
  const colour = STAGE_COLOURS[kpi.stage] || "#2f5d8a";
  return h("div", { class: "card", testid: `kpi-card-${kpi.name}` },
    h("div", { class: "label", title: kpi.description || "" }, kpi.label),
    h("div", { class: "row" },
      h("div", { class: "value", testid: `kpi-value-${kpi.name}`, "data-value": kpi.value ?? "" },
        byUnit(kpi.value, kpi.unit, currency)),
      sparkline((kpi.series || []).map((p) => p.value), colour)),
    h("div", { class: `change ${delta.cls}`, testid: `kpi-change-${kpi.name}`,
      "data-value": kpi.change ?? "",
      title: `previous period: ${byUnit(kpi.previous_value, kpi.unit, currency)}` },
    delta.text));
}

function kpiCards(report) {
  const byStage = new Map(report.stages.map((s) => [s.stage, []]));
  for (const kpi of report.kpis) {
    if (!byStage.has(kpi.stage)) byStage.set(kpi.stage, []);
    byStage.get(kpi.stage).push(kpi);
  }
  const labels = Object.fromEntries(report.stages.map((s) => [s.stage, s.label]));
  return h("section", { testid: "kpi-cards" }, [...byStage].filter(([, kpis]) => kpis.length)
    .map(([stage, kpis]) => h("div", { class: "stage-group" },
      h("h2", {}, h("span", { class: "stage-dot", style: `background:${STAGE_COLOURS[stage]}` }),
        labels[stage] || stage),
      h("div", { class: "grid cards" }, kpis.map((k) => kpiCard(k, report.currency))))));
}

async function journeySection(section, trend, ctx) {
  const report = await api("/api/v1/report", { params: ctx.params, signal: ctx.signal });
  const reached = report.stages.some((s) => s.persons > 0);
  const funnel = h("div", { class: "chart", testid: "chart-stage-funnel" });
  section.replaceChildren(
    h("div", { class: "panel" },
      h("div", { class: "page-head" }, h("h2", {}, "Journey"),
        h("span", { class: "muted small" }, report.stage_filters_applied
          ? "Persons who reached each stage in the period; conversion from the previous stage"
          : "Stage counts are for all visitors: the filters apply to the KPI cards")),
      reached ? [stageStrip(report), funnel] : noData(ctx)),
    reached && report.kpis.length ? kpiCards(report) : "",
  );
  const draw = trendSection(trend, report);
  // The charts, for later: see the note at the top.
  return () => Promise.all([reached ? funnelChart(funnel, report) : null, draw()]);
}

/** Fills the revenue and orders section; returns the function that draws its chart. */
function trendSection(section, report) {
  // Revenue and orders come with the report's KPI series: one query instead of two.
  const series = (name) => report.kpis.find((k) => k.name === name)?.series || [];
  const revenue = series("revenue");
  const orders = series("orders");
  const hasOrders = orders.some((p) => Number(p.value) > 0);
  const chart = h("div", { class: "chart", testid: "chart-revenue-orders" });
  section.replaceChildren(h("div", { class: "page-head" }, h("h2", {}, "Revenue and orders"),
    h("span", { class: "muted small" }, `per ${report.granularity}, in ${report.currency}`)),
  hasOrders ? chart
    : stateBox("empty", "No orders in this period", "Pick a longer period or clear the filters."));
  if (!hasOrders) return async () => {};
  return () => plot(chart, [
    { type: "bar", name: `Revenue (${report.currency})`, x: revenue.map((r) => r.period),
      y: revenue.map((r) => r.value), marker: { color: "#9cc3e8" } },
    { type: "scatter", mode: "lines+markers", name: "Orders", x: orders.map((r) => r.period),
      y: orders.map((r) => r.value), yaxis: "y2", line: { color: "#d55e00", width: 2 },
      marker: { size: 4 } },
  ], {
    yaxis: { title: { text: "Revenue" }, tickformat: "~s" },
    yaxis2: { title: { text: "Orders" }, overlaying: "y", side: "right", rangemode: "tozero",
      showgrid: false },
    margin: { l: 56, r: 56, t: 10, b: 40 },
    bargap: 0.25,
  });
}

async function channelSection(section, ctx) {
  const data = await api("/api/v1/channels", { params: ctx.params, signal: ctx.signal });
  const cur = data.currency || "USD";
  const rows = data.channels || [];
  const id = (r) => r.channel;
  section.replaceChildren(h("div", { class: "page-head" }, h("h2", {}, "Channels"),
    h("span", { class: "muted small" },
      "Spend from ad-spend data; revenue and new customers by last touch")),
  data.unavailable ? stateBox("empty", "Not available with these filters", data.unavailable)
    : rows.length ? table([
    { key: "channel", label: "Channel", testid: (r) => `channel-name-${id(r)}` },
    { key: "spend", label: "Spend", num: true, format: (v) => money(v, cur),
      testid: (r) => `channel-spend-${id(r)}` },
    { key: "impressions", label: "Impressions", num: true, format: integer },
    { key: "clicks", label: "Clicks", num: true, format: integer },
    { key: "ctr", label: "CTR", num: true, format: (v) => percent(v, 2),
      testid: (r) => `channel-ctr-${id(r)}` },
    { key: "orders", label: "Orders", num: true, format: integer },
    { key: "revenue", label: "Revenue", num: true, format: (v) => money(v, cur),
      testid: (r) => `channel-revenue-${id(r)}` },
    { key: "new_customers", label: "New customers", num: true, format: integer },
    { key: "cac", label: "CAC", num: true, format: (v) => money(v, cur),
      testid: (r) => `channel-cac-${id(r)}` },
    { key: "roas", label: "ROAS", num: true, format: (v) => (v === null ? "—" : `${Number(v).toFixed(2)}×`),
      testid: (r) => `channel-roas-${id(r)}` },
  ], rows, { testid: "channel-table", rowTestid: (r) => `channel-row-${id(r)}` })
    : stateBox("empty", "No channel data in this period",
      "Import ad spend (funnelscope import --kind ad_spend spend.csv) to see CTR, CAC and ROAS."));
}

export async function render(root, ctx) {
  const journey = h("section", { testid: "section-journey" }, h("p", { class: "muted loading" },
    "Loading the journey…"));
  const trend = h("section", { class: "panel", testid: "section-trend" },
    h("p", { class: "muted loading" }, "Loading revenue…"));
  const channels = h("section", { class: "panel", testid: "section-channels" },
    h("p", { class: "muted loading" }, "Loading channels…"));
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Overview"),
      h("span", { class: "muted" }, `${ctx.range.start} to ${ctx.range.end}`)),
    journey, trend, channels,
  );
  const failed = (section, what) => (err) => {
    if (err.name === "AbortError" || err.isAuth) throw err;
    section.replaceChildren(errorBox(err, what));
    if (section === journey) trend.replaceChildren(errorBox(err, "revenue and orders"));
    return null;
  };
  // Numbers first, in every section; then the charts (see the note at the top).
  const [drawCharts] = await Promise.all([
    journeySection(journey, trend, ctx).catch(failed(journey, "the journey")),
    channelSection(channels, ctx).catch(failed(channels, "the channels")),
  ]);
  performance.mark("fs:numbers:overview");
  if (drawCharts) await drawCharts().catch(failed(trend, "revenue and orders"));
}
