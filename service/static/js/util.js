// Small helpers every page uses: escaping, number and time formats, status badges.

export const TERMINAL_STUDY = ["completed", "cancelled", "failed"];
export const TERMINAL_TRIAL = ["completed", "failed", "pruned", "stopped"];
export const TRIAL_STATUSES = ["queued", "running", "paused", "completed", "failed", "pruned", "stopped"];
export const STUDY_STATUSES = ["queued", "running", "completed", "cancelled", "failed"];

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);

/**
 * A number as people read it, the one way every page and plot writes one: integers whole,
 * others to 3 significant digits (more where an exact value is shown), with an exponent
 * below 1e-3 and from 1e6: 0.912, 0.001, 1e-4, 1.23e-4, 2.5e6.
 */
export function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) {
      const [mantissa, exponent] = v.toExponential(digits - 1).split("e");
      return `${Number(mantissa)}e${Number(exponent)}`;
    }
    return String(Number(v.toPrecision(digits)));
  }
  if (Array.isArray(v)) return `[${v.map((x) => fmt(x, digits)).join(", ")}]`;
  return String(v);
}

export const badge = (s) => `<span class="status ${esc(s).replaceAll(" ", "-")}">${esc(s)}</span>`;

/** A study's badge: a panda study waiting for someone to continue it is "awaiting review". */
export const studyBadge = (study) =>
  badge(study.awaiting_review && !TERMINAL_STUDY.includes(study.status) ? "awaiting review" : study.status);

/** How long ago `s` seconds is: "1.2 s ago" within a minute and a half (a heartbeat's
 * pace), then "40 min ago", "3 h ago", "2 d ago". */
export function since(s) {
  if (s < 90) return `${fmt(Math.round(s * 10) / 10)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** "3 min ago", with the exact UTC time in a tooltip. */
export function when(iso) {
  if (!iso) return `<span class="muted">–</span>`;
  const t = new Date(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  const s = (Date.now() - t.getTime()) / 1000;
  const ago =
    s < 45 ? "just now" : s < 3600 ? `${Math.round(s / 60)} min ago` : s < 86400 ? `${Math.round(s / 3600)} h ago` : t.toISOString().slice(0, 10);
  return `<time datetime="${esc(t.toISOString())}" title="${esc(t.toISOString().replace("T", " ").slice(0, 19))} UTC">${ago}</time>`;
}

/** Seconds between two ISO times (or until now), as "1 m 20 s". */
export function duration(start, end) {
  if (!start) return "–";
  const a = new Date(start.endsWith("Z") || /[+-]\d\d:\d\d$/.test(start) ? start : `${start}Z`);
  const b = end ? new Date(end.endsWith("Z") || /[+-]\d\d:\d\d$/.test(end) ? end : `${end}Z`) : new Date();
  const s = Math.max(0, (b - a) / 1000);
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} m ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} m`;
}

/** A progress bar with the share of finished trials, and the running ones striped after it. */
export function progressBar(study, { wide = false } = {}) {
  // Both counts come from the service, which knows the plan and the final statuses.
  const total = study.planned_trials;
  const done = study.finished_trials;
  const running = study.counts.running || 0;
  const pct = total ? (100 * done) / total : 0;
  const rpct = total ? (100 * running) / total : 0;
  return `<span class="progress${wide ? " wide" : ""}" role="progressbar" aria-valuemin="0" aria-valuemax="${total}" aria-valuenow="${done}">
    <span class="done" style="width:${pct.toFixed(2)}%"></span><span class="running" style="width:${rpct.toFixed(2)}%"></span></span>
    <span class="progress-label">${done.toLocaleString("en")} / ${total.toLocaleString("en")}</span>`;
}

/** Call fn at most once per `ms`, always with a last call after the burst. */
export function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  const wrapped = () => {
    const wait = last + ms - Date.now();
    if (wait <= 0) {
      last = Date.now();
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = Date.now();
        fn();
      }, wait);
    }
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

/** Put text on the clipboard; falls back to a selected hidden textarea. */
export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const ta = document.createElement("textarea");
    ta.value = text;
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.append(ta);
    ta.select();
    const ok = document.execCommand("copy");
    ta.remove();
    return ok;
  }
}

/** Signal that a page has drawn everything it shows: the browser tests time this mark. */
export function markReady(name) {
  if (document.documentElement.dataset.ready === name) return;
  performance.mark(`caviar:ready:${name}`);
  document.documentElement.dataset.ready = name;
}

/**
 * Resolves in a later task. Work split with it leaves the browser free to scroll, paint
 * and answer input in between: one plot of two thousand points takes about 0.3 s to draw.
 */
export function nextTask() {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Resolves once `el` comes within `margin` of the viewport: plots below the fold wait for it. */
export function whenVisible(el, margin = "200px") {
  return new Promise((resolve) => {
    const io = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) {
          io.disconnect();
          resolve();
        }
      },
      { rootMargin: margin },
    );
    io.observe(el);
  });
}
