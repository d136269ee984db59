// The workers page: who is alive, what each runs, its last heartbeat.

import { api } from "../api.js";
import { badge, esc, markReady, since } from "../util.js";

const REFRESH_MS = 2000;

export function mount(view) {
  view.innerHTML = `
    <div class="page-head"><div><h1>Workers</h1><p class="sub muted">Processes that leased a trial in the last hour. Updates live.</p></div></div>
    <section class="panel cards worker-cards"></section>
    <section class="panel flush">
      <table class="workers"><thead><tr><th>name</th><th>host</th><th class="num">pid</th><th>state</th>
        <th class="num">last heartbeat</th><th class="num">trials done</th><th>running now</th></tr></thead>
        <tbody><tr><td colspan="7" class="muted">Loading…</td></tr></tbody></table>
    </section>`;
  const tbody = view.querySelector("tbody");

  async function refresh() {
    const workers = await api("/api/workers");
    const alive = workers.filter((w) => w.alive);
    const busy = alive.filter((w) => w.running.length);
    view.querySelector(".worker-cards").innerHTML = [
      ["alive", alive.length],
      ["busy", busy.length],
      ["idle", alive.length - busy.length],
      ["gone", workers.length - alive.length],
      ["trials done", workers.reduce((a, w) => a + w.trials_done, 0)],
    ]
      .map(([k, v]) => `<div class="card"><span class="k">${k}</span><span class="v">${v.toLocaleString("en")}</span></div>`)
      .join("");
    tbody.innerHTML =
      workers
        .map(
          (w) => `<tr class="${w.alive ? "" : "gone"}">
        <td><b>${esc(w.name)}</b><div class="muted small mono">${esc(w.id)}</div></td>
        <td>${esc(w.host)}</td><td class="num">${w.pid ?? "–"}</td>
        <td>${w.alive ? badge(w.running.length ? "running" : "idle") : badge("gone")}</td>
        <td class="num">${since(w.seconds_since_heartbeat)}</td>
        <td class="num">${w.trials_done.toLocaleString("en")}</td>
        <td>${w.running.map((id) => `<a href="#/trials/${id}">trial id ${id}</a>`).join(", ") || `<span class="muted">–</span>`}</td></tr>`,
        )
        .join("") || `<tr><td colspan="7" class="empty">No worker in the last hour. Start some with <code>caviar worker --processes 4</code>.</td></tr>`;
    document.title = "Workers · Caviar";
    markReady("workers");
  }

  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  return { ready: refresh(), destroy: () => clearInterval(timer) };
}
