// Caviar's dashboard: studies, a study, a trial and the workers, refreshed while trials run.
"use strict";

const view = document.getElementById("view");
const REFRESH_MS = 2000;
let timer = null;

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const fmt = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : esc(JSON.stringify(v)));
const badge = (s) => `<span class="status ${esc(s)}">${esc(s)}</span>`;

async function api(path, options) {
  const r = await fetch(path, options);
  const body = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) throw new Error(body?.detail || `${r.status} ${r.statusText}`);
  return body;
}

function progress(study) {
  const c = study.counts;
  const done = c.completed + c.failed + c.pruned + c.stopped;
  const pct = study.total_trials ? Math.round((100 * done) / study.total_trials) : 0;
  return `<span class="progress"><span style="width:${pct}%"></span></span> ${done}/${study.total_trials}`;
}

async function studiesPage() {
  const page = await api("/api/studies?limit=200");
  const rows = page.items.map((s) => `<tr>
    <td class="num">${s.id}</td><td><a href="#/studies/${s.id}">${esc(s.name)}</a></td>
    <td>${badge(s.status)}</td><td>${esc(s.strategy)}</td><td>${esc(s.mode)}</td>
    <td>${progress(s)}</td><td class="num">${fmt(s.best_trial?.value)}</td>
    <td class="muted">${esc((s.created_at || "").replace("T", " ").slice(0, 19))}</td></tr>`).join("");
  view.innerHTML = `<h1>Studies</h1>
    <table><thead><tr><th>id</th><th>name</th><th>status</th><th>strategy</th><th>mode</th>
    <th>progress</th><th>best</th><th>created</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="8" class="muted">No study yet: <code>caviar submit examples/moons.yaml</code></td></tr>`}</tbody></table>`;
}

async function studyPage(id) {
  const [s, trials] = await Promise.all([
    api(`/api/studies/${id}`),
    api(`/api/studies/${id}/trials?sort=value&limit=200`),
  ]);
  const keys = Object.keys(s.spec.space || {});
  const c = s.counts;
  const cards = ["queued", "running", "completed", "failed", "stopped"].map((k) => `<div class="card"><span class="muted">${k}</span><b>${c[k]}</b></div>`).join("");
  const best = s.best_trial
    ? `<h2>Best trial: #${s.best_trial.number}, ${esc(s.objective.metric)} = ${fmt(s.best_trial.value)}</h2><pre>${esc(JSON.stringify(s.best_trial.params, null, 2))}</pre>`
    : "";
  const rows = trials.items.map((t) => `<tr><td class="num"><a href="#/trials/${t.id}">${t.number}</a></td><td>${badge(t.status)}</td>
    ${keys.map((k) => `<td class="num">${fmt(t.params[k])}</td>`).join("")}
    <td class="num">${fmt(t.value)}</td><td class="num">${t.epochs_done}</td><td class="muted">${esc(t.error || "")}</td></tr>`).join("");
  const live = !["completed", "cancelled", "failed"].includes(s.status);
  view.innerHTML = `<h1>${esc(s.name)} ${badge(s.status)}</h1>
    <p class="muted">study ${s.id} · ${esc(s.strategy)} · ${esc(s.mode)} · objective ${esc(s.objective.direction)} ${esc(s.objective.metric)} (${esc(s.objective.at)}) · ${progress(s)}
    ${live ? `<button class="danger" id="cancel">Cancel study</button>` : ""}</p>
    <div class="cards">${cards}</div>${best}
    <h2>Trials, best first</h2>
    <table><thead><tr><th>#</th><th>status</th>${keys.map((k) => `<th>${esc(k)}</th>`).join("")}<th>value</th><th>epochs</th><th>error</th></tr></thead>
    <tbody>${rows}</tbody></table>`;
  document.getElementById("cancel")?.addEventListener("click", async () => {
    await api(`/api/studies/${id}/cancel`, { method: "POST" });
    render();
  });
}

async function trialPage(id) {
  const [t, curve] = await Promise.all([api(`/api/trials/${id}`), api(`/api/trials/${id}/metrics`)]);
  const last = curve[curve.length - 1] || {};
  view.innerHTML = `<h1>Trial ${t.number} of <a href="#/studies/${t.study_id}">study ${t.study_id}</a> ${badge(t.status)}</h1>
    <div class="cards"><div class="card"><span class="muted">epochs</span><b>${t.epochs_done}</b></div>
    <div class="card"><span class="muted">value</span><b>${fmt(t.value)}</b></div>
    <div class="card"><span class="muted">dev accuracy</span><b>${fmt(last.dev_accuracy)}</b></div>
    <div class="card"><span class="muted">train cost</span><b>${fmt(last.train_cost)}</b></div></div>
    ${t.error ? `<p class="error">${esc(t.error)}</p>` : ""}
    <h2>Config</h2><pre>${esc(JSON.stringify(t.config, null, 2))}</pre>`;
}

async function workersPage() {
  const workers = await api("/api/workers");
  const rows = workers.map((w) => `<tr><td>${esc(w.name)}</td><td>${esc(w.host)}</td><td>${w.alive ? badge("running") : badge("stopped")}</td>
    <td class="num">${fmt(w.seconds_since_heartbeat)} s</td><td class="num">${w.trials_done}</td><td>${w.running.map((id) => `<a href="#/trials/${id}">${id}</a>`).join(", ")}</td></tr>`).join("");
  view.innerHTML = `<h1>Workers</h1><table><thead><tr><th>name</th><th>host</th><th>alive</th><th>last heartbeat</th><th>trials done</th><th>running</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="6" class="muted">No worker in the last hour.</td></tr>`}</tbody></table>`;
}

async function render() {
  clearTimeout(timer);
  const hash = location.hash.replace(/^#/, "") || "/";
  try {
    let m;
    if ((m = hash.match(/^\/studies\/(\d+)$/))) await studyPage(m[1]);
    else if ((m = hash.match(/^\/trials\/(\d+)$/))) await trialPage(m[1]);
    else if (hash === "/workers") await workersPage();
    else await studiesPage();
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
  timer = setTimeout(render, REFRESH_MS);
}

window.addEventListener("hashchange", render);
render();
