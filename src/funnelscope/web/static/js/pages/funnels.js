// Funnels: a builder (steps with a property filter each, window, order mode, count unit,
// breakdown), then the funnel with drop-off, conversion with its 95% interval, the
// time-to-convert histogram, conversion over time, the breakdown comparison, the persons at a
// step as CSV, and the trace that explains one person. Every option lives in the URL.

import { api } from "../api.js";
import { plot } from "../charts.js";
import { duration, errorBox, h, integer, label, percent, stateBox, table } from "../format.js";

export const title = "Funnels";

const DEFAULT_STEPS = ["product_viewed", "product_added", "checkout_started", "order_completed"];
const MODES = [["ordered", "Ordered"], ["strict", "Strict (nothing between steps)"],
  ["any", "Any order"]];
const COUNTS = [["uniques", "Unique persons"], ["totals", "Every attempt (totals)"]];
const WINDOWS = [["30m", "30 minutes"], ["1h", "1 hour"], ["1d", "1 day"], ["7d", "7 days"],
  ["14d", "14 days"], ["30d", "30 days"], ["90d", "90 days"]];
const MAX_STEPS = 20;

/** The builder's state from the URL. */
export function builderState(state, eventNames) {
  const known = new Set(eventNames);
  let steps = (state.steps || "").split(",").map((s) => s.trim()).filter(Boolean);
  if (!steps.length) {
    steps = DEFAULT_STEPS.filter((s) => known.has(s));
    if (steps.length < 2) steps = eventNames.slice(0, 3);
  }
  return {
    steps: steps.slice(0, MAX_STEPS),
    where: steps.map((_, i) => state[`where${i + 1}`] || ""),
    window: state.window || "7d",
    mode: state.mode || "ordered",
    counting: state.counting || "uniques",
    breakdown: state.fbreakdown || "",
    trend: state.trend || "day",
    person: state.person || "",
  };
}

/** The URL keys of a builder state (steps, where1..N, window, ...). */
function stateOf(b, old) {
  const patch = {
    steps: b.steps.join(","), window: b.window, mode: b.mode, counting: b.counting,
    fbreakdown: b.breakdown, trend: b.trend, person: null,
  };
  for (const key of Object.keys(old)) if (/^where\d+$/.test(key)) patch[key] = null;
  b.where.forEach((w, i) => { if (w) patch[`where${i + 1}`] = w; });
  return patch;
}

/** The FunnelSpec (docs/funnels.md) sent to POST /api/v1/funnels. */
export function specOf(b, ctx) {
  const filters = [];
  const list = (v) => String(v).split(",").map((x) => x.trim()).filter(Boolean);
  if (ctx.params.channel) filters.push({ property: "channel", op: "in", value: list(ctx.params.channel) });
  if (ctx.params.device) filters.push({ property: "device_type", op: "in", value: list(ctx.params.device) });
  if (ctx.params.country) filters.push({ property: "country", op: "in", value: list(ctx.params.country) });
  return {
    steps: b.steps.map((event, i) => {
      const step = event.startsWith("stage:") ? { stage: event.slice(6) } : { event };
      if (b.where[i]) step.filters = [b.where[i]];
      return step;
    }),
    window: b.window,
    mode: b.mode,
    counting: b.counting,
    breakdowns: b.breakdown ? [b.breakdown] : [],
    trend_period: b.trend,
    start_at: ctx.params.start,
    end_at: ctx.params.end,
    filters,
  };
}

function options(pairs, value) {
  return pairs.map(([v, text]) => h("option", { value: v, selected: v === value }, text));
}

function builderForm(b, ctx, eventNames) {
  const events = [...new Set([...eventNames, ...b.steps.filter((s) => !s.startsWith("stage:"))])];
  const stageOptions = ["awareness", "interest", "decision", "action", "retention"]
    .map((s) => [`stage:${s}`, `Stage: ${label(s)}`]);
  const stepsBox = h("div", { class: "steps", testid: "funnel-steps" });
  const addRow = (event, where) => {
    const row = h("div", { class: "step", testid: "funnel-step" },
      h("span", { class: "n" }),
      h("select", { name: "event", "aria-label": "Step event", testid: "funnel-step-event" },
        h("optgroup", { label: "Events" }, options(events.map((e) => [e, label(e)]), event)),
        h("optgroup", { label: "Journey stages" }, options(stageOptions, event))),
      h("input", { name: "where", value: where, placeholder: "filter, e.g. revenue>=50",
        "aria-label": "Step filter", size: 26, testid: "funnel-step-filter",
        list: "funnel-properties" }),
      h("button", { type: "button", class: "secondary", title: "Remove this step",
        testid: "funnel-step-remove", onclick: () => { row.remove(); renumber(); } }, "✕"));
    stepsBox.append(row);
    renumber();
  };
  const renumber = () => [...stepsBox.children].forEach((row, i) => {
    row.querySelector(".n").textContent = `${i + 1}.`;
  });
  b.steps.forEach((s, i) => addRow(s, b.where[i]));
  const form = h("form", { class: "builder funnel panel", testid: "funnel-builder" },
    h("div", {}, stepsBox, h("div", { class: "actions", style: "margin-top:6px" },
      h("button", { type: "button", class: "secondary", testid: "funnel-add-step",
        onclick: () => { if (stepsBox.children.length < MAX_STEPS) addRow(events[0], ""); } },
      "+ Add step"))),
    h("datalist", { id: "funnel-properties" }, ["channel", "device_type", "country",
      "utm_source", "utm_campaign", "revenue", "product_id", "page_path", "properties.category"]
      .map((p) => h("option", { value: `${p}=` }))),
    h("div", { class: "options" },
      h("label", {}, "Window", h("select", { name: "window", testid: "funnel-window" },
        options(WINDOWS, b.window))),
      h("label", {}, "Order", h("select", { name: "mode", testid: "funnel-mode" },
        options(MODES, b.mode))),
      h("label", {}, "Count", h("select", { name: "counting", testid: "funnel-counting" },
        options(COUNTS, b.counting))),
      h("label", {}, "Breakdown", h("select", { name: "breakdown", testid: "funnel-breakdown" },
        options(FUNNEL_BREAKDOWNS, b.breakdown))),
      h("label", {}, "Trend by", h("select", { name: "trend", testid: "funnel-trend" },
        options([["day", "Day"], ["week", "Week"], ["month", "Month"]], b.trend))),
      h("button", { type: "submit", testid: "funnel-run" }, "Run funnel")),
    ctx.params.customer ? h("p", { class: "muted small" },
      "The new vs returning filter does not apply to funnels; the other filters do.") : "");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const rows = [...stepsBox.children];
    const next = {
      ...b,
      steps: rows.map((r) => r.querySelector("select").value),
      where: rows.map((r) => r.querySelector("input").value.trim()),
      window: form.elements.window.value,
      mode: form.elements.mode.value,
      counting: form.elements.counting.value,
      breakdown: form.elements.breakdown.value,
      trend: form.elements.trend.value,
    };
    ctx.setState(stateOf(next, ctx.state));
  });
  return form;
}

const FUNNEL_BREAKDOWNS = [["", "None"], ["channel", "Channel"], ["device_type", "Device"],
  ["country", "Country"], ["utm_campaign", "Campaign"], ["utm_source", "Source"],
  ["browser", "Browser"]];

function interval(pair) {
  return pair ? `${percent(pair[0])} – ${percent(pair[1])}` : "—";
}

function stepTable(result, onDownload) {
  const ttc = new Map(result.time_to_convert.map((t) => [t.step, t]));
  return table([
    { key: "step", label: "#", num: true },
    { key: "name", label: "Step", format: (v, r) => (r.optional ? `${v} (optional)` : v) },
    { key: "count", label: "Count", num: true, format: integer,
      testid: (r) => `funnel-count-${r.step}` },
    { key: "conversion_from_first", label: "From first", num: true, format: (v) => percent(v),
      testid: (r) => `funnel-conv-${r.step}` },
    { key: "conversion_from_first_interval", label: "95% interval", num: true,
      format: interval, value: (r) => r.conversion_from_first_interval?.join(",") ?? null },
    { key: "conversion_from_previous", label: "From previous", num: true,
      format: (v) => percent(v), testid: (r) => `funnel-conv-prev-${r.step}` },
    { key: "dropoff", label: "Dropped", num: true, format: integer,
      testid: (r) => `funnel-dropoff-${r.step}` },
    { key: "median", label: "Median time", num: true, value: (r) => ttc.get(r.step)?.median_seconds ?? null,
      format: (v) => (v === null ? "—" : duration(v)) },
    { key: "csv", label: "Persons (CSV)", value: () => null, format: (v, r) => h("span", {},
      h("button", { type: "button", class: "link", testid: `funnel-download-at-${r.step}`,
        onclick: () => onDownload(r.step, false) }, "at step"),
      r.step > 1 ? h("button", { type: "button", class: "link",
        testid: `funnel-download-dropped-${r.step}`, onclick: () => onDownload(r.step, true) },
      "dropped") : "") },
  ], result.steps, { testid: "funnel-table", rowTestid: (r) => `funnel-row-${r.step}` });
}

async function funnelChart(el, result) {
  const names = result.steps.map((s) => `${s.step}. ${s.name}`);
  await plot(el, [
    { type: "bar", name: "Reached", x: names, y: result.steps.map((s) => s.count),
      marker: { color: "#2f5d8a" }, text: result.steps.map((s) => percent(s.conversion_from_first)),
      textposition: "auto", hovertemplate: "%{x}: %{y:,} (%{text} of step 1)<extra></extra>" },
    { type: "bar", name: "Dropped before this step", x: names,
      y: result.steps.map((s) => s.dropoff), marker: { color: "#e6b8a2" },
      hovertemplate: "%{x}: %{y:,} dropped<extra></extra>" },
  ], { barmode: "stack", hovermode: "closest", yaxis: { tickformat: "~s" } });
}

async function histogram(el, ttc) {
  const bins = ttc.histogram;
  let lower = 0;
  const labels = bins.map((b) => { const text = `${duration(lower)}–${duration(b.upper_seconds)}`;
    lower = b.upper_seconds; return text; });
  await plot(el, [{ type: "bar", x: labels, y: bins.map((b) => b.count),
    marker: { color: "#009e73" }, hovertemplate: "%{x}: %{y:,}<extra></extra>" }],
  { hovermode: "closest", xaxis: { tickangle: -30 } });
}

async function trendChart(el, result) {
  const t = result.trend;
  await plot(el, [{
    type: "scatter", mode: "lines+markers", name: "Conversion",
    x: t.map((p) => p.period_start), y: t.map((p) => p.conversion),
    error_y: { type: "data", symmetric: false,
      array: t.map((p) => (p.conversion_interval ? p.conversion_interval[1] - p.conversion : 0)),
      arrayminus: t.map((p) => (p.conversion_interval ? p.conversion - p.conversion_interval[0]
        : 0)), color: "#9aa3b0" },
    line: { color: "#2f5d8a" },
    hovertemplate: "%{x}: %{y:.1%}<extra></extra>",
  }], { yaxis: { tickformat: ".0%" }, hovermode: "closest" });
}

async function breakdownChart(el, result) {
  const last = result.steps.length - 1;
  const rows = result.breakdowns.slice(0, 12);
  await plot(el, [{ type: "bar", orientation: "h",
    y: rows.map((b) => b.values.map((v) => v ?? "(none)").join(" · ")),
    x: rows.map((b) => b.steps[last].conversion_from_first),
    error_x: { type: "data", symmetric: false,
      array: rows.map((b) => { const s = b.steps[last]; return s.conversion_from_first_interval
        ? s.conversion_from_first_interval[1] - s.conversion_from_first : 0; }),
      arrayminus: rows.map((b) => { const s = b.steps[last]; return s.conversion_from_first_interval
        ? s.conversion_from_first - s.conversion_from_first_interval[0] : 0; }),
      color: "#9aa3b0" },
    marker: { color: "#e69f00" }, hovertemplate: "%{y}: %{x:.1%}<extra></extra>" }],
  { xaxis: { tickformat: ".0%" }, yaxis: { autorange: "reversed", automargin: true },
    margin: { l: 120, r: 16, t: 6, b: 36 }, hovermode: "closest" });
}

async function download(spec, step, dropped, signal) {
  const response = await api("/api/v1/funnels/persons", {
    body: { spec, step, dropped, format: "csv" }, raw: true, signal,
  });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: `funnel-persons-${dropped ? "dropped" : "at"}-step-${step}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function explainSection(section, spec, result, b, ctx) {
  // Candidates: a few persons who dropped at the step with the largest drop-off.
  const worst = result.steps.slice(1).reduce((a, s) => (s.dropoff > (a?.dropoff ?? -1) ? s : a),
    null);
  const input = h("input", { name: "person", value: b.person, inputmode: "numeric",
    placeholder: "person id", size: 10, testid: "explain-person" });
  const out = h("div", { class: "explain", testid: "explain-output" });
  const form = h("form", { class: "options" }, h("label", {}, "Person", input),
    h("button", { type: "submit", testid: "explain-run" }, "Explain"));
  form.addEventListener("submit", (e) => { e.preventDefault();
    ctx.setState({ person: input.value.trim() }); });
  const picks = h("p", { class: "small" });
  section.replaceChildren(h("h2", {}, "Why is a person counted where they are?"), form, picks, out);
  if (worst && worst.dropoff > 0) {
    const sample = await api("/api/v1/funnels/persons", { body: { spec, step: worst.step,
      dropped: true, format: "json", limit: 8 }, signal: ctx.signal });
    picks.replaceChildren(`Dropped before step ${worst.step} (${worst.name}): `,
      ...sample.persons.map((p) => h("button", { type: "button", class: "link",
        testid: `explain-pick-${p.person_id}`,
        onclick: () => ctx.setState({ person: String(p.person_id) }) }, String(p.person_id))));
  }
  if (!b.person) {
    out.replaceChildren(h("p", { class: "muted" },
      "Pick a person above or type an id to see their events step by step."));
    return;
  }
  const data = await api("/api/v1/funnels/explain", { params: { spec: JSON.stringify(spec),
    person: b.person }, signal: ctx.signal });
  out.replaceChildren(h("p", {}, `Person ${data.person}: furthest step `,
    h("strong", { testid: "explain-furthest", "data-value": data.furthest_step ?? "" },
      data.furthest_step ?? "none")),
  h("pre", { testid: "explain-text" }, data.explanation));
}

export async function render(root, ctx) {
  const eventNames = (ctx.info.event_names || []).map((e) => e.event);
  const b = builderState(ctx.state, eventNames);
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Funnels"),
    h("span", { class: "muted" }, `entering ${ctx.range.start} to ${ctx.range.end}`)),
  builderForm(b, ctx, eventNames));
  if (b.steps.length < 2) {
    root.append(stateBox("empty", "Add at least two steps",
      "A funnel needs 2 or more steps: add them above, then run it."));
    return;
  }
  const spec = specOf(b, ctx);
  let result;
  try {
    result = await api("/api/v1/funnels", { body: spec, signal: ctx.signal });
  } catch (err) {
    if (err.name === "AbortError" || err.isAuth) throw err;
    root.append(errorBox(err, "this funnel"));
    return;
  }
  const first = result.steps[0];
  const last = result.steps[result.steps.length - 1];
  if (!first.count) {
    root.append(stateBox("empty", "Nobody entered this funnel in the period",
      "Pick a longer period, another first step, or clear the filters."));
    return;
  }
  const total = result.total_time_to_convert;
  const cards = h("div", { class: "grid cards", testid: "funnel-summary" },
    h("div", { class: "card" }, h("div", { class: "label" }, "Entered"),
      h("div", { class: "value", testid: "funnel-entered", "data-value": first.count },
        integer(first.count))),
    h("div", { class: "card" }, h("div", { class: "label" }, "Converted"),
      h("div", { class: "value", testid: "funnel-converted", "data-value": last.count },
        integer(last.count))),
    h("div", { class: "card" }, h("div", { class: "label" }, "Conversion (95% interval)"),
      h("div", { class: "value", testid: "funnel-conversion",
        "data-value": last.conversion_from_first ?? "" }, percent(last.conversion_from_first)),
      h("div", { class: "muted small", testid: "funnel-conversion-interval" },
        interval(last.conversion_from_first_interval))),
    h("div", { class: "card" }, h("div", { class: "label" }, "Median time to convert"),
      h("div", { class: "value" }, duration(total?.median_seconds)),
      h("div", { class: "muted small" }, total ? `p25 ${duration(total.p25_seconds)} · p75 `
        + `${duration(total.p75_seconds)} · p90 ${duration(total.p90_seconds)}` : "")));
  const chart = h("div", { class: "chart tall", testid: "chart-funnel" });
  const hist = h("div", { class: "chart", testid: "chart-time-to-convert" });
  const trend = h("div", { class: "chart", testid: "chart-funnel-trend" });
  const explain = h("section", { class: "panel", testid: "section-explain" });
  const onDownload = (step, dropped) => download(spec, step, dropped).catch((err) => {
    explain.prepend(errorBox(err, "the persons"));
  });
  root.append(
    h("section", { class: "panel", testid: "section-funnel" }, cards, chart,
      stepTable(result, onDownload)),
    h("div", { class: "grid cols-2" },
      h("section", { class: "panel" }, h("h2", {}, "Time to convert, first to last step"),
        total && total.count ? hist : stateBox("empty", "Nobody converted",
          "The histogram appears once someone reaches the last step.")),
      h("section", { class: "panel" }, h("h2", {}, `Conversion by entry ${b.trend}`),
        result.trend.length ? trend : stateBox("empty", "No trend", "Nobody entered."))),
  );
  const draws = [funnelChart(chart, result)];
  if (total && total.count) draws.push(histogram(hist, total));
  if (result.trend.length) draws.push(trendChart(trend, result));
  if (result.breakdowns.length) {
    const bchart = h("div", { class: "chart", testid: "chart-funnel-breakdown" });
    const rows = result.breakdowns.map((bd) => ({
      value: bd.values.map((v) => v ?? "(none)").join(" · "),
      entered: bd.steps[0].count, converted: bd.steps[bd.steps.length - 1].count,
      conversion: bd.steps[bd.steps.length - 1].conversion_from_first,
      interval: bd.steps[bd.steps.length - 1].conversion_from_first_interval,
    }));
    root.append(h("section", { class: "panel", testid: "section-breakdown" },
      h("h2", {}, `Conversion by ${label(b.breakdown)}`), bchart,
      table([{ key: "value", label: label(b.breakdown) },
        { key: "entered", label: "Entered", num: true, format: integer,
          testid: (r, i) => `breakdown-entered-${i}` },
        { key: "converted", label: "Converted", num: true, format: integer,
          testid: (r, i) => `breakdown-converted-${i}` },
        { key: "conversion", label: "Conversion", num: true, format: (v) => percent(v) },
        { key: "interval", label: "95% interval", num: true, format: interval,
          value: (r) => r.interval?.join(",") ?? null }],
      rows, { testid: "breakdown-table" })));
    draws.push(breakdownChart(bchart, result));
  }
  root.append(explain);
  await Promise.all([...draws, explainSection(explain, spec, result, b, ctx).catch((err) => {
    if (err.name === "AbortError" || err.isAuth) throw err;
    explain.append(errorBox(err, "the explanation"));
  })]);
}
