// The study page's "Which hyperparameters mattered" panel: each hyperparameter's share of
// the objective's variance (fANOVA, GET /api/studies/{id}/importance), beside the ranking
// the course expects: the learning rate first; then momentum's beta, the hidden units and
// the mini-batch size; then the layers and the learning-rate decay.

import { api, hasRoute } from "./api.js";
import { lessonStyles } from "./style.js";
import { esc, whenVisible } from "./util.js";

const TIER_WORDS = { 1: "first", 2: "second", 3: "third" };
const REFRESH_MS = 10_000;

function tierTag(tier) {
  return tier ? `<span class="tier t${tier}" title="the course ranks it ${TIER_WORDS[tier]}">${TIER_WORDS[tier]}</span>` : `<span class="tier none" title="not in the course's list">–</span>`;
}

/** The panel's body for an importance answer. */
export function importanceBody(answer) {
  if (answer.note) return `<p class="muted imp-note">No importances yet: ${esc(answer.note)}.</p>`;
  const top = Math.max(...answer.importances.map((i) => i.importance), 1e-9);
  const rows = answer.importances
    .map(
      (i) => `<tr data-name="${esc(i.name)}"><td class="num">${i.rank}</td><th>${esc(i.name)} <span class="muted small">${esc(i.scale)}</span></th>
        <td class="bar-cell"><span class="bar" style="width:${((100 * i.importance) / top).toFixed(1)}%"></span></td>
        <td class="num">${(100 * i.importance).toFixed(1)}%</td><td>${tierTag(i.course_tier)}</td></tr>`,
    )
    .join("");
  const course = answer.course.map((t) => `<li>${tierTag(t.tier)} ${esc(t.what)}</li>`).join("");
  const used = answer.sampled ? `${answer.trials_used.toLocaleString("en")} of ${answer.completed_trials.toLocaleString("en")} completed trials, sampled` : `${answer.trials_used.toLocaleString("en")} completed trials`;
  return `<div class="imp-grid">
      <div><table class="imp-table"><thead><tr><th class="num">#</th><th>measured</th><th colspan="2">share of the variance</th><th>course</th></tr></thead><tbody>${rows}</tbody></table>
        <p class="muted small">The share of the variance of ${esc(answer.metric)} each hyperparameter explains: fANOVA over a random forest, on ${used}, each on its own scale.</p></div>
      <div class="course"><h3>The course expects</h3><ol>${course}</ol>
        <p class="muted small">“There are many hyperparameters but some are more important than others.” A hyperparameter outside this list (Adam's beta2 and epsilon are almost never tuned) shows –.</p></div>
    </div>`;
}

/** Mount the panel in `section`; `update(completed)` refetches when a study's count changed. */
export function importancePanel(section, studyId) {
  lessonStyles();
  section.innerHTML = `<div class="panel-head"><h2>Which hyperparameters mattered</h2><span class="muted small">measured beside the course's ranking</span></div><div class="imp-body muted">Appears once trials have completed.</div>`;
  const body = section.querySelector(".imp-body");
  let shown = -1;
  let busy = false;
  const available = hasRoute("GET", "/api/studies/{study_id}/importance");
  const visible = whenVisible(section);
  let last = 0; // when it was last fetched
  let later = null; // the fetch a live study's next completed trials wait for
  return async function update(completed) {
    if (!(await available)) {
      section.hidden = true;
      return;
    }
    await visible;
    if (completed === shown || !completed) return;
    // A live study completes trials every second: refit at most every REFRESH_MS, and
    // once more after the last change, so the panel ends on the final count.
    const wait = last + REFRESH_MS - Date.now();
    if (busy || wait > 0) {
      clearTimeout(later);
      later = setTimeout(() => update(completed), Math.max(wait, 100));
      return;
    }
    last = Date.now();
    busy = true;
    try {
      const answer = await api(`/api/studies/${studyId}/importance`);
      shown = completed;
      body.className = "imp-body";
      body.innerHTML = importanceBody(answer);
      section.dataset.ranked = answer.importances.map((i) => i.name).join(",");
    } catch (err) {
      body.textContent = `Could not compute the importances: ${err.message}`;
    } finally {
      busy = false;
    }
  };
}
