// How two hyperparameters interact: the objective over any pair of them, each on its own
// scale (log for log, 1 - x on a log scale for one_minus_log, one column per choice for a
// categorical, the depth of a layers space), as a contour of the mean objective in each
// cell of a grid, the trials drawn over it (Optuna's contour plot, on Caviar's sample).

import { PALETTE, draw, empty, layout, parDim } from "./plots.js";
import { lessonStyles } from "./style.js";
import { esc, fmt } from "./util.js";

const BINS = 14; // cells per continuous axis: about 200 cells for the ~2,000 sampled trials

/** The cells of one axis: their centres and, per value, the cell index (null: none). */
function cells(dim, dist = {}) {
  const discrete = dist.type === "categorical"; // values are the choices' indexes
  const finite = dim.values.filter((v) => v !== null && Number.isFinite(v));
  const lo = dim.range?.[0] ?? Math.min(...finite);
  const hi = dim.range?.[1] ?? Math.max(...finite);
  if (discrete || dist.type === "layers" || (dist.type === "int" && dist.scale !== "log")) {
    const from = Math.ceil(discrete ? 0 : Math.min(...finite));
    const to = Math.floor(discrete ? dim.tickvals.length - 1 : Math.max(...finite));
    if (to - from + 1 <= BINS) {
      const centres = Array.from({ length: to - from + 1 }, (_, i) => from + i);
      return { centres, index: (v) => (v === null || !Number.isFinite(v) ? null : Math.round(v) - from) };
    }
  }
  const width = (hi - lo) / BINS || 1;
  const centres = Array.from({ length: BINS }, (_, i) => lo + (i + 0.5) * width);
  return { centres, index: (v) => (v === null || !Number.isFinite(v) ? null : Math.min(BINS - 1, Math.max(0, Math.floor((v - lo) / width)))) };
}

function axisOf(dim) {
  const axis = { title: { text: dim.label }, zeroline: false };
  if (dim.tickvals) Object.assign(axis, { tickvals: dim.tickvals, ticktext: dim.ticktext });
  return axis;
}

/** The contour of the objective over hyperparameters `xp` and `yp` of an overview `ov`. */
export function contourFigure(ov, xp, yp) {
  const s = ov.study;
  const space = s.spec.space || {};
  const pts = ov.sample.filter((p) => p.value !== null && Number.isFinite(p.value));
  const dx = parDim(xp, space[xp], pts.map((p) => p.params[xp]));
  const dy = parDim(yp, space[yp], pts.map((p) => p.params[yp]));
  const cx = cells(dx, space[xp]);
  const cy = cells(dy, space[yp]);
  const sum = cy.centres.map(() => cx.centres.map(() => 0));
  const n = cy.centres.map(() => cx.centres.map(() => 0));
  pts.forEach((p, k) => {
    const i = cx.index(dx.values[k]);
    const j = cy.index(dy.values[k]);
    if (i === null || j === null || i < 0 || j < 0 || i >= cx.centres.length || j >= cy.centres.length) return;
    sum[j][i] += p.value;
    n[j][i] += 1;
  });
  const z = sum.map((row, j) => row.map((v, i) => (n[j][i] ? v / n[j][i] : null)));
  const minimize = s.objective.direction === "minimize";
  return {
    data: [
      {
        type: "contour",
        x: cx.centres,
        y: cy.centres,
        z,
        connectgaps: true,
        colorscale: "Viridis",
        reversescale: minimize, // bright = better either way
        contours: { coloring: "heatmap", showlabels: true, labelfont: { size: 9, color: "#fff" } },
        line: { width: 0.5, color: "rgba(255,255,255,0.5)" },
        colorbar: { thickness: 10, len: 0.9, title: { text: s.objective.metric, side: "right" } },
        text: z.map((row) => row.map((v) => fmt(v))),
        hovertemplate: `mean ${esc(s.objective.metric)} %{text}<extra></extra>`,
      },
      {
        type: "scatter",
        mode: "markers",
        x: dx.values,
        y: dy.values,
        customdata: pts.map((p) => [p.id, p.number]),
        marker: { size: pts.length > 800 ? 3 : 5, color: "rgba(255,255,255,0.85)", line: { width: 0.6, color: PALETTE[7] } },
        hovertemplate: `trial #%{customdata[1]}<extra></extra>`,
      },
    ],
    layout: layout({ margin: { l: 70, r: 10, t: 10, b: 50 }, xaxis: axisOf(dx), yaxis: axisOf(dy) }),
  };
}

/** The contour panel in `section`: two pickers; call the result with each new overview. */
export function contourPanel(section) {
  lessonStyles();
  section.innerHTML = `<div class="panel-head"><h2>Two hyperparameters together</h2><span class="muted small">the mean objective in each cell, each axis on its own scale; dots are trials</span>
      <div class="actions"><label>x <select name="cx" aria-label="x hyperparameter"></select></label><label>y <select name="cy" aria-label="y hyperparameter"></select></label></div></div>
    <div class="plot tall" id="plot-contour"></div>`;
  const [sx, sy] = ["cx", "cy"].map((n) => section.querySelector(`[name="${n}"]`));
  const plot = section.querySelector("#plot-contour");
  let ov = null;

  async function redraw() {
    if (!ov) return;
    const paths = Object.keys(ov.study.spec.space || {});
    if (paths.length < 2 || !ov.sample.length) {
      const why = paths.length < 2 ? "The study searches fewer than two hyperparameters." : "The contour appears once trials have completed.";
      empty(plot, why);
      return;
    }
    if (sx.value === sy.value) sy.value = paths.find((p) => p !== sx.value);
    for (const o of sy.options) o.disabled = o.value === sx.value;
    await draw(plot, ...Object.values(contourFigure(ov, sx.value, sy.value)));
    plot.dataset.pair = `${sx.value},${sy.value}`;
  }

  for (const select of [sx, sy]) select.addEventListener("change", redraw);
  return async function update(overview) {
    ov = overview;
    const paths = Object.keys(ov.study.spec.space || {});
    if (sx.options.length !== paths.length) {
      const options = paths.map((p) => `<option>${esc(p)}</option>`).join("");
      sx.innerHTML = options;
      sy.innerHTML = options;
      sx.value = paths[0] ?? "";
      sy.value = paths[1] ?? "";
    }
    await redraw();
  };
}
