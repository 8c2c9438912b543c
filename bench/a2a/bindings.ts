/**
 * A2A bindings benchmark: blocking `SendMessage` over each binding the
 * agentbus A2A bridge serves besides JSON-RPC, each against a baseline in
 * the same run, all driven by one load generator (the official
 * `@a2a-js/sdk` client) so the rows compare:
 *
 *  - `rest`: HTTP+JSON, the bridge (`<base>/a2a/echo/rest`) ÷ the SDK's
 *    express `restHandler` (`<sdk>/a2a/rest`);
 *  - `grpc`: gRPC, the bridge's binding (`grpc: { port: 0 }`, tenant `echo`)
 *    ÷ the SDK's `grpcService` on `@grpc/grpc-js`;
 *  - `nats`: A2A over NATS (`NatsTransportFactory` on this process's own bus
 *    connection, card from `natsAgentCard`: no HTTP, no bridge) ÷ the same
 *    send over JSON-RPC HTTP through the bridge (the hop it avoids).
 *
 * Layout: one private nats-server; three child processes started as
 * `node --import tsx` (as bench/a2a/run.ts):
 *  - bench/a2a/agent.ts:      the bus echo agent (`ctx.text`, task concurrency 64);
 *  - bench/a2a/bridge.ts:     fastify + a2aBridge (open mode, no push) `--grpc`;
 *  - bench/a2a/sdk-server.ts: the SDK's servers `--bindings`: JSON-RPC, HTTP+JSON
 *                             (express) and gRPC, one DefaultRequestHandler +
 *                             InMemoryTaskStore + an SDK echo executor.
 * This process is the load generator, and for the `nats` row also the A2A
 * client on the bus (its own connection, `bench-a2a-loadgen`).
 *
 * Every system gets one SDK `Client` (built from the served card with
 * `preferredTransports: [<binding>]`, or for NATS from the registry's card),
 * then: a sample send that must come back a COMPLETED task with the input as
 * its artifact text; a closed loop of CONCURRENCY concurrent
 * `client.sendMessage` calls (each worker sends its next message when the
 * last one is answered) for WARMUP_S, then the same for DURATION_S measured:
 * req/s (correct answers ÷ elapsed), latency p50/p99 (ms, per call, correct
 * answers only), errors (rejected calls), mismatches (an answer that is not
 * a COMPLETED task echoing this call's text), CPU µs per request of each
 * process (from /proc) and of this process (`loadgen`).
 *
 *   npx tsx bench/a2a/bindings.ts
 *   BENCH_DURATION_S=3 BENCH_WARMUP_S=1 npx tsx bench/a2a/bindings.ts     # quick
 *   BENCH_ROWS=grpc BENCH_ORDER=baseline,agentbus npx tsx bench/a2a/bindings.ts
 *   BENCH_CPU_PROF=/tmp/prof BENCH_CPU_PROF_TARGETS=bridge,agent,sdk,loadgen npx tsx bench/a2a/bindings.ts
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { mkdirSync, readFileSync, renameSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { ClientFactory, JsonRpcTransportFactory, RestTransportFactory, type Client } from "@a2a-js/sdk/client";
import { GrpcTransportFactory } from "@a2a-js/sdk/client/grpc";
import { Role, TaskState, type SendMessageRequest } from "@a2a-js/sdk";
import { connect, createLogger, type Bus } from "../../core/index.js";
import { NATS_BINDING, NatsTransportFactory, natsAgentCard } from "../../bridges/a2a/index.js";
import { monitorJson, startServer, type NatsServer } from "../../nats/index.js";
import { bounded, cpuMeter, emit, now, progress, ratio, round, runBench, stopChild, summarize } from "../lib.js";
import { startProfiler } from "./prof.js";

const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 32);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 3);
/** A call still unanswered this long after its phase ended counts as a timeout. */
const STRAGGLER_MS = 30_000;
const TENANT = "bench";

const ROWS_ALL = ["rest", "grpc", "nats"] as const;
type Row = (typeof ROWS_ALL)[number];
const ROWS = (process.env.BENCH_ROWS ?? ROWS_ALL.join(",")).split(",").filter((r): r is Row => (ROWS_ALL as readonly string[]).includes(r));
const SIDES_ALL = ["agentbus", "baseline"] as const;
type Side = (typeof SIDES_ALL)[number];
const ORDER = (process.env.BENCH_ORDER ?? SIDES_ALL.join(",")).split(",").filter((s): s is Side => (SIDES_ALL as readonly string[]).includes(s));
/** With BENCH_CPU_PROF=<dir>, these profile each measured run they take part in (children: see prof.ts; `loadgen`: this process). */
const PROF_DIR = process.env.BENCH_CPU_PROF ? resolve(process.env.BENCH_CPU_PROF) : undefined;
const PROF_TARGETS = (process.env.BENCH_CPU_PROF_TARGETS ?? "bridge").split(",");

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const versionOf = (pkg: string): string => (JSON.parse(readFileSync(join(root, "node_modules", pkg, "package.json"), "utf8")) as { version: string }).version;

// --- process layout ------------------------------------------------------------

type ChildName = "agent" | "bridge" | "sdk";
let server: NatsServer | undefined;
let loadBus: Bus | undefined;
const children: Partial<Record<ChildName, ChildProcess>> = {};
const profiled = new EventEmitter();
/** `GRPC <host:port>` lines of the children (bridge.ts --grpc, sdk-server.ts --bindings). */
const grpcAddress: Partial<Record<ChildName, string>> = {};

async function startChild(name: ChildName, script: string, args: string[]): Promise<string> {
  const env = { ...process.env };
  delete env.BENCH_A2A_PROF_DIR;
  if (PROF_DIR && PROF_TARGETS.includes(name)) env.BENCH_A2A_PROF_DIR = PROF_DIR;
  const proc = spawn(process.execPath, ["--import", "tsx", join(here, script), ...args], { cwd: root, env, stdio: ["pipe", "pipe", "inherit"] });
  children[name] = proc; // stopAll() stops it even if it never becomes ready
  const lines = createInterface({ input: proc.stdout! });
  return new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} not ready in 30 s`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`${name} exited early (code ${code})`)));
    lines.on("line", (line) => {
      const ready = /^READY (\S+)$/.exec(line);
      const grpc = /^GRPC (\S+)$/.exec(line);
      const prof = /^PROFILED (\S+)$/.exec(line);
      if (ready) {
        clearTimeout(timer);
        resolveReady(ready[1]!);
      } else if (grpc) grpcAddress[name] = grpc[1]!;
      else if (prof) profiled.emit(name, prof[1]!);
      else progress(`[${name}] ${line}`);
    });
  });
}

let stopLoad = false;

/** Stops what the run started (load, children, the load bus, the nats-server). */
async function stopAll(): Promise<void> {
  stopLoad = true;
  await Promise.all([bounded(children.bridge && stopChild(children.bridge)), bounded(children.sdk && stopChild(children.sdk))]);
  await bounded(loadBus?.close());
  await bounded(children.agent && stopChild(children.agent));
  await server?.cleanup().catch(() => {});
}

// --- requests ----------------------------------------------------------------------

let seq = 0;
const runId = Date.now().toString(36);

/** A blocking SendMessage of `text`, a fresh messageId each. */
const sendRequest = (text: string): SendMessageRequest => ({
  tenant: "",
  message: {
    messageId: `m-${runId}-${++seq}`,
    contextId: "",
    taskId: "",
    role: Role.ROLE_USER,
    parts: [{ content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "" }],
    metadata: undefined,
    extensions: [],
    referenceTaskIds: [],
  },
  configuration: undefined,
  metadata: undefined,
});

/** Why `r` is not a COMPLETED task whose artifact text is `text` (undefined: it is). */
function mismatch(r: unknown, text: string): string | undefined {
  const task = r as { id?: string; status?: { state?: TaskState }; artifacts?: { parts: { content?: { $case: string; value?: unknown } }[] }[] };
  if (!task || task.status === undefined || task.id === undefined) return `not a task: ${JSON.stringify(r).slice(0, 200)}`;
  if (task.status.state !== TaskState.TASK_STATE_COMPLETED) return `task ${task.id} is ${TaskState[task.status.state ?? 0] ?? task.status.state}`;
  const echoed = (task.artifacts ?? []).flatMap((a) => a.parts.map((p) => (p.content?.$case === "text" ? String(p.content.value) : ""))).join("");
  if (echoed !== text) return `task ${task.id}: artifact text ${JSON.stringify(echoed)}, expected ${JSON.stringify(text)}`;
  return undefined;
}

// --- systems ------------------------------------------------------------------------

interface System {
  row: Row;
  side: Side;
  /** A short name (profile files, progress). */
  name: string;
  /** What it is, for the JSON line. */
  what: string;
  binding: string;
  client: Client;
  /** The processes doing the system's work, for CPU accounting (this process is added as `loadgen`). */
  pids: () => Record<string, number | undefined>;
  /** Its child processes, for profiling. */
  children: ChildName[];
  /** Whether it uses the bus (NATS messages per request from /connz). */
  bus: boolean;
  /** For HTTP bindings: the endpoint and body of one raw SendMessage (the check reports the response's size). */
  raw?: { url: string; body: (text: string) => string };
}

/** Raw HTTP SendMessage bodies, as the SDK's transports send them. */
const rawMessage = (text: string) => ({ messageId: `m-${runId}-${++seq}`, role: "ROLE_USER", parts: [{ text }] });
const restRaw = (url: string) => ({ url: `${url}/message:send`, body: (text: string) => JSON.stringify({ message: rawMessage(text) }) });
const rpcRaw = (url: string) => ({ url, body: (text: string) => JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: rawMessage(text) } }) });

/** An SDK client over `binding` from the card at `cardUrl`; it must pick that binding. */
async function httpClient(cardUrl: string, binding: string): Promise<Client> {
  const factory = new ClientFactory({
    transports: [new JsonRpcTransportFactory(), new RestTransportFactory(), new GrpcTransportFactory()],
    preferredTransports: [binding],
  });
  const client = await factory.createFromUrl(cardUrl, "");
  if (client.transport.protocolName !== binding) throw new Error(`${cardUrl}: the client chose ${client.transport.protocolName}, not ${binding}`);
  return client;
}

// --- load ----------------------------------------------------------------------------

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

/** Starts the profilers of the system's targets; the function returned stops them and gives the files. */
async function profileStart(s: System): Promise<() => Promise<Record<string, string>>> {
  if (!PROF_DIR) return async () => ({});
  const names = s.children.filter((c) => PROF_TARGETS.includes(c) && children[c]);
  for (const c of names) children[c]!.kill("SIGUSR2");
  const self = PROF_TARGETS.includes("loadgen") ? await startProfiler("loadgen", PROF_DIR) : undefined;
  return async () => {
    const out: Record<string, string> = {};
    // prof.ts names a file <name>-<pid>: each run's file gets the system's name, so the next run does not overwrite it.
    const named = (who: string, path: string) => {
      const to = join(dirname(path), basename(path).replace(/^([^-]+)-/, `$1-${s.row}-${s.side}-`));
      renameSync(path, to);
      out[who] = to;
    };
    const files = names.map((c) => once(profiled, c).then(([path]) => named(c, path as string)));
    for (const c of names) children[c]!.kill("SIGUSR2");
    if (self) named("loadgen", await self());
    await Promise.race([Promise.all(files), new Promise((r) => setTimeout(r, 30_000).unref())]);
    return out;
  };
}

/** One sample send: a COMPLETED task echoing the text. */
async function check(s: System): Promise<Record<string, unknown>> {
  const text = "hello check";
  const t0 = now();
  const r = await s.client.sendMessage(sendRequest(text));
  const ms = now() - t0;
  const why = mismatch(r, text);
  if (why) throw new Error(`${s.row}/${s.side}: ${why}`);
  // The HTTP response's size (what the client reads per request), from one raw request.
  let responseBytes: number | undefined;
  if (s.raw) {
    const res = await fetch(s.raw.url, { method: "POST", headers: { "content-type": "application/json", "A2A-Version": "1.0" }, body: s.raw.body(text) });
    const body = await res.text();
    if (res.status !== 200 || !body.includes("TASK_STATE_COMPLETED")) throw new Error(`${s.row}/${s.side}: raw ${s.raw.url}: HTTP ${res.status}: ${body.slice(0, 300)}`);
    responseBytes = body.length;
  }
  progress(`${s.row}/${s.side} (${s.what}): sample OK over ${s.client.transport.protocolName}, ${round(ms, 2)} ms${responseBytes ? `, ${responseBytes} B response` : ""}`);
  return { ok: true, binding: s.client.transport.protocolName, ...(responseBytes && { responseBytes }) };
}

/** A closed loop of CONCURRENCY workers calling `client.sendMessage` for `seconds`. */
async function load(s: System, seconds: number, measure: boolean): Promise<Record<string, unknown>> {
  const latencies: number[] = [];
  let ok = 0;
  let errors = 0;
  let mismatches = 0;
  let inFlight = 0;
  const samples: string[] = [];
  const note = (why: string) => {
    if (samples.length < 5) samples.push(why.slice(0, 300));
  };
  const meter = cpuMeter(() => ({ ...s.pids(), loadgen: "self" as const }));
  const stopProfile = measure ? await profileStart(s) : undefined;
  const n0 = measure && s.bus ? await connz() : {};
  const c0 = meter.sample();
  const t0 = now();
  const stopAt = t0 + seconds * 1000;
  const worker = async (w: number): Promise<void> => {
    let i = 0;
    while (!stopLoad && now() < stopAt) {
      const text = `hello ${w}.${++i}`;
      const start = now();
      inFlight++;
      try {
        const r = await s.client.sendMessage(sendRequest(text));
        const ms = now() - start;
        const why = mismatch(r, text);
        if (why) {
          mismatches++;
          note(why);
        } else {
          ok++;
          if (measure) latencies.push(ms);
        }
      } catch (err) {
        errors++;
        note(`${(err as Error)?.name ?? "Error"}: ${(err as Error)?.message ?? String(err)}`);
      } finally {
        inFlight--;
      }
    }
  };
  const done = Promise.all(Array.from({ length: CONCURRENCY }, (_, w) => worker(w)));
  const late = await Promise.race([done.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), seconds * 1000 + STRAGGLER_MS).unref())]);
  const timeouts = late ? inFlight : 0;
  const elapsedMs = now() - t0;
  const c1 = meter.sample();
  const n1 = measure && s.bus ? await connz() : {};
  const profiles = stopProfile ? await stopProfile() : {};
  const rps = round((ok * 1000) / elapsedMs, 1);
  progress(`${s.row}/${s.side}: ${measure ? "measured" : "warm-up"} ${seconds} s: ${rps} req/s, errors ${errors}, mismatches ${mismatches}, timeouts ${timeouts}${samples.length ? `; first: ${samples[0]}` : ""}`);
  if (late) throw new Error(`${s.row}/${s.side}: ${timeouts} calls unanswered ${STRAGGLER_MS / 1000} s after the run`);
  if (!measure) return {};
  const lat = summarize(latencies);
  // CPU µs per correct answer: each process; `total` the system's processes, `loadgen` (this process) apart.
  const cpu: Record<string, number> = {};
  let total = 0;
  for (const k of Object.keys(c1)) {
    const d = c1[k as keyof typeof c1] - c0[k as keyof typeof c0];
    cpu[k] = round(d / ok, 1);
    if (k !== "loadgen") total += d;
  }
  cpu.total = round(total / ok, 1);
  cpu.totalWithLoadgen = round(cpu.total + cpu.loadgen!, 1);
  // NATS messages per request of each bus connection (client→server "pub", server→client "deliver").
  const natsMsgsPerReq: Record<string, { pub: number; deliver: number }> = {};
  for (const [name, b] of Object.entries(n1)) {
    const a = n0[name] ?? { in: 0, out: 0 };
    const pub = round((b.in - a.in) / ok, 2);
    const deliver = round((b.out - a.out) / ok, 2);
    if (pub > 0.01 || deliver > 0.01) natsMsgsPerReq[name.replace(/^bench-a2a-/, "")] = { pub, deliver };
  }
  return {
    requests: ok,
    elapsedS: round(elapsedMs / 1000, 3),
    rps,
    p50: lat.p50,
    p90: lat.p90,
    p99: lat.p99,
    mean: lat.mean,
    max: lat.max,
    errors,
    mismatches,
    timeouts,
    ...(samples.length ? { errorSamples: samples } : {}),
    cpuUsPerReq: cpu,
    ...(s.bus ? { natsMsgsPerReq } : {}),
    ...(PROF_DIR ? { profiles } : {}),
  };
}

// --- main ------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (ROWS.length === 0) throw new Error("BENCH_ROWS names no known row (rest, grpc, nats)");
  if (ORDER.length === 0) throw new Error("BENCH_ORDER names no known side (agentbus, baseline)");
  if (PROF_DIR) mkdirSync(PROF_DIR, { recursive: true });
  progress(`concurrency=${CONCURRENCY} duration=${DURATION_S}s warm-up=${WARMUP_S}s rows=${ROWS.join(",")} order=${ORDER.join(",")}`);

  let bridgeBase = "";
  let sdkBase = "";
  await Promise.all([
    (async () => {
      server = await startServer();
      progress(`nats-server ${server.version} at ${server.url}`);
      progress(`echo agent ${await startChild("agent", "agent.ts", [server.url, TENANT])} serving`);
      bridgeBase = await startChild("bridge", "bridge.ts", [server.url, TENANT, "--grpc"]);
      progress(`A2A bridge at ${bridgeBase}, gRPC at ${grpcAddress.bridge}`);
      loadBus = await connect({ servers: server.url, tenant: TENANT, name: "bench-a2a-loadgen", logger: createLogger({ level: "error" }) });
      const deadline = Date.now() + 15_000;
      while (loadBus.discover({ name: "echo", online: true }).length === 0) {
        if (Date.now() > deadline) throw new Error("load bus: echo agent never appeared in discovery");
        await new Promise((r) => setTimeout(r, 20));
      }
    })(),
    (async () => {
      sdkBase = await startChild("sdk", "sdk-server.ts", ["--bindings"]);
      progress(`SDK servers at ${sdkBase} (JSON-RPC, HTTP+JSON), gRPC at ${grpcAddress.sdk}`);
    })(),
  ]);

  const bridgeCard = `${bridgeBase}/a2a/echo/.well-known/agent-card.json`;
  const sdkCard = `${sdkBase}/.well-known/agent-card.json`;
  const busPids = () => ({ bridge: children.bridge?.pid, agent: children.agent?.pid, natsServer: server?.pid });
  const sdkPids = () => ({ sdk: children.sdk?.pid });
  const systems = async (row: Row): Promise<Record<Side, System>> => {
    if (row === "nats") {
      const nats = await new ClientFactory({ transports: [new NatsTransportFactory(loadBus!)] }).createFromAgentCard(natsAgentCard(loadBus!, "echo"));
      return {
        agentbus: {
          row, side: "agentbus", name: "nats", what: "A2A over NATS: NatsTransport on the load process's bus connection → agent", binding: NATS_BINDING, client: nats,
          pids: () => ({ agent: children.agent?.pid, natsServer: server?.pid }), children: ["agent"], bus: true,
        },
        baseline: {
          row, side: "baseline", name: "jsonrpc", what: "JSON-RPC over HTTP → agentbus bridge → agent", binding: "JSONRPC", client: await httpClient(bridgeCard, "JSONRPC"),
          pids: busPids, children: ["bridge", "agent"], bus: true, raw: rpcRaw(`${bridgeBase}/a2a/echo`),
        },
      };
    }
    const binding = row === "rest" ? "HTTP+JSON" : "GRPC";
    return {
      agentbus: {
        row, side: "agentbus", name: `bridge-${row}`, what: `${binding} → agentbus bridge → agent`, binding, client: await httpClient(bridgeCard, binding),
        pids: busPids, children: ["bridge", "agent"], bus: true, ...(row === "rest" && { raw: restRaw(`${bridgeBase}/a2a/echo/rest`) }),
      },
      baseline: {
        row, side: "baseline", name: `sdk-${row}`, what: row === "rest" ? "HTTP+JSON → @a2a-js/sdk express restHandler" : "gRPC → @a2a-js/sdk grpcService on @grpc/grpc-js", binding, client: await httpClient(sdkCard, binding),
        pids: sdkPids, children: ["sdk"], bus: false, ...(row === "rest" && { raw: restRaw(`${sdkBase}/a2a/rest`) }),
      },
    };
  };

  const rows = {} as Record<Row, Record<string, unknown>>;
  for (const row of ROWS) {
    const sys = await systems(row);
    const out = {} as Record<Side, Record<string, unknown>>;
    for (const side of ORDER) {
      const s = sys[side];
      const checked = await check(s);
      await load(s, WARMUP_S, false);
      const measured = await load(s, DURATION_S, true);
      out[side] = { system: s.what, binding: s.binding, ...measured, check: checked };
    }
    const both = ORDER.length === 2;
    const num = (side: Side, k: string) => out[side][k] as number;
    const cpu = (side: Side) => out[side].cpuUsPerReq as { total: number; totalWithLoadgen: number };
    const ratios = both
      ? {
          throughput_ratio: ratio(num("agentbus", "rps"), num("baseline", "rps")),
          p50_ratio: ratio(num("agentbus", "p50"), num("baseline", "p50")),
          p99_ratio: ratio(num("agentbus", "p99"), num("baseline", "p99")),
          cpu_per_req_ratio: ratio(cpu("agentbus").total, cpu("baseline").total),
          cpu_per_req_with_loadgen_ratio: ratio(cpu("agentbus").totalWithLoadgen, cpu("baseline").totalWithLoadgen),
        }
      : undefined;
    rows[row] = { ...out, ratios };
  }

  // Targets: the two HTTP-era bindings against the SDK's own servers; the NATS row has none (expected well above 1).
  const targets = { rest: { throughput_ratio: 1.0 }, grpc: { throughput_ratio: 1.0 } };
  const meets: Record<string, { throughput_ratio: boolean }> = {};
  for (const row of ["rest", "grpc"] as const) {
    const r = rows[row]?.ratios as { throughput_ratio: number } | undefined;
    if (r) meets[row] = { throughput_ratio: r.throughput_ratio >= targets[row].throughput_ratio };
  }
  emit({
    bench: "a2a-bindings",
    node: process.version,
    server: server?.version,
    versions: { "@a2a-js/sdk": versionOf("@a2a-js/sdk"), "@grpc/grpc-js": versionOf("@grpc/grpc-js"), fastify: versionOf("fastify"), express: versionOf("express") },
    concurrency: CONCURRENCY,
    durationS: DURATION_S,
    warmupS: WARMUP_S,
    order: ORDER,
    ...rows,
    targets,
    meets,
  });
}

await runBench(main, stopAll);
