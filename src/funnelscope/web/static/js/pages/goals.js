// Goals: every SMART goal with its progress and status, and for the chosen goal the actual
// value to date, the pacing line, the forecast band and the target. Progress is evaluated as of
// the end of the period picked above.

import { api } from "../api.js";
import { plot } from "../charts.js";
import { byUnit, errorBox, h, label, percent, stateBox } from "../format.js";

export const controls = "dates"; // the as-of date matters; the event filters do not apply
export const title = "Goals";

const STATUS = { on_track: ["good", "On track"], at_risk: ["warn", "At risk"],
  off_track: ["bad", "Off track"] };

function statusBadge(status, testid) {
  const [cls, text] = STATUS[status] || ["", status ? label(status) : "Not checked"];
  return h("span", { class: `badge ${cls}`, testid, "data-value": status || "" }, text);
}

function goalRow(progress, selected, ctx) {
  const g = progress.goal;
  const pct = Math.max(0, Math.min(100, Number(progress.percent_of_target) || 0));
  return h("tr", { testid: `goal-row-${g.name}`, class: selected ? "selected" : "" },
    h("td", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault();
      ctx.setState({ goal: g.name }); } }, g.name),
    h("div", { class: "muted small" }, `${g.kpi}${g.owner ? ` · ${g.owner}` : ""}`)),
    h("td", { class: "num", testid: `goal-current-${g.name}`,
      "data-value": progress.current_value ?? "" },
    byUnit(progress.current_value, progress.unit, progress.currency)),
    h("td", { class: "num" }, byUnit(progress.target_value, progress.unit, progress.currency)),
    h("td", { style: "min-width:140px" }, h("div", { class: "progress", title: `${pct.toFixed(0)}%` },
      h("span", { style: `width:${pct}%` })), h("span", { class: "small muted",
      testid: `goal-percent-${g.name}`, "data-value": progress.percent_of_target ?? "" },
    `${(Number(progress.percent_of_target) || 0).toFixed(0)}% of target`)),
    h("td", {}, statusBadge(progress.status, `goal-status-${g.name}`)),
    h("td", { class: "num", testid: `goal-probability-${g.name}`,
      "data-value": progress.probability ?? "" }, percent(progress.probability, 0)),
    h("td", {}, g.deadline));
}

async function detail(section, progress) {
  const rows = progress.daily || [];
  const chart = h("div", { class: "chart tall", testid: "chart-goal" });
  const fmt = (v) => byUnit(v, progress.unit, progress.currency);
  section.replaceChildren(
    h("div", { class: "page-head" }, h("h2", {}, progress.goal.name),
      statusBadge(progress.status, "goal-detail-status")),
    h("p", { class: "muted" }, `${fmt(progress.current_value)} so far, `
      + `${fmt(progress.expected_to_date)} expected by pacing; forecast at the deadline `
      + `${fmt(progress.forecast?.mean)} (80%: ${fmt(progress.forecast?.interval80?.[0])} to `
      + `${fmt(progress.forecast?.interval80?.[1])}). ${progress.days_left} day(s) left.`),
    chart,
    h("h3", {}, "SMART checks"),
    h("ul", { testid: "goal-checks" }, (progress.checks || []).map((c) => h("li", {},
      h("span", { class: `badge ${c.passed === true ? "good" : c.passed === false ? "bad" : ""}` },
        label(c.property)), " ", c.message))));
  const x = rows.map((r) => r.date);
  await plot(chart, [
    { type: "scatter", mode: "lines", name: "Forecast 80%", x: [...x, ...x.slice().reverse()],
      y: [...rows.map((r) => r.upper80), ...rows.map((r) => r.lower80).reverse()],
      fill: "toself", fillcolor: "rgba(230,159,0,0.2)", line: { width: 0 },
      hoverinfo: "skip", connectgaps: false },
    { type: "scatter", mode: "lines", name: "Forecast", x, y: rows.map((r) => r.forecast_mean),
      line: { color: "#e69f00", dash: "dot", width: 2 } },
    { type: "scatter", mode: "lines", name: "Pacing", x, y: rows.map((r) => r.pacing),
      line: { color: "#9aa3b0", dash: "dash", width: 1.5 } },
    { type: "scatter", mode: "lines", name: "Target", x, y: rows.map((r) => r.target),
      line: { color: "#b3261e", width: 1 } },
    { type: "scatter", mode: "lines", name: "Actual to date", x,
      y: rows.map((r) => r.actual_to_date), line: { color: "#2f5d8a", width: 3 } },
  ], { yaxis: { tickformat: "~s" } });
}

export async function render(root, ctx) {
  const goals = await api("/api/v1/goals", { signal: ctx.signal });
  root.replaceChildren(h("div", { class: "page-head" }, h("h1", {}, "Goals"),
    h("span", { class: "muted" }, `progress as of ${ctx.params.end}`)));
  if (!goals.length) {
    root.append(stateBox("empty", "No goals yet",
      "Add a SMART goal: funnelscope goals add --name q1-revenue --kpi revenue --target +15% "
      + "--start 2025-01-01 --deadline 2025-03-31 (see docs/goals.md). It shows here with its "
      + "progress, pacing and forecast."));
    return;
  }
  const progress = await Promise.all(goals.map((g) => api(
    `/api/v1/goals/${encodeURIComponent(g.name)}`,
    { params: { now: `${ctx.params.end}T00:00:00Z` }, signal: ctx.signal })
    .catch((err) => { if (err.name === "AbortError" || err.isAuth) throw err; return { goal: g,
      error: err }; })));
  const chosen = progress.find((p) => p.goal.name === ctx.state.goal) || progress[0];
  const detailBox = h("section", { class: "panel", testid: "goal-detail" });
  root.append(h("section", { class: "panel" }, h("div", { class: "table-wrap" },
    h("table", { testid: "goals-table" },
      h("thead", {}, h("tr", {}, ["Goal", "Current", "Target", "Progress", "Status",
        "Probability", "Deadline"].map((t, i) => h("th", { class: i in { 1: 1, 2: 1, 5: 1 }
        ? "num" : null }, t)))),
      h("tbody", {}, progress.filter((p) => !p.error).map((p) => goalRow(p, p === chosen,
        ctx)))))), detailBox);
  if (chosen.error) detailBox.replaceChildren(errorBox(chosen.error, `goal ${chosen.goal.name}`));
  else await detail(detailBox, chosen);
}
