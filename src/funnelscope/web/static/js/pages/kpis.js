// KPIs: any KPI of the catalogue over time, broken down by one dimension, compared with the
// previous period. Options live in the URL: kpi, breakdown, granularity, compare.

import { api } from "../api.js";
import { plot, SERIES } from "../charts.js";
import { byUnit, change, errorBox, h, integer, label, stateBox, table } from "../format.js";

export const title = "KPIs";

export const BREAKDOWNS = [
  ["", "No breakdown"], ["channel", "Channel"], ["campaign", "Campaign"], ["device", "Device"],
  ["country", "Country"], ["new_vs_returning", "New vs returning"], ["product", "Product"],
  ["page", "Page"],
];
const MAX_LINES = 8;
const DEFAULT_KPI = "revenue";

let catalogueCache = null;

async function catalogue(signal) {
  if (!catalogueCache) catalogueCache = await api("/api/v1/kpis/catalogue", { signal });
  return catalogueCache;
}

function select(name, options, value, testid) {
  const el = h("select", { name, testid }, options.map(([v, text]) => h("option", { value: v },
    text)));
  el.value = value;
  return el;
}

function kpiSelect(kpis, value) {
  const stages = [...new Set(kpis.map((k) => k.stage))];
  const el = h("select", { name: "kpi", testid: "kpi-select" }, stages.map((stage) =>
    h("optgroup", { label: label(stage) }, kpis.filter((k) => k.stage === stage)
      .map((k) => h("option", { value: k.name }, k.label || label(k.name))))));
  el.value = value;
  return el;
}

function breakdownKey(row, columns) {
  return columns.map((c) => row[c] ?? "(none)").join(" · ") || "Total";
}

export async function render(root, ctx) {
  const cat = await catalogue(ctx.signal);
  const kpis = cat.kpis;
  if (!kpis.length) {
    root.replaceChildren(stateBox("empty", "No KPIs", "This server has no KPI catalogue."));
    return;
  }
  const name = kpis.some((k) => k.name === ctx.state.kpi) ? ctx.state.kpi : DEFAULT_KPI;
  const kpi = kpis.find((k) => k.name === name) || kpis[0];
  const allowed = BREAKDOWNS.filter(([v]) => !v || !kpi.breakdowns
    || kpi.breakdowns.includes(v));
  const breakdown = allowed.some(([v]) => v && v === ctx.state.breakdown)
    ? ctx.state.breakdown : "";
  const granularity = ["day", "week", "month"].includes(ctx.state.granularity)
    ? ctx.state.granularity : ctx.range.granularity;
  const compare = ctx.state.compare !== "none";

  const form = h("form", { class: "builder panel", testid: "kpi-form" },
    h("div", { class: "options" },
      h("label", {}, "KPI", kpiSelect(kpis, kpi.name)),
      h("label", {}, "Breakdown", select("breakdown", allowed, breakdown, "kpi-breakdown")),
      h("label", {}, "Granularity", select("granularity",
        [["day", "Day"], ["week", "Week"], ["month", "Month"]], granularity, "kpi-granularity")),
      h("label", {}, "Compare", select("compare", [["previous_period", "Previous period"],
        ["none", "No comparison"]], compare ? "previous_period" : "none", "kpi-compare"))),
    h("p", { class: "muted small", testid: "kpi-description" },
      kpi.description || "", kpi.formula ? ` Formula: ${kpi.formula}.` : ""));
  form.addEventListener("change", (event) => ctx.setState({ [event.target.name]:
    event.target.value }));
  form.addEventListener("submit", (event) => event.preventDefault());

  const summary = h("div", { class: "grid cards", testid: "kpi-summary" });
  const chart = h("div", { class: "chart tall", testid: "chart-kpi" });
  const tableBox = h("div", { testid: "kpi-table-box" });
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, kpi.label || label(kpi.name)),
      h("span", { class: "muted" }, `${ctx.range.start} to ${ctx.range.end}`)),
    form,
    h("section", { class: "panel" }, summary, chart),
    h("section", { class: "panel" }, h("h2", {}, breakdown ? `By ${label(breakdown)}` : "Totals"),
      tableBox),
  );

  const common = { ...ctx.params, names: kpi.name, breakdown,
    compare: compare ? "previous_period" : "none" };
  let series;
  let totals;
  try {
    [series, totals] = await Promise.all([
      api("/api/v1/kpis", { params: { ...common, granularity }, signal: ctx.signal }),
      api("/api/v1/kpis", { params: { ...common, granularity: "total" }, signal: ctx.signal }),
    ]);
  } catch (err) {
    if (err.name === "AbortError" || err.isAuth) throw err;
    summary.replaceChildren(errorBox(err, "this KPI"));
    chart.remove();
    return;
  }
  const cur = series.currency || "USD";
  const columns = series.breakdown || [];
  const total = totals.rows;

  // Summary: the period total (without breakdown: one card; with: the total row is not
  // additive for ratios, so cards show the top values).
  const fmt = (v) => byUnit(v, kpi.unit, cur);
  const cards = total.slice(0, columns.length ? 4 : 1).map((row, i) => {
    const delta = change(row.change, kpi.higher_is_better);
    return h("div", { class: "card", testid: `kpi-total-${i}` },
      h("div", { class: "label" }, columns.length ? breakdownKey(row, columns) : "Period total"),
      h("div", { class: "value", testid: `kpi-total-value-${i}`, "data-value": row.value ?? "" },
        fmt(row.value)),
      compare ? h("div", { class: `change ${delta.cls}`, testid: `kpi-total-change-${i}`,
        "data-value": row.change ?? "" }, delta.text) : "");
  });
  summary.replaceChildren(...cards);

  if (!series.rows.length) {
    chart.replaceChildren(stateBox("empty", "No data for this KPI in this period",
      "Pick a longer period, clear the filters, or check that the data it needs is imported "
      + "(ad spend for CPM, CTR, CAC and ROAS; survey answers for NPS)."));
  } else {
    const groups = new Map();
    for (const row of series.rows) {
      const key = breakdownKey(row, columns);
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(row);
    }
    const order = total.map((r) => breakdownKey(r, columns));
    const keys = [...groups.keys()].sort((a, b) => order.indexOf(a) - order.indexOf(b))
      .slice(0, MAX_LINES);
    const traces = keys.map((key, i) => ({
      type: "scatter", mode: "lines+markers", name: key,
      x: groups.get(key).map((r) => r.period), y: groups.get(key).map((r) => r.value),
      line: { color: SERIES[i % SERIES.length], width: 2 }, marker: { size: 4 },
    }));
    if (compare && !columns.length) {
      const rows = groups.get(keys[0]);
      traces.push({ type: "scatter", mode: "lines", name: "Previous period",
        x: rows.map((r) => r.period), y: rows.map((r) => r.previous_value),
        line: { color: "#9aa3b0", dash: "dash", width: 1.5 } });
    }
    const ratio = kpi.unit === "ratio";
    await plot(chart, traces, { yaxis: { tickformat: ratio ? ".0%" : "~s" },
      showlegend: traces.length > 1 });
  }

  tableBox.replaceChildren(total.length ? table([
    ...columns.map((c) => ({ key: c, label: label(c), value: (r) => r[c] ?? "(none)" })),
    { key: "value", label: kpi.label || label(kpi.name), num: true, format: fmt,
      testid: (r, i) => `kpi-row-value-${i}` },
    { key: "numerator", label: "Numerator", num: true, format: (v) => (v === null ? "—"
      : byUnit(v, kpi.unit === "ratio" ? "count" : kpi.unit, cur)) },
    { key: "denominator", label: "Denominator", num: true, format: integer },
    ...(compare ? [
      { key: "previous_value", label: "Previous period", num: true, format: fmt },
      { key: "change", label: "Change", num: true,
        format: (v) => change(v, kpi.higher_is_better).text },
    ] : []),
  ], total, { testid: "kpi-table", rowTestid: (r, i) => `kpi-row-${i}` })
    : stateBox("empty", "No rows", "Nothing matched this period and these filters."));
}
