// Compare trials: pick them in the study's trials table (a checkbox each), and their
// learning curves are overlaid (smoothed as every curve is) above their configs side by
// side, the fields where they differ first.

import { api } from "./api.js";
import { PALETTE, accuracyAxis, draw, layout, logAxis, texts } from "./plots.js";
import { onSmoothing, smoothFigure } from "./smoothing.js";
import { lessonStyles } from "./style.js";
import { esc, fmt } from "./util.js";

const MAX_PICKED = 8; // one colour each, and a readable overlay
const METRICS = [
  ["dev_accuracy", "dev accuracy", false],
  ["dev_cost", "dev cost (log)", true],
  ["train_cost", "train cost (log)", true],
];

/** The overlay of one metric: a line per trial, in its trial's colour. */
export function compareFigure(trials, metric, title, log) {
  const data = trials.map((t, i) => ({
    type: "scatter",
    mode: "lines",
    name: `#${t.number}`,
    x: t.rows.map((r) => r.epoch),
    y: t.rows.map((r) => r[metric]),
    customdata: t.rows.map(() => t.id),
    text: texts(t.rows.map((r) => r[metric])),
    line: { color: PALETTE[i % PALETTE.length], width: 1.8 },
    hovertemplate: `#${t.number} epoch %{x}<br>${metric} %{text}<extra></extra>`,
  }));
  const ys = trials.flatMap((t) => t.rows.map((r) => r[metric]));
  return {
    data,
    layout: layout({
      showlegend: true,
      legend: { orientation: "h", x: 0, y: 1.16, font: { size: 10 } },
      margin: { l: 56, r: 12, t: 34, b: 40 },
      xaxis: { title: { text: "epoch" } },
      yaxis: { title: { text: title }, ...(log ? logAxis(ys) : metric.endsWith("accuracy") ? accuracyAxis(ys) : {}) },
    }),
  };
}

/** The configs side by side: the fields that differ first, marked; the rest after. */
export function configTable(trials) {
  const keys = [...new Set(trials.flatMap((t) => Object.keys(t.config)))].sort();
  const same = (k) => new Set(trials.map((t) => JSON.stringify(t.config[k]))).size === 1;
  const ordered = [...keys.filter((k) => !same(k)), ...keys.filter(same)];
  const head = trials.map((t, i) => `<th class="num"><span class="swatch" style="background:${PALETTE[i % PALETTE.length]}"></span><a href="#/trials/${t.id}">#${t.number}</a></th>`).join("");
  const body = ordered
    .map((k) => `<tr class="${same(k) ? "same" : "differs"}"><th>${esc(k)}</th>${trials.map((t) => `<td class="num">${esc(fmt(t.config[k], 5))}</td>`).join("")}</tr>`)
    .join("");
  const value = `<tr class="differs value"><th>objective</th>${trials.map((t) => `<td class="num"><b>${esc(fmt(t.value))}</b></td>`).join("")}</tr>`;
  return `<table class="kv compare-config"><thead><tr><th>field</th>${head}</tr></thead><tbody>${value}${body}</tbody></table>`;
}

/**
 * The compare panel in `section`, fed by checkboxes in the trials table `tbody`.
 * `box(trial)` is the checkbox cell the table's column renders.
 */
export function comparePanel(section, tbody) {
  lessonStyles();
  const picked = new Map(); // id -> number, in the order picked
  const loaded = new Map(); // id -> { id, number, value, config, rows }
  section.innerHTML = `<div class="panel-head"><h2>Compare trials</h2><span class="muted small compare-note"></span>
      <div class="actions"><button type="button" class="ghost" data-act="clear-picks" hidden>Clear</button></div></div>
    <div class="compare-body"></div>`;
  const body = section.querySelector(".compare-body");
  const note = section.querySelector(".compare-note");
  const clear = section.querySelector('[data-act="clear-picks"]');

  async function trial(id) {
    if (!loaded.has(id)) {
      const [t, m] = await Promise.all([api(`/api/trials/${id}`), api(`/api/dashboard/trials/${id}/metrics`)]);
      loaded.set(id, { id: t.id, number: t.number, value: t.value, config: t.config, rows: m.rows });
    }
    return loaded.get(id);
  }

  async function render() {
    const ids = [...picked.keys()];
    clear.hidden = !ids.length;
    section.dataset.picked = ids.join(",");
    if (ids.length < 2) {
      note.textContent = "";
      body.innerHTML = `<p class="muted">Tick two or more trials in the table (up to ${MAX_PICKED}) to overlay their learning curves and set their configs side by side.${ids.length ? ` Picked: #${picked.get(ids[0])}.` : ""}</p>`;
      delete section.dataset.drawn;
      return;
    }
    note.textContent = `${ids.length} trials: ${ids.map((id) => `#${picked.get(id)}`).join(", ")}`;
    const trials = await Promise.all(ids.map(trial));
    if (ids.join(",") !== [...picked.keys()].join(",")) return; // picked again meanwhile
    body.innerHTML = `<div class="grid three">${METRICS.map(([m]) => `<div class="plot" data-metric="${m}"></div>`).join("")}</div><div class="table-wrap">${configTable(trials)}</div>`;
    await Promise.all(
      METRICS.map(([m, title, log]) => draw(body.querySelector(`[data-metric="${m}"]`), ...Object.values(smoothFigure(compareFigure(trials, m, title, log))))),
    );
    section.dataset.drawn = ids.join(",");
  }

  tbody.addEventListener("change", (e) => {
    const box = e.target.closest("input[data-pick]");
    if (!box) return;
    const id = Number(box.dataset.pick);
    if (box.checked && picked.size >= MAX_PICKED) {
      box.checked = false;
      note.textContent = `At most ${MAX_PICKED} trials at once.`;
      return;
    }
    if (box.checked) picked.set(id, Number(box.dataset.number));
    else picked.delete(id);
    render();
  });
  clear.addEventListener("click", () => {
    picked.clear();
    for (const box of tbody.querySelectorAll("input[data-pick]")) box.checked = false;
    render();
  });
  const unsmooth = onSmoothing(() => {
    if (!section.isConnected) unsmooth(); // the page was left
    else if (picked.size >= 2) render();
  });
  render();
  return {
    box: (t) => `<input type="checkbox" data-pick="${t.id}" data-number="${t.number}" aria-label="Compare trial ${t.number}" ${picked.has(t.id) ? "checked" : ""}>`,
  };
}
