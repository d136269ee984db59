// The studies page: every study with its progress and best value, a status filter, and
// the "new study" form (YAML editor checked as you type, data set upload).

import { api } from "../api.js";
import { specEditor } from "../editor.js";
import { STUDY_STATUSES, esc, fmt, markReady, progressBar, studyBadge, when } from "../util.js";

const REFRESH_MS = 2000;
const PAGE = 25;

export const EXAMPLE = `# A random search on the two-moons data set. Edit it, then create the study.
name: moons-adam
dataset:
  name: moons            # moons | circles | spirals | blobs | xor | digits | breast_cancer | an uploaded id
  n_samples: 1000
  noise: 0.2
  dev_fraction: 0.2
model:
  hidden_layers: [20, 7, 5]
  optimizer: adam
  epochs: 100
  batch_size: 64
space:
  learning_rate: {type: float, low: 1.0e-4, high: 1.0, scale: log}
  beta1: {type: float, low: 0.8, high: 0.999, scale: one_minus_log}
  hidden_layers.0: {type: int, low: 5, high: 50}
strategy:
  type: random           # grid | random | sobol | coarse_to_fine
  trials: 24
objective:
  metric: dev_accuracy
  direction: maximize
  at: best
execution:
  mode: caviar           # caviar: in parallel | panda: one at a time
  max_parallel: 8
  seed: 42
`;

export function mount(view, _params, query) {
  const state = { status: query.get("status") || "", name: "", offset: 0 };
  view.innerHTML = `
    <div class="page-head">
      <div><h1>Studies</h1><p class="sub muted">Every search, newest first. Updates live.</p></div>
      <div class="actions">
        <input type="search" class="filter-name" placeholder="Filter by name" aria-label="Filter by name">
        <select class="filter-status" aria-label="Filter by status">
          <option value="">All statuses</option>
          ${STUDY_STATUSES.map((s) => `<option value="${s}">${s}</option>`).join("")}
        </select>
        <button type="button" class="primary" data-act="new" data-write>New study</button>
      </div>
    </div>
    <section class="panel new-study" data-write hidden>
      <div class="panel-head"><h2>New study</h2><span class="muted">Errors appear beside the line of the field, before you submit.</span></div>
      <div class="editor-slot"></div>
    </section>
    <section class="panel flush">
      <table class="studies">
        <thead><tr><th class="num">id</th><th>name</th><th>status</th><th>strategy</th><th>mode</th>
          <th>progress</th><th class="num">best</th><th>objective</th><th>started</th><th>finished</th></tr></thead>
        <tbody><tr><td colspan="10" class="muted">Loading…</td></tr></tbody>
      </table>
      <div class="pager"></div>
    </section>`;
  const tbody = view.querySelector("tbody");
  const pager = view.querySelector(".pager");
  const statusSel = view.querySelector(".filter-status");
  const nameIn = view.querySelector(".filter-name");
  const form = view.querySelector(".new-study");
  statusSel.value = state.status;
  let editor = null;

  function openForm() {
    form.hidden = false;
    if (!editor) {
      editor = specEditor(form.querySelector(".editor-slot"), {
        initial: EXAMPLE,
        onCreated: (study) => {
          location.hash = `#/studies/${study.id}`;
        },
        onCancel: () => {
          form.hidden = true;
        },
      });
    }
    editor.focusTop();
  }

  async function refresh() {
    const q = new URLSearchParams({ limit: PAGE, offset: state.offset });
    if (state.status) q.set("status", state.status);
    if (state.name) q.set("name", state.name);
    const page = await api(`/api/studies?${q}`);
    tbody.innerHTML =
      page.items
        .map(
          (s) => `<tr data-id="${s.id}">
        <td class="num muted">${s.id}</td>
        <td class="name"><a href="#/studies/${s.id}">${esc(s.name)}</a></td>
        <td>${studyBadge(s)}</td>
        <td>${esc(s.strategy.replaceAll("_", "-"))}${s.rounds.total > 1 ? ` <span class="muted">${s.rounds.current + 1}/${s.rounds.total}</span>` : ""}</td>
        <td>${esc(s.mode)}</td>
        <td class="nowrap">${progressBar(s)}</td>
        <td class="num strong">${s.best_trial ? `<a href="#/trials/${s.best_trial.id}">${fmt(s.best_trial.value)}</a>` : "–"}</td>
        <td class="muted small">${esc(s.objective.direction === "maximize" ? "max" : "min")} ${esc(s.objective.metric)}</td>
        <td>${when(s.started_at)}</td>
        <td>${when(s.finished_at)}</td></tr>`,
        )
        .join("") ||
      `<tr><td colspan="10" class="empty">${state.status || state.name ? "No study matches the filter." : `No study yet. Create one with <b>New study</b>, or <code>caviar submit examples/moons.yaml</code>.`}</td></tr>`;
    const pages = Math.max(1, Math.ceil(page.total / PAGE));
    const at = Math.floor(state.offset / PAGE) + 1;
    pager.innerHTML = `<span class="muted">${page.total} stud${page.total === 1 ? "y" : "ies"}</span>
      ${pages > 1 ? `<button type="button" data-page="-1" ${at === 1 ? "disabled" : ""}>‹ Newer</button><span>page ${at} of ${pages}</span><button type="button" data-page="1" ${at === pages ? "disabled" : ""}>Older ›</button>` : ""}`;
    document.title = `Studies · Caviar`;
    markReady("studies");
  }

  view.querySelector('[data-act="new"]').addEventListener("click", openForm);
  statusSel.addEventListener("change", () => {
    state.status = statusSel.value;
    state.offset = 0;
    refresh();
  });
  let typing = null;
  nameIn.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      state.name = nameIn.value.trim();
      state.offset = 0;
      refresh();
    }, 250);
  });
  pager.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-page]");
    if (!b) return;
    state.offset = Math.max(0, state.offset + Number(b.dataset.page) * PAGE);
    refresh();
  });
  if (query.get("new")) openForm();

  const timer = setInterval(() => refresh().catch(() => {}), REFRESH_MS);
  return { ready: refresh(), destroy: () => clearInterval(timer) };
}
