// YAML for specs and configs: write a value as readable YAML, and find the line of a field.

const PLAIN = /^[A-Za-z_][A-Za-z0-9_.\-/]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|y|n|~)$/i;

function key(k) {
  return PLAIN.test(k) && !RESERVED.test(k) ? k : JSON.stringify(k);
}

/** A float always keeps a dot, so PyYAML (YAML 1.1) reads `1.0e-4` back as a float. */
function number(v) {
  if (!Number.isFinite(v)) return v > 0 ? ".inf" : v < 0 ? "-.inf" : ".nan";
  if (Number.isInteger(v) && !Object.is(v, -0)) return String(v);
  const s = String(v);
  if (!s.includes("e")) return s;
  const [mantissa, exp] = s.split("e");
  const m = mantissa.includes(".") ? mantissa : `${mantissa}.0`;
  return `${m}e${exp.startsWith("-") || exp.startsWith("+") ? exp : `+${exp}`}`;
}

function scalar(v) {
  if (v === null || v === undefined) return "null";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return number(v);
  const s = String(v);
  return PLAIN.test(s) && !RESERVED.test(s) && !/^[\d.+-]/.test(s) ? s : JSON.stringify(s);
}

const isScalar = (v) => v === null || typeof v !== "object";
const isFlat = (v) =>
  Array.isArray(v) ? v.every(isScalar) : v && typeof v === "object" && Object.values(v).every(isScalar);

function flow(v) {
  if (Array.isArray(v)) return `[${v.map(scalar).join(", ")}]`;
  const entries = Object.entries(v).filter(([, x]) => x !== null && x !== undefined);
  return `{${entries.map(([k, x]) => `${key(k)}: ${scalar(x)}`).join(", ")}}`;
}

/**
 * `value` as block YAML. Lists of scalars and mappings of scalars nested in a mapping
 * are written in flow style (`[20, 7, 5]`, `{type: float, low: 1.0e-4}`), as the
 * examples are; null fields are left out (null is every optional field's default).
 * `flowDepth`: mappings of scalars at this depth or deeper become flow mappings.
 */
export function toYaml(value, { flowDepth = 2 } = {}) {
  const lines = [];
  function block(obj, indent, depth) {
    const pad = "  ".repeat(indent);
    for (const [k, v] of Object.entries(obj)) {
      if (v === null || v === undefined) continue;
      if (isScalar(v)) lines.push(`${pad}${key(k)}: ${scalar(v)}`);
      else if (Array.isArray(v) && isFlat(v)) lines.push(`${pad}${key(k)}: ${flow(v)}`);
      else if (Array.isArray(v)) {
        lines.push(`${pad}${key(k)}:`);
        for (const item of v) {
          if (isScalar(item)) lines.push(`${pad}  - ${scalar(item)}`);
          else lines.push(`${pad}  - ${flow(item)}`);
        }
      } else if (depth >= flowDepth && isFlat(v)) lines.push(`${pad}${key(k)}: ${flow(v)}`);
      else if (Object.keys(v).length === 0) lines.push(`${pad}${key(k)}: {}`);
      else {
        lines.push(`${pad}${key(k)}:`);
        block(v, indent + 1, depth + 1);
      }
    }
  }
  block(value, 0, 1);
  return `${lines.join("\n")}\n`;
}

/** The block keys of a YAML text as a tree: {key, line (1-based), children}. */
function outline(text) {
  const root = { key: "", line: null, indent: -1, children: [] };
  const stack = [root];
  text.split("\n").forEach((raw, i) => {
    const m = raw.match(/^(\s*)(?:"([^"]+)"|'([^']+)'|([^\s#:'"{[\-][^:#]*?))\s*:(\s|$)/);
    if (!m) return;
    const indent = m[1].length;
    const node = { key: (m[2] ?? m[3] ?? m[4]).trim(), line: i + 1, indent, children: [] };
    while (stack.length > 1 && stack[stack.length - 1].indent >= indent) stack.pop();
    stack[stack.length - 1].children.push(node);
    stack.push(node);
  });
  return root;
}

/**
 * The line (1-based) of the field an error's `loc` names, like `space.hidden_layers.0.low`:
 * the deepest key of the path found in the text. Keys may contain dots, so at each level
 * the longest run of segments that names a child wins. Null when not even the first is there.
 */
export function lineOf(text, loc) {
  if (!loc) return null;
  const segments = String(loc).split(".");
  let node = outline(text);
  let line = null;
  let i = 0;
  while (i < segments.length) {
    let next = null;
    let used = 0;
    for (let j = segments.length; j > i && !next; j--) {
      const name = segments.slice(i, j).join(".");
      next = node.children.find((c) => c.key === name) || null;
      used = j - i;
    }
    if (!next) break;
    node = next;
    line = next.line;
    i += used;
  }
  return line;
}
