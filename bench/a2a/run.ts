/**
 * A2A server benchmark: the agentbus A2A bridge (fastify + a2aBridge → bus
 * task → echo agent) against the @a2a-js/sdk's own express server with an
 * echo executor, same requests, same load generator, same run.
 *
 * Layout: one private nats-server; three child processes started as
 * `node --import tsx`:
 *  - bench/a2a/agent.ts:      the bus echo agent (`ctx.text`, task concurrency 64);
 *  - bench/a2a/bridge.ts:     fastify + a2aBridge (open mode, no push) on its own bus
 *                             connection, JSON-RPC at `<url>/a2a/echo`;
 *  - bench/a2a/sdk-server.ts: express + DefaultRequestHandler + InMemoryTaskStore +
 *                             an SDK echo executor, JSON-RPC at `<url>/a2a/jsonrpc`.
 * This process only generates load (autocannon, in-process, no workers).
 *
 * Per system:
 *  - check: one blocking SendMessage must return a COMPLETED task with the
 *    echoed text as its artifact; the same messageId is sent twice to see
 *    whether a repeated id is accepted (the load uses unique ids anyway);
 *  - load: autocannon, CONNECTIONS connections, a WARMUP_S warm-up run, then
 *    a DURATION_S measured run of blocking `SendMessage` (A2A-Version: 1.0,
 *    a fresh messageId per request). req/s, latency p50/p99 (ms, from
 *    autocannon's per-response hrtime, unrounded), non-2xx, errors, body
 *    mismatches (a 2xx body without `TASK_STATE_COMPLETED`), and CPU µs per
 *    request of every process of the system (from /proc) and of the load
 *    generator;
 *  - ttfe: TTFE_N sequential `SendStreamingMessage` requests on one
 *    keep-alive connection: ms from writing the request to the first SSE
 *    `data:` line; each stream is read to its end and must end COMPLETED.
 *
 *   npx tsx bench/a2a/run.ts
 *   BENCH_DURATION_S=5 BENCH_WARMUP_S=2 BENCH_TTFE_N=100 npx tsx bench/a2a/run.ts   # quick
 *   BENCH_ORDER=sdk_express,agentbus npx tsx bench/a2a/run.ts                        # other order
 *   BENCH_CPU_PROF=/tmp/prof npx tsx bench/a2a/run.ts      # the bridge profiles the measured run
 *   BENCH_CPU_PROF=/tmp/prof BENCH_CPU_PROF_TARGETS=bridge,agent,sdk npx tsx bench/a2a/run.ts
 *   npx tsx bench/a2a/profile.ts /tmp/prof/bridge-<pid>.cpuprofile 40 <requests>   # top self time
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { mkdirSync } from "node:fs";
import { Agent, request as httpRequest } from "node:http";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import autocannon from "autocannon";
import { monitorJson, startServer, type NatsServer } from "../../nats/index.js";
import { bounded, runBench, procCpuUs, emit, now, progress, ratio, round, summarize, stopChild } from "../lib.js";

const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
const TTFE_N = Number(process.env.BENCH_TTFE_N ?? 200);
const TENANT = "bench";
const TEXT = "hello";
const A2A_VERSION = "1.0";

const SYSTEMS_ALL = ["agentbus", "sdk_express"] as const;
type System = (typeof SYSTEMS_ALL)[number];
const ORDER = (process.env.BENCH_ORDER ?? SYSTEMS_ALL.join(",")).split(",").filter((s): s is System => (SYSTEMS_ALL as readonly string[]).includes(s));
/** With BENCH_CPU_PROF=<dir>, these children profile the measured load run (default: the bridge). */
const PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const PROF_TARGETS = (process.env.BENCH_CPU_PROF_TARGETS ?? "bridge").split(",");

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");

// --- process layout ------------------------------------------------------------

type ChildName = "agent" | "bridge" | "sdk";
let server: NatsServer | undefined;
const children: Partial<Record<ChildName, ChildProcess>> = {};

const profiled = new EventEmitter();

async function startChild(name: ChildName, script: string, args: string[]): Promise<{ proc: ChildProcess; ready: string }> {
  const env = { ...process.env };
  delete env.BENCH_A2A_PROF_DIR;
  if (PROF_DIR && PROF_TARGETS.includes(name)) env.BENCH_A2A_PROF_DIR = PROF_DIR;
  const proc = spawn(process.execPath, ["--import", "tsx", join(here, script), ...args], { cwd: root, env, stdio: ["pipe", "pipe", "inherit"] });
  children[name] = proc; // stopAll() stops it even if it never becomes ready
  const lines = createInterface({ input: proc.stdout! });
  const ready = await new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 30 s`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`${name} exited early (code ${code})`)));
    lines.on("line", (line) => {
      const m = /^READY (\S+)$/.exec(line);
      const p = /^PROFILED (\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveReady(m[1]!);
      } else if (p) profiled.emit(name, p[1]!);
      else progress(`[${name}] ${line}`);
    });
  });
  return { proc, ready };
}

const keepAlive = new Agent({ keepAlive: true, maxSockets: 1 });
let running: { stop(): void } | undefined;

/** Stops what the run started (children, clients, the nats-server). */
async function stopAll(): Promise<void> {
  running?.stop();
  keepAlive.destroy();
  // The bridge first (it holds a bus connection and consumers), then the agent.
  await Promise.all([bounded(children.bridge && stopChild(children.bridge)), bounded(children.sdk && stopChild(children.sdk))]);
  await bounded(children.agent && stopChild(children.agent));
  await server?.cleanup().catch(() => {});
}

// --- requests ---------------------------------------------------------------------

const HEADERS = { "content-type": "application/json", "A2A-Version": A2A_VERSION };
let seq = 0;
const runId = Date.now().toString(36);
/** A unique-ish messageId per request (prefix + counter). */
const nextMessageId = () => `m-${runId}-${++seq}`;
const rpcBody = (method: string, messageId: string, id: number | string = 1): string =>
  JSON.stringify({ jsonrpc: "2.0", id, method, params: { message: { messageId, role: "ROLE_USER", parts: [{ text: TEXT }] } } });

interface Target {
  system: System;
  url: string;
  /** The processes doing the system's work, for CPU accounting. */
  pids: () => Record<string, number | undefined>;
  /** Its child processes, for profiling. */
  children: ChildName[];
}

/** Toggles the profiler of the system's children that are profile targets (see prof.ts). */
function profileToggle(t: Target): ChildName[] {
  if (!PROF_DIR) return [];
  const names = t.children.filter((c) => PROF_TARGETS.includes(c) && children[c]);
  for (const c of names) children[c]!.kill("SIGUSR2");
  return names;
}

/** Stops the profilers and waits for their files. */
async function profileCollect(t: Target): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const names = t.children.filter((c) => PROF_TARGETS.includes(c) && children[c]);
  const files = names.map((c) => once(profiled, c).then(([path]) => (out[c] = path as string)));
  profileToggle(t);
  await Promise.race([Promise.all(files), new Promise((r) => setTimeout(r, 30_000).unref())]);
  return out;
}

async function post(url: string, body: string, accept = "application/json"): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: "POST", headers: { ...HEADERS, accept }, body });
  return { status: res.status, text: await res.text() };
}

interface WireTask {
  id?: string;
  status?: { state?: string };
  artifacts?: { name?: string; parts?: { text?: string }[] }[];
}

/** The task of a JSON-RPC SendMessage response, or why it is not a completed echo. */
function checkTask(where: string, text: string): WireTask {
  const res = JSON.parse(text) as { result?: { task?: WireTask }; error?: unknown };
  if (res.error !== undefined) throw new Error(`${where}: JSON-RPC error ${JSON.stringify(res.error)}`);
  const task = res.result?.task;
  if (!task) throw new Error(`${where}: result is not a task: ${text.slice(0, 300)}`);
  if (task.status?.state !== "TASK_STATE_COMPLETED") throw new Error(`${where}: task ${task.id} is ${task.status?.state}`);
  const echoed = task.artifacts?.flatMap((a) => a.parts ?? []).map((p) => p.text ?? "").join("");
  if (echoed !== TEXT) throw new Error(`${where}: artifact text ${JSON.stringify(echoed)}, expected ${JSON.stringify(TEXT)}`);
  return task;
}

/** Correctness on a sample, and whether a repeated messageId is accepted. */
async function check(t: Target): Promise<Record<string, unknown>> {
  const first = await post(t.url, rpcBody("SendMessage", nextMessageId()));
  if (first.status !== 200) throw new Error(`${t.system}: HTTP ${first.status}: ${first.text.slice(0, 300)}`);
  const task = checkTask(t.system, first.text);
  const fixed = nextMessageId();
  const repeats = await Promise.all([0, 1].map(async () => {
    const r = await post(t.url, rpcBody("SendMessage", fixed));
    try {
      return r.status === 200 && checkTask(t.system, r.text) !== undefined;
    } catch {
      return false;
    }
  }));
  const repeatedOk = repeats.every(Boolean);
  progress(`${t.system}: sample OK (task ${task.id} COMPLETED, artifact "${TEXT}", ${first.text.length} B); repeated messageId ${repeatedOk ? "accepted" : "refused"}`);
  return { ok: true, responseBytes: first.text.length, artifactName: task.artifacts?.[0]?.name, repeatedMessageIdAccepted: repeatedOk };
}

// --- load ---------------------------------------------------------------------------

/** NATS messages in/out per client connection (by name), from nats-server's /connz. */
async function connz(): Promise<Record<string, { in: number; out: number }>> {
  if (!server) return {};
  const c = await monitorJson<{ connections: { name?: string; in_msgs: number; out_msgs: number }[] }>(server.monitorUrl, "/connz?limit=1024");
  const out: Record<string, { in: number; out: number }> = {};
  for (const x of c.connections) {
    const k = x.name ?? "?";
    out[k] = { in: (out[k]?.in ?? 0) + x.in_msgs, out: (out[k]?.out ?? 0) + x.out_msgs };
  }
  return out;
}

function cpuOf(pids: Record<string, number | undefined>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) out[k] = procCpuUs(pid);
  const u = process.cpuUsage();
  out.loadgen = u.user + u.system;
  return out;
}

async function load(t: Target, seconds: number, measure: boolean): Promise<Record<string, unknown>> {
  const latencies: number[] = [];
  if (measure) profileToggle(t);
  const n0 = measure && t.system === "agentbus" ? await connz() : {};
  const c0 = cpuOf(t.pids());
  const t0 = now();
  const instance = autocannon({
    url: t.url,
    connections: CONNECTIONS,
    duration: seconds,
    timeout: 30,
    requests: [
      {
        method: "POST",
        headers: HEADERS,
        setupRequest: (req) => ({ ...req, body: rpcBody("SendMessage", nextMessageId()) }),
      },
    ],
    verifyBody: (body) => body.includes('"TASK_STATE_COMPLETED"'),
  });
  running = instance;
  if (measure) {
    instance.on("response", (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
  }
  const r = await instance;
  running = undefined;
  const elapsedMs = now() - t0;
  const c1 = cpuOf(t.pids());
  const n1 = measure && t.system === "agentbus" ? await connz() : {};
  const profiles = measure ? await profileCollect(t) : {};
  const completed = r.requests.total;
  const rps = round((completed * 1000) / elapsedMs, 1);
  progress(`${t.system}: ${measure ? "measured" : "warm-up"} ${seconds} s: ${rps} req/s, non-2xx ${r.non2xx}, errors ${r.errors}, mismatches ${r.mismatches}`);
  if (!measure) return {};
  const lat = summarize(latencies);
  const cpu: Record<string, number> = {};
  let total = 0;
  for (const k of Object.keys(c1)) {
    const d = c1[k]! - c0[k]!;
    cpu[k] = round(d / completed, 1);
    if (k !== "loadgen") total += d;
  }
  cpu.total = round(total / completed, 1);
  // NATS messages per request of each bus connection (client→server "pub", server→client "deliver").
  const natsMsgsPerReq: Record<string, { pub: number; deliver: number }> = {};
  for (const [name, b] of Object.entries(n1)) {
    const a = n0[name] ?? { in: 0, out: 0 };
    natsMsgsPerReq[name.replace(/^bench-a2a-/, "")] = { pub: round((b.in - a.in) / completed, 2), deliver: round((b.out - a.out) / completed, 2) };
  }
  return {
    requests: completed,
    rps,
    rpsMean: round(r.requests.mean, 1),
    p50: lat.p50,
    p90: lat.p90,
    p99: lat.p99,
    mean: lat.mean,
    max: lat.max,
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    mismatches: r.mismatches,
    statusCodes: Object.fromEntries(Object.entries(r.statusCodeStats).map(([k, v]) => [k, v.count])),
    cpuUsPerReq: cpu,
    ...(t.system === "agentbus" ? { natsMsgsPerReq } : {}),
    ...(PROF_DIR ? { profiles } : {}),
  };
}

// --- streaming time to first event -----------------------------------------------

/** One SendStreamingMessage: ms to the first `data:` line, events seen, the last event. */
function streamOnce(url: string): Promise<{ ttfe: number; total: number; events: number; last: string }> {
  const body = rpcBody("SendStreamingMessage", nextMessageId());
  return new Promise((resolveStream, reject) => {
    const u = new URL(url);
    let t0 = 0;
    let ttfe = -1;
    let buf = "";
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname,
        method: "POST",
        agent: keepAlive,
        headers: { ...HEADERS, accept: "text/event-stream", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new Error(`stream: HTTP ${res.statusCode}`));
          return;
        }
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          if (ttfe < 0 && /(^|\n)data:/.test(buf)) ttfe = now() - t0;
        });
        res.on("end", () => {
          const events = buf.split("\n").filter((l) => l.startsWith("data:"));
          resolveStream({ ttfe, total: now() - t0, events: events.length, last: events[events.length - 1] ?? "" });
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    t0 = now();
    req.end(body);
  });
}

async function ttfe(t: Target): Promise<Record<string, unknown>> {
  for (let i = 0; i < 20; i++) await streamOnce(t.url); // warm the connection and the code paths
  const first: number[] = [];
  const whole: number[] = [];
  let events = 0;
  for (let i = 0; i < TTFE_N; i++) {
    const s = await streamOnce(t.url);
    if (s.ttfe < 0) throw new Error(`${t.system}: stream without a data: line`);
    if (!s.last.includes("TASK_STATE_COMPLETED")) throw new Error(`${t.system}: stream ended without COMPLETED: ${s.last.slice(0, 300)}`);
    first.push(s.ttfe);
    whole.push(s.total);
    events += s.events;
  }
  const f = summarize(first);
  const w = summarize(whole);
  progress(`${t.system}: streaming TTFE p50 ${f.p50} ms p99 ${f.p99} ms; whole stream p50 ${w.p50} ms; ${round(events / TTFE_N, 2)} events/stream`);
  return { n: TTFE_N, p50: f.p50, p99: f.p99, mean: f.mean, streamP50: w.p50, streamP99: w.p99, eventsPerStream: round(events / TTFE_N, 2) };
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (ORDER.length === 0) throw new Error("BENCH_ORDER names no known system (agentbus, sdk_express)");
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  progress(`connections=${CONNECTIONS} duration=${DURATION_S}s warm-up=${WARMUP_S}s ttfe n=${TTFE_N} order=${ORDER.join(",")}`);
  const targets = {} as Record<System, Target>;
  const setups: Promise<unknown>[] = [];
  if (ORDER.includes("agentbus")) {
    setups.push((async () => {
      server = await startServer();
      progress(`nats-server ${server.version} at ${server.url}`);
      const agent = await startChild("agent", "agent.ts", [server.url, TENANT]);
      progress(`echo agent ${agent.ready} serving`);
      const bridge = await startChild("bridge", "bridge.ts", [server.url, TENANT]);
      progress(`A2A bridge at ${bridge.ready}`);
      targets.agentbus = {
        system: "agentbus",
        url: `${bridge.ready}/a2a/echo`,
        pids: () => ({ bridge: children.bridge?.pid, agent: children.agent?.pid, natsServer: server?.pid }),
        children: ["bridge", "agent"],
      };
    })());
  }
  if (ORDER.includes("sdk_express")) {
    setups.push((async () => {
      const sdk = await startChild("sdk", "sdk-server.ts", []);
      progress(`SDK express server at ${sdk.ready}`);
      targets.sdk_express = { system: "sdk_express", url: `${sdk.ready}/a2a/jsonrpc`, pids: () => ({ express: children.sdk?.pid }), children: ["sdk"] };
    })());
  }
  await Promise.all(setups);

  const result = {} as Record<System, Record<string, unknown>>;
  for (const s of ORDER) {
    const t = targets[s];
    const checked = await check(t);
    await load(t, WARMUP_S, false);
    const measured = await load(t, DURATION_S, true);
    const streaming = await ttfe(t);
    result[s] = { url: t.url.replace(/^http:\/\/[^/]+/, ""), ...measured, ttfe: streaming, check: checked };
  }

  const both = ORDER.length === 2;
  const num = (s: System, k: string) => result[s][k] as number;
  const ttfeP50 = (s: System) => (result[s].ttfe as { p50: number }).p50;
  const ratios = both
    ? {
        throughput_ratio: ratio(num("agentbus", "rps"), num("sdk_express", "rps")),
        p50_ratio: ratio(num("agentbus", "p50"), num("sdk_express", "p50")),
        p99_ratio: ratio(num("agentbus", "p99"), num("sdk_express", "p99")),
        ttfe_p50_ratio: ratio(ttfeP50("agentbus"), ttfeP50("sdk_express")),
        cpu_per_req_ratio: ratio(
          (result.agentbus.cpuUsPerReq as { total: number }).total,
          (result.sdk_express.cpuUsPerReq as { total: number }).total,
        ),
      }
    : undefined;
  const targetsOut = { throughput_ratio: 1.0 };
  emit({
    bench: "a2a",
    node: process.version,
    server: server?.version,
    connections: CONNECTIONS,
    durationS: DURATION_S,
    warmupS: WARMUP_S,
    order: ORDER,
    ...result,
    ratios,
    targets: targetsOut,
    meets: ratios && { throughput_ratio: ratios.throughput_ratio >= targetsOut.throughput_ratio },
  });
}

await runBench(main, stopAll);
