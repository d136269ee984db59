// "Zoom in": a new coarse-to-fine spec whose space is the region of a study's best trials.
//
// Built in the browser from the study's stored spec and its best trials, so the new study's
// spec states its own narrowed ranges: it can be read, edited, resubmitted and reproduced
// without the parent study. Each range is the span of the best trials on the
// hyperparameter's own scale (log10 x for log, log10(1 - x) for one_minus_log), widened
// by MARGIN of that span on each side and kept inside the original range.

const MARGIN = 0.25;
const ZOOM_ROUNDS = 3;

const round4 = (x) => Number(x.toPrecision(4));

function scaleOf(d) {
  if (d.scale === "log") return { to: Math.log10, from: (t) => 10 ** t };
  if (d.scale === "one_minus_log") return { to: (x) => Math.log10(1 - x), from: (t) => 1 - 10 ** t };
  return { to: (x) => x, from: (t) => t };
}

/** The narrowed distribution of one scalar (float or int) over `values`. */
function narrowScalar(d, values) {
  const sc = scaleOf(d);
  const ends = [sc.to(d.low), sc.to(d.high)];
  const full = [Math.min(...ends), Math.max(...ends)];
  const ts = values.filter((v) => typeof v === "number").map(sc.to);
  if (!ts.length) return d;
  let lo = Math.min(...ts);
  let hi = Math.max(...ts);
  const pad = Math.max((hi - lo) * MARGIN, (full[1] - full[0]) * 0.05);
  lo = Math.max(full[0], lo - pad);
  hi = Math.min(full[1], hi + pad);
  let [a, b] = [sc.from(lo), sc.from(hi)].sort((x, y) => x - y);
  if (d.type === "int") {
    a = Math.max(d.low, Math.floor(a));
    b = Math.min(d.high, Math.ceil(b));
    if (a === b) b < d.high ? (b += 1) : (a -= 1);
  } else {
    a = Math.max(d.low, round4(a));
    b = Math.min(d.high, round4(b));
    if (d.step) {
      a = d.low + Math.floor((a - d.low) / d.step + 1e-9) * d.step;
      b = d.low + Math.ceil((b - d.low) / d.step - 1e-9) * d.step;
      a = round4(a);
      b = Math.min(d.high, round4(b));
    }
    if (!(a < b)) return d;
  }
  return { ...d, low: a, high: b };
}

/**
 * A coarse-to-fine spec zooming into the best trials of `study`.
 * `best`: the best trials first, each with `params`; the best `keep` of them set the region.
 */
export function zoomSpec(study, best, { keep } = {}) {
  const spec = structuredClone(study.spec);
  const k = keep ?? Math.min(best.length, Math.max(3, Math.round(best.length * 0.25)));
  const top = best.slice(0, Math.max(1, k));
  const space = {};
  for (const [path, d] of Object.entries(spec.space || {})) {
    const values = top.map((t) => t.params[path]);
    if (d.type === "categorical") {
      const seen = (d.choices || []).filter((c) => values.some((v) => JSON.stringify(v) === JSON.stringify(c)));
      space[path] = seen.length ? { ...d, choices: seen } : d;
    } else if (d.type === "layers") {
      const depths = values.filter(Array.isArray).map((v) => v.length);
      const widths = values.filter(Array.isArray).flat();
      space[path] = {
        ...d,
        depth: depths.length ? narrowScalar({ ...d.depth, type: "int" }, depths) : d.depth,
        units: widths.length ? narrowScalar({ ...d.units, type: "int" }, widths) : d.units,
      };
    } else {
      space[path] = narrowScalar(d, values);
    }
  }
  spec.space = space;
  const st = spec.strategy || {};
  const before = st.type === "coarse_to_fine" ? st.trials_per_round : st.trials || 20;
  spec.strategy = {
    ...st,
    type: "coarse_to_fine",
    rounds: ZOOM_ROUNDS,
    trials_per_round: Math.max(4, Math.min(before || 20, 100)),
  };
  delete spec.strategy.trials;
  delete spec.strategy.grid_points;
  spec.name = `${study.name}-zoom`.slice(0, 200);
  return { spec, kept: top.length };
}
