/**
 * Rendering plain JS objects into nats-server's configuration syntax.
 *
 * We generate config files rather than pass flags because a file can hold
 * everything (cluster, gateway, accounts), is what people deploy, and the
 * rendered file doubles as a readable example next to the server's data.
 */

/** A value that {@link renderConfig} can render. `undefined`/`null` members are skipped. */
export type ConfigValue =
  | string
  | number
  | boolean
  | null
  | undefined
  | ConfigValue[]
  | { [key: string]: ConfigValue };

const INDENT = "  ";
// Keys made of these characters need no quotes; anything else (dots,
// wildcards, `$`) is quoted so the parser cannot mistake it for syntax.
const BARE_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function renderKey(key: string): string {
  return BARE_KEY.test(key) ? key : renderString(key);
}

// The parser only understands \t \n \r \" \\ and \xXX escapes (no \u), so
// JSON.stringify is not a safe shortcut; other characters go in raw as UTF-8.
function renderString(value: string): string {
  const escaped = value.replace(/[\\"\t\n\r]|[\x00-\x1f\x7f]/g, (c) => {
    switch (c) {
      case "\\": return "\\\\";
      case '"': return '\\"';
      case "\t": return "\\t";
      case "\n": return "\\n";
      case "\r": return "\\r";
      default: return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
    }
  });
  // Always quoted: a bare word starting with `$` would be a variable
  // reference and bare `1G`/`2m` would change meaning.
  return `"${escaped}"`;
}

function renderNumber(value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`cannot render non-finite number ${value}`);
  // The parser has no exponent syntax, so 1e21 must be spelled out.
  if (Number.isInteger(value)) return BigInt(value).toString();
  const text = String(value);
  if (/e/i.test(text)) throw new RangeError(`cannot render ${value} without exponent notation`);
  return text;
}

function renderValue(value: ConfigValue, depth: number): string {
  if (typeof value === "string") return renderString(value);
  if (typeof value === "number") return renderNumber(value);
  if (typeof value === "boolean") return String(value);
  const pad = INDENT.repeat(depth);
  if (Array.isArray(value)) {
    const items = value.filter((v) => v !== undefined && v !== null);
    if (items.length === 0) return "[]";
    // One element per line, comma separated. Inline `[1, 2]` looks nicer but
    // nats-server 2.9.10 rejects a number directly followed by `]`.
    const lines = items.map((item) => pad + INDENT + renderValue(item, depth + 1));
    return `[\n${lines.join(",\n")}\n${pad}]`;
  }
  if (isPlainObject(value)) {
    const body = renderBody(value, depth + 1);
    return body ? `{\n${body}\n${pad}}` : "{}";
  }
  throw new TypeError(`cannot render config value of type ${typeof value}`);
}

function renderBody(obj: Record<string, ConfigValue>, depth: number): string {
  const pad = INDENT.repeat(depth);
  const lines: string[] = [];
  for (const [key, value] of Object.entries(obj)) {
    if (value === undefined || value === null) continue;
    // Blocks read as `name { ... }`, the style of the nats-server docs.
    const sep = isPlainObject(value) ? " " : ": ";
    lines.push(pad + renderKey(key) + sep + renderValue(value, depth));
  }
  return lines.join("\n");
}

/**
 * Renders a plain object as a nats-server config file: nested objects become
 * indented `name { ... }` blocks, arrays list one element per line separated
 * by commas, strings are always quoted, numbers and booleans are bare.
 *
 * @example renderConfig({ port: 4222, jetstream: { store_dir: "/data" } })
 * // port: 4222
 * // jetstream {
 * //   store_dir: "/data"
 * // }
 */
export function renderConfig(obj: Record<string, unknown>): string {
  const body = renderBody(obj as Record<string, ConfigValue>, 0);
  return body ? `${body}\n` : "";
}

/**
 * Deep-merges `extra` into `base` (returning a new object): nested objects
 * merge key by key, anything else in `extra` (arrays included) replaces the
 * base value, and an explicit `undefined`/`null` removes it.
 */
export function mergeConfig(
  base: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const current = out[key];
    if (value === undefined || value === null) delete out[key];
    else if (isPlainObject(value) && isPlainObject(current)) out[key] = mergeConfig(current, value);
    else out[key] = value;
  }
  return out;
}
