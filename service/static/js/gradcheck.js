// A trial's gradient check (execution.gradient_check): the relative difference between
// backpropagation and two-sided differences, overall and per parameter, with the course's
// verdict: below 1e-7 correct, below 1e-5 fine, above 1e-3 wrong.

import { lessonStyles } from "./style.js";
import { esc } from "./util.js";

const THRESHOLDS = "below 1e-7 correct, below 1e-5 fine, above 1e-3 wrong";

const num = (d) => (d === null || d === undefined ? "not a number" : d.toExponential(2));

function verdictOf(d) {
  if (d === null || d === undefined || !Number.isFinite(d) || d > 1e-3) return "wrong";
  if (d < 1e-7) return "correct";
  return d < 1e-5 ? "fine" : "suspicious";
}

/** The panel's HTML for a trial's `gradient_check` (empty when it was not checked). */
export function gradientCheckPanel(gc) {
  if (!gc) return "";
  lessonStyles();
  const rows = Object.entries(gc.parameters)
    .map(([name, d]) => {
      const v = verdictOf(d);
      const shape = (gc.shapes[name] || []).join(" × ");
      return `<tr><th>${esc(name)}</th><td class="muted">${esc(shape)}</td><td class="num">${esc(num(d))}</td><td><span class="verdict ${v}">${v}</span></td></tr>`;
    })
    .join("");
  const sampled = gc.checked < gc.total ? `${gc.checked.toLocaleString("en")} of ${gc.total.toLocaleString("en")} components` : `all ${gc.total.toLocaleString("en")} components`;
  return `<section class="panel gradcheck ${gc.verdict === "wrong" ? "failed" : ""}" data-verdict="${esc(gc.verdict)}">
    <div class="panel-head"><h2>Gradient check</h2><span class="muted small">backpropagation against two-sided differences before training: ${esc(THRESHOLDS)}</span></div>
    <p>Relative difference <strong class="mono">${esc(num(gc.difference))}</strong>: <span class="verdict ${esc(gc.verdict)}">${esc(gc.verdict)}</span>
      <span class="muted small">(${sampled}, ${gc.examples} training examples, float64, epsilon ${esc(gc.epsilon)})</span></p>
    <table class="kv"><thead><tr><th>parameter</th><th>shape</th><th>relative difference</th><th>verdict</th></tr></thead><tbody>${rows}</tbody></table>
  </section>`;
}
