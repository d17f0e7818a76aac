// Charts: plotly.js, served by funnelscope from the installed plotly package (no CDN), loaded
// once and asynchronously so numbers appear before the library has parsed. Sparklines are
// plain SVG: a dozen tiny plotly graphs would cost more than the page itself.

let loading = null;

export const STAGE_COLOURS = {
  awareness: "#0072b2", interest: "#009e73", decision: "#e69f00", action: "#d55e00",
  retention: "#cc79a7",
};
export const SERIES = ["#2f5d8a", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00",
  "#7a7a7a", "#0072b2", "#a0522d", "#6a3d9a"];

export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = document.querySelector('link[as="script"][href*="plotly"]')?.href
        || "/static/vendor/plotly.min.js";
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => reject(new Error("plotly.js could not be loaded from this server"));
      document.head.append(script);
    });
  }
  return loading;
}

const BASE_LAYOUT = {
  margin: { l: 56, r: 16, t: 10, b: 40 },
  paper_bgcolor: "rgba(0,0,0,0)",
  plot_bgcolor: "rgba(0,0,0,0)",
  font: { family: "system-ui, 'DejaVu Sans', sans-serif", size: 12, color: "#1d2430" },
  colorway: SERIES,
  xaxis: { gridcolor: "#e6e9ee", zeroline: false, automargin: true },
  yaxis: { gridcolor: "#e6e9ee", zeroline: false, automargin: true, rangemode: "tozero" },
  legend: { orientation: "h", y: -0.2 },
  hovermode: "x unified",
};

/** Draw (or redraw) a plotly chart into `el`; returns when drawn. */
export async function plot(el, traces, layout = {}) {
  const Plotly = await loadPlotly();
  if (!el.isConnected) return;
  const merged = {
    ...BASE_LAYOUT, ...layout,
    xaxis: { ...BASE_LAYOUT.xaxis, ...(layout.xaxis || {}) },
    yaxis: { ...BASE_LAYOUT.yaxis, ...(layout.yaxis || {}) },
  };
  await Plotly.react(el, traces, merged, {
    displaylogo: false, responsive: true,
    modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
  });
  el.dataset.rendered = "true";
}

/** A sparkline as an SVG element (values may contain nulls). */
export function sparkline(values, colour = "#2f5d8a") {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 96 28");
  svg.setAttribute("class", "spark");
  svg.setAttribute("aria-hidden", "true");
  const nums = values.map((v) => (v === null || v === undefined ? null : Number(v)));
  const finite = nums.filter((v) => Number.isFinite(v));
  if (finite.length < 2) return svg;
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  const span = max - min || 1;
  const step = 94 / (nums.length - 1);
  let d = "";
  let pen = false;
  nums.forEach((v, i) => {
    if (!Number.isFinite(v)) { pen = false; return; }
    const x = 1 + i * step;
    const y = 26 - ((v - min) / span) * 24;
    d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    pen = true;
  });
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", d);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", colour);
  path.setAttribute("stroke-width", "1.6");
  svg.append(path);
  return svg;
}
