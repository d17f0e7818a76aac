// Live: the counters of GET /api/v1/live, pushed every second over server-sent events, and the
// newest events as they arrive. Nothing reloads; the stream reconnects by itself.

import { api, stream } from "../api.js";
import { plot, STAGE_COLOURS } from "../charts.js";
import { dateTime, h, integer, label, money } from "../format.js";

export const title = "Live";
export const controls = false; // live is always "now"

const MAX_ROWS = 60;
const RETRY_MS = 2000;

function counter(id, title, note) {
  return h("div", { class: "card", testid: `live-card-${id}` },
    h("div", { class: "label" }, title),
    h("div", { class: "value", testid: `live-${id}`, "data-value": "" }, "…"),
    h("div", { class: "muted small" }, note));
}

function setCounter(root, id, value, text) {
  const el = root.querySelector(`[data-testid="live-${id}"]`);
  if (el.dataset.value !== String(value)) {
    el.dataset.value = String(value);
    el.textContent = text;
  }
}

export async function render(root, ctx) {
  const status = h("span", { class: "muted small", testid: "live-status" },
    h("span", { class: "status-dot" }), "connecting…");
  const stages = h("div", { class: "stages", testid: "live-stages" });
  const chart = h("div", { class: "chart", testid: "chart-live-minutes" });
  const list = h("ul", { class: "stream", testid: "live-stream", "aria-live": "polite" });
  const empty = h("p", { class: "muted", testid: "live-stream-empty" },
    "No events yet. Send one from your shop's SDK to this server and it appears here at once.");
  root.replaceChildren(
    h("div", { class: "page-head" }, h("h1", {}, "Live"), status),
    h("div", { class: "grid cards" },
      counter("events-last-minute", "Events, last minute", "by event time"),
      counter("active-visitors", "Active visitors", "persons with an event in the last 5 min"),
      counter("orders", "Orders, last 30 min", "order_completed events"),
      counter("revenue", "Revenue, last 30 min", "per currency, never summed across")),
    h("section", { class: "panel" }, h("h2", {}, "Today's journey"),
      h("p", { class: "muted small" }, "Persons with an event of each stage since midnight"),
      stages),
    h("div", { class: "grid cols-2" },
      h("section", { class: "panel" }, h("h2", {}, "Events per minute, last 30 minutes"), chart),
      h("section", { class: "panel" }, h("h2", {}, "Latest events"), empty, list)),
  );

  let lastSeq = -1;
  let polling = false;
  let stopped = false;
  let retry = null;
  const abort = new AbortController();

  async function pollEvents() {
    if (polling || stopped) return;
    polling = true;
    try {
      const data = await api("/api/v1/events/recent", {
        params: { after: lastSeq, limit: MAX_ROWS }, signal: abort.signal,
      });
      const fresh = data.events.slice().reverse(); // oldest first, so the newest ends on top
      const initial = lastSeq < 0;
      for (const e of fresh) {
        lastSeq = Math.max(lastSeq, e.seq);
        const what = [e.channel, e.page_path || e.product_id,
          e.revenue !== null && e.revenue !== undefined ? money(e.revenue, e.currency || "USD")
            : null].filter(Boolean).join(" · ");
        list.prepend(h("li", { class: initial ? "" : "fresh",
          testid: "live-event", "data-seq": e.seq, "data-event": e.event },
        h("span", { class: "muted" }, dateTime(e.timestamp).slice(11, 19)),
        h("strong", {}, label(e.event)),
        h("span", { class: "muted" }, `person ${e.person_id}${what ? ` · ${what}` : ""}`)));
      }
      while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
      empty.hidden = list.children.length > 0;
    } catch (err) {
      if (err.name !== "AbortError" && !err.isAuth) console.warn("recent events:", err.message);
    } finally {
      polling = false;
    }
  }

  function show(snapshot) {
    setCounter(root, "events-last-minute", snapshot.events_last_minute,
      integer(snapshot.events_last_minute));
    setCounter(root, "active-visitors", snapshot.active_visitors,
      integer(snapshot.active_visitors));
    setCounter(root, "orders", snapshot.orders, integer(snapshot.orders));
    const revenue = snapshot.revenue.length
      ? snapshot.revenue.map((r) => money(r.amount, r.currency)).join(" + ") : money(0);
    setCounter(root, "revenue", snapshot.revenue.map((r) => `${r.amount} ${r.currency}`)
      .join(",") || "0", revenue);
    stages.replaceChildren(...snapshot.today.stages.map((s) => h("div", {
      class: `stage ${s.stage}`, testid: `live-stage-${s.stage}` },
    h("div", { class: "name" }, label(s.stage)),
    h("div", { class: "count", "data-value": s.persons }, integer(s.persons)))));
    root.dataset.asOf = snapshot.as_of;
    plot(chart, [{
      type: "bar", x: snapshot.events_per_minute.map((m) => m.minute),
      y: snapshot.events_per_minute.map((m) => m.events),
      marker: { color: STAGE_COLOURS.awareness }, hovertemplate: "%{x}: %{y} events<extra></extra>",
    }], { xaxis: { type: "date", tickformat: "%H:%M" }, hovermode: "closest",
      yaxis: { tickformat: ",d", dtick: Math.max(1, Math.ceil(Math.max(
        ...snapshot.events_per_minute.map((m) => m.events)) / 5)) } });
    pollEvents();
  }

  function setStatus(on, text) {
    status.replaceChildren(h("span", { class: `status-dot ${on ? "on" : "off"}` }), text);
    status.dataset.connected = on ? "true" : "false";
  }

  async function connect() {
    if (stopped) return;
    try {
      await stream("/api/v1/live/stream", {
        signal: abort.signal,
        onOpen: () => setStatus(true, "live"),
        onEvent: ({ event, data }) => {
          if (event === "live") show(JSON.parse(data));
        },
      });
      if (!stopped) setStatus(false, "stream ended, reconnecting…");
    } catch (err) {
      if (stopped || err.name === "AbortError" || err.isAuth) return;
      setStatus(false, "disconnected, retrying…");
    }
    if (!stopped) retry = setTimeout(connect, RETRY_MS);
  }

  // The first frame comes from the plain endpoint, so the page is complete before the stream.
  show(await api("/api/v1/live", { signal: ctx.signal }));
  connect();
  return () => {
    stopped = true;
    clearTimeout(retry);
    abort.abort();
  };
}
