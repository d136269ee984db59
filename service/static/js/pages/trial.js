// The trial page: live learning curves (cost, accuracy, learning rate; or, for a task's
// own function, each metric it reports), its config, attempts, worker and errors; stop,
// pause, resume or fork it.

import { api, hasRoute } from "../api.js";
import { gradientCheckPanel } from "../gradcheck.js";
import { follow } from "../live.js";
import { metricNames, metricPanels, namedFigure } from "../named.js";
import { draw, empty, loadPlotly, panelKeys, texts, trialFigure } from "../plots.js";
import { onSmoothing, smoothFigure, smoothingControl } from "../smoothing.js";
import { TERMINAL_TRIAL, badge, copyText, duration, esc, fmt, markReady, throttle, when } from "../util.js";
import { toYaml } from "../yaml.js";

const EVENT_REFRESH_MS = 700; // metrics arrive about once a second per running trial

export function mount(view, { id }) {
  let trial = null;
  let study = null;
  let live = null;
  let destroyed = false;
  let plotly = null; // loadPlotly(), once the first data requests have left

  view.innerHTML = `
    <div class="page-head">
      <div>
        <div class="crumbs"><a href="#/">Studies</a> › <a class="study-link" href="#/">study</a> ›</div>
        <h1><span class="title">Trial</span> <span class="head-status"></span></h1>
        <p class="sub muted meta"></p>
      </div>
      <div class="actions">
        <button type="button" data-act="pause" data-write hidden title="Stop after this epoch with a checkpoint; the worker is freed">Pause</button>
        <button type="button" data-act="resume" data-write hidden title="Queue it again: it continues from its latest checkpoint">Resume</button>
        <button type="button" data-act="fork" data-write hidden title="A new trial from a checkpoint, with some hyperparameters changed">Fork…</button>
        <button type="button" class="danger" data-act="stop" data-write hidden>Stop trial</button>
      </div>
    </div>
    <section class="panel cards"></section>
    <div class="trial-error"></div>
    <div class="trial-gradcheck"></div>
    <div class="smoothing-bar"><span class="smoothing-slot"></span></div>
    <div class="grid two named-curves" hidden></div>
    <div class="grid two trainer-curves">
      <section class="panel"><div class="panel-head"><h2>Cost</h2><span class="muted small">train and dev, log scale</span></div><div class="plot" id="plot-cost"></div></section>
      <section class="panel"><div class="panel-head"><h2>Accuracy</h2><span class="muted small">train and dev</span></div><div class="plot" id="plot-accuracy"></div></section>
    </div>
    <div class="grid two">
      <section class="panel lr-panel"><div class="panel-head"><h2>Learning rate</h2><span class="muted small lr-note"></span></div><div class="plot short" id="plot-lr"></div></section>
      <section class="panel"><div class="panel-head"><h2>Hyperparameters</h2><span class="muted small">sampled for this trial</span></div><table class="kv params"></table></section>
    </div>
    <dialog class="fork-dialog"><div class="dialog-head"><h2>Fork: a new trial from a checkpoint</h2>
      <p class="muted fork-note">It starts from this trial's state at the epoch you pick; change what the optimization should do from there. Empty fields keep this trial's value.</p></div>
      <form class="fork-form" method="dialog"></form></dialog>
    <section class="panel"><div class="panel-head"><h2>Config</h2><button type="button" data-act="copy">Copy as YAML</button><span class="copy-status muted small"></span></div><pre class="config-yaml"></pre></section>`;
  const $ = (sel) => view.querySelector(sel);
  smoothingControl($(".smoothing-slot"));
  const unsmooth = onSmoothing(() => curves(rows));

  function render(rows) {
    const t = trial;
    document.title = `Trial #${t.number} · ${study?.name || "study"} · Caviar`;
    $(".study-link").textContent = study ? study.name : `study ${t.study_id}`;
    $(".study-link").href = `#/studies/${t.study_id}`;
    $(".title").textContent = `Trial #${t.number}`;
    $(".head-status").innerHTML = badge(t.status);
    $(".meta").innerHTML = [
      `id ${t.id}`,
      study && study.rounds.total > 1 ? `round ${t.round + 1}` : "",
      t.parent_trial_id ? `<span class="lineage">forked from <a href="#/trials/${t.parent_trial_id}">trial id ${t.parent_trial_id}</a> at epoch ${t.fork_epoch}</span>` : "",
      t.outcome ? `outcome ${esc(t.outcome)}` : "",
      t.prune_reason ? `pruned: ${esc(t.prune_reason)}` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    const epochs = t.config?.epochs;
    const last = rows[rows.length - 1] || {};
    const card = (k, v, extra = "") => `<div class="card"><span class="k">${k}</span><span class="v ${extra}">${v}</span></div>`;
    // A task's function reports metrics of its own: the last of two besides the objective.
    const shown = isTask()
      ? metricNames(rows, "").filter((n) => n !== study.objective.metric).slice(0, 2)
      : ["dev_accuracy", "dev_cost"];
    $(".cards").innerHTML = [
      card("epochs", `${t.epochs_done}${epochs ? `<small> / ${epochs}</small>` : ""}`),
      card(`objective${study ? ` <span class="lower">(${esc(study.objective.metric)})</span>` : ""}`, fmt(t.value), "strong"),
      ...shown.map((n) => card(esc(n.replace("_", " ")), fmt(last[n]))),
      card("attempt", `${t.attempt}${t.retries ? `<small> · ${t.retries} retr${t.retries === 1 ? "y" : "ies"}</small>` : ""}`),
      card("worker", t.worker_id ? `<a href="#/workers" title="${esc(t.worker_id)}">${esc(t.worker_id.slice(0, 12))}</a>` : "–"),
      card("started", when(t.started_at)),
      t.finished_at
        ? card("took", duration(t.started_at, t.finished_at))
        : card("running for", t.status === "running" && t.started_at ? duration(t.started_at) : "–"),
    ].join("");
    $(".trial-error").innerHTML = t.error ? `<section class="panel error-panel"><h2>Error</h2><pre>${esc(t.error)}</pre></section>` : "";
    $(".trial-gradcheck").innerHTML = gradientCheckPanel(t.gradient_check);
    $(".params").innerHTML = Object.entries(t.params).map(([k, v]) => `<tr><th>${esc(k)}</th><td class="num">${esc(fmt(v, 6))}</td></tr>`).join("") || `<tr><td class="muted">No hyperparameter was searched.</td></tr>`;
    $(".config-yaml").textContent = toYaml(t.config);
    $('[data-act="stop"]').hidden = TERMINAL_TRIAL.includes(t.status);
    $('[data-act="pause"]').hidden = !routes.pause || !["queued", "running"].includes(t.status);
    $('[data-act="resume"]').hidden = !routes.resume || t.status !== "paused";
    $('[data-act="fork"]').hidden = !routes.fork || !rows.length;
    $(".lr-note").textContent = isTask() ? "" : rateNote(t, rows);
    view.dataset.epochs = rows.length;
  }

  // What the learning-rate panel says of the rate: its decay, or the fork's change of it
  // (a fork with another rate is not "constant"), from the rates the epochs report.
  function rateNote(t, rows) {
    const decay = t.config?.lr_decay;
    if (decay && decay !== "none") return `${decay} decay`;
    // The rate at the fork's checkpoint, and the one the fork trains with since.
    const before = parentRows?.length ? parentRows[parentRows.length - 1].learning_rate : null;
    const now = rows.length ? rows[rows.length - 1].learning_rate : t.config?.learning_rate;
    if (before != null && now != null && fmt(before, 6) !== fmt(now, 6)) {
      return `${fmt(before)} until epoch ${t.fork_epoch}, then ${fmt(now)} (forked)`;
    }
    return "constant";
  }

  // A study of a task's own function (its spec names an entrypoint).
  const isTask = () => Boolean(study?.spec?.task?.entrypoint);

  // A task's metrics: a panel per name it reported, rebuilt when a new name appears.
  async function namedCurves(rows) {
    const box = $(".named-curves");
    box.hidden = false;
    $(".trainer-curves").hidden = true;
    $(".lr-panel").hidden = true;
    const objective = study.objective.metric;
    const names = metricNames([...(parentRows || []), ...rows], objective);
    if (box.dataset.names !== names.join(",")) {
      box.innerHTML = names.length
        ? metricPanels(names, objective)
        : `<section class="panel"><div class="plot" data-metric=""></div></section>`;
      box.dataset.names = names.join(",");
    }
    if (!names.length) {
      const when = trial.status === "queued" ? "once a worker takes the trial" : "as the function reports them";
      empty(box.querySelector(".plot"), `Each metric the function reports, epoch by epoch, ${when}.`);
    }
    await Promise.all(
      names.map((name, i) => {
        const fig = namedFigure(rows, name, i, parentRows || []);
        return draw(box.querySelector(`[data-metric="${CSS.escape(name)}"]`), fig.data, fig.layout);
      }),
    );
    box.dataset.points = rows.length; // what the browser test watches grow
  }

  async function curves(rows) {
    await plotly;
    if (destroyed) return;
    if (isTask()) return namedCurves(rows);
    if (!rows.length && !parentRows?.length) {
      const when = trial.status === "queued" ? "once a worker takes the trial" : "as the trial trains";
      for (const el of ["#plot-cost", "#plot-accuracy", "#plot-lr"]) empty($(el), `Epoch by epoch, ${when}.`);
      $("#plot-cost").dataset.points = 0;
      return;
    }
    const figures = ["cost", "accuracy", "learning_rate"].map((kind) => {
      const fig = trialFigure(rows, kind, parentRows || []);
      if (parentRows?.length) fig.data.unshift(...parentTraces(parentRows, kind));
      return kind === "learning_rate" ? fig : smoothFigure(fig); // a schedule, not a noisy measure
    });
    await Promise.all([
      draw($("#plot-cost"), figures[0].data, figures[0].layout),
      draw($("#plot-accuracy"), figures[1].data, figures[1].layout),
      draw($("#plot-lr"), figures[2].data, figures[2].layout),
    ]);
    $("#plot-cost").dataset.points = rows.length; // what the browser test watches grow
  }

  // The curve so far; each update fetches only the epochs after its last one.
  let rows = [];
  let attempt = null;

  async function metrics() {
    const after = rows.length ? rows[rows.length - 1].epoch : 0;
    const tail = await epochs(id, after);
    if (tail.attempt !== attempt) {
      // A new attempt (the last one's worker died) starts its curve over.
      attempt = tail.attempt;
      rows = after ? (await epochs(id, 0)).rows : tail.rows;
    } else {
      rows = rows.concat(tail.rows);
    }
    return rows;
  }

  // A trial's epochs after `after`, each row with its named metrics (a task function's,
  // in `extra`) beside the trainer's.
  async function epochs(trialId, after) {
    const tail = await api(`/api/dashboard/trials/${trialId}/metrics?after=${after}`);
    return { ...tail, rows: tail.rows.map(({ extra, ...r }) => ({ ...r, ...(extra || {}) })) };
  }

  // A fork continues its parent's curve: the parent's epochs up to the fork, drawn grey.
  let parentRows = null;
  const routes = {};

  function parentTraces(prows, kind) {
    return panelKeys(kind).map((key) => ({
      type: "scatter",
      mode: "lines",
      name: `parent ${key.replace("_", " ")}`,
      x: prows.map((r) => r.epoch),
      y: prows.map((r) => r[key]),
      text: texts(prows.map((r) => r[key])),
      line: { color: "#a3aab8", width: 1.5, dash: key.startsWith("train") ? "dot" : "solid" },
      hovertemplate: `parent ${key.replace("_", " ")} %{text} at epoch %{x}<extra></extra>`,
    }));
  }

  async function load() {
    const [t, rows] = await Promise.all([api(`/api/trials/${id}`), metrics()]);
    trial = t;
    if (t.parent_trial_id && parentRows === null) {
      const all = (await epochs(t.parent_trial_id, 0)).rows;
      parentRows = all.filter((r) => r.epoch <= t.fork_epoch);
    }
    if (!study || study.id !== t.study_id) study = await api(`/api/studies/${t.study_id}`);
    if (destroyed) return;
    render(rows);
    await curves(rows);
  }

  async function refresh() {
    try {
      await load();
      if (TERMINAL_TRIAL.includes(trial.status) && live?.mode === "events") {
        live.close(); // nothing more will happen to this trial
        live = null;
      }
    } catch {
      /* keep the last picture; the next event or tick tries again */
    }
  }
  const onEvent = throttle(refresh, EVENT_REFRESH_MS);

  $('[data-act="stop"]').addEventListener("click", async (e) => {
    e.target.disabled = true;
    try {
      trial = await api(`/api/trials/${id}/stop`, { method: "POST" });
      $(".head-status").innerHTML = badge(trial.status === "running" ? "stopping" : trial.status);
      // The badge says "stopped" at once for a trial no worker held: so must the button,
      // not only after the refresh below has fetched the page's other parts.
      e.target.hidden = TERMINAL_TRIAL.includes(trial.status);
    } catch (err) {
      alert(err.message);
    }
    e.target.disabled = false;
    refresh();
  });
  for (const act of ["pause", "resume"]) {
    $(`[data-act="${act}"]`).addEventListener("click", async (e) => {
      e.target.disabled = true;
      try {
        trial = await api(`/api/trials/${id}/${act}`, { method: "POST" });
        $(".head-status").innerHTML = badge(act === "pause" && trial.status === "running" ? "pausing" : trial.status);
      } catch (err) {
        alert(err.message);
      }
      e.target.disabled = false;
      refresh();
    });
  }
  $('[data-act="fork"]').addEventListener("click", () => openFork());
  $(".fork-form").addEventListener("submit", (e) => {
    e.preventDefault();
    submitFork();
  });

  const FORK_FIELDS = [
    ["learning_rate", "learning rate", "number"],
    ["l2", "L2 (lambda)", "number"],
    ["keep_prob", "keep prob (dropout)", "number"],
    ["lr_decay", "learning-rate decay", ["none", "inverse_time", "exponential", "inverse_sqrt"]],
    ["decay_rate", "decay rate", "number"],
    ["epochs", "epochs in all", "number"],
  ];

  // What a fork may change: the trainer's optimization, or a task's params (the keys of
  // its space and task.params), each typed as text: a number, true, false, null or words.
  function forkFields() {
    if (!isTask()) return FORK_FIELDS;
    const spec = study.spec;
    const keys = new Set([...Object.keys(spec.space || {}), ...Object.keys(spec.task.params || {})]);
    return [...keys].map((key) => [key, key, "text"]);
  }

  function typed(text) {
    const t = text.trim();
    if (/^(true|false|null)$/.test(t)) return JSON.parse(t);
    return t !== "" && Number.isFinite(Number(t)) ? Number(t) : text;
  }

  async function openFork() {
    const form = $(".fork-form");
    const checkpoints = await api(`/api/trials/${id}/checkpoints`).catch(() => []);
    const epochs = [...new Set(checkpoints.map((c) => c.epoch))].sort((a, b) => b - a);
    const c = trial.config;
    if (isTask()) {
      $(".fork-note").textContent = "It starts from the state the function kept at the epoch you pick, called with the params you change. Empty fields keep this trial's value.";
    }
    form.innerHTML = `
      <label>from the checkpoint at epoch <select name="from_epoch">${epochs.map((e) => `<option>${e}</option>`).join("")}</select></label>
      ${forkFields().map(([key, label, kind]) =>
        Array.isArray(kind)
          ? `<label>${label} <select name="${key}">${kind.map((o) => `<option ${o === c[key] ? "selected" : ""}>${o}</option>`).join("")}</select></label>`
          : kind === "text"
            ? `<label>${esc(label)} <input name="${esc(key)}" type="text" placeholder="${esc(typeof c[key] === "number" ? fmt(c[key], 6) : JSON.stringify(c[key] ?? null))}"></label>`
            : `<label>${label} <input name="${key}" type="number" step="any" placeholder="${esc(fmt(c[key], 6))}"></label>`,
      ).join("")}
      <p class="fork-error error" hidden></p>
      <div class="editor-foot"><span class="spacer"></span><button type="button" class="ghost" data-act="close-fork">Close</button>
        <button type="submit" class="primary" ${epochs.length ? "" : "disabled"}>Fork trial</button></div>
      ${epochs.length ? "" : `<p class="muted">No checkpoint yet: one is written every ${esc(study?.spec?.execution?.checkpoint_every ?? "few")} epochs and on pause.</p>`}`;
    form.querySelector('[data-act="close-fork"]').onclick = () => $(".fork-dialog").close();
    $(".fork-dialog").showModal();
  }

  async function submitFork() {
    const form = $(".fork-form");
    const f = new FormData(form);
    const changes = {};
    for (const [key, , kind] of forkFields()) {
      const v = f.get(key);
      if (Array.isArray(kind)) {
        if (v !== trial.config[key]) changes[key] = v;
      } else if (kind === "text") {
        if (v !== "" && v !== null) changes[key] = typed(v);
      } else if (v !== "" && v !== null) changes[key] = key === "epochs" ? Math.round(Number(v)) : Number(v);
    }
    try {
      const child = await api(`/api/trials/${id}/fork`, { method: "POST", body: { from_epoch: Number(f.get("from_epoch")), changes } });
      $(".fork-dialog").close();
      location.hash = `#/trials/${child.id}`;
    } catch (err) {
      const msg = form.querySelector(".fork-error");
      msg.textContent = err.errors?.length ? err.errors.map((x) => `${x.loc}: ${x.msg}`).join("; ") : err.message;
      msg.hidden = false;
    }
  }

  $('[data-act="copy"]').addEventListener("click", async () => {
    const ok = await copyText(toYaml(trial.config));
    $(".copy-status").textContent = ok ? "Copied." : "Copy failed: select the text.";
  });

  const ready = (async () => {
    // The study's newest event before anything else is read: what happens while the
    // page loads is replayed by the stream, never missed.
    const cursor = await api(`/api/dashboard/trials/${id}/cursor`).catch(() => ({ last_event_id: 0 }));
    // The babysitting controls show where the service has their routes.
    [routes.pause, routes.resume, routes.fork] = await Promise.all(
      ["pause", "resume", "fork"].map((a) => hasRoute("POST", `/api/trials/{trial_id}/${a}`)),
    );
    const first = load();
    plotly = loadPlotly();
    await first;
    markReady("trial");
    if (TERMINAL_TRIAL.includes(trial.status)) return;
    const h = await follow(trial.study_id, {
      after: cursor.last_event_id,
      onEvent: (type, data) => {
        if (data.trial_id === Number(id) || type.startsWith("study.")) onEvent();
      },
      refresh,
    });
    if (destroyed) h.close();
    else live = h;
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
