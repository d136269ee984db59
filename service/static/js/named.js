// A task's own metrics: the trial page draws each name its function reported as a curve
// of its own (the built-in trainer's pages draw cost, accuracy and the learning rate).

import { PALETTE, accuracyAxis, layout, texts } from "./plots.js";
import { esc } from "./util.js";

/** The names the epochs report a number for, the objective's metric first. */
export function metricNames(rows, objective) {
  const names = new Set();
  for (const r of rows) {
    for (const [k, v] of Object.entries(r)) if (k !== "epoch" && typeof v === "number") names.add(k);
  }
  const sorted = [...names].sort();
  return names.has(objective) ? [objective, ...sorted.filter((n) => n !== objective)] : sorted;
}

/** A panel per metric name, each with its plot (`data-metric` names it). */
export function metricPanels(names, objective) {
  return names
    .map(
      (name) => `<section class="panel"><div class="panel-head"><h2>${esc(name)}</h2>${
        name === objective ? `<span class="muted small">the objective</span>` : ""
      }</div><div class="plot" data-metric="${esc(name)}"></div></section>`,
    )
    .join("");
}

/**
 * One metric's curve over the epochs; `parentRows` (a fork's parent up to the fork) is
 * drawn grey beside it. Names ending in accuracy get the accuracy axis, [0, 1].
 */
export function namedFigure(rows, name, i, parentRows = []) {
  const line = (rs, label, color, width) => ({
    type: "scatter",
    mode: "lines+markers",
    name: label,
    x: rs.map((r) => r.epoch),
    y: rs.map((r) => r[name] ?? null),
    text: texts(rs.map((r) => r[name])),
    marker: { size: rs.length > 40 ? 0 : 5, color },
    line: { color, width },
    hovertemplate: `${esc(label)} %{text} at epoch %{x}<extra></extra>`,
  });
  const data = [line(rows, name, PALETTE[i % PALETTE.length], 2)];
  if (parentRows.length) data.unshift(line(parentRows, `parent ${name}`, "#a3aab8", 1.5));
  const ys = [...rows, ...parentRows].map((r) => r[name]).filter((v) => typeof v === "number");
  return {
    data,
    layout: layout({
      showlegend: parentRows.length > 0,
      legend: { orientation: "h", x: 0, y: 1.14 },
      margin: { l: 56, r: 12, t: 30, b: 40 },
      xaxis: { title: { text: "epoch" }, rangemode: "tozero" },
      yaxis: { title: { text: name }, ...(name.endsWith("accuracy") ? accuracyAxis(ys) : {}) },
    }),
  };
}
