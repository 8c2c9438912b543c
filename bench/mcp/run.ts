/**
 * MCP bridge benchmark: `tools/call echo` through the agentbus MCP bridge
 * (MCP server → durable bus task → echo agent) against the same tool served
 * directly by the official SDK's `McpServer`, over the same transport, with
 * the official SDK `Client` on both sides, same run.
 *
 * Layout: one private nats-server; the bus echo agent in its own process
 * (bench/a2a/agent.ts, reused: `ctx.text`, task concurrency 64); and per
 * transport one server process per system:
 *  - http:  bench/mcp/bridge.ts (fastify + `mcpHttp`, open mode, own bus connection)
 *           vs bench/mcp/sdk-server.ts http (McpServer + StreamableHTTPServerTransport on node:http);
 *  - stdio: `agentbus mcp` (cli/main.ts, spawned by the client's StdioClientTransport)
 *           vs bench/mcp/sdk-server.ts stdio (McpServer + StdioServerTransport).
 * Plus `bus_task`: the bus path alone, `bus.submit("echo", text)` → `result()`
 * from this process, what the bridge does per call, without MCP.
 * This process only runs the clients; every server has its own event loop.
 *
 * Per target: a check (tools/list holds `echo`, one call echoes), a warm-up,
 * then for each in-flight level (1 = sequential, 16 = concurrent, on one MCP
 * session) time-boxed windows in rounds whose target order rotates, so drift
 * on a noisy machine hits every target alike. calls/s, latency p50/p90/p99
 * (ms), CPU µs per call of every process of the target, and for the bus
 * targets NATS messages per call from /connz.
 *
 *   npx tsx bench/mcp/run.ts                                        # ~1 min
 *   BENCH_MS=1500 BENCH_WARMUP_MS=600 npx tsx bench/mcp/run.ts      # quick
 *   BENCH_TARGETS=http BENCH_INFLIGHT=1,16,64 npx tsx bench/mcp/run.ts
 *   BENCH_CPU_PROF=/tmp/prof npx tsx bench/mcp/run.ts               # children run with --cpu-prof
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { busTaskCall } from "./bus-task.js";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { Bus } from "../../core/index.js";
import { monitorJson, startServer, type NatsServer } from "../../nats/index.js";
import { bounded, runBench, cpuMeter, emit, now, progress, ratio, round, stopChild, summarize } from "../lib.js";

const MS = Number(process.env.BENCH_MS ?? 4000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 4);
const WARMUP_MS = Number(process.env.BENCH_WARMUP_MS ?? 1500);
const INFLIGHT = (process.env.BENCH_INFLIGHT ?? "1,16").split(",").map(Number).filter((n) => n >= 1);
const WANT = new Set((process.env.BENCH_TARGETS ?? "http,stdio,bus").split(","));
const PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const TENANT = "bench";
const TEXT = "hello";
const TIMEOUT = 30_000;

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const cliMain = join(root, "cli/main.ts");
const sdkVersion = (JSON.parse(readFileSync(join(root, "node_modules/@modelcontextprotocol/sdk/package.json"), "utf8")) as { version: string }).version;

// --- process layout ---------------------------------------------------------

let server: NatsServer | undefined;
const children = new Map<string, ChildProcess>();
const clients: Client[] = [];
let direct: Bus | undefined;

/** `node [--cpu-prof …] --import tsx <script> …args`: with BENCH_CPU_PROF each child profiles its whole life into `<dir>/<name>/`. */
function nodeArgs(name: string, script: string, args: string[]): string[] {
  const prof = PROF_DIR ? ["--cpu-prof", "--cpu-prof-dir", join(PROF_DIR, name)] : [];
  return [...prof, "--import", "tsx", script, ...args];
}

async function startChild(name: string, script: string, args: string[]): Promise<string> {
  const proc = spawn(process.execPath, nodeArgs(name, script, args), { cwd: root, stdio: ["pipe", "pipe", "inherit"] });
  children.set(name, proc); // stopAll() stops it even if it never becomes ready
  const lines = createInterface({ input: proc.stdout! });
  return new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 30 s`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`${name} exited early (code ${code})`)));
    lines.on("line", (line) => {
      const m = /^READY (\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveReady(m[1]!);
      } else progress(`[${name}] ${line}`);
    });
  });
}

/** Stops what the run started (children, clients, the nats-server). */
async function stopAll(): Promise<void> {
  // Clients first: a stdio client's close ends its server child (stdin closed, then SIGTERM, then SIGKILL).
  await Promise.all([...clients.map((c) => bounded(c.close(), 6000)), bounded(direct?.close(), 6000)]);
  // Then the bridges and SDK servers, then the agent, then nats-server.
  await Promise.all([...children].filter(([n]) => n !== "agent").map(([, p]) => bounded(stopChild(p), 6000)));
  const agent = children.get("agent");
  await bounded(agent && stopChild(agent), 6000);
  await server?.cleanup().catch(() => {});
}

// --- targets ------------------------------------------------------------------

type Transport = "http" | "stdio" | "bus";
type System = "agentbus" | "sdk";

interface Target {
  key: string;
  transport: Transport;
  system: System;
  call: () => Promise<void>;
  /** The processes doing the target's work, for CPU accounting ("self" = this process, the client). */
  meter: ReturnType<typeof cpuMeter<string>>;
  /** Bus targets: count NATS messages per call. */
  nats: boolean;
}

/** One `tools/call echo {text}` whose result must be the text. */
const mcpCall = (client: Client) => async (): Promise<void> => {
  const r = await client.callTool({ name: "echo", arguments: { text: TEXT } }, undefined, { timeout: TIMEOUT });
  const content = r.content as { type: string; text?: string }[];
  if (r.isError || content.length !== 1 || content[0]!.text !== TEXT) throw new Error(`tools/call echo: unexpected result ${JSON.stringify(r).slice(0, 300)}`);
};

async function mcpClient(key: string, transport: StreamableHTTPClientTransport | StdioClientTransport): Promise<Client> {
  const client = new Client({ name: `bench-${key}`, version: "1.0.0" });
  clients.push(client);
  await client.connect(transport);
  // `agentbus mcp` lists what its registry knows: wait until the echo agent is discovered.
  const deadline = Date.now() + 15_000;
  while (!(await client.listTools()).tools.some((t) => t.name === "echo")) {
    if (Date.now() > deadline) throw new Error(`${key}: no echo tool in tools/list`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const call = mcpCall(client);
  await call();
  progress(`${key}: tools/list holds echo; one call echoed "${TEXT}"`);
  return client;
}

function stdioTransport(name: string, script: string, args: string[]): StdioClientTransport {
  const env = Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  return new StdioClientTransport({ command: process.execPath, args: nodeArgs(name, script, args), cwd: root, env, stderr: "inherit" });
}

async function setup(): Promise<Target[]> {
  server = await startServer();
  progress(`nats-server ${server.version} at ${server.url}`);
  const natsPid = server.pid;
  const agentId = await startChild("agent", join(root, "bench/a2a/agent.ts"), [server.url, TENANT]);
  progress(`echo agent ${agentId} serving`);
  const agentPid = () => children.get("agent")?.pid;
  const targets: Target[] = [];

  if (WANT.has("http")) {
    const [bridgeUrl, sdkUrl] = await Promise.all([
      startChild("bridge", join(here, "bridge.ts"), [server.url, TENANT]),
      startChild("sdk-http", join(here, "sdk-server.ts"), ["http"]),
    ]);
    progress(`MCP bridge at ${bridgeUrl}/mcp, SDK server at ${sdkUrl}/mcp`);
    const bridgeClient = await mcpClient("http.agentbus", new StreamableHTTPClientTransport(new URL(`${bridgeUrl}/mcp`)));
    const sdkClient = await mcpClient("http.sdk", new StreamableHTTPClientTransport(new URL(`${sdkUrl}/mcp`)));
    const bridgePid = () => children.get("bridge")?.pid;
    const sdkPid = () => children.get("sdk-http")?.pid;
    targets.push(
      { key: "http.agentbus", transport: "http", system: "agentbus", call: mcpCall(bridgeClient), nats: true, meter: cpuMeter(() => ({ client: "self", bridge: bridgePid(), agent: agentPid(), natsServer: natsPid })) },
      { key: "http.sdk", transport: "http", system: "sdk", call: mcpCall(sdkClient), nats: false, meter: cpuMeter(() => ({ client: "self", server: sdkPid() })) },
    );
  }

  if (WANT.has("stdio")) {
    const cli = stdioTransport("cli", cliMain, ["mcp", "--nats", server.url, "--tenant", TENANT]);
    const sdk = stdioTransport("sdk-stdio", join(here, "sdk-server.ts"), ["stdio"]);
    const cliClient = await mcpClient("stdio.agentbus", cli);
    const sdkClient = await mcpClient("stdio.sdk", sdk);
    progress(`agentbus mcp pid ${cli.pid}, SDK stdio server pid ${sdk.pid}`);
    const cliPid = cli.pid ?? undefined;
    const sdkPid = sdk.pid ?? undefined;
    targets.push(
      { key: "stdio.agentbus", transport: "stdio", system: "agentbus", call: mcpCall(cliClient), nats: true, meter: cpuMeter(() => ({ client: "self", bridge: cliPid, agent: agentPid(), natsServer: natsPid })) },
      { key: "stdio.sdk", transport: "stdio", system: "sdk", call: mcpCall(sdkClient), nats: false, meter: cpuMeter(() => ({ client: "self", server: sdkPid })) },
    );
  }

  if (WANT.has("bus")) {
    const { bus, call } = await busTaskCall(server.url, TENANT, TEXT, TIMEOUT);
    direct = bus;
    targets.push({ key: "bus_task", transport: "bus", system: "agentbus", call, nats: true, meter: cpuMeter(() => ({ client: "self", agent: agentPid(), natsServer: natsPid })) });
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

/** Runs `inflight` loops of `call` until `ms` have passed; latency samples (ms) go to `samples`. */
async function window(t: Target, inflight: number, ms: number, samples?: number[]): Promise<{ calls: number; elapsed: number }> {
  let calls = 0;
  const start = now();
  const deadline = start + ms;
  const loop = async (): Promise<void> => {
    while (now() < deadline) {
      const t0 = now();
      await t.call();
      samples?.push(now() - t0);
      calls++;
    }
  };
  await Promise.all(Array.from({ length: inflight }, loop));
  return { calls, elapsed: now() - start };
}

interface Acc {
  samples: number[];
  calls: number;
  elapsed: number;
  /** calls/s of each round's window: how much the machine's noise moved it. */
  perRound: number[];
  cpu: Record<string, number>;
  nats: Record<string, { in: number; out: number }>;
}

async function measure(targets: Target[]): Promise<Map<string, Map<number, Acc>>> {
  const acc = new Map<string, Map<number, Acc>>(targets.map((t) => [t.key, new Map(INFLIGHT.map((n) => [n, { samples: [], calls: 0, elapsed: 0, perRound: [], cpu: t.meter.zero(), nats: {} }]))]));
  const slice = MS / ROUNDS;
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate the order each round so no target always runs first or last.
    const order = targets.map((_, i) => targets[(i + r) % targets.length]!);
    for (const n of INFLIGHT) {
      for (const t of order) {
        const a = acc.get(t.key)!.get(n)!;
        const n0 = t.nats ? await connz() : {};
        const c0 = t.meter.sample();
        const w = await window(t, n, slice, a.samples);
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
        a.elapsed += w.elapsed;
        a.perRound.push(round((w.calls * 1000) / w.elapsed, 1));
      }
    }
    progress(`round ${r + 1}/${ROUNDS} done (load ${loadavg().map((x) => x.toFixed(2)).join(" ")})`);
  }
  return acc;
}

function report(t: Target, a: Acc): Record<string, unknown> {
  const lat = summarize(a.samples);
  // Per connection: client→server messages ("pub") and server→client ("deliver"), only those that moved.
  const natsMsgsPerCall: Record<string, { pub: number; deliver: number }> = {};
  for (const [name, d] of Object.entries(a.nats)) {
    if (d.in + d.out < a.calls / 10) continue;
    natsMsgsPerCall[name.replace(/^bench-(a2a|mcp)-/, "")] = { pub: round(d.in / a.calls, 2), deliver: round(d.out / a.calls, 2) };
  }
  return {
    calls: a.calls,
    callsPerSec: round((a.calls * 1000) / a.elapsed, 1),
    callsPerSecByRound: a.perRound,
    p50: lat.p50,
    p90: lat.p90,
    p99: lat.p99,
    mean: lat.mean,
    max: lat.max,
    cpuUsPerCall: t.meter.per(a.cpu, a.calls),
    ...(t.nats ? { natsMsgsPerCall } : {}),
  };
}

// --- main ---------------------------------------------------------------------

async function main(): Promise<void> {
  if (INFLIGHT.length === 0) throw new Error("BENCH_INFLIGHT names no level");
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  const loadBefore = loadavg();
  progress(`per target and in-flight level: ${MS} ms in ${ROUNDS} rounds; warm-up ${WARMUP_MS} ms; in flight ${INFLIGHT.join(",")}; targets ${[...WANT].join(",")}; load ${loadBefore.map((x) => x.toFixed(2)).join(" ")}`);
  const targets = await setup();
  if (targets.length === 0) throw new Error("BENCH_TARGETS names no known target (http, stdio, bus)");

  // Warm-up: half sequential, half at the highest in-flight level.
  const top = Math.max(...INFLIGHT);
  for (const t of targets) {
    const s = await window(t, 1, WARMUP_MS / 2);
    const c = await window(t, top, WARMUP_MS / 2);
    progress(`${t.key}: warm-up ${s.calls} sequential + ${c.calls} at ${top} in flight`);
  }

  const acc = await measure(targets);
  const results: Record<string, Record<string, Record<string, unknown>>> = {};
  for (const t of targets) {
    const out: Record<string, Record<string, unknown>> = {};
    for (const n of INFLIGHT) {
      out[`c${n}`] = report(t, acc.get(t.key)!.get(n)!);
      const o = out[`c${n}`] as { callsPerSec: number; p50: number; p99: number; cpuUsPerCall: { total: number } };
      progress(`${t.key} c${n}: ${o.callsPerSec} calls/s, p50 ${o.p50} ms, p99 ${o.p99} ms, ${o.cpuUsPerCall.total} CPU µs/call`);
    }
    if (t.transport === "bus") results.bus_task = out;
    else (results[t.transport] ??= {})[t.system] = out;
  }

  // agentbus ÷ sdk, per transport and in-flight level.
  const ratios: Record<string, Record<string, number>> = {};
  for (const tr of ["http", "stdio"] as const) {
    const r = results[tr];
    if (!r?.agentbus || !r.sdk) continue;
    const out: Record<string, number> = {};
    for (const n of INFLIGHT) {
      const a = r.agentbus[`c${n}`] as { callsPerSec: number; p50: number; p99: number; cpuUsPerCall: { total: number } };
      const s = r.sdk[`c${n}`] as typeof a;
      out[`c${n}_throughput_ratio`] = ratio(a.callsPerSec, s.callsPerSec);
      out[`c${n}_p50_ratio`] = ratio(a.p50, s.p50);
      out[`c${n}_p99_ratio`] = ratio(a.p99, s.p99);
      out[`c${n}_cpu_per_call_ratio`] = ratio(a.cpuUsPerCall.total, s.cpuUsPerCall.total);
    }
    ratios[tr] = out;
  }

  emit({
    bench: "mcp",
    node: process.version,
    server: server?.version,
    mcpSdk: sdkVersion,
    text: TEXT,
    msPerLevel: MS,
    rounds: ROUNDS,
    warmupMs: WARMUP_MS,
    inflight: INFLIGHT,
    loadavg: { before: loadBefore.map((x) => round(x, 2)), after: loadavg().map((x) => round(x, 2)) },
    ...results,
    ratios,
    ...(PROF_DIR ? { profiles: PROF_DIR } : {}),
  });
}

await runBench(main, stopAll);
