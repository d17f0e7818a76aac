// Number, money, percent and duration formatting, and small DOM helpers shared by the pages.

const numberFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
const compactFmt = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

export function toNumber(value) {
  if (value === null || value === undefined || value === "") return null;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : null;
}

export function money(value, currency = "USD") {
  const n = toNumber(value);
  if (n === null) return "—";
  return new Intl.NumberFormat("en-US", {
    style: "currency", currency, maximumFractionDigits: Math.abs(n) >= 1000 ? 0 : 2,
  }).format(n);
}

export function percent(value, digits = 1) {
  const n = toNumber(value);
  if (n === null) return "—";
  return `${(n * 100).toFixed(digits)}%`;
}

export function integer(value) {
  const n = toNumber(value);
  return n === null ? "—" : intFmt.format(n);
}

export function number(value) {
  const n = toNumber(value);
  if (n === null) return "—";
  return Math.abs(n) >= 1e6 ? compactFmt.format(n) : numberFmt.format(n);
}

export function duration(seconds) {
  const n = toNumber(seconds);
  if (n === null) return "—";
  if (n < 60) return `${n.toFixed(n < 10 ? 1 : 0)} s`;
  if (n < 3600) return `${(n / 60).toFixed(1)} min`;
  if (n < 86400 * 2) return `${(n / 3600).toFixed(1)} h`;
  return `${(n / 86400).toFixed(1)} d`;
}

/** Format by the unit of the KPI catalogue (ratio: a fraction; percent: already 0-100). */
export function byUnit(value, unit, currency) {
  const n = toNumber(value);
  switch ((unit || "").toLowerCase()) {
    case "ratio":
      return percent(value);
    case "percent":
      return n === null ? "—" : `${n.toFixed(1)}%`;
    case "currency":
      return money(value, currency);
    case "seconds":
      return duration(value);
    case "days":
      return n === null ? "—" : `${n.toFixed(1)} d`;
    case "multiple":
      return n === null ? "—" : `${n.toFixed(2)}×`;
    case "score":
      return n === null ? "—" : n.toFixed(1);
    case "count":
      return Number.isInteger(n) ? integer(n) : number(n);
    default:
      return number(value);
  }
}

/** The relative change as text, classed good/bad by whether higher is better. */
export function change(value, higherIsBetter = true) {
  const n = toNumber(value);
  if (n === null) return { text: "no previous data", cls: "flat" };
  const dir = n > 0.0005 ? "up" : n < -0.0005 ? "down" : "flat";
  const arrow = dir === "up" ? "▲" : dir === "down" ? "▼" : "■";
  const good = dir === "flat" ? "" : (dir === "up") === (higherIsBetter !== false) ? "good" : "bad";
  return { text: `${arrow} ${(Math.abs(n) * 100).toFixed(1)}% vs previous`, cls: `${dir} ${good}` };
}

export function dateTime(value) {
  if (!value) return "—";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function label(name) {
  const text = String(name ?? "").replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Build an element: h("td", {class: "num", dataset: {testid: "x"}}, "text", child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "testid") el.dataset.testid = value;
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "html") el.innerHTML = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An empty or error state that says what to do next. */
export function stateBox(kind, title, ...body) {
  return h("div", { class: `state ${kind}`, role: kind === "error" ? "alert" : null,
    testid: `state-${kind}` }, h("h2", {}, title), ...body.map((b) =>
    typeof b === "string" ? h("p", {}, b) : b));
}

export function errorBox(error, what) {
  const hint = error.status === 0
    ? "Check that `funnelscope serve` is running, then reload."
    : error.status === 422
      ? "Change the options above and try again."
      : error.isAuth
        ? "Sign in again with a read key."
        : "Reload the page; if it happens again, look at the server log.";
  return stateBox("error", `Could not load ${what}`, error.message, hint);
}

/** A table from rows and column specs {key, label, num, format, testid}. */
export function table(columns, rows, { testid, rowTestid } = {}) {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : null }, c.label)));
  const body = rows.map((row, i) => h("tr", { testid: rowTestid ? rowTestid(row, i) : null },
    columns.map((c) => {
      const raw = typeof c.value === "function" ? c.value(row) : row[c.key];
      const shown = c.format ? c.format(raw, row) : raw ?? "—";
      return h("td", {
        class: c.num ? "num" : null,
        testid: c.testid ? c.testid(row, i) : null,
        "data-value": raw === null || raw === undefined ? "" : String(raw),
      }, shown instanceof Node ? shown : String(shown));
    })));
  return h("div", { class: "table-wrap" },
    h("table", { testid }, h("thead", {}, head), h("tbody", {}, body)));
}
