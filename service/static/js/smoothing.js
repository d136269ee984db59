// Exponentially weighted averages over the dashboard's curves, the course's tool for
// reading a noisy cost: v_t = beta v_{t-1} + (1 - beta) y_t, averaging about 1 / (1 - beta)
// points, with the bias correction v_t / (1 - beta^t) that lifts its start off zero. One
// setting for every curve (a slider and a checkbox), kept in localStorage; the raw curve
// stays drawn, faint, beside the smoothed one.

import { lessonStyles } from "./style.js";
import { fmt } from "./util.js";

const KEY = "caviar.smoothing";
const DEFAULT = { beta: 0.6, bias: true };
const RAW_OPACITY = 0.25;
const listeners = new Set();

/** The current setting: { beta in [0, 0.99], bias: bias correction on }. */
export function smoothing() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) || "null");
    if (saved && typeof saved.beta === "number" && saved.beta >= 0 && saved.beta < 1) return { beta: saved.beta, bias: saved.bias !== false };
  } catch {
    /* a bad saved value: the default */
  }
  return { ...DEFAULT };
}

function save(setting) {
  try {
    localStorage.setItem(KEY, JSON.stringify(setting));
  } catch {
    /* private mode: the setting lasts for this page only */
  }
  for (const fn of listeners) fn(setting);
}

/**
 * The exponentially weighted average of `ys` (nulls are gaps: kept null, not averaged).
 * With `bias`, each value is divided by 1 - beta^t, t counting the values seen so far.
 */
export function ewa(ys, beta, bias = true) {
  let v = 0;
  let t = 0;
  return ys.map((y) => {
    if (y === null || y === undefined || !Number.isFinite(y)) return null;
    t += 1;
    v = beta * v + (1 - beta) * y;
    return bias ? v / (1 - beta ** t) : v;
  });
}

/**
 * A figure with each line trace smoothed (`setting`, default the saved one), and its raw
 * curve kept beside it, faint and out of the legend. beta 0 draws the raw curves alone.
 */
export function smoothFigure(fig, setting = smoothing()) {
  const { beta, bias } = setting;
  if (!beta) return fig;
  const data = [];
  for (const trace of fig.data) {
    if (trace.type !== "scatter" || trace.mode !== "lines" || !Array.isArray(trace.y)) {
      data.push(trace);
      continue;
    }
    data.push({ ...trace, name: `${trace.name ?? ""} (raw)`, showlegend: false, opacity: RAW_OPACITY * (trace.opacity ?? 1), hoverinfo: "skip", hovertemplate: undefined, meta: "raw" });
    const label = `smoothed, beta ${beta}${bias ? "" : ", no bias correction"}`;
    const hover = trace.hovertemplate ? trace.hovertemplate.replace("<extra>", ` (${label})<extra>`) : undefined;
    const y = ewa(trace.y, beta, bias);
    // Hover text, where a trace has it, says the smoothed values (fmt, as it was written).
    const text = Array.isArray(trace.text) ? y.map((v) => fmt(v)) : trace.text;
    data.push({ ...trace, y, text, hovertemplate: hover, meta: "smoothed" });
  }
  return { ...fig, data };
}

/** Redraw on a change of the setting (from any control on the page); returns the unsubscribe. */
export function onSmoothing(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** The control: a beta slider and a bias-correction checkbox, in `slot`. */
export function smoothingControl(slot) {
  lessonStyles();
  const s = smoothing();
  slot.classList.add("smoothing");
  slot.innerHTML = `<label title="exponentially weighted average: about 1 / (1 - beta) epochs averaged; 0 draws the raw curves">smoothing β
      <input type="range" name="beta" min="0" max="0.99" step="0.01" value="${s.beta}" aria-label="smoothing beta"></label>
    <output class="beta-value mono">${s.beta.toFixed(2)}</output>
    <label title="divide by 1 - beta^t, so the average does not start near zero"><input type="checkbox" name="bias" ${s.bias ? "checked" : ""}> bias correction</label>`;
  const range = slot.querySelector('[name="beta"]');
  const bias = slot.querySelector('[name="bias"]');
  const changed = () => {
    slot.querySelector(".beta-value").textContent = Number(range.value).toFixed(2);
    save({ beta: Number(range.value), bias: bias.checked });
  };
  range.addEventListener("input", changed);
  bias.addEventListener("change", changed);
  return slot;
}
