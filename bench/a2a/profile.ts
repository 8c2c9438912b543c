/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`, e.g. the bridge child
 * of bench/a2a/run.ts with BENCH_CPU_PROF set): top functions by self time
 * with file:line, self time by area (package / project file / node
 * internals / GC), a breakdown into named costs (signatures, MACs, NATS
 * socket writes, nats-core request objects, response writes) and areas with
 * node internals charged to their caller, and inclusive time per function.
 *
 *   npx tsx bench/a2a/profile.ts <file.cpuprofile> [top=40] [requests] [fnA,fnB,…]
 *
 * With `requests` (how many requests the profiled process served), times are
 * also given in µs per request. With function names, also who calls them:
 * the 4 nearest frames above each that are not node internals or builtins
 * (time of the named frame and all it calls). Lines are 1-based, of the code V8 ran (for
 * TypeScript run through tsx: esbuild's output, which keeps most lines).
 * Prints one JSON line on stdout and a readable table on stderr.
 */
import { readFileSync } from "node:fs";
import { relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { emit, progress, round } from "../lib.js";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [file, topText = "40", reqText, callersText] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: profile.ts <file.cpuprofile> [top] [requests] [fnA,fnB,…]\n");
  process.exit(2);
}
const TOP = Number(topText);
const REQUESTS = reqText && reqText !== "-" ? Number(reqText) : undefined;
const CALLERS_OF = callersText ? callersText.split(",") : [];
const root = resolve(fileURLToPath(import.meta.url), "../../..");

const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map<number, ProfileNode>();
const parent = new Map<number, number>();
for (const n of profile.nodes) {
  byId.set(n.id, n);
  for (const c of n.children ?? []) parent.set(c, n.id);
}

const shortUrl = (url: string): string => {
  if (!url) return "";
  const path = url.startsWith("file://") ? fileURLToPath(url) : url;
  return path.startsWith(root) ? relative(root, path) : path;
};
const keyOf = (f: CallFrame): string => `${f.functionName || "(anonymous)"} ${shortUrl(f.url)}${f.url ? `:${f.lineNumber + 1}` : ""}`;

/** The area a frame belongs to: an npm package, a project file, node internals, or a V8 pseudo-frame. */
function areaOf(f: CallFrame): string {
  const url = shortUrl(f.url);
  if (!url) return f.functionName.startsWith("(") ? f.functionName : "(native/builtin)";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0]!.startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0]!;
  }
  if (url.startsWith("node:")) return url.startsWith("node:internal/") ? `node:${url.split("/")[1]}` : url;
  return url; // a project file
}

const callers = new Map<string, Map<string, number>>(CALLERS_OF.map((f) => [f, new Map()]));
/**
 * Named costs, checked first (a sample whose stack holds one of the frames
 * goes there), then by area where node internals and builtins are charged
 * to the nearest caller in a package or project file.
 */
const OVERRIDES: [string, string[]][] = [
  ["Ed25519 sign/verify (core/identity)", ["sign core/security/identity.ts", "verify core/security/identity.ts"]],
  ["HMAC seal/open (core/peerkeys mac)", ["mac core/security/peerkeys.ts"]],
  ["NATS socket writes (nats-core flushPending)", ["flushPending node_modules/@nats-io/nats-core/"]],
  ["nats-core request bookkeeping (lib/request.js, util.js timers)", ["node_modules/@nats-io/nats-core/lib/request.js", "node_modules/@nats-io/nats-core/lib/util.js"]],
  ["JSON-RPC response write (fastify reply / express res.send)", ["node_modules/fastify/lib/reply.js", "node_modules/express/lib/response.js"]],
];
const bucket = new Map<string, number>();
const isCode = (f: CallFrame) => f.url !== "" && !f.url.startsWith("node:");
function bucketOf(leaf: ProfileNode): string {
  const stack: CallFrame[] = [];
  for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) stack.push(byId.get(id)!.callFrame);
  const keys = stack.map(keyOf);
  for (const [label, pats] of OVERRIDES) if (keys.some((k) => pats.some((p) => k.includes(p)))) return label;
  const owner = stack.find(isCode);
  return owner ? areaOf(owner) : areaOf(leaf.callFrame);
}

const self = new Map<string, number>();
const area = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;
let idle = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0;
  const node = byId.get(profile.samples[i]!)!;
  const f = node.callFrame;
  total += dt;
  if (f.functionName === "(idle)") {
    idle += dt;
    continue;
  }
  self.set(keyOf(f), (self.get(keyOf(f)) ?? 0) + dt);
  area.set(areaOf(f), (area.get(areaOf(f)) ?? 0) + dt);
  const b = bucketOf(node);
  bucket.set(b, (bucket.get(b) ?? 0) + dt);
  // Callers of the named functions: the 4 frames above the one nearest the leaf.
  for (const fn of CALLERS_OF) {
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      if (byId.get(id)!.callFrame.functionName !== fn) continue;
      const chain: string[] = [];
      for (let up = parent.get(id); up !== undefined && chain.length < 4; up = parent.get(up)) {
        const f = byId.get(up)!.callFrame;
        if (!f.url.startsWith("node:") && f.url !== "") chain.push(keyOf(f));
      }
      const k = chain.join(" < ");
      const m = callers.get(fn)!;
      m.set(k, (m.get(k) ?? 0) + dt);
      break;
    }
  }
  // Inclusive: every distinct function on the stack, once per sample.
  const seen = new Set<string>();
  for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
    const k = keyOf(byId.get(id)!.callFrame);
    if (!seen.has(k)) {
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + dt);
    }
  }
}
const busy = total - idle;

const ms = (us: number) => round(us / 1000, 1);
const table = (m: Map<string, number>, n: number) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, us]) => ({ what: k, ms: ms(us), pctBusy: round((100 * us) / busy, 1), ...(REQUESTS ? { usPerReq: round(us / REQUESTS, 1) } : {}) }));

const topSelf = table(self, TOP);
const buckets = table(bucket, 40);
const areas = table(area, 30);
const topInclusive = table(
  new Map([...inclusive].filter(([k]) => !k.startsWith("(root)") && !k.startsWith("(program)"))),
  TOP,
);

const line = (r: { what: string; ms: number; pctBusy: number; usPerReq?: number }) =>
  `${String(r.ms).padStart(9)} ms ${String(r.pctBusy).padStart(5)}%${r.usPerReq !== undefined ? ` ${String(r.usPerReq).padStart(7)} µs/req` : ""}  ${r.what}`;
progress(`profile ${file}: ${ms(total)} ms sampled, ${ms(busy)} ms busy (${ms(idle)} ms idle)${REQUESTS ? `, ${REQUESTS} requests` : ""}`);
progress("\n-- where the time goes (named costs, then by area; node internals charged to their caller) --");
for (const r of buckets) progress(line(r));
progress("\n-- self time by area --");
for (const r of areas) progress(line(r));
progress(`\n-- top ${TOP} functions by self time --`);
for (const r of topSelf) progress(line(r));
progress(`\n-- top ${TOP} functions by inclusive time (synchronous stacks only) --`);
for (const r of topInclusive) progress(line(r));

const callerTables: Record<string, unknown> = {};
for (const [fn, m] of callers) {
  callerTables[fn] = table(m, 6);
  progress(`\n-- callers of ${fn} (frame and all it calls) --`);
  for (const r of callerTables[fn] as { what: string; ms: number; pctBusy: number; usPerReq?: number }[]) progress(line(r));
}

emit({ profile: file, sampledMs: ms(total), busyMs: ms(busy), idleMs: ms(idle), requests: REQUESTS, buckets, areas, topSelf, topInclusive, callers: callerTables });
