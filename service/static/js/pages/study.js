// The study page: progress and counts, the best trial, the plots (aggregated and sampled by
// the server, so a 50,000-trial study opens fast), the trials table; cancel and zoom in.

import { api, hasRoute } from "../api.js";
import { comparePanel } from "../compare.js";
import { contourPanel } from "../contour.js";
import { specEditor } from "../editor.js";
import { importancePanel } from "../importance.js";
import { onSmoothing, smoothFigure, smoothingControl } from "../smoothing.js";
import { follow } from "../live.js";
import { curvesFigure, draw, empty, historyFigure, loadPlotly, paramFigure, parallelFigure, parcoordsFigure } from "../plots.js";
import { TERMINAL_STUDY, TRIAL_STATUSES, badge, copyText, studyBadge, duration, esc, fmt, markReady, nextTask, progressBar, throttle, when, whenVisible } from "../util.js";
import { toYaml } from "../yaml.js";

const PAGE = 25;
const EVENT_REFRESH_MS = 1000; // at most one refetch per second however fast events come

/** The server sends the sample column by column (half the bytes); the plots take rows. */
function rows(s) {
  const paths = Object.keys(s.params);
  return s.ids.map((id, i) => ({
    id,
    number: s.numbers[i],
    round: s.rounds[i],
    value: s.values[i],
    params: Object.fromEntries(paths.map((p) => [p, s.params[p][i]])),
  }));
}

export function mount(view, { id }) {
  // "value" sorts best first whatever the direction; the page opens that way.
  const table = { sort: "value", status: "", round: "", offset: 0 };
  let ov = null;
  let live = null;
  let destroyed = false;
  let brushing = false; // the WebGL parcoords, on request: it is slow without a GPU
  let plotly = null; // loadPlotly(), once the first data requests have left

  view.innerHTML = `
    <div class="page-head">
      <div>
        <div class="crumbs"><a href="#/">Studies</a> ›</div>
        <h1><span class="title">Study ${esc(id)}</span> <span class="head-status"></span></h1>
        <p class="sub muted meta"></p>
      </div>
      <div class="actions">
        <a class="button ghost" data-act="csv" hidden>Export CSV</a>
        <button type="button" class="primary" data-act="continue" data-write hidden title="Run the next trial of this reviewed panda study">Continue with the next trial</button>
        <button type="button" data-act="retry" data-write hidden>Retry failed</button>
        <button type="button" data-act="zoom" data-write hidden title="A new coarse-to-fine study in the region of the best trials">Zoom into the best</button>
        <button type="button" class="danger" data-act="cancel" data-write hidden>Cancel study</button>
      </div>
    </div>
    <section class="panel progress-panel">
      <div class="progress-line"></div>
      <div class="counts"></div>
    </section>
    <div class="grid two-one">
      <section class="panel"><div class="panel-head"><h2>Objective by trial</h2><span class="muted small sample-note"></span></div><div class="plot" id="plot-history"></div></section>
      <section class="panel best"><div class="panel-head"><h2>Best trial</h2></div><div class="best-body muted">No completed trial yet.</div></section>
    </div>
    <section class="panel"><div class="panel-head"><h2>Parallel coordinates</h2><span class="muted small">every hyperparameter on its own scale, coloured by the objective: brighter is better</span>
        <div class="actions"><button type="button" class="ghost" data-act="brush" aria-pressed="false" title="Plotly's WebGL parallel coordinates: drag along an axis to keep only the lines that cross it there">Filter by axis ranges</button></div></div>
      <div class="plot tall" id="plot-parcoords"></div></section>
    <section class="panel"><div class="panel-head"><h2>Objective against each hyperparameter</h2><span class="muted small box-note"></span></div>
      <div class="grid three params-grid"></div></section>
    <section class="panel contour-panel"></section>
    <section class="panel importance-panel"></section>
    <section class="panel"><div class="panel-head"><h2>Learning curves of the best trials</h2><span class="smoothing-slot"></span></div>
      <div class="grid two"><div class="plot" id="plot-curves-acc"></div><div class="plot" id="plot-curves-cost"></div></div></section>
    <section class="panel flush trials-panel">
      <div class="panel-head padded"><h2>Trials</h2>
        <div class="actions">
          <select class="t-status" aria-label="Filter trials by status"><option value="">All statuses</option>${TRIAL_STATUSES.map((s) => `<option>${s}</option>`).join("")}</select>
          <select class="t-round" aria-label="Filter trials by round" hidden></select>
        </div></div>
      <div class="table-wrap"><table class="trials"><thead></thead><tbody></tbody></table></div>
      <div class="pager"></div>
    </section>
    <section class="panel compare-panel"></section>
    <dialog class="zoom-dialog"><div class="dialog-head"><h2>Zoom in: a new coarse-to-fine study</h2><p class="muted zoom-note"></p></div><div class="editor-slot"></div></dialog>`;

  const $ = (sel) => view.querySelector(sel);
  // Plots below the first screen are drawn when scrolled near: the first screen of a
  // large study is then ready sooner, and no work is spent on what is never looked at.
  // They also wait for the first screen's plots: drawing interleaves, so a plot started
  // early delays the ones in view.
  let firstScreenDrawn;
  const firstScreen = new Promise((resolve) => (firstScreenDrawn = resolve));
  const gridShown = Promise.all([whenVisible($(".params-grid"), "0px"), firstScreen]);
  const curvesShown = Promise.all([whenVisible($("#plot-curves-acc"), "0px"), firstScreen]);
  const importance = importancePanel($(".importance-panel"), id);
  smoothingControl($(".smoothing-slot"));
  const compare = comparePanel($(".compare-panel"), $(".trials tbody"));
  const contour = contourPanel($(".contour-panel"));
  const contourShown = Promise.all([whenVisible($(".contour-panel"), "0px"), firstScreen]);
  const unsmooth = onSmoothing(() => curves());

  function header() {
    const s = ov.study;
    document.title = `${s.name} · Caviar`;
    $(".title").textContent = s.name;
    $(".head-status").innerHTML = studyBadge(s);
    const obj = s.objective;
    $(".meta").innerHTML = [
      `id ${s.id}`,
      `${esc(s.strategy.replaceAll("_", "-"))}${s.rounds.total > 1 ? ` · round ${s.rounds.current + 1} of ${s.rounds.total}` : ""}`,
      `${esc(s.mode)} mode`,
      `${obj.direction} ${esc(obj.metric)} (${esc(obj.at)} epoch)`,
      `created ${when(s.created_at)}`,
      s.parent_study_id ? `zoomed from <a href="#/studies/${s.parent_study_id}">study ${s.parent_study_id}</a>` : "",
      s.waiting_for ? `<span class="waiting-for">${esc(s.waiting_for)}</span>` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    const ended = TERMINAL_STUDY.includes(s.status);
    $('[data-act="cancel"]').hidden = ended;
    $('[data-act="continue"]').hidden = ended || !s.awaiting_review;
    // Retry re-queues failed trials only, and never on a cancelled study (docs/api.md).
    $('[data-act="retry"]').hidden = !ended || s.status === "cancelled" || !s.counts.failed;
    $('[data-act="zoom"]').hidden = !ov.valued_trials;
  }

  function progress() {
    const s = ov.study;
    const running = s.counts.running || 0;
    $(".progress-line").innerHTML = `${progressBar(s, { wide: true })}
      <span class="muted">${running ? `${running} running` : ""}${s.error ? ` <span class="error">${esc(s.error)}</span>` : ""}</span>`;
    $(".counts").innerHTML = TRIAL_STATUSES.map(
      (k) => `<button type="button" class="count ${k}${table.status === k ? " active" : ""}" data-status="${k}" title="Show the ${k} trials">
        <span class="n">${(s.counts[k] || 0).toLocaleString("en")}</span><span class="k">${k}</span></button>`,
    ).join("");
  }

  function best() {
    const b = ov.study.best_trial;
    if (!b) return;
    const yaml = toYaml(b.config);
    const body = $(".best-body");
    body.className = "best-body";
    body.innerHTML = `
      <div class="best-value"><span class="big">${fmt(b.value)}</span><span class="muted">${esc(ov.study.objective.metric)} · <a href="#/trials/${b.id}">trial #${b.number}</a>${ov.study.rounds.total > 1 ? ` · round ${b.round + 1}` : ""}</span></div>
      <table class="kv">${Object.entries(b.params)
        .map(([k, v]) => `<tr><th>${esc(k)}</th><td class="num">${esc(fmt(v, 5))}</td></tr>`)
        .join("")}</table>
      <div class="row"><button type="button" data-act="copy">Copy config as YAML</button><span class="copy-status muted small"></span></div>
      <details><summary>Config (YAML)</summary><pre class="config-yaml">${esc(yaml)}</pre></details>`;
    body.querySelector('[data-act="copy"]').addEventListener("click", async () => {
      const ok = await copyText(yaml);
      body.querySelector(".copy-status").textContent = ok ? "Copied." : "Copy failed: select the text below.";
      if (!ok) body.querySelector("details").open = true;
    });
  }

  async function paramsGrid() {
    await gridShown;
    if (destroyed) return;
    const grid = $(".params-grid");
    const paths = Object.keys(ov.study.spec.space || {});
    const c2f = ov.study.strategy === "coarse_to_fine";
    $(".box-note").textContent = c2f ? "each round's box drawn over its samples: coarse to fine, round by round" : "";
    if (!ov.sample.length || !paths.length) {
      const why = paths.length ? "A plot per hyperparameter appears once a trial has completed." : "This study searches no hyperparameter.";
      grid.innerHTML = `<div class="plot-empty wide">${esc(why)}</div>`;
      grid.dataset.layout = "";
      grid.dataset.drawn = 0;
      return;
    }
    if (grid.dataset.layout !== paths.join("\n")) {
      grid.innerHTML = paths.map((p, i) => `<div class="plot small" id="plot-param-${i}" data-path="${esc(p)}"></div>`).join("");
      grid.dataset.layout = paths.join("\n");
    }
    // One plot per task: drawn in one, the five plots of a large study's sample held the
    // page still for over a second and a half, scrolling included (and the contour panel,
    // shown by the same scroll, drew in that task too).
    for (const [i, p] of paths.entries()) {
      await nextTask();
      if (destroyed) return;
      await draw($(`#plot-param-${i}`), ...Object.values(paramFigure(ov, p)));
    }
    grid.dataset.drawn = paths.length;
  }

  async function plots() {
    await plotly;
    if (destroyed) return;
    const note = ov.sample_stride > 1 ? `${ov.sample.length.toLocaleString("en")} of ${ov.valued_trials.toLocaleString("en")} completed trials: every ${ov.sample_stride}th and the best 100` : `${ov.valued_trials} completed trials`;
    $(".sample-note").textContent = note;
    const jobs = [];
    if (ov.sample.length) {
      const fig = brushing ? parcoordsFigure(ov) : parallelFigure(ov);
      jobs.push(draw($("#plot-history"), ...Object.values(historyFigure(ov))));
      jobs.push(draw($("#plot-parcoords"), ...Object.values(fig)));
    } else {
      empty($("#plot-history"), "Each trial's objective appears here as it completes, with the best so far.");
      empty($("#plot-parcoords"), "Every completed trial becomes a line across its hyperparameters and objective.");
    }
    paramsGrid(); // not awaited: it waits to be scrolled near
    importance(ov.valued_trials); // not awaited: it waits to be scrolled near
    contourShown.then(() => !destroyed && contour(ov)); // drawn once scrolled near
    await Promise.all(jobs);
  }

  async function curves(pending) {
    const cs = await (pending || api(`/api/dashboard/studies/${id}/curves?top=5`));
    await Promise.all([plotly, curvesShown]);
    if (destroyed) return;
    if (!cs.length) {
      empty($("#plot-curves-acc"), "The learning curves of the best completed trials appear here.");
      empty($("#plot-curves-cost"), "Dev cost, epoch by epoch, of the same trials.");
      return;
    }
    const [left, right] = curveMetrics(cs);
    await Promise.all([
      draw($("#plot-curves-acc"), ...Object.values(smoothFigure(curvesFigure(cs, ...left)))),
      right
        ? draw($("#plot-curves-cost"), ...Object.values(smoothFigure(curvesFigure(cs, ...right))))
        : empty($("#plot-curves-cost"), "The function reports no other metric than the objective's."),
    ]);
  }

  // The curves drawn: the trainer's dev accuracy and cost, or a task's own metrics (its
  // objective's, and the first other name its function reports).
  function curveMetrics(cs) {
    if (!ov?.study?.spec?.task?.entrypoint) {
      return [["dev_accuracy", { title: "dev accuracy" }], ["dev_cost", { title: "dev cost (log)" }]];
    }
    const metric = ov.study.objective.metric;
    const reported = (name) => cs.some((c) => (c.metrics[name] || []).some((v) => typeof v === "number"));
    const other = [...new Set(cs.flatMap((c) => Object.keys(c.metrics)))].sort().find((n) => n !== metric && reported(n));
    return [[metric, {}], other ? [other, {}] : null];
  }

  // --- the trials table ------------------------------------------------------------------
  function columns() {
    const paths = Object.keys(ov.study.spec.space || {});
    return [
      { key: "number", label: "#", num: true, cell: (t) => `<a href="#/trials/${t.id}">${t.number}</a>` },
      { key: "status", label: "status", cell: (t) => badge(t.status) },
      ...(ov.study.rounds.total > 1 ? [{ key: "round", label: "round", num: true, cell: (t) => t.round + 1 }] : []),
      ...paths.map((p) => ({ key: `params.${p}`, label: p, num: true, cell: (t) => esc(fmt(t.params[p])) })),
      { key: "value", label: ov.study.objective.metric, num: true, cell: (t) => `<b>${fmt(t.value)}</b>` },
      { key: "epochs_done", label: "epochs", num: true, cell: (t) => t.epochs_done },
      { key: "started_at", label: "started", cell: (t) => when(t.started_at) },
      { key: null, label: "time", num: true, cell: (t) => (t.started_at ? duration(t.started_at, t.finished_at) : "–") },
      { key: null, label: "error", cell: (t) => (t.error ? `<span class="error clip" title="${esc(t.error)}">${esc(t.error)}</span>` : "") },
      { key: null, label: "compare", cell: (t) => compare.box(t) },
    ];
  }

  function trialsQuery() {
    const q = new URLSearchParams({ sort: table.sort, limit: PAGE, offset: table.offset });
    if (table.status) q.set("status", table.status);
    if (table.round !== "") q.set("round", table.round);
    return api(`/api/dashboard/studies/${id}/trials?${q}`);
  }

  async function trials(pending) {
    const page = await (pending || trialsQuery());
    if (destroyed) return;
    const cols = columns();
    const sortKey = table.sort.replace(/^-/, "");
    // For "value", the bare key is best first; for the others the bare key is ascending.
    const arrow = (k) => (k === sortKey ? (table.sort.startsWith("-") ? (k === "value" ? " ▲" : " ▼") : k === "value" ? " ▼" : " ▲") : "");
    $(".trials thead").innerHTML = `<tr>${cols
      .map(
        (c) =>
          `<th class="${c.num ? "num" : ""}${c.key ? " sortable" : ""}" ${c.key ? `data-sort="${esc(c.key)}" aria-sort="${c.key === sortKey ? (table.sort.startsWith("-") ? "descending" : "ascending") : "none"}"` : ""}>${esc(c.label)}${arrow(c.key)}</th>`,
      )
      .join("")}</tr>`;
    $(".trials tbody").innerHTML =
      page.items.map((t) => `<tr data-id="${t.id}" class="${t.status}">${cols.map((c) => `<td class="${c.num ? "num" : ""}">${c.cell(t)}</td>`).join("")}</tr>`).join("") ||
      `<tr><td colspan="${cols.length}" class="empty">No trial matches.</td></tr>`;
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    const at = Math.floor(table.offset / PAGE) + 1;
    const from = page.total ? table.offset + 1 : 0;
    $(".pager").innerHTML = `<span class="muted">${from.toLocaleString("en")}–${Math.min(page.total, table.offset + PAGE).toLocaleString("en")} of ${page.total.toLocaleString("en")} trials</span>
      <button type="button" data-page="first" ${at === 1 ? "disabled" : ""} aria-label="First page">«</button>
      <button type="button" data-page="prev" ${at === 1 ? "disabled" : ""} aria-label="Previous page">‹</button>
      <span class="page-no">page ${at.toLocaleString("en")} of ${pages.toLocaleString("en")}</span>
      <button type="button" data-page="next" ${at === pages ? "disabled" : ""} aria-label="Next page">›</button>
      <button type="button" data-page="last" ${at === pages ? "disabled" : ""} aria-label="Last page">»</button>`;
    $(".pager").dataset.total = page.total;
    const rs = $(".t-round");
    if (ov.study.rounds.total > 1 && rs.options.length !== ov.rounds.length + 1) {
      rs.innerHTML = `<option value="">All rounds</option>${ov.rounds.map((r) => `<option value="${r.index}">round ${r.index + 1}</option>`).join("")}`;
      rs.value = table.round;
      rs.hidden = false;
    }
  }

  $(".trials thead").addEventListener("click", (e) => {
    const th = e.target.closest("th[data-sort]");
    if (!th) return;
    const k = th.dataset.sort;
    table.sort = table.sort === k ? `-${k}` : k;
    table.offset = 0;
    trials();
  });
  $(".pager").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-page]");
    if (!b) return;
    const total = Number($(".pager").dataset.total || 0);
    const lastOffset = Math.max(0, (Math.ceil(total / PAGE) - 1) * PAGE);
    table.offset = { first: 0, prev: Math.max(0, table.offset - PAGE), next: Math.min(lastOffset, table.offset + PAGE), last: lastOffset }[b.dataset.page];
    trials();
  });
  $(".t-status").addEventListener("change", (e) => {
    table.status = e.target.value;
    table.offset = 0;
    progress();
    trials();
  });
  $(".t-round").addEventListener("change", (e) => {
    table.round = e.target.value;
    table.offset = 0;
    trials();
  });
  $(".counts").addEventListener("click", (e) => {
    const b = e.target.closest("button[data-status]");
    if (!b) return;
    table.status = table.status === b.dataset.status ? "" : b.dataset.status;
    $(".t-status").value = table.status;
    table.offset = 0;
    progress();
    trials();
    $(".trials-panel").scrollIntoView({ behavior: "smooth", block: "start" });
  });

  // --- steering --------------------------------------------------------------------------
  $('[data-act="continue"]').addEventListener("click", async (e) => {
    e.target.disabled = true;
    try {
      await api(`/api/studies/${id}/continue`, { method: "POST" });
    } catch (err) {
      alert(err.message);
    }
    e.target.disabled = false;
    refresh();
  });
  $('[data-act="cancel"]').addEventListener("click", async (e) => {
    if (!confirm(`Cancel study “${ov.study.name}”? Waiting trials stop now, running ones after their current epoch.`)) return;
    e.target.disabled = true;
    try {
      await api(`/api/studies/${id}/cancel`, { method: "POST" });
    } catch (err) {
      alert(err.message);
    }
    e.target.disabled = false;
    refresh();
  });
  $('[data-act="brush"]').addEventListener("click", async (e) => {
    brushing = !brushing;
    e.target.setAttribute("aria-pressed", String(brushing));
    e.target.textContent = brushing ? "Back to the static view" : "Filter by axis ranges";
    const Plotly = await plotly;
    Plotly.purge($("#plot-parcoords")); // the two figures share no trace type: start afresh
    delete $("#plot-parcoords").dataset.linked;
    const fig = brushing ? parcoordsFigure(ov) : parallelFigure(ov);
    await draw($("#plot-parcoords"), fig.data, fig.layout);
  });
  $('[data-act="retry"]').addEventListener("click", async () => {
    await api(`/api/studies/${id}/retry-failed`, { method: "POST" });
    await refresh();
    startLive();
  });
  // Zoom: the service's POST /api/studies/{id}/zoom when it has one (its first box comes
  // from this study's trials, as coarse-to-fine's later rounds do, and the lineage is
  // kept); or, and always on request, a narrowed spec built here to review and edit.
  $('[data-act="zoom"]').addEventListener("click", async () => {
    const dlg = $(".zoom-dialog");
    const slot = dlg.querySelector(".editor-slot");
    const st = ov.study.spec.strategy || {};
    const perRound = st.type === "coarse_to_fine" ? st.trials_per_round : Math.max(4, Math.min(50, Math.floor((st.trials || 20) / 2)));
    if (!(await hasRoute("POST", "/api/studies/{study_id}/zoom"))) return editZoom();
    dlg.querySelector(".zoom-note").textContent =
      `Its first round samples the region around the best trials of “${ov.study.name}”, the way each later coarse-to-fine round narrows around the best so far.`;
    slot.innerHTML = `<form class="zoom-form" method="dialog">
        <label>rounds <input type="number" name="rounds" min="1" max="20" value="${st.type === "coarse_to_fine" ? st.rounds : 2}"></label>
        <label>trials per round <input type="number" name="trials_per_round" min="1" max="10000" value="${perRound}"></label>
        <label>keep top <input type="number" name="keep_top" min="0.01" max="1" step="any" value="${st.keep_top ?? 0.25}"></label>
        <p class="zoom-error error" hidden></p>
        <div class="editor-foot"><button type="button" class="ghost" data-act="edit-zoom">Edit as a spec…</button><span class="spacer"></span>
          <button type="button" class="ghost" data-act="close">Close</button><button type="submit" class="primary">Create zoomed study</button></div>
      </form>`;
    const form = slot.querySelector("form");
    form.querySelector('[data-act="close"]').onclick = () => dlg.close();
    form.querySelector('[data-act="edit-zoom"]').onclick = editZoom;
    form.onsubmit = async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const body = { rounds: Number(f.get("rounds")), trials_per_round: Number(f.get("trials_per_round")), keep_top: Number(f.get("keep_top")) };
      try {
        const child = await api(`/api/studies/${id}/zoom`, { method: "POST", body });
        dlg.close();
        location.hash = `#/studies/${child.id}`;
      } catch (err) {
        const msg = form.querySelector(".zoom-error");
        msg.textContent = err.errors?.length ? err.errors.map((x) => `${x.loc}: ${x.msg}`).join("; ") : err.message;
        msg.hidden = false;
      }
    };
    if (!dlg.open) dlg.showModal();
  });

  // The region comes from the service (POST .../zoom/preview), the same box its zoom
  // samples first, written back as ranges on each hyperparameter's scale.
  async function editZoom() {
    const dlg = $(".zoom-dialog");
    const form = dlg.querySelector(".zoom-form");
    const body = {};
    if (form) {
      const f = new FormData(form);
      for (const k of ["rounds", "trials_per_round", "keep_top"]) if (f.get(k)) body[k] = Number(f.get(k));
    }
    let preview;
    try {
      preview = await api(`/api/studies/${id}/zoom/preview`, { method: "POST", body });
    } catch (err) {
      const msg = dlg.querySelector(".zoom-error");
      if (msg) {
        msg.textContent = err.errors?.length ? err.errors.map((x) => `${x.loc}: ${x.msg}`).join("; ") : err.message;
        msg.hidden = false;
      }
      return;
    }
    const { spec, kept } = preview;
    dlg.querySelector(".zoom-note").textContent = `The space below spans the best ${kept} trial${kept === 1 ? "" : "s"} of this study, on each hyperparameter's scale, with a margin. Review it, then create the study.`;
    const ed = specEditor(dlg.querySelector(".editor-slot"), {
      initial: `# Zoomed in from study ${ov.study.id} (${ov.study.name}).\n${toYaml(spec)}`,
      submitLabel: "Create zoomed study",
      onCreated: (study) => {
        dlg.close();
        location.hash = `#/studies/${study.id}`;
      },
      onCancel: () => dlg.close(),
    });
    if (!dlg.open) dlg.showModal();
    ed.focusTop(); // open at the top: the narrowed space comes first
  }

  // --- loading and live updates ------------------------------------------------------------
  async function load(pending) {
    ov = await (pending || api(`/api/dashboard/studies/${id}`));
    ov.sample = rows(ov.sample);
    if (destroyed) return;
    header();
    progress();
    best();
  }

  async function refresh() {
    try {
      await load();
      if (destroyed) return;
      await Promise.all([plots(), trials()]);
      curves(); // waits to be scrolled near
    } catch {
      /* a failed refresh keeps the last picture; the next event or tick tries again */
    }
  }
  const onEvent = throttle(() => refresh(), EVENT_REFRESH_MS);

  function startLive() {
    live?.close();
    follow(id, { after: ov.last_event_id || 0, ended: TERMINAL_STUDY.includes(ov.study.status), onEvent, refresh }).then((h) => {
      if (destroyed) h.close();
      else live = h;
    });
  }

  const ready = (async () => {
    // Both requests leave before plotly.js (~1 s of script) holds the main thread.
    const first = api(`/api/dashboard/studies/${id}`);
    const firstCurves = api(`/api/dashboard/studies/${id}/curves?top=5`);
    const firstTrials = trialsQuery();
    plotly = loadPlotly();
    for (const p of [firstCurves, firstTrials]) p.catch(() => {}); // awaited below
    await load(first);
    curves(firstCurves).catch(() => {}); // drawn once scrolled near
    await Promise.all([trials(firstTrials), plots()]);
    markReady("study");
    firstScreenDrawn();
    startLive();
    hasRoute("GET", "/api/studies/{study_id}/trials.csv").then((yes) => {
      const a = $('[data-act="csv"]');
      if (!yes || !a) return;
      a.href = `/api/studies/${id}/trials.csv`;
      a.hidden = false;
    });
  })();

  return {
    ready,
    destroy() {
      destroyed = true;
      unsmooth();
      onEvent.cancel();
      live?.close();
    },
  };
}
