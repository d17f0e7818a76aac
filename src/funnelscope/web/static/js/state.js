// The URL is the state: the date range, the global filters and each page's options live in the
// query string, so a link opens the same view. Pages read getState() and change it with
// setState(); every change fires "fs:state" on document.

export const GLOBAL_KEYS = ["range", "start", "end", "channel", "device", "country", "customer"];
export const FILTER_KEYS = ["channel", "device", "country", "customer"];
export const DEFAULT_RANGE = "30d";
const DAY_MS = 86400000;

export function getState() {
  const params = new URLSearchParams(location.search);
  const state = {};
  for (const [key, value] of params) state[key] = value;
  return state;
}

/** Merge `patch` into the URL's query (null/"" removes a key) and notify the page. */
export function setState(patch, { replace = false, silent = false } = {}) {
  const params = new URLSearchParams(location.search);
  for (const [key, value] of Object.entries(patch)) {
    if (value === null || value === undefined || value === "") params.delete(key);
    else params.set(key, Array.isArray(value) ? value.join(",") : String(value));
  }
  const search = params.toString();
  const url = location.pathname + (search ? `?${search}` : "");
  if (url !== location.pathname + location.search) {
    history[replace ? "replaceState" : "pushState"](null, "", url);
  }
  if (!silent) document.dispatchEvent(new CustomEvent("fs:state"));
}

/** A link to `path` that keeps the global keys of the current URL. */
export function hrefFor(path) {
  const params = new URLSearchParams(location.search);
  const keep = new URLSearchParams();
  for (const key of GLOBAL_KEYS) if (params.has(key)) keep.set(key, params.get(key));
  const search = keep.toString();
  return path + (search ? `?${search}` : "");
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

function parseDate(text) {
  if (!text || !/^\d{4}-\d{2}-\d{2}$/.test(text)) return null;
  const date = new Date(`${text}T00:00:00Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

/**
 * The period as dates: {start, end (inclusive, for the pickers), apiStart, apiEnd (exclusive),
 * days, label}. Presets count back from the day of the latest event in the store, so a store
 * whose data stopped last month still shows its last 30 days.
 */
export function resolveRange(state, info) {
  const lastEvent = info?.last_event_at ? new Date(info.last_event_at) : new Date();
  const firstEvent = info?.first_event_at ? new Date(info.first_event_at) : null;
  const lastDay = parseDate(isoDate(lastEvent));
  let preset = state.range || (state.start || state.end ? "custom" : DEFAULT_RANGE);
  let start;
  let end;
  if (preset === "custom") {
    start = parseDate(state.start);
    end = parseDate(state.end);
    if (!start || !end || end < start) preset = DEFAULT_RANGE;
  }
  if (preset === "all") {
    start = firstEvent ? parseDate(isoDate(firstEvent)) : lastDay;
    end = lastDay;
  } else if (preset !== "custom") {
    const days = Number.parseInt(preset, 10) || 30;
    end = lastDay;
    start = new Date(end.getTime() - (days - 1) * DAY_MS);
    preset = `${days}d`;
  }
  const apiEnd = new Date(end.getTime() + DAY_MS);
  const days = Math.round((apiEnd - start) / DAY_MS);
  return {
    preset,
    start: isoDate(start),
    end: isoDate(end),
    apiStart: isoDate(start),
    apiEnd: isoDate(apiEnd),
    days,
    granularity: days > 120 ? "week" : "day",
  };
}

/** Query parameters every read endpoint takes: the period and the global filters. */
export function apiParams(state, info) {
  const range = resolveRange(state, info);
  const params = { start: range.apiStart, end: range.apiEnd };
  for (const key of FILTER_KEYS) if (state[key]) params[key] = state[key];
  return params;
}
