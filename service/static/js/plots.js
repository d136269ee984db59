// Plotly figures of the dashboard, each axis on its hyperparameter's own scale.
// plotly.js is served by the service from the plotly Python package (no network needed).

import { esc, fmt } from "./util.js";

let loading = null;

/** plotly.js, loaded on the first page that draws (the studies list never pays for it). */
export function loadPlotly() {
  // Called by a page after its data requests have left: the script then runs (~1 s on
  // the main thread) while the service answers them.
  loading ??= new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = "/static/vendor/plotly.min.js";
    s.addEventListener("load", () => resolve(window.Plotly));
    s.addEventListener("error", () => reject(new Error("plotly.js could not be loaded from the service")));
    document.head.append(s);
  });
  return loading;
}

export const PALETTE = ["#2456d6", "#e07b39", "#1e8e4e", "#9b3fb5", "#c2362b", "#138a9e", "#b7791f", "#5b6472"];
const FONT = { family: 'system-ui, -apple-system, "Segoe UI", Roboto, sans-serif', size: 11, color: "#394150" };
const GRID = "#eef0f4";

export const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d", "autoScale2d", "toggleSpikelines", "zoomIn2d", "zoomOut2d"],
};

export function layout(extra = {}) {
  return {
    font: FONT,
    margin: { l: 56, r: 16, t: 10, b: 42 },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#fff",
    hovermode: "closest",
    hoverlabel: { font: { family: FONT.family, size: 12 } },
    showlegend: false,
    ...extra,
    xaxis: { gridcolor: GRID, zeroline: false, automargin: true, ...(extra.xaxis || {}) },
    yaxis: { gridcolor: GRID, zeroline: false, automargin: true, ...(extra.yaxis || {}) },
  };
}

/** Hover text of values, written by fmt as the rest of the page writes numbers. */
export const texts = (values) => values.map((v) => fmt(v));

function finiteValues(values, positive = false) {
  return values.filter((v) => typeof v === "number" && Number.isFinite(v) && (!positive || v > 0));
}

/**
 * A log axis labelled at each power of ten as fmt writes it (1e-4, 0.001, 0.01, 0.1, 1),
 * and at 2 and 5 times them where the values span less than three decades: Plotly's own
 * labels were its minor ones only ("2" for 0.2).
 */
export function logAxis(values) {
  const v = finiteValues(values, true);
  if (!v.length) return { type: "log" };
  const lo = Math.floor(Math.log10(v.reduce((a, b) => Math.min(a, b))));
  const hi = Math.ceil(Math.log10(v.reduce((a, b) => Math.max(a, b))));
  const steps = hi - lo <= 3 ? [1, 2, 5] : [1];
  const tickvals = [];
  for (let k = lo; k <= Math.max(hi, lo + 1); k++) for (const m of steps) tickvals.push(Number((m * 10 ** k).toPrecision(12)));
  return { type: "log", tickvals, ticktext: tickvals.map((t) => fmt(t)) };
}

/** An accuracy axis, kept within [0, 1] however few the points (one point ran it to 1.5). */
export function accuracyAxis(values) {
  const v = finiteValues(values);
  if (!v.length) return { range: [0, 1] };
  const lo = v.reduce((a, b) => Math.min(a, b));
  const hi = v.reduce((a, b) => Math.max(a, b));
  const pad = Math.max(0.05, 0.1 * (hi - lo));
  return { range: [Math.max(0, lo - pad), Math.min(1, hi + pad)], tickformat: ".2~f" };
}

/** The y axis of an objective: an accuracy within [0, 1], a cost as Plotly sees fit. */
const objectiveAxis = (metric, values) => (metric.endsWith("accuracy") ? accuracyAxis(values) : {});

/** In place of a plot: a message saying what will appear there, and when. */
export function empty(el, message) {
  if (window.Plotly && el._fullLayout) window.Plotly.purge(el);
  delete el.dataset.linked;
  el.innerHTML = `<div class="plot-empty">${esc(message)}</div>`;
  el.dataset.empty = "1";
}

/** Draw or redraw (Plotly.react keeps zoom and hover state across live updates). */
export async function draw(el, data, lay) {
  const Plotly = await loadPlotly();
  if (!el.isConnected) return;
  if (el.dataset.empty) {
    el.innerHTML = "";
    delete el.dataset.empty;
  }
  lay.uirevision = "keep"; // the user's zoom survives live updates
  await Plotly.react(el, data, lay, CONFIG);
  if (!el.dataset.linked) {
    // A point that carries a trial id opens that trial.
    el.dataset.linked = "1";
    el.on("plotly_click", (ev) => {
      const cd = ev.points?.[0]?.customdata;
      const id = Array.isArray(cd) ? cd[0] : cd;
      if (Number.isInteger(id)) location.hash = `#/trials/${id}`;
    });
  }
}

/**
 * How a hyperparameter is drawn: the axis type and title, and x(value) on that axis.
 * log: a log axis. one_minus_log: 1 - x on a log axis, labelled so. categorical: one
 * column per choice. layers: the depth of the stack.
 */
export function axisFor(path, dist = {}) {
  if (dist.type === "layers") return { title: `${path}: depth`, type: "linear", x: (v) => (Array.isArray(v) ? v.length : null) };
  if (dist.type === "categorical")
    return { title: path, type: "category", x: (v) => JSON.stringify(v).replace(/^"|"$/g, ""), categories: (dist.choices || []).map((c) => JSON.stringify(c).replace(/^"|"$/g, "")) };
  if (dist.scale === "log") return { title: `${path} (log scale)`, type: "log", x: (v) => v };
  if (dist.scale === "one_minus_log") return { title: `1 − ${path} (log scale)`, type: "log", x: (v) => 1 - v, flipped: true };
  return { title: path, type: "linear", x: (v) => v };
}

/** The objective of every sampled trial, by trial number, and the best-so-far line. */
export function historyFigure(ov) {
  const s = ov.study;
  const c2f = s.strategy === "coarse_to_fine";
  const pts = ov.sample;
  const last = Math.max(ov.study.total_trials - 1, ...pts.map((p) => p.number), 0);
  const rec = ov.records;
  const bx = rec.map((r) => r[0]);
  const by = rec.map((r) => r[1]);
  if (rec.length) {
    bx.push(last);
    by.push(by[by.length - 1]);
  }
  const data = [
    {
      type: "scatter",
      mode: "markers",
      name: ov.sample_stride > 1 ? `trials (every ${ov.sample_stride}th + best)` : "trials",
      x: pts.map((p) => p.number),
      y: pts.map((p) => p.value),
      customdata: pts.map((p) => p.id),
      text: texts(pts.map((p) => p.value)),
      marker: { size: pts.length > 800 ? 4 : 6, opacity: pts.length > 800 ? 0.45 : 0.75, color: c2f ? pts.map((p) => PALETTE[p.round % PALETTE.length]) : PALETTE[0] },
      hovertemplate: "trial #%{x}<br>%{text}<extra></extra>",
    },
    { type: "scatter", mode: "lines", name: "best so far", x: bx, y: by, text: texts(by), line: { shape: "hv", color: "#c2362b", width: 2 }, hovertemplate: "best so far %{text}<extra></extra>" },
  ];
  return {
    data,
    layout: layout({
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.12, font: { size: 11 } },
      margin: { l: 56, r: 16, t: 28, b: 40 },
      // A few trials: whole trial numbers only, not Plotly's -1 to 1 around one trial.
      xaxis: { title: { text: "trial" }, ...(last < 10 ? { range: [-0.5, Math.max(last, 1) + 0.5], dtick: 1 } : {}) },
      yaxis: { title: { text: s.objective.metric }, ...objectiveAxis(s.objective.metric, pts.map((p) => p.value)) },
    }),
  };
}

/** The axes of the parallel coordinates: one per hyperparameter (on its scale), then the objective. */
function parAxes(ov) {
  const s = ov.study;
  const pts = ov.sample;
  const dims = Object.entries(s.spec.space || {}).map(([path, d]) => parDim(path, d, pts.map((p) => p.params[path])));
  const values = pts.map((p) => p.value);
  const metric = s.objective.metric;
  dims.push({ label: metric, values, range: metric.endsWith("accuracy") ? accuracyAxis(values).range : extent(values) });
  for (const d of dims) d.range ??= extent(d.values);
  return { dims, values };
}

/**
 * Parallel coordinates drawn as SVG lines, one trace per colour band of the objective.
 * Plotly's own parcoords trace needs WebGL, which costs seconds where it is emulated on
 * the CPU (a headless browser, a remote desktop); this one draws 2,000 lines in ~100 ms.
 * `parcoordsFigure` (the WebGL one, with brushing) is a click away.
 */
export function parallelFigure(ov) {
  const { dims, values } = parAxes(ov);
  const pts = ov.sample;
  const D = dims.length;
  const vr = dims[D - 1].range; // the objective's axis: an accuracy stays within [0, 1]
  const BANDS = 10;
  const higherBetter = ov.study.objective.direction !== "minimize";
  const bands = Array.from({ length: BANDS }, () => ({ x: [], y: [], ids: [] }));
  const norm = (d, v) => (v === null || v === undefined || !Number.isFinite(v) ? null : (v - d.range[0]) / (d.range[1] - d.range[0] || 1));
  pts.forEach((p, i) => {
    const q = (values[i] - vr[0]) / (vr[1] - vr[0] || 1);
    const b = bands[Math.min(BANDS - 1, Math.max(0, Math.floor((higherBetter ? q : 1 - q) * BANDS)))];
    for (let k = 0; k < D; k++) {
      b.x.push(k);
      b.y.push(norm(dims[k], dims[k].values[i]));
    }
    b.x.push(null);
    b.y.push(null);
  });
  const data = bands.map((b, i) => ({
    type: "scatter",
    mode: "lines",
    x: b.x,
    y: b.y,
    hoverinfo: "skip",
    line: { width: 1, color: viridis(i / (BANDS - 1)) },
    opacity: pts.length > 800 ? 0.35 + (0.5 * i) / BANDS : 0.8,
  }));
  // The colour scale, as a legend of the objective.
  data.push({
    type: "scatter",
    mode: "markers",
    x: [null],
    y: [null],
    hoverinfo: "skip",
    marker: { color: [vr[0]], cmin: vr[0], cmax: vr[1], colorscale: "Viridis", reversescale: !higherBetter, showscale: true, colorbar: { thickness: 10, len: 0.9, x: 1.0, xpad: 8, tickfont: { size: 10 } } },
  });
  const shapes = dims.map((_, k) => ({ type: "line", xref: "x", yref: "y", x0: k, x1: k, y0: 0, y1: 1, line: { color: "#8a93a5", width: 1.2 } }));
  // Axis names and ticks as two text traces: plotly lays out each annotation on its
  // own (measure, position, draw), a text trace in one pass; ~40 of them cost 50 ms.
  const ticks = { x: [], y: [], text: [] };
  dims.forEach((d, k) => {
    const pairs = d.tickvals ? d.tickvals.map((v, j) => [v, d.ticktext[j]]) : niceTicks(d.range).map((v) => [v, fmt(v)]);
    for (const [v, text] of pairs) {
      const y = norm(d, v);
      if (y === null || y < -0.001 || y > 1.001) continue;
      ticks.x.push(k - 0.02);
      ticks.y.push(y);
      ticks.text.push(text);
    }
  });
  data.push(
    { type: "scatter", mode: "text", ...ticks, textposition: "middle left", textfont: { size: 9.5, color: "#687186" }, hoverinfo: "skip" },
    { type: "scatter", mode: "text", x: dims.map((_, k) => k), y: dims.map(() => 1.03), text: dims.map((d) => `<b>${d.label}</b>`), textposition: "top center", textfont: { size: 11, color: "#1b2130" }, hoverinfo: "skip" },
  );
  return {
    data,
    layout: layout({
      shapes,
      margin: { l: 40, r: 40, t: 16, b: 10 },
      xaxis: { visible: false, range: [-0.35, D - 0.75], fixedrange: true },
      yaxis: { visible: false, range: [-0.03, 1.1], fixedrange: true },
      hovermode: false,
    }),
  };
}

function niceTicks([lo, hi], n = 5) {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const step0 = span / (n - 1);
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"];
function viridis(t) {
  return VIRIDIS[Math.round(Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1))];
}

/** Plotly's WebGL parallel coordinates: brushing along axes filters the lines. */
export function parcoordsFigure(ov) {
  const { dims, values } = parAxes(ov);
  return {
    data: [
      {
        type: "parcoords",
        line: {
          color: values,
          colorscale: "Viridis",
          reversescale: ov.study.objective.direction === "minimize", // bright = better either way
          showscale: true,
          colorbar: { thickness: 10, len: 0.9 },
        },
        dimensions: dims,
        labelfont: { size: 12 },
        tickfont: { size: 10 },
        rangefont: { size: 9 },
      },
    ],
    layout: layout({ margin: { l: 60, r: 60, t: 36, b: 20 } }),
  };
}

function extent(xs) {
  const v = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x));
  if (!v.length) return [0, 1];
  let lo = Math.min(...v);
  let hi = Math.max(...v);
  if (lo === hi) {
    lo -= 0.5;
    hi += 0.5;
  }
  return [lo, hi];
}

function decades(lo, hi) {
  const out = [];
  for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) if (k >= lo - 1e-9 && k <= hi + 1e-9) out.push(k);
  return out.length >= 2 ? out : [lo, hi];
}

export function parDim(path, d, raw) {
  if (d.type === "categorical") {
    const names = (d.choices || []).map((c) => String(c));
    return { label: path, values: raw.map((v) => names.indexOf(String(v))), tickvals: names.map((_, i) => i), ticktext: names, range: [-0.25, names.length - 0.75] };
  }
  if (d.type === "layers") {
    return { label: `${path}: depth`, values: raw.map((v) => (Array.isArray(v) ? v.length : null)) };
  }
  if (d.scale === "log") {
    const values = raw.map((v) => Math.log10(v));
    const range = [Math.log10(d.low), Math.log10(d.high)];
    const ticks = decades(...range);
    return { label: `${path} (log)`, values, range, tickvals: ticks, ticktext: ticks.map((k) => fmt(10 ** k)) };
  }
  if (d.scale === "one_minus_log") {
    const values = raw.map((v) => Math.log10(1 - v));
    const range = [Math.log10(1 - d.high), Math.log10(1 - d.low)];
    const ticks = decades(...range);
    return { label: `${path} (1−x, log)`, values, range, tickvals: ticks, ticktext: ticks.map((k) => fmt(1 - 10 ** k, 4)) }; // 0.999: 3 digits would say 1
  }
  return { label: path, values: raw, range: [d.low, d.high] };
}

/** The objective against one hyperparameter; for coarse-to-fine, each round's box over it. */
export function paramFigure(ov, path) {
  const s = ov.study;
  const d = (s.spec.space || {})[path] || {};
  const ax = axisFor(path, d);
  const c2f = s.strategy === "coarse_to_fine";
  const pts = ov.sample;
  const shapes = [];
  const annotations = [];
  if (c2f && d.type !== "categorical" && d.type !== "layers") {
    for (const r of ov.rounds) {
      const a = r.box?.axes?.[path];
      if (!a || a.low === undefined) continue;
      let [x0, x1] = [ax.x(a.low), ax.x(a.high)];
      if (x0 > x1) [x0, x1] = [x1, x0];
      const color = PALETTE[r.index % PALETTE.length];
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, line: { color, width: 1.5 }, fillcolor: color, opacity: 0.07, layer: "below" });
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0, x1, y0: 0, y1: 1, line: { color, width: 1.2, dash: "dot" }, fillcolor: "rgba(0,0,0,0)" });
      annotations.push({ x: ax.type === "log" ? Math.log10(x0) : x0, xref: "x", y: 1 - 0.07 * r.index, yref: "paper", text: `round ${r.index + 1}`, showarrow: false, xanchor: "left", yanchor: "top", font: { size: 9, color } });
    }
  }
  const xaxis = { title: { text: ax.title }, type: ax.type };
  if (ax.type === "category") {
    xaxis.categoryorder = "array";
    xaxis.categoryarray = ax.categories;
  }
  const xs = pts.map((p) => ax.x(p.params[path]));
  if (ax.type === "log") Object.assign(xaxis, logAxis(xs));
  const shown = (v) => (Array.isArray(v) ? JSON.stringify(v) : typeof v === "number" ? fmt(v, 6) : String(v));
  const hover = ax.flipped ? `${path} = %{customdata[1]}<br>1 − ${path} = %{customdata[3]}` : `${path} = %{customdata[1]}`;
  return {
    data: [
      {
        type: "scatter",
        mode: "markers",
        x: xs,
        y: pts.map((p) => p.value),
        text: texts(pts.map((p) => p.value)),
        customdata: pts.map((p, i) => [p.id, shown(p.params[path]), p.number, fmt(xs[i])]),
        marker: { size: pts.length > 800 ? 4 : 6, opacity: pts.length > 800 ? 0.4 : 0.75, color: c2f ? pts.map((p) => PALETTE[p.round % PALETTE.length]) : PALETTE[0] },
        hovertemplate: `trial #%{customdata[2]}<br>${hover}<br>${s.objective.metric} = %{text}<extra></extra>`,
      },
    ],
    layout: layout({ shapes, annotations, margin: { l: 50, r: 10, t: 8, b: 40 }, xaxis, yaxis: { title: { text: s.objective.metric }, ...objectiveAxis(s.objective.metric, pts.map((p) => p.value)) } }),
  };
}

/** Learning curves of the best trials: one metric, one line per trial. */
export function curvesFigure(curves, metric, { title } = {}) {
  const data = curves.map((c, i) => ({
    type: "scatter",
    mode: "lines",
    name: `#${c.trial.number} (${fmt(c.trial.value)})`,
    x: c.epochs,
    y: c.metrics[metric],
    customdata: c.epochs.map(() => c.trial.id),
    text: texts(c.metrics[metric]),
    line: { color: PALETTE[i % PALETTE.length], width: i === 0 ? 2.4 : 1.4 },
    hovertemplate: `#${c.trial.number} epoch %{x}<br>${metric} %{text}<extra></extra>`,
  }));
  const ys = curves.flatMap((c) => c.metrics[metric]);
  return {
    data,
    layout: layout({
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.16, font: { size: 10 } },
      margin: { l: 56, r: 12, t: 34, b: 40 },
      xaxis: { title: { text: "epoch" } },
      yaxis: { title: { text: title || metric }, ...(metric.endsWith("cost") ? logAxis(ys) : objectiveAxis(metric, ys)) },
    }),
  };
}

/** The columns a trial panel draws: its metric pair, or the learning rate. */
export const panelKeys = (kind) => (kind === "learning_rate" ? ["learning_rate"] : [`train_${kind}`, `dev_${kind}`]);

/**
 * One trial's train and dev curves of a metric pair (cost or accuracy), or its learning
 * rate. `alsoRows` (a fork's parent's epochs, drawn beside) count for the axis' extent.
 */
export function trialFigure(rows, kind, alsoRows = []) {
  const epochs = rows.map((r) => r.epoch);
  const line = (name, key, color, dash) => ({
    type: "scatter",
    mode: "lines",
    name,
    x: epochs,
    y: rows.map((r) => r[key]),
    text: texts(rows.map((r) => r[key])),
    line: { color, width: 2, dash },
    hovertemplate: `${name} %{text} at epoch %{x}<extra></extra>`,
  });
  const ys = [...rows, ...alsoRows].flatMap((r) => panelKeys(kind).map((k) => r[k]));
  const yaxis = kind === "accuracy" ? accuracyAxis(ys) : logAxis(ys);
  const data =
    kind === "learning_rate"
      ? [line("learning rate", "learning_rate", PALETTE[3])]
      : [line(`train ${kind}`, `train_${kind}`, PALETTE[0], "dot"), line(`dev ${kind}`, `dev_${kind}`, PALETTE[1])];
  return {
    data,
    layout: layout({
      showlegend: kind !== "learning_rate",
      legend: { orientation: "h", x: 0, y: 1.14 },
      margin: { l: 56, r: 12, t: kind === "learning_rate" ? 10 : 30, b: 40 },
      xaxis: { title: { text: "epoch" }, rangemode: "tozero" },
      yaxis: { title: { text: kind.replace("_", " ") }, ...yaxis },
    }),
  };
}
