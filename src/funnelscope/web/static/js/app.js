// The dashboard shell: sign-in, navigation without reloads, the shared date range and filters,
// and rendering the page module named by the path. The page reads everything else from the URL.

import { api, ApiError, clearKey, getKey, setKey } from "./api.js";
import { errorBox, h, label, stateBox } from "./format.js";
import { apiParams, FILTER_KEYS, getState, hrefFor, resolveRange, setState } from "./state.js";

const PAGES = {
  overview: { path: "/", load: () => import("./pages/overview.js") },
  funnels: { path: "/funnels", load: () => import("./pages/funnels.js") },
  kpis: { path: "/kpis", load: () => import("./pages/kpis.js") },
  live: { path: "/live", load: () => import("./pages/live.js") },
  data: { path: "/data", load: () => import("./pages/data.js") },
  customers: { path: "/customers", load: () => import("./pages/customers.js") },
  goals: { path: "/goals", load: () => import("./pages/goals.js") },
  keys: { path: "/keys", load: () => import("./pages/keys.js") },
};

const root = document.getElementById("page");
const controls = document.getElementById("controls");
const dialog = document.getElementById("login");
let info = null;
let current = { seq: 0, cleanup: null };

function pageName() {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  return Object.keys(PAGES).find((name) => PAGES[name].path === path) || "overview";
}

// -- sign-in -------------------------------------------------------------------------------------

function showLogin(message = "") {
  controls.hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message;
  root.replaceChildren(stateBox("empty", "Sign in to see your shop",
    "The dashboard needs a read key. Paste it into the sign-in form."));
  if (!dialog.open) dialog.showModal();
  dialog.querySelector("input[name=key]").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = dialog.querySelector("input[name=key]");
  const key = input.value.trim();
  const errorLine = document.getElementById("login-error");
  if (!key) {
    errorLine.textContent = "Paste a read key first.";
    return;
  }
  errorLine.textContent = "Checking…";
  try {
    info = await api("/api/v1/info", { key });
  } catch (err) {
    errorLine.textContent = err.isAuth
      ? "This key cannot read. It is unknown, revoked, or a write key: use a read key."
      : err.message;
    return;
  }
  setKey(key);
  input.value = "";
  errorLine.textContent = "";
  dialog.close();
  started();
}

// -- global controls ------------------------------------------------------------------------------

function fillSelect(select, values) {
  const keep = select.value;
  select.replaceChildren(h("option", { value: "" }, "All"),
    ...values.map((v) => h("option", { value: v }, label(v))));
  select.value = keep;
}

function setupControls() {
  const dims = info.dimensions || {};
  fillSelect(controls.elements.channel, dims.channel || []);
  fillSelect(controls.elements.device, dims.device || []);
  fillSelect(controls.elements.country, dims.country || []);
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    const feature = info.features?.[link.dataset.page];
    if (feature !== undefined) link.hidden = !feature;
  }
}

function syncControls(state, page) {
  const range = resolveRange(state, info);
  const els = controls.elements;
  els.range.value = range.preset;
  els.start.value = range.start;
  els.end.value = range.end;
  for (const key of FILTER_KEYS) {
    const select = els[key];
    const value = state[key] || "";
    if (value && ![...select.options].some((o) => o.value === value)) {
      select.append(h("option", { value }, label(value)));
    }
    select.value = value;
  }
  controls.hidden = page.controls === false;
  for (const el of controls.querySelectorAll("[data-filter]")) el.hidden = page.controls === "dates";
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    link.href = hrefFor(PAGES[link.dataset.page].path);
  }
}

function onControlChange(event) {
  const els = controls.elements;
  const name = event.target.name;
  if (name === "range") {
    if (els.range.value === "custom") {
      setState({ range: "custom", start: els.start.value, end: els.end.value });
    } else {
      setState({ range: els.range.value, start: null, end: null });
    }
  } else if (name === "start" || name === "end") {
    if (els.start.value && els.end.value) {
      setState({ range: "custom", start: els.start.value, end: els.end.value });
    }
  } else if (FILTER_KEYS.includes(name)) {
    setState({ [name]: event.target.value });
  }
}

// -- rendering ------------------------------------------------------------------------------------

async function render() {
  if (!info) return;
  const name = pageName();
  const seq = ++current.seq;
  if (current.cleanup) current.cleanup();
  const abort = new AbortController();
  current.cleanup = () => abort.abort();
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  root.dataset.page = name;
  root.dataset.ready = "false";
  let module;
  try {
    module = await PAGES[name].load();
  } catch (err) {
    root.replaceChildren(stateBox("error", "This page could not be loaded", String(err)));
    return;
  }
  if (seq !== current.seq) return;
  const state = getState();
  syncControls(state, module);
  document.title = `${module.title || label(name)} · funnelscope`;
  root.replaceChildren(h("p", { class: "muted loading" }, "Loading…"));
  const ctx = {
    info,
    state,
    range: resolveRange(state, info),
    params: apiParams(state, info),
    signal: abort.signal,
    setState,
    isCurrent: () => seq === current.seq,
  };
  try {
    const dispose = await module.render(root, ctx);
    if (typeof dispose === "function") {
      current.cleanup = () => { abort.abort(); dispose(); };
    }
  } catch (err) {
    if (err.name === "AbortError" || seq !== current.seq) return;
    if (err instanceof ApiError && err.isAuth) return; // the fs:auth handler shows the form
    root.replaceChildren(errorBox(err instanceof ApiError ? err : new ApiError(-1, String(err)),
      "this page"));
    console.warn(err);
  }
  if (seq === current.seq) {
    root.dataset.ready = "true";
    performance.mark(`fs:ready:${name}`);
  }
}

async function started() {
  document.getElementById("logout").hidden = false;
  try {
    info = info || await api("/api/v1/info");
  } catch (err) {
    if (!err.isAuth) root.replaceChildren(errorBox(err, "the store summary"));
    return;
  }
  setupControls();
  render();
}

function navigate(event) {
  const link = event.target.closest("a[data-nav]");
  if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  const url = new URL(link.href, location.href);
  if (url.pathname + url.search !== location.pathname + location.search) {
    history.pushState(null, "", url.pathname + url.search);
  }
  render();
}

function boot() {
  // plotly.js is fetched early by index.html's preload link but run only when a page draws its
  // first chart: running it holds the main thread for a second or more, and the numbers of a
  // page must not wait behind it.
  document.body.addEventListener("click", navigate);
  window.addEventListener("popstate", render);
  document.addEventListener("fs:state", render);
  document.addEventListener("fs:auth", (event) => {
    info = null;
    if (current.cleanup) current.cleanup();
    clearKey();
    showLogin(event.detail?.message || "");
  });
  controls.addEventListener("change", onControlChange);
  controls.addEventListener("submit", (event) => event.preventDefault());
  document.getElementById("login-form").addEventListener("submit", signIn);
  dialog.addEventListener("cancel", (event) => { if (!getKey()) event.preventDefault(); });
  document.getElementById("logout").addEventListener("click", () => {
    clearKey();
    info = null;
    if (current.cleanup) current.cleanup();
    showLogin();
  });
  if (getKey()) started();
  else showLogin();
}

boot();
