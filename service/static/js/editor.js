// The spec editor: YAML in a textarea, checked by the service as you type, each error
// shown beside the line of the field it names; optional data set upload; create the study.

import { api, ApiError, operation, resolveRef } from "./api.js";
import { esc } from "./util.js";
import { lineOf } from "./yaml.js";

const LINE_PX = 20; // must match .editor .code line-height in caviar.css
const PAD_PX = 10; // and its padding-top
const CHECK_AFTER_MS = 350; // validate once typing pauses this long
// A syntax error of the text as a whole (loc "body"), as the service words it.
const SYNTAX = /^not valid (?:YAML or JSON|JSON) \(line (\d+), column (\d+)\): (.*)$/s;

/** Where an error goes: a syntax error on the line it names, in the service's own words
 * past the position; a field's error on that field's line (yaml.js lineOf). */
function placed(text, e) {
  const syntax = SYNTAX.exec(e.msg || "");
  if (syntax && (!e.loc || e.loc === "body")) {
    return { ...e, loc: "syntax", line: Number(syntax[1]), msg: `column ${syntax[2]}: ${syntax[3]}` };
  }
  return { ...e, line: lineOf(text, e.loc) };
}

export function specEditor(container, { initial, submitLabel = "Create study", onCreated, onCancel }) {
  container.innerHTML = `
    <div class="editor" data-state="idle">
      <div class="gutter" aria-hidden="true"><div class="inner"></div></div>
      <textarea class="code" spellcheck="false" autocapitalize="off" autocomplete="off" wrap="off"
        aria-label="Search spec (YAML)" name="spec"></textarea>
      <div class="notes" aria-live="polite"><div class="inner"></div></div>
    </div>
    <ul class="spec-errors"></ul>
    <div class="editor-foot">
      <span class="spec-status muted">Checking…</span>
      <span class="upload-slot"></span>
      <span class="spacer"></span>
      ${onCancel ? `<button type="button" class="ghost" data-act="cancel">Close</button>` : ""}
      <button type="button" class="primary" data-act="submit">${esc(submitLabel)}</button>
    </div>`;
  const box = container.querySelector(".editor");
  const ta = container.querySelector("textarea");
  const gutter = container.querySelector(".gutter .inner");
  const notes = container.querySelector(".notes .inner");
  const list = container.querySelector(".spec-errors");
  const status = container.querySelector(".spec-status");
  const submit = container.querySelector('[data-act="submit"]');
  ta.value = initial;
  ta.setSelectionRange(0, 0); // the caret, and so the view, at the top: name: and dataset: first
  let seq = 0;
  let timer = null;

  function drawGutter(bad = new Set()) {
    const n = ta.value.split("\n").length;
    let html = "";
    for (let i = 1; i <= n; i++) html += `<div class="${bad.has(i) ? "bad" : ""}">${i}</div>`;
    gutter.innerHTML = html;
  }
  function sync() {
    const y = `translateY(${-ta.scrollTop}px)`;
    gutter.style.transform = y;
    notes.style.transform = y;
  }

  function show(errors) {
    const byLine = new Map();
    const loose = [];
    for (const e of errors.map((x) => placed(ta.value, x))) {
      if (e.line) byLine.set(e.line, [...(byLine.get(e.line) || []), e]);
      else loose.push(e);
    }
    notes.innerHTML = [...byLine]
      .map(([line, es]) => {
        const text = es.map((e) => `${e.loc}: ${e.msg}`).join("; ");
        return `<div class="field-error" role="alert" data-line="${line}" data-loc="${esc(es.map((e) => e.loc).join(" "))}"
          style="top:${PAD_PX + (line - 1) * LINE_PX}px" title="${esc(text)}">${esc(es.map((e) => e.msg).join("; "))}</div>`;
      })
      .join("");
    list.innerHTML = [...[...byLine].flatMap(([line, es]) => es.map((e) => ({ ...e, line }))), ...loose]
      .map(
        (e) =>
          `<li data-loc="${esc(e.loc)}">${e.line ? `<a href="#" data-line="${e.line}">line ${e.line}</a> · ` : ""}<code>${esc(e.loc || "spec")}</code> ${esc(e.msg)}</li>`,
      )
      .join("");
    drawGutter(new Set(byLine.keys()));
    box.dataset.state = errors.length ? "invalid" : "valid";
  }

  async function check() {
    const mine = ++seq;
    box.dataset.state = "checking";
    try {
      const r = await api("/api/specs/validate", { method: "POST", body: ta.value, type: "application/yaml" });
      if (mine !== seq) return;
      show([]);
      status.className = "spec-status ok";
      status.textContent = `Valid: ${r.trials} trial${r.trials === 1 ? "" : "s"} in the first round${r.rounds > 1 ? `, ${r.rounds} rounds` : ""}.`;
    } catch (err) {
      if (mine !== seq) return;
      const errors = err instanceof ApiError && err.errors.length ? err.errors : [{ loc: "", msg: err.message }];
      show(errors);
      status.className = "spec-status error";
      status.textContent = `${errors.length} problem${errors.length === 1 ? "" : "s"} to fix before creating the study.`;
    }
  }

  ta.addEventListener("input", () => {
    drawGutter();
    clearTimeout(timer);
    timer = setTimeout(check, CHECK_AFTER_MS);
  });
  ta.addEventListener("scroll", sync);
  list.addEventListener("click", (e) => {
    const a = e.target.closest("a[data-line]");
    if (!a) return;
    e.preventDefault();
    const line = Number(a.dataset.line);
    const start = ta.value.split("\n").slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    ta.focus();
    ta.setSelectionRange(start, start);
    ta.scrollTop = Math.max(0, (line - 4) * LINE_PX);
  });
  container.querySelector('[data-act="cancel"]')?.addEventListener("click", () => onCancel());
  submit.addEventListener("click", async () => {
    submit.disabled = true;
    clearTimeout(timer);
    seq++;
    try {
      const study = await api("/api/studies", { method: "POST", body: ta.value, type: "application/yaml" });
      status.className = "spec-status ok";
      status.textContent = `Created study ${study.id}.`;
      onCreated(study);
    } catch (err) {
      const errors = err instanceof ApiError && err.errors.length ? err.errors : [{ loc: "", msg: err.message }];
      show(errors);
      status.className = "spec-status error";
      status.textContent = "The study was not created.";
    } finally {
      submit.disabled = false;
    }
  });

  drawGutter();
  check();
  uploadControl(container.querySelector(".upload-slot"), ta, () => ta.dispatchEvent(new Event("input")));
  return {
    textarea: ta,
    /** Focus the text at its top (focusing it as set would scroll to its end). */
    focusTop() {
      ta.focus({ preventScroll: true });
      ta.setSelectionRange(0, 0);
      ta.scrollTop = 0;
      sync();
    },
    setText(text) {
      ta.value = text;
      ta.dispatchEvent(new Event("input"));
    },
  };
}

/** Upload a CSV or NPZ data set, when the service has POST /api/datasets; puts its id in the spec. */
async function uploadControl(slot, ta, changed) {
  const op = await operation("POST", "/api/datasets");
  if (!op) return;
  const takesLabel = (op.parameters || []).some((p) => p.in === "query" && p.name === "label_column");
  slot.innerHTML = `<label class="button ghost upload">Upload data set…<input type="file" accept=".csv,.npz" name="dataset"></label>
    <span class="upload-form" hidden>
      <label class="small">label column <select class="label-column" aria-label="Label column"></select></label>
      <button type="button" data-act="upload">Upload</button>
    </span>
    <span class="upload-status muted"></span>`;
  const input = slot.querySelector("input[type=file]");
  const form = slot.querySelector(".upload-form");
  const labels = slot.querySelector(".label-column");
  const out = slot.querySelector(".upload-status");
  const say = (cls, text) => {
    out.className = `upload-status ${cls}`;
    out.textContent = text;
  };

  async function send(file, labelColumn) {
    say("muted", `Uploading ${file.name}…`);
    try {
      const ds = await sendDataset(op, file, labelColumn);
      say("ok", `Uploaded ${ds.name || file.name} as ${ds.id}${ds.n_rows ? ` (${ds.n_rows} rows × ${ds.n_columns} columns)` : ""}.`);
      useDataset(ta, ds.id);
      changed();
    } catch (err) {
      say("error", err.message);
    } finally {
      form.hidden = true;
      input.value = "";
    }
  }

  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    if (!file.name.toLowerCase().endsWith(".csv") || !takesLabel) return send(file, null);
    // A CSV names the column holding y: offer its header, the last column first.
    const header = (await file.slice(0, 64 * 1024).text()).split(/\r?\n/)[0].split(",").map((c) => c.trim().replace(/^"|"$/g, ""));
    labels.innerHTML = [...header].reverse().map((c) => `<option>${esc(c)}</option>`).join("");
    form.hidden = false;
    say("muted", `${file.name}: ${header.length} column${header.length === 1 ? "" : "s"}. Which one is the label?`);
    form.querySelector('[data-act="upload"]').onclick = () => send(file, labels.value);
  });
}

async function sendDataset(op, file, labelColumn) {
  const content = op.requestBody?.content || {};
  const params = new Set((op.parameters || []).filter((p) => p.in === "query").map((p) => p.name));
  const query = new URLSearchParams();
  if (params.has("name")) query.set("name", file.name);
  if (labelColumn && params.has("label_column")) query.set("label_column", labelColumn);
  const url = `/api/datasets${query.size ? `?${query}` : ""}`;
  if (content["multipart/form-data"]) {
    let schema = content["multipart/form-data"].schema || {};
    if (schema.$ref) schema = await resolveRef(schema.$ref);
    const props = schema.properties || {};
    const field = Object.keys(props).find((k) => props[k].format === "binary" || props[k].contentMediaType) || "file";
    const form = new FormData();
    form.append(field, file, file.name);
    return api(url, { method: "POST", body: form });
  }
  const type = file.name.toLowerCase().endsWith(".csv") ? "text/csv" : "application/octet-stream";
  const accepted = Object.keys(content);
  return api(url, { method: "POST", body: file, type: accepted.includes(type) || !accepted.length ? type : accepted[0] });
}

/**
 * Point the spec's dataset.name at an uploaded data set's id, and drop the options only
 * generators take (n_samples, noise) from a block-style dataset mapping.
 */
function useDataset(ta, id) {
  const lines = ta.value.split("\n");
  const line = lineOf(ta.value, "dataset.name");
  if (line) lines[line - 1] = lines[line - 1].replace(/(\bname:\s*)[^,}\s#]+/, `$1${id}`);
  const start = lines.findIndex((l) => /^dataset:\s*(#.*)?$/.test(l));
  if (start >= 0) {
    for (let i = start + 1; i < lines.length && /^\s/.test(lines[i]); ) {
      if (/^\s+(n_samples|noise):/.test(lines[i])) lines.splice(i, 1);
      else i++;
    }
  }
  ta.value = lines.join("\n");
}
