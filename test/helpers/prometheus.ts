/** A strict reader of the Prometheus text exposition format (0.0.4), for tests of `/metrics`. */

export type Labels = Record<string, string>;
export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}
export interface Family {
  type?: string;
  help?: string;
  samples: Sample[];
}

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);

/** A sample value as Prometheus reads it (Go's ParseFloat: NaN and Inf in any case; prom-client writes `Nan`). */
function parseValue(text: string, where: string): number {
  if (/^\+?inf$/i.test(text)) return Infinity;
  if (/^-inf$/i.test(text)) return -Infinity;
  if (/^nan$/i.test(text)) return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`${where}: bad value ${JSON.stringify(text)}`);
  return Number(text);
}

/** The family a sample belongs to: histogram and summary samples carry suffixes. */
function familyOf(name: string, families: Map<string, Family>): string {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    const base = name.slice(0, -suffix.length);
    if (name.endsWith(suffix) && ["histogram", "summary"].includes(families.get(base)?.type ?? "")) return base;
  }
  return name;
}

/**
 * Parses the text format, throwing on anything the format does not allow:
 * HELP/TYPE lines (once per family, TYPE before its samples), sample lines
 * `name{label="value",...} value [timestamp]` with escaped label values,
 * families not interleaved, and histograms with cumulative `le` buckets
 * ending at `+Inf` equal to `_count`, and a `_sum`.
 */
export function parseExposition(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const finished = new Set<string>();
  let current: string | undefined;
  const enter = (name: string, where: string) => {
    if (current !== name) {
      if (finished.has(name)) throw new Error(`${where}: family ${name} is interleaved with another`);
      if (current) finished.add(current);
      current = name;
    }
    let f = families.get(name);
    if (!f) families.set(name, (f = { samples: [] }));
    return f;
  };
  if (!text.endsWith("\n")) throw new Error("exposition must end with a newline");
  text.slice(0, -1).split("\n").forEach((line, i) => {
    const where = `line ${i + 1}`;
    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!METRIC_NAME.test(name)) throw new Error(`${where}: bad metric name ${name}`);
      const f = enter(name, where);
      if (kind === "HELP") {
        if (f.help !== undefined) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\[^\\n]/.test(rest.replace(/\\\\/g, ""))) throw new Error(`${where}: bad escape in HELP`);
        f.help = rest;
      } else {
        if (f.type !== undefined) throw new Error(`${where}: second TYPE for ${name}`);
        if (f.samples.length > 0) throw new Error(`${where}: TYPE after samples of ${name}`);
        if (!TYPES.has(rest)) throw new Error(`${where}: bad type ${rest}`);
        f.type = rest;
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([^ ]+)( -?\d+)?$/.exec(line);
    if (!m) throw new Error(`${where}: not a sample line: ${line}`);
    const [, name, , labelText, valueText] = m as unknown as [string, string, string | undefined, string | undefined, string];
    const labels: Labels = {};
    if (labelText !== undefined && labelText !== "") {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
      let at = 0;
      while (at < labelText.length) {
        re.lastIndex = at;
        const l = re.exec(labelText);
        if (!l) throw new Error(`${where}: bad labels {${labelText}}`);
        const [, key, raw] = l as unknown as [string, string, string];
        if (!LABEL_NAME.test(key) || key in labels) throw new Error(`${where}: bad or repeated label ${key}`);
        labels[key] = raw.replace(/\\(.)/g, (_s, c: string) => (c === "n" ? "\n" : c));
        at = re.lastIndex;
      }
    }
    enter(familyOf(name, families), where).samples.push({ name, labels, value: parseValue(valueText, where) });
  });
  for (const [name, f] of families) {
    if (f.type !== "histogram") continue;
    const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
    for (const s of f.samples) {
      const { le, ...rest } = s.labels;
      const key = JSON.stringify(Object.entries(rest).sort());
      const entry = series.get(key) ?? { buckets: [] };
      series.set(key, entry);
      if (s.name === `${name}_bucket`) {
        if (le === undefined) throw new Error(`${name}: bucket without le`);
        entry.buckets.push([parseValue(le, name), s.value]);
      } else if (s.name === `${name}_count`) entry.count = s.value;
      else if (s.name === `${name}_sum`) entry.sum = s.value;
      else throw new Error(`${name}: unexpected sample ${s.name}`);
    }
    for (const [key, e] of series) {
      const last = e.buckets.at(-1);
      if (!last || last[0] !== Infinity || e.count === undefined || e.sum === undefined || last[1] !== e.count) throw new Error(`${name}${key}: incomplete histogram`);
      for (let i = 1; i < e.buckets.length; i++) {
        if (!(e.buckets[i]![0] > e.buckets[i - 1]![0]) || e.buckets[i]![1] < e.buckets[i - 1]![1]) throw new Error(`${name}${key}: buckets not cumulative`);
      }
    }
  }
  return families;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined when there is none. */
export function valueOf(families: Map<string, Family>, name: string, labels: Labels = {}): number | undefined {
  const found = families.get(familyOf(name, families))?.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ?? [];
  if (found.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${found.length} samples`);
  return found[0]?.value;
}
