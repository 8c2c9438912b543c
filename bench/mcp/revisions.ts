/**
 * MCP bridge benchmark per protocol revision: `tools/call echo` through the
 * agentbus bridge's `/mcp` (MCP → durable bus task → echo agent) against the
 * same tool served by the official SDK v2's own server, on the same
 * transport (Streamable HTTP), for 2026-07-28 and for 2025-11-25, with the
 * same load generator on every target: the SDK v2 `Client`
 * (`@modelcontextprotocol/client`), pinned to 2026-07-28
 * (`versionNegotiation: { mode: { pin } }`) or in its `legacy` mode (the 2025
 * `initialize` handshake), so the client's cost is the same on both sides.
 *
 * Layout: one private nats-server; the bus echo agent in its own process
 * (bench/a2a/agent.ts: `ctx.text`, task concurrency 64); the bridge
 * (bench/mcp/bridge.ts: fastify + `mcpHttp`, open mode, its own bus
 * connection), which answers a request carrying the 2026-07-28 `_meta`
 * envelope statelessly (SDK v2 `createMcpHandler`) and a 2025-11-25 one on
 * a v1 SDK session; the SDK v2 server (bench/mcp/sdk2-server.ts), which
 * serves both on one endpoint the same way (`isLegacyRequest` in front of
 * `createMcpHandler(factory, { legacy: "reject" })`, 2025 on a sessionful
 * `NodeStreamableHTTPServerTransport`; BENCH_SDK_LEGACY=stateless: the
 * handler's own stateless 2025 fallback instead). Plus `bus_task`: the bus
 * path alone, `bus.submit("echo", text)` → `result()` from this process,
 * what the bridge does per call without MCP. This process only runs the
 * clients; every server has its own event loop.
 *
 * Per target: a check (tools/list holds `echo`, one call echoes, the
 * negotiated revision is the one asked for), a warm-up at the highest
 * concurrency, then time-boxed windows of C calls in flight (one client)
 * in rounds whose target order rotates, so drift on a noisy machine hits
 * every target alike. Every answer is checked (one text block, the echoed
 * text); a failed or wrong answer counts as an error, not as a call.
 * calls/s, latency p50/p90/p99 (ms), CPU µs per call of every process of
 * the target, NATS messages per call for the bus targets, and per revision
 * the ratios bridge ÷ SDK.
 *
 *   npx tsx bench/mcp/revisions.ts                                   # ~75 s
 *   BENCH_MS=3000 BENCH_WARMUP_MS=1000 npx tsx bench/mcp/revisions.ts # quick
 *   BENCH_CONCURRENCY=1,16 BENCH_REVISIONS=2026-07-28 npx tsx bench/mcp/revisions.ts
 *   BENCH_CPU_PROF=/tmp/prof BENCH_CPU_PROF_TARGETS=bridge,sdk npx tsx bench/mcp/revisions.ts
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { busTaskCall } from "./bus-task.js";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync, renameSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { setMaxListeners } from "node:events";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import type { Bus } from "../../core/index.js";
import { monitorJson, startServer, type NatsServer } from "../../nats/index.js";
import { bounded, runBench, cpuMeter, emit, now, progress, ratio, round, stopChild, summarize } from "../lib.js";

const MS = Number(process.env.BENCH_MS ?? 10_000);
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 3_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? "16").split(",").map(Number).filter((n) => Number.isInteger(n) && n >= 1);
const REVISIONS = (process.env.BENCH_REVISIONS ?? "2026-07-28,2025-11-25").split(",").filter(Boolean) as Revision[];
const WANT_BUS = process.env.BENCH_BUS_TASK !== "0";
const SDK_LEGACY = (process.env.BENCH_SDK_LEGACY ?? "sessionful") as "sessionful" | "stateless";
const PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const PROF_TARGETS = (process.env.BENCH_CPU_PROF_TARGETS ?? "bridge").split(",");
const PROF_MS = Number(process.env.BENCH_CPU_PROF_MS ?? 5_000);
const TENANT = "bench";
const TEXT = "hello";
const TIMEOUT = 30_000;

type Revision = "2026-07-28" | "2025-11-25";
type System = "agentbus" | "sdk";
type Child = "agent" | "bridge" | "sdk";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const versionOf = (pkg: string): string => (JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;

// --- process layout ---------------------------------------------------------

let server: NatsServer | undefined;
const children = new Map<Child, ChildProcess>();
/** Resolvers waiting for a child's next `PROFILED <path>` line. */
const profiled = new Map<Child, (path: string) => void>();
const clients: Client[] = [];
let direct: Bus | undefined;

async function startChild(name: Child, script: string, args: string[]): Promise<string> {
  const env = { ...process.env };
  delete env.BENCH_A2A_PROF_DIR;
  if (PROF_DIR && PROF_TARGETS.includes(name)) env.BENCH_A2A_PROF_DIR = PROF_DIR;
  const proc = spawn(process.execPath, ["--import", "tsx", script, ...args], { cwd: root, env, stdio: ["pipe", "pipe", "inherit"] });
  children.set(name, proc); // stopAll() stops it even if it never becomes ready
  const lines = createInterface({ input: proc.stdout! });
  return new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 30 s`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`${name} exited early (code ${code})`)));
    lines.on("line", (line) => {
      const ready = /^READY (\S+)$/.exec(line);
      const prof = /^PROFILED (\S+)$/.exec(line);
      if (ready) {
        clearTimeout(timer);
        resolveReady(ready[1]!);
      } else if (prof) {
        profiled.get(name)?.(prof[1]!);
        profiled.delete(name);
      } else progress(`[${name}] ${line}`);
    });
  });
}

/** Stops what the run started: clients, then the servers, then the agent, then nats-server. */
async function stopAll(): Promise<void> {
  await Promise.all([...clients.map((c) => bounded(c.close(), 6000)), bounded(direct?.close(), 6000)]);
  await Promise.all([...children].filter(([n]) => n !== "agent").map(([, p]) => bounded(stopChild(p), 6000)));
  const agent = children.get("agent");
  await bounded(agent && stopChild(agent), 6000);
  await server?.cleanup().catch(() => {});
}

// --- targets ------------------------------------------------------------------

interface Target {
  key: string;
  revision?: Revision;
  system: System | "bus";
  /** One call; resolves when its answer was checked, rejects on an error or a wrong answer. */
  call: () => Promise<void>;
  /** The processes doing the target's work, for CPU accounting ("self" = this process, the client). */
  meter: ReturnType<typeof cpuMeter<string>>;
  /** The children serving it (for profiles). */
  children: Child[];
  /** Bus targets: count NATS messages per call. */
  nats: boolean;
  /** Extra facts for the JSON (negotiated revision, session). */
  info?: Record<string, unknown>;
}

/** One `tools/call echo {text}` whose result must be exactly one text block holding the text. */
const mcpCall = (client: Client) => async (): Promise<void> => {
  const r = await client.callTool({ name: "echo", arguments: { text: TEXT } }, { timeout: TIMEOUT });
  const content = r.content as { type: string; text?: string }[];
  if (r.isError || content.length !== 1 || content[0]!.type !== "text" || content[0]!.text !== TEXT) throw new Error(`tools/call echo: unexpected result ${JSON.stringify(r).slice(0, 300)}`);
};

/**
 * fetch, with no listener limit on the request's signal: the SDK client
 * passes its transport's long-lived AbortSignal to every POST, and undici
 * adds one abort listener per request that goes only when the request is
 * garbage-collected, so at 16 in flight more than undici's limit of 1 500
 * pile up and Node prints a MaxListenersExceededWarning (with a stack) per
 * request until the next GC. The same for every target.
 */
const quietFetch = (input: string | URL, init?: RequestInit): Promise<Response> => {
  if (init?.signal) setMaxListeners(0, init.signal);
  return fetch(input, init);
};

/** An SDK v2 client of `url` at `revision`, checked: the revision negotiated, `echo` listed, one call echoed. */
async function mcpClient(key: string, url: string, revision: Revision): Promise<{ client: Client; info: Record<string, unknown> }> {
  const client = new Client({ name: `bench-${key}`, version: "1.0.0" }, { versionNegotiation: { mode: revision === "2026-07-28" ? { pin: revision } : "legacy" } });
  clients.push(client);
  const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { fetch: quietFetch });
  await client.connect(transport);
  const negotiated = client.getNegotiatedProtocolVersion();
  if (negotiated !== revision) throw new Error(`${key}: negotiated ${negotiated}, not ${revision}`);
  const deadline = Date.now() + 15_000;
  while (!(await client.listTools()).tools.some((t) => t.name === "echo")) {
    if (Date.now() > deadline) throw new Error(`${key}: no echo tool in tools/list`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await mcpCall(client)();
  const info = { negotiated, server: client.getServerVersion()?.name, session: transport.sessionId !== undefined };
  progress(`${key}: negotiated ${negotiated} with ${info.server}${info.session ? ", session" : ", no session"}; tools/list holds echo; one call echoed "${TEXT}"`);
  return { client, info };
}

async function setup(): Promise<Target[]> {
  server = await startServer();
  progress(`nats-server ${server.version} at ${server.url}`);
  const natsPid = server.pid;
  const agentId = await startChild("agent", join(root, "bench/a2a/agent.ts"), [server.url, TENANT]);
  progress(`echo agent ${agentId} serving`);
  const pid = (c: Child) => () => children.get(c)?.pid;
  const [bridgeUrl, sdkUrl] = await Promise.all([startChild("bridge", join(here, "bridge.ts"), [server.url, TENANT]), startChild("sdk", join(here, "sdk2-server.ts"), [SDK_LEGACY])]);
  progress(`MCP bridge at ${bridgeUrl}/mcp, SDK v2 server (${SDK_LEGACY} 2025) at ${sdkUrl}/mcp`);
  const targets: Target[] = [];
  for (const revision of REVISIONS) {
    if (revision !== "2026-07-28" && revision !== "2025-11-25") throw new Error(`BENCH_REVISIONS: unknown revision ${revision}`);
    const bridge = await mcpClient(`${revision}.agentbus`, bridgeUrl, revision);
    const sdk = await mcpClient(`${revision}.sdk`, sdkUrl, revision);
    targets.push(
      {
        key: `${revision}.agentbus`,
        revision,
        system: "agentbus",
        call: mcpCall(bridge.client),
        children: ["bridge", "agent"],
        nats: true,
        info: bridge.info,
        meter: cpuMeter(() => ({ client: "self", bridge: pid("bridge")(), agent: pid("agent")(), natsServer: natsPid })),
      },
      { key: `${revision}.sdk`, revision, system: "sdk", call: mcpCall(sdk.client), children: ["sdk"], nats: false, info: sdk.info, meter: cpuMeter(() => ({ client: "self", server: pid("sdk")() })) },
    );
  }
  if (WANT_BUS) {
    const { bus, call } = await busTaskCall(server.url, TENANT, TEXT, TIMEOUT);
    direct = bus;
    targets.push({ key: "bus_task", system: "bus", call, children: ["agent"], nats: true, meter: cpuMeter(() => ({ client: "self", agent: pid("agent")(), natsServer: natsPid })) });
  }
  return targets;
}

// --- measurement ----------------------------------------------------------------

/** NATS messages in/out per client connection (by name), from nats-server's /connz. */
async function connz(): Promise<Record<string, { in: number; out: number }>> {
  const c = await monitorJson<{ connections: { name?: string; in_msgs: number; out_msgs: number }[] }>(server!.monitorUrl, "/connz?limit=1024");
  const out: Record<string, { in: number; out: number }> = {};
  for (const x of c.connections) {
    const k = x.name ?? "?";
    out[k] = { in: (out[k]?.in ?? 0) + x.in_msgs, out: (out[k]?.out ?? 0) + x.out_msgs };
  }
  return out;
}

interface Window {
  calls: number;
  errors: number;
  elapsed: number;
}

/** Runs `inflight` loops of `call` until `ms` have passed; latency samples (ms) of answered calls go to `samples`, the first error messages to `errorSamples`. */
async function window(t: Target, inflight: number, ms: number, samples?: number[], errorSamples?: string[]): Promise<Window> {
  let calls = 0;
  let errors = 0;
  const start = now();
  const deadline = start + ms;
  const loop = async (): Promise<void> => {
    while (now() < deadline) {
      const t0 = now();
      try {
        await t.call();
      } catch (err) {
        errors++;
        if (errorSamples && errorSamples.length < 5) errorSamples.push(String((err as Error)?.message ?? err).slice(0, 300));
        continue;
      }
      samples?.push(now() - t0);
      calls++;
    }
  };
  await Promise.all(Array.from({ length: inflight }, loop));
  return { calls, errors, elapsed: now() - start };
}

interface Acc {
  samples: number[];
  calls: number;
  errors: number;
  errorSamples: string[];
  elapsed: number;
  /** calls/s of each round's window: how much the machine's noise moved it. */
  perRound: number[];
  cpu: Record<string, number>;
  nats: Record<string, { in: number; out: number }>;
}

async function measure(targets: Target[]): Promise<Map<string, Map<number, Acc>>> {
  const acc = new Map<string, Map<number, Acc>>(
    targets.map((t) => [t.key, new Map(CONCURRENCY.map((n) => [n, { samples: [], calls: 0, errors: 0, errorSamples: [], elapsed: 0, perRound: [], cpu: t.meter.zero(), nats: {} }]))]),
  );
  const slice = MS / ROUNDS;
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate the order each round so no target always runs first or last.
    const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
    for (const n of CONCURRENCY) {
      for (const t of order) {
        const a = acc.get(t.key)!.get(n)!;
        const n0 = t.nats ? await connz() : {};
        const c0 = t.meter.sample();
        const w = await window(t, n, slice, a.samples, a.errorSamples);
        t.meter.add(a.cpu, c0, t.meter.sample());
        if (t.nats) {
          const n1 = await connz();
          for (const [name, b] of Object.entries(n1)) {
            const before = n0[name] ?? { in: 0, out: 0 };
            const sum = (a.nats[name] ??= { in: 0, out: 0 });
            sum.in += b.in - before.in;
            sum.out += b.out - before.out;
          }
        }
        a.calls += w.calls;
        a.errors += w.errors;
        a.elapsed += w.elapsed;
        a.perRound.push(round((w.calls * 1000) / w.elapsed, 1));
      }
    }
    progress(`round ${r + 1}/${ROUNDS} done (load ${loadavg().map((x) => x.toFixed(2)).join(" ")})`);
  }
  return acc;
}

interface Row {
  calls: number;
  errors: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  cpuUsPerCall: Record<string, number> & { total: number };
}

function report(t: Target, a: Acc): Row & Record<string, unknown> {
  const lat = summarize(a.samples);
  const natsMsgsPerCall: Record<string, { pub: number; deliver: number }> = {};
  for (const [name, d] of Object.entries(a.nats)) {
    if (d.in + d.out < a.calls / 10) continue;
    natsMsgsPerCall[name.replace(/^bench-(a2a|mcp)-/, "")] = { pub: round(d.in / a.calls, 2), deliver: round(d.out / a.calls, 2) };
  }
  return {
    calls: a.calls,
    errors: a.errors,
    ...(a.errorSamples.length > 0 && { errorSamples: a.errorSamples }),
    callsPerSec: round((a.calls * 1000) / a.elapsed, 1),
    callsPerSecByRound: a.perRound,
    p50: lat.p50,
    p90: lat.p90,
    p99: lat.p99,
    mean: lat.mean,
    max: lat.max,
    cpuUsPerCall: t.meter.per(a.cpu, a.calls),
    ...(t.nats && { natsMsgsPerCall }),
  };
}

/** With BENCH_CPU_PROF: one extra window per target at the top concurrency with its profiled children's sampling profiler on (not part of the measured numbers). */
async function profile(targets: Target[], inflight: number): Promise<Record<string, Record<string, { path: string; calls: number }>>> {
  const out: Record<string, Record<string, { path: string; calls: number }>> = {};
  for (const t of targets) {
    const names = t.children.filter((c) => PROF_TARGETS.includes(c) && children.has(c));
    if (names.length === 0) continue;
    for (const c of names) children.get(c)!.kill("SIGUSR2");
    await new Promise((r) => setTimeout(r, 200)); // the profilers start
    const w = await window(t, inflight, PROF_MS);
    const paths = await Promise.all(
      names.map(
        (c) =>
          new Promise<string>((res, rej) => {
            const timer = setTimeout(() => rej(new Error(`${c}: no profile in 30 s`)), 30_000);
            profiled.set(c, (p) => {
              clearTimeout(timer);
              res(p);
            });
            children.get(c)!.kill("SIGUSR2");
          }),
      ),
    );
    // bench/a2a/prof.ts names a profile by process: one file per target and child instead.
    const kept = names.map((c, i) => {
      const path = join(PROF_DIR!, `${t.key}.${c}.cpuprofile`);
      renameSync(paths[i]!, path);
      return path;
    });
    out[t.key] = Object.fromEntries(names.map((c, i) => [c, { path: kept[i]!, calls: w.calls }]));
    progress(`${t.key}: profiled ${names.join(", ")} over ${w.calls} calls: ${kept.join(" ")}`);
  }
  return out;
}

// --- main ---------------------------------------------------------------------

async function main(): Promise<void> {
  if (CONCURRENCY.length === 0) throw new Error("BENCH_CONCURRENCY names no level");
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  const loadBefore = loadavg();
  progress(
    `per target and concurrency: ${MS} ms in ${ROUNDS} rounds; warm-up ${WARMUP_MS} ms; concurrency ${CONCURRENCY.join(",")}; revisions ${REVISIONS.join(",")}; SDK 2025 ${SDK_LEGACY}; load ${loadBefore.map((x) => x.toFixed(2)).join(" ")}`,
  );
  const targets = await setup();
  const top = Math.max(...CONCURRENCY);
  for (const t of targets) {
    const w = await window(t, top, WARMUP_MS);
    progress(`${t.key}: warm-up ${w.calls} calls at ${top} in flight, ${w.errors} errors`);
  }

  const acc = await measure(targets);
  const results: Record<string, Record<string, Record<string, Row>>> = {};
  const busTask: Record<string, Row> = {};
  for (const t of targets) {
    const out: Record<string, Row> = {};
    for (const n of CONCURRENCY) {
      const o = (out[`c${n}`] = report(t, acc.get(t.key)!.get(n)!));
      progress(`${t.key} c${n}: ${o.callsPerSec} calls/s, p50 ${o.p50} ms, p99 ${o.p99} ms, ${o.cpuUsPerCall.total} CPU µs/call, ${o.errors} errors`);
    }
    if (t.system === "bus") Object.assign(busTask, out);
    else (results[t.revision!] ??= {})[t.system] = out;
  }

  // bridge ÷ SDK per revision and concurrency; and where the bridge's time goes, against bus_task.
  const ratios: Record<string, Record<string, number>> = {};
  const breakdown: Record<string, Record<string, Record<string, number>>> = {};
  for (const rev of REVISIONS) {
    const r = results[rev];
    if (!r?.agentbus || !r.sdk) continue;
    const out: Record<string, number> = {};
    for (const n of CONCURRENCY) {
      const a = r.agentbus[`c${n}`]!;
      const s = r.sdk[`c${n}`]!;
      out[`c${n}_throughput_ratio`] = ratio(a.callsPerSec, s.callsPerSec);
      out[`c${n}_p50_ratio`] = ratio(a.p50, s.p50);
      out[`c${n}_p99_ratio`] = ratio(a.p99, s.p99);
      out[`c${n}_cpu_per_call_ratio`] = ratio(a.cpuUsPerCall.total, s.cpuUsPerCall.total);
      // Without the client (the same SDK v2 client on both sides): what serves a call.
      out[`c${n}_server_cpu_per_call_ratio`] = ratio(a.cpuUsPerCall.total - a.cpuUsPerCall.client!, s.cpuUsPerCall.total - s.cpuUsPerCall.client!);
      const b = busTask[`c${n}`];
      if (b) {
        // The bridge process does MCP (HTTP, SDK, fastify) plus what bus_task's caller does (submit, follow the task). The difference
        // bounds its MCP layer from above: at the bridge's lower call rate its bus client coalesces fewer writes than bus_task's caller
        // (a CPU profile splits the two: BENCH_CPU_PROF).
        (breakdown[rev] ??= {})[`c${n}`] = {
          bridgeCpuUs: a.cpuUsPerCall.bridge!,
          busCallerCpuUs: b.cpuUsPerCall.client!,
          bridgeOverBusCallerCpuUs: round(a.cpuUsPerCall.bridge! - b.cpuUsPerCall.client!, 1),
          sdkServerCpuUs: s.cpuUsPerCall.server!,
          agentAndNatsCpuUs: round(a.cpuUsPerCall.agent! + a.cpuUsPerCall.natsServer!, 1),
          busTaskAgentAndNatsCpuUs: round(b.cpuUsPerCall.agent! + b.cpuUsPerCall.natsServer!, 1),
          p50Ms: a.p50,
          busTaskP50Ms: b.p50,
          sdkP50Ms: s.p50,
        };
      }
    }
    ratios[rev] = out;
  }

  const profiles = PROF_DIR ? await profile(targets, top) : undefined;

  emit({
    bench: "mcp-revisions",
    node: process.version,
    server: server?.version,
    packages: {
      "@modelcontextprotocol/server": versionOf("@modelcontextprotocol/server"),
      "@modelcontextprotocol/client": versionOf("@modelcontextprotocol/client"),
      "@modelcontextprotocol/node": versionOf("@modelcontextprotocol/node"),
      "@modelcontextprotocol/sdk": versionOf("@modelcontextprotocol/sdk"),
      fastify: versionOf("fastify"),
    },
    sdkLegacy: SDK_LEGACY,
    text: TEXT,
    ms: MS,
    rounds: ROUNDS,
    warmupMs: WARMUP_MS,
    concurrency: CONCURRENCY,
    loadavg: { before: loadBefore.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
    clients: Object.fromEntries(targets.filter((t) => t.info).map((t) => [t.key, t.info])),
    ...results,
    ...(WANT_BUS && { bus_task: busTask }),
    ratios,
    ...(WANT_BUS && { breakdown }),
    ...(profiles && { profiles }),
  });
}

await runBench(main, stopAll);
