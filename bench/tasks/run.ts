/**
 * Durable-task benchmark: end to end (submit → agent → COMPLETED seen by the
 * submitter) on agentbus against BullMQ on a local Redis, same work, same
 * run, same process layout.
 *
 * Layout: one private nats-server and one private redis-server on free
 * loopback ports; two worker child processes (bench/tasks/worker.ts), one
 * running the agentbus echo agent (task concurrency 50), one a BullMQ Worker
 * (concurrency 50); this process submits to both. Beside them, in the same
 * run, the same agentbus workload on a secured server (bench/secure.ts:
 * `startSecureNats`, one account per tenant, the authority answering the
 * auth callout in this process): a third worker connected as an issued
 * agent, and this process submitting as an issued caller granted `echo` by
 * a signed ACL rule (system `agentbus_secure`).
 *
 *  - agentbus: `h = await bus.submit("echo", "payload"); task = await h.result()`,
 *    checked `TASK_STATE_COMPLETED` with the echoed artifact.
 *  - bullmq:   `job = await queue.add("echo", "payload"); await job.waitUntilFinished(queueEvents)`,
 *    checked returnvalue === "payload".
 *  - jetstream: the floor (a third worker process, on the plain server): the
 *    work item stored in a work-queue stream, the result stored in a second
 *    stream by the worker and seen by the submitter on its subject; no
 *    snapshot, envelope or task state. What any design keeping a task's
 *    work and result in JetStream costs on this machine, so `floor` in the
 *    output says how far BullMQ's figures are reachable at all, and what
 *    the bus adds on top.
 *
 * Measures, per system: throughput with TASKS tasks and INFLIGHT in flight
 * (a pool of async loops each submitting and awaiting completion), with the
 * CPU µs per task of the submitter, the worker and the server; and
 * sequential latency over LAT_N tasks after a warm-up. Both phases run in
 * ROUNDS interleaved rounds whose system order rotates, so drift on a noisy
 * machine hits both alike. Then a short traced pass counts what one task
 * costs on the wire: NATS messages by kind (a tap connection subscribed to
 * `>`), Redis commands (INFO commandstats).
 *
 *   npx tsx bench/tasks/run.ts
 *   BENCH_TASKS=2000 BENCH_LAT_N=200 npx tsx bench/tasks/run.ts     # quick
 *   BENCH_SYSTEMS=agentbus BENCH_CPU_PROF=/tmp/prof npx tsx bench/tasks/run.ts   # worker .cpuprofile
 *   BENCH_SYSTEMS=agentbus,bullmq npx tsx bench/tasks/run.ts   # without the secured server
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { connect as netConnect } from "node:net";
import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { MsgHdrsImpl, headers, type Msg } from "@nats-io/nats-core";
import { AckPolicy, RetentionPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Job, Queue, QueueEvents } from "bullmq";
import { Redis as IORedis } from "ioredis";
import { connect, createLogger, type Bus } from "../../core/index.js";
import { freePort, monitorJson, startServer, type NatsServer } from "../../nats/index.js";
import { bounded, runBench, cpuMeter, stopChild, emit, now, progress, rateOf, ratio, round, summarize } from "../lib.js";
import { secureChildEnv, startSecureBench, type SecureBench } from "../secure.js";

const TASKS = Number(process.env.BENCH_TASKS ?? 20_000);
const INFLIGHT = Number(process.env.BENCH_INFLIGHT ?? 50);
const LAT_N = Number(process.env.BENCH_LAT_N ?? 1000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 50);
const TRACE_N = Number(process.env.BENCH_TRACE_N ?? 200);
/** Delayed tasks per system in the delayed phase, all in flight at once, due 1–2 s after their submit. */
const DELAYED_N = Number(process.env.BENCH_DELAYED_N ?? 500);
/** Tasks per system in the prioritized phase: a third each high, normal and low, submitted at once. */
const PRIO_N = Number(process.env.BENCH_PRIO_N ?? 900);
const REDIS_BIN = process.env.BENCH_REDIS_BIN ?? "/usr/bin/redis-server";
const SYSTEMS_ALL = ["agentbus", "agentbus_secure", "bullmq", "jetstream"] as const;
type System = (typeof SYSTEMS_ALL)[number];
/** The agentbus systems, each on its own nats-server: plain, and secured. */
type BusSystem = Exclude<System, "bullmq" | "jetstream">;
let SYSTEMS = (process.env.BENCH_SYSTEMS ?? SYSTEMS_ALL.join(",")).split(",").filter((s): s is System => (SYSTEMS_ALL as readonly string[]).includes(s));
const TENANT = "bench";
const QUEUE = "bench-echo";
const PAYLOAD = "payload";
const TIMEOUT = 60_000;
const HOST = "127.0.0.1";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");

// --- process layout ----------------------------------------------------------

let server: NatsServer | undefined;
let secure: SecureBench | undefined;
let redis: ChildProcess | undefined;
const workers: Partial<Record<System, ChildProcess>> = {};
let client: Bus | undefined;
let secureClient: Bus | undefined;
let tap: NatsConnection | undefined;
/** The floor's connection, when no agentbus client runs (BENCH_SYSTEMS without agentbus). */
let floorNc: NatsConnection | undefined;
const redisClients: IORedis[] = [];
let queue: Queue | undefined;
let queueEvents: QueueEvents | undefined;

async function startWorker(system: System, target: string, name: string, env?: NodeJS.ProcessEnv): Promise<{ proc: ChildProcess; id: string }> {
  // Run as TypeScript through tsx, or, when this file was compiled (tsc, for
  // profiles with real line numbers), the compiled worker next to it.
  const compiled = import.meta.url.endsWith(".js");
  const args = compiled ? [] : ["--import", "tsx"];
  if (process.env.BENCH_CPU_PROF) args.push("--cpu-prof", "--cpu-prof-dir", process.env.BENCH_CPU_PROF);
  // The secured worker is the same agentbus worker, connected as the issued agent (env).
  args.push(join(here, compiled ? "worker.js" : "worker.ts"), system === "agentbus_secure" ? "agentbus" : system, target, name, String(CONCURRENCY));
  const proc = spawn(process.execPath, args, { cwd: root, stdio: ["pipe", "pipe", "inherit"], env });
  workers[system] = proc; // stopAll() stops it even if it never becomes ready
  const lines = createInterface({ input: proc.stdout! });
  const id = await new Promise<string>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error(`${system} worker not ready in 30 s`)), 30_000);
    proc.once("exit", (code) => reject(new Error(`${system} worker exited early (code ${code})`)));
    lines.on("line", (line) => {
      const m = /^READY (\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolveReady(m[1]!);
      } else progress(`[${system} worker] ${line}`);
    });
  });
  return { proc, id };
}

/** Resolves when redis at `port` answers PING with +PONG; rejects after `ms`. */
async function waitForPong(port: number, proc: ChildProcess, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`redis-server exited (code ${proc.exitCode})`);
    const ok = await new Promise<boolean>((res) => {
      const sock = netConnect({ host: HOST, port });
      const done = (v: boolean) => {
        sock.destroy();
        res(v);
      };
      sock.setTimeout(500, () => done(false));
      sock.once("error", () => done(false));
      sock.once("connect", () => sock.write("PING\r\n"));
      sock.once("data", (d) => done(d.toString().startsWith("+PONG")));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not answer PING in ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function startRedis(): Promise<{ port: number; version: string }> {
  const version = /v=(\S+)/.exec(execFileSync(REDIS_BIN, ["--version"], { encoding: "utf8" }))?.[1] ?? "unknown";
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = spawn(REDIS_BIN, ["--save", "", "--appendonly", "no", "--port", String(port), "--bind", HOST], { stdio: ["ignore", "ignore", "inherit"] });
    redis = proc;
    try {
      await waitForPong(port, proc);
      return { port, version };
    } catch (err) {
      await stopChild(proc, "SIGKILL");
      if (attempt >= 3) throw err;
      progress(`redis-server on ${port} failed (${(err as Error).message}); retrying on another port`);
    }
  }
}

/** Stops what the run started (children, clients, the nats-server). */
async function stopAll(): Promise<void> {
  await Promise.all([
    bounded(client?.close()),
    bounded(secureClient?.close()),
    bounded(tap?.close()),
    bounded(floorNc?.close()),
    bounded(queueEvents?.close()),
    bounded(queue?.close()),
    ...Object.values(workers).map((w) => bounded(w && stopChild(w))),
  ]);
  for (const r of redisClients) r.disconnect();
  await Promise.all([bounded(redis && stopChild(redis)), server?.cleanup().catch(() => {}), bounded(secure?.stop(), 15_000)]);
}

// --- CPU accounting, per process (as in bench/call) -----------------------------

/** CPU of submitter (this process; for agentbus_secure also the authority, idle once connected), the system's worker and its server. */
const serverPid = (system: System) => (system === "agentbus" || system === "jetstream" ? server?.pid : system === "agentbus_secure" ? secure?.nats.server.pid : redis?.pid);
const cpuOf = (system: System) => cpuMeter(() => ({ submitter: "self" as const, worker: workers[system]?.pid, server: serverPid(system) }));

// --- the two systems ------------------------------------------------------------

/** Runs one task end to end; returns the ms spent in the submit step (the rest is waiting for completion). */
type RunOne = () => Promise<number>;

async function setupAgentbus(system: BusSystem): Promise<RunOne> {
  let bus: Bus;
  let id: string;
  if (system === "agentbus") {
    ({ id } = await startWorker(system, server!.url, TENANT));
    bus = client = await connect({ servers: server!.url, tenant: TENANT, name: "bench-tasks-submitter", insecureAllowAll: true, logger: createLogger({ level: "error" }) });
  } else {
    const s = secure!;
    ({ id } = await startWorker(system, s.url, TENANT, secureChildEnv(s)));
    if (id !== s.agent.id) throw new Error(`secured worker runs as ${id}, not the issued agent`);
    bus = secureClient = await s.connectCaller({ name: "bench-tasks-submitter-secure" });
  }
  const deadline = Date.now() + 15_000;
  // Work items are MACed for the providers the submitter knows (and signed);
  // wait until the registry lists the worker, as a long-lived submitter would.
  while (!bus.registry.providers("echo").includes(id)) {
    if (Date.now() > deadline) throw new Error("echo agent never appeared in the registry");
    await new Promise((r) => setTimeout(r, 20));
  }
  progress(`${system} echo agent ${id} discovered`);
  return async () => {
    const t0 = now();
    const h = await bus.submit("echo", PAYLOAD);
    const submitted = now() - t0;
    const task = await h.result({ timeout: TIMEOUT });
    if (task.status.state !== "TASK_STATE_COMPLETED") throw new Error(`agentbus task ${task.id} ended ${task.status.state}`);
    const part = task.artifacts[0]?.parts[0] as { text?: string } | undefined;
    if (part?.text !== PAYLOAD) throw new Error(`agentbus task ${task.id}: unexpected result ${JSON.stringify(task.artifacts)}`);
    return submitted;
  };
}

const newRedis = (port: number): IORedis => {
  const r = new IORedis(port, HOST, { maxRetriesPerRequest: null });
  redisClients.push(r);
  return r;
};

async function setupBullmq(port: number): Promise<RunOne> {
  await startWorker("bullmq", String(port), QUEUE);
  queue = new Queue(QUEUE, { connection: newRedis(port) });
  // Every in-flight waitUntilFinished listens for the queue's "closing".
  queue.setMaxListeners(INFLIGHT * 2 + 16);
  // QueueEvents blocks on XREAD from "$": it must be listening before jobs are added.
  queueEvents = new QueueEvents(QUEUE, { connection: newRedis(port) });
  await Promise.all([queue.waitUntilReady(), queueEvents.waitUntilReady()]);
  const q = queue;
  const qe = queueEvents;
  return async () => {
    const t0 = now();
    const job = await q.add("echo", PAYLOAD);
    const submitted = now() - t0;
    const result = await job.waitUntilFinished(qe, TIMEOUT);
    if (result !== PAYLOAD) throw new Error(`bullmq job ${job.id}: unexpected result ${JSON.stringify(result)}`);
    return submitted;
  };
}

/**
 * The floor: what any design that stores a task's work item and its result
 * in JetStream costs here, with nothing else (no snapshot, no envelope, no
 * events beyond the one result). The submitter subscribes to the result's
 * subject, publishes the work item (JetStream-acked, de-duplicated by id)
 * and waits for the result; the worker (bench/tasks/worker.ts jetstream)
 * stores the result, then acks. Same server, same client library and
 * transport tuning as the bus.
 */
async function setupJetstream(): Promise<RunOne> {
  const jsm = await jetstreamManager(client?.nc ?? (floorNc = await natsConnect({ servers: server!.url, name: "bench-tasks-floor" })));
  await jsm.streams.add({ name: "FLOOR_WORK", subjects: ["floor.work.>"], retention: RetentionPolicy.Workqueue });
  await jsm.streams.add({ name: "FLOOR_EVENTS", subjects: ["floor.ev.>"], max_age: 3_600 * 1e9 });
  await jsm.consumers.add("FLOOR_WORK", { durable_name: "echo", ack_policy: AckPolicy.Explicit, ack_wait: 30 * 1e9 });
  await startWorker("jetstream", server!.url, "echo");
  const nc = floorNc ?? client!.nc;
  const js = jetstream(nc);
  const body = new TextEncoder().encode(PAYLOAD);
  let seq = 0;
  const run = `${process.pid}-${Date.now().toString(36)}`;
  return async () => {
    const id = `${run}-${++seq}`;
    let done!: (m: Msg) => void;
    const result = new Promise<Msg>((r) => (done = r));
    const sub = nc.subscribe(`floor.ev.${id}`, { max: 1, callback: (_e, m) => done(m) });
    const h = headers();
    h.set("Floor-Id", id);
    const t0 = now();
    await js.publish("floor.work.echo", body, { msgID: id, headers: h });
    const submitted = now() - t0;
    const m = await result;
    sub.unsubscribe();
    if (new TextDecoder().decode(m.data) !== PAYLOAD) throw new Error(`jetstream task ${id}: unexpected result`);
    return submitted;
  };
}

// --- measurements ----------------------------------------------------------------

/** Runs `n` tasks with `inflight` loops; returns per-task latencies and submit times (ms) and elapsed ms. */
async function pool(fn: RunOne, n: number, inflight: number): Promise<{ samples: number[]; submits: number[]; elapsed: number }> {
  const samples: number[] = [];
  const submits: number[] = [];
  let next = 0;
  const start = now();
  const loop = async (): Promise<void> => {
    while (next < n) {
      next++;
      const t0 = now();
      submits.push(await fn());
      samples.push(now() - t0);
    }
  };
  await Promise.all(Array.from({ length: Math.min(inflight, n) }, loop));
  return { samples, submits, elapsed: now() - start };
}

interface Acc {
  lat: number[];
  /** Per sequential task: ms in the submit step, and ms from its return to completion. */
  latSubmit: number[];
  latWait: number[];
  latBusy: number;
  thr: number[];
  thrBusy: number;
  cpu: Record<"submitter" | "worker" | "server", number>;
}

async function measure(fns: Record<System, RunOne>): Promise<Record<System, Acc>> {
  const acc = {} as Record<System, Acc>;
  for (const s of SYSTEMS) acc[s] = { lat: [], latSubmit: [], latWait: [], latBusy: 0, thr: [], thrBusy: 0, cpu: cpuOf(s).zero() };
  const order = (r: number) => SYSTEMS.map((_, i) => SYSTEMS[(i + r) % SYSTEMS.length]!);

  for (const s of SYSTEMS) {
    await pool(fns[s], WARMUP, INFLIGHT);
    await pool(fns[s], Math.min(100, WARMUP), 1);
    progress(`${s}: warm-up done (${WARMUP} concurrent + ${Math.min(100, WARMUP)} sequential)`);
  }

  const latPerRound = Math.ceil(LAT_N / ROUNDS);
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of order(r)) {
      const { samples, submits, elapsed } = await pool(fns[s], latPerRound, 1);
      acc[s].lat.push(...samples);
      acc[s].latSubmit.push(...submits);
      acc[s].latWait.push(...samples.map((x, i) => x - submits[i]!));
      acc[s].latBusy += elapsed;
      progress(`latency round ${r + 1}/${ROUNDS} ${s}: p50 ${round(summarize(samples).p50, 3)} ms`);
    }
  }

  const thrPerRound = Math.ceil(TASKS / ROUNDS);
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of order(r)) {
      const c0 = cpuOf(s).sample();
      const { samples, elapsed } = await pool(fns[s], thrPerRound, INFLIGHT);
      cpuOf(s).add(acc[s].cpu, c0, cpuOf(s).sample());
      acc[s].thr.push(...samples);
      acc[s].thrBusy += elapsed;
      progress(`throughput round ${r + 1}/${ROUNDS} ${s}: ${round((samples.length * 1000) / elapsed, 0)} tasks/s`);
    }
  }
  return acc;
}

// --- delayed work ----------------------------------------------------------------

/**
 * DELAYED_N delayed tasks per system, submitted at once, each due 1–2 s
 * after its submit (spread evenly): how late each starts (ms from its due
 * time to its start, both on the worker side: agentbus the final status's
 * timestamp, for an echo that answers at once; BullMQ `processedOn`), and
 * how fast delayed submits go. agentbus needs message schedules
 * (nats-server 2.12+); on an older server its row says so.
 */
async function measureDelayed(): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { n: DELAYED_N, dueAfterMs: [1000, 2000] };
  const due = (i: number) => 1000 + Math.round((1000 * i) / DELAYED_N);
  const lateness = (xs: number[]) => {
    const l = summarize(xs);
    return { p50: round(l.p50, 1), p99: round(l.p99, 1), max: round(l.max, 1), min: round(l.min, 1) };
  };
  if (SYSTEMS.includes("agentbus") && client) {
    if (!client.server.schedules) out.agentbus = { skipped: `delayed tasks need nats-server 2.12 (message schedules); this is ${client.server.version}` };
    else {
      const bus = client;
      const t0 = now();
      const handles = await Promise.all(Array.from({ length: DELAYED_N }, (_, i) => bus.submit("echo", PAYLOAD, { delayMs: due(i) })));
      const submitMs = now() - t0;
      const tasks = await Promise.all(handles.map((h) => h.result({ timeout: TIMEOUT })));
      const late = tasks.map((t) => {
        if (t.status.state !== "TASK_STATE_COMPLETED") throw new Error(`delayed task ${t.id} ended ${t.status.state}`);
        return Date.parse(t.status.timestamp) - (t.metadata.runAt as number);
      });
      out.agentbus = { submitsPerSec: round((DELAYED_N * 1000) / submitMs, 1), lateMs: lateness(late), early: late.filter((x) => x < 0).length };
    }
  }
  if (SYSTEMS.includes("bullmq") && queue && queueEvents) {
    const q = queue;
    const qe = queueEvents;
    const t0 = now();
    const jobs = await Promise.all(Array.from({ length: DELAYED_N }, (_, i) => q.add("echo", PAYLOAD, { delay: due(i) })));
    const submitMs = now() - t0;
    await Promise.all(jobs.map((j) => j.waitUntilFinished(qe, TIMEOUT)));
    // Due at its creation time plus the delay asked for (a promoted job's `delay` reads 0).
    const late = await Promise.all(
      jobs.map(async (j, i) => {
        const done = await Job.fromId(q, j.id!);
        return done!.processedOn! - (done!.timestamp + due(i));
      }),
    );
    out.bullmq = { submitsPerSec: round((DELAYED_N * 1000) / submitMs, 1), lateMs: lateness(late), early: late.filter((x) => x < 0).length };
  }
  return out;
}

// --- prioritized work ------------------------------------------------------------

/**
 * PRIO_N tasks per system, a third each high, normal and low, submitted at
 * once in that interleaving (low, normal, high, low, …) onto the idle echo
 * worker: throughput over the whole batch, and per level when its tasks
 * finished (ms from the first submit; p50 and p99), which shows the order
 * the worker took them in. agentbus `priority: "high" | "normal" | "low"`;
 * BullMQ `priority` 1, 2, 3 (lower runs first).
 */
async function measurePrioritized(): Promise<Record<string, unknown>> {
  const levels = ["low", "normal", "high"] as const;
  const bullPriority = { high: 1, normal: 2, low: 3 } as const;
  const out: Record<string, unknown> = { n: PRIO_N };
  const byLevel = (finished: Array<{ level: string; at: number }>) =>
    Object.fromEntries(levels.map((l) => {
      const s = summarize(finished.filter((f) => f.level === l).map((f) => f.at));
      return [l, { p50: round(s.p50, 1), p99: round(s.p99, 1) }];
    }));
  if (SYSTEMS.includes("agentbus") && client) {
    const bus = client;
    const t0 = Date.now();
    const handles = await Promise.all(Array.from({ length: PRIO_N }, (_, i) => bus.submit("echo", PAYLOAD, { priority: levels[i % 3] })));
    const tasks = await Promise.all(handles.map((h) => h.result({ timeout: TIMEOUT })));
    const elapsed = Date.now() - t0;
    const finished = tasks.map((t, i) => {
      if (t.status.state !== "TASK_STATE_COMPLETED") throw new Error(`prioritized task ${t.id} ended ${t.status.state}`);
      return { level: levels[i % 3], at: Date.parse(t.status.timestamp) - t0 };
    });
    out.agentbus = { tasksPerSec: round((PRIO_N * 1000) / elapsed, 1), finishedMs: byLevel(finished) };
  }
  if (SYSTEMS.includes("bullmq") && queue && queueEvents) {
    const q = queue;
    const qe = queueEvents;
    const t0 = Date.now();
    const jobs = await Promise.all(Array.from({ length: PRIO_N }, (_, i) => q.add("echo", PAYLOAD, { priority: bullPriority[levels[i % 3]!] })));
    await Promise.all(jobs.map((j) => j.waitUntilFinished(qe, TIMEOUT)));
    const elapsed = Date.now() - t0;
    const finished = await Promise.all(jobs.map(async (j, i) => ({ level: levels[i % 3]!, at: (await Job.fromId(q, j.id!))!.finishedOn! - t0 })));
    out.bullmq = { tasksPerSec: round((PRIO_N * 1000) / elapsed, 1), finishedMs: byLevel(finished) };
  }
  const a = out.agentbus as { tasksPerSec: number } | undefined;
  const b = out.bullmq as { tasksPerSec: number } | undefined;
  if (a && b) out.throughput_ratio = round(a.tasksPerSec / b.tasksPerSec, 2);
  return out;
}

// --- what one task costs on the wire ---------------------------------------------

/**
 * NATS messages per task by kind, from a tap connection subscribed to `>`
 * while TRACE_N tasks run one at a time (so nothing else is on the wire but
 * heartbeats, which are counted apart).
 */
async function traceNats(fn: RunOne): Promise<Record<string, number>> {
  tap = await natsConnect({ servers: server!.url, name: "bench-tasks-tap" });
  const counts = new Map<string, number>();
  const bump = (k: string) => counts.set(k, (counts.get(k) ?? 0) + 1);
  const bucket = `mesh_${TENANT}_tasks`;
  const hdr = (m: Msg, k: string) => (m.headers as MsgHdrsImpl | undefined)?.headers.get(k)?.[0];
  const kind = (m: Msg): string => {
    const s = m.subject;
    if (s.startsWith(`$KV.${bucket}.`)) return hdr(m, "Nats-Expected-Last-Subject-Sequence") === "0" ? "kv.create (tasks)" : hdr(m, "Nats-Expected-Last-Subject-Sequence") ? "kv.update CAS (tasks)" : "kv.put (tasks)";
    if (s.startsWith(`$JS.API.DIRECT.GET.KV_${bucket}`) || s.startsWith(`$JS.API.STREAM.MSG.GET.KV_${bucket}`)) return "kv.get request (tasks)";
    if (s.startsWith("$JS.API.CONSUMER.MSG.NEXT.")) return "consumer pull request";
    if (s.startsWith("$JS.API.")) return `js api ${s.split(".").slice(2, 4).join(".")}`;
    if (s.startsWith("$JS.ACK.")) {
      const body = Buffer.from(m.data).toString();
      return body.startsWith("+WPI") ? "consumer working (+WPI)" : body.length === 0 || body.startsWith("+ACK") ? "consumer ack" : `consumer ack ${body.slice(0, 5)}`;
    }
    if (s.startsWith("$JS.FC.")) return "flow control";
    if (s.startsWith("$JS.EVENT.")) return "js advisory";
    // A pull delivery keeps the stored message's subject; its reply subject is the ack subject.
    if (s === `mesh.${TENANT}.work.echo`) return m.reply?.startsWith("$JS.ACK.") ? "consumer delivery (work item)" : "js publish work item";
    if (/^mesh\.[^.]+\.events\.[^.]+\.[^.]+$/.test(s)) return "js publish task event";
    // The events stream's live copy (republish, 2.10+): sent by the server to subscribers only (the tap here).
    if (/^mesh\.[^.]+\.task\.[^.]+\.events$/.test(s)) return "republished task event (to subscribers only)";
    if (/^mesh\.[^.]+\.task\.[^.]+\.cancel$/.test(s)) return "task cancel";
    if (s.startsWith("$KV.") || s.includes(".presence.")) return "presence/registry (timer)";
    if (s.startsWith("_INBOX.")) {
      if (hdr(m, "Nats-Sequence") || hdr(m, "Nats-Stream")) return "reply: kv.get";
      if (m.data.length === 0 && m.headers) return "reply: status (heartbeat/404/408)";
      const body = Buffer.from(m.data).toString();
      if (body.startsWith('{"stream"')) return "reply: js publish ack";
      if (body.startsWith('{"type":"io.nats.jetstream.api')) return "reply: js api";
      return "reply: other";
    }
    return `other ${s.split(".").slice(0, 3).join(".")}`;
  };
  tap.subscribe(">", {
    callback: (_e, m) => {
      bump(kind(m));
    },
  });
  await tap.flush();
  await pool(fn, TRACE_N, 1);
  await new Promise((r) => setTimeout(r, 100));
  await tap.flush();
  await tap.close();
  tap = undefined;
  const out: Record<string, number> = {};
  let total = 0;
  for (const [k, v] of [...counts].sort((a, b) => b[1] - a[1])) {
    out[k] = round(v / TRACE_N, 2);
    if (!k.startsWith("presence") && !k.startsWith("republished") && k !== "js advisory") total += v;
  }
  out.total_excl_timers = round(total / TRACE_N, 2);
  return out;
}

/**
 * Redis commands per task: those clients send (MONITOR, TRACE_N sequential
 * tasks), and all commands including those inside Lua scripts (INFO
 * commandstats, over TRACE_N sequential and 5×TRACE_N concurrent tasks).
 */
async function traceRedis(port: number, fn: RunOne): Promise<Record<string, Record<string, number> | number>> {
  const admin = newRedis(port);
  const stats = async (): Promise<Map<string, number>> => {
    const text = await admin.info("commandstats");
    const m = new Map<string, number>();
    for (const line of text.split("\n")) {
      const x = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
      if (x) m.set(x[1]!, Number(x[2]));
    }
    return m;
  };
  const diff = (a: Map<string, number>, b: Map<string, number>, n: number): Record<string, number> => {
    const out: Record<string, number> = {};
    let total = 0;
    for (const [k, v] of [...b].sort((x, y) => y[1] - x[1])) {
      const d = v - (a.get(k) ?? 0) - (k === "info" ? 1 : 0);
      if (d > 0) {
        out[k] = round(d / n, 2);
        total += d;
      }
    }
    out.total = round(total / n, 2);
    return out;
  };
  // MONITOR tells commands sent by clients (round trips) from those run inside Lua scripts.
  const mon = newRedis(port);
  const monitor = await mon.monitor();
  const fromClients = new Map<string, number>();
  let luaCalls = 0;
  monitor.on("monitor", (_time: string, args: string[], source: string) => {
    if (source === "lua") luaCalls++;
    else {
      const cmd = String(args[0]).toLowerCase();
      fromClients.set(cmd, (fromClients.get(cmd) ?? 0) + 1);
    }
  });
  await new Promise((r) => setTimeout(r, 50));
  const s0 = await stats();
  await pool(fn, TRACE_N, 1);
  const s1 = await stats();
  await new Promise((r) => setTimeout(r, 100));
  monitor.disconnect();
  const clients: Record<string, number> = {};
  let clientTotal = 0;
  for (const [k, v] of [...fromClients].sort((a, b) => b[1] - a[1])) {
    if (k === "info") continue;
    clients[k] = round(v / TRACE_N, 2);
    clientTotal += v;
  }
  clients.total = round(clientTotal / TRACE_N, 2);
  await pool(fn, TRACE_N * 5, INFLIGHT);
  const s2 = await stats();
  return {
    clientCommandsSequential: clients,
    luaCallsSequential: round(luaCalls / TRACE_N, 2),
    commandstatsSequential: diff(s0, s1, TRACE_N),
    commandstatsConcurrent: diff(s1, s2, TRACE_N * 5),
  };
}

/** Messages in and out of every client connection on nats-server, summed (divided per task by the caller). */
async function connzTotals(nats: NatsServer): Promise<{ in: number; out: number }> {
  const c = await monitorJson<{ connections: { in_msgs: number; out_msgs: number }[] }>(nats.monitorUrl, "/connz?limit=1024");
  let inMsgs = 0;
  let outMsgs = 0;
  for (const x of c.connections) {
    inMsgs += x.in_msgs;
    outMsgs += x.out_msgs;
  }
  return { in: inMsgs, out: outMsgs };
}

// --- main ------------------------------------------------------------------------

async function main(): Promise<void> {
  if (SYSTEMS.length === 0) throw new Error("BENCH_SYSTEMS names no known system (agentbus, agentbus_secure, bullmq, jetstream)");
  progress(`tasks=${TASKS} inflight=${INFLIGHT} latency n=${LAT_N} warm-up=${WARMUP} rounds=${ROUNDS} worker concurrency=${CONCURRENCY} systems=${SYSTEMS.join(",")}`);
  const [nats, redisInfo, secured] = await Promise.all([
    startServer(),
    SYSTEMS.includes("bullmq") ? startRedis() : Promise.resolve(undefined),
    SYSTEMS.includes("agentbus_secure") ? startSecure() : Promise.resolve(undefined),
  ]);
  server = nats;
  progress(`nats-server ${server.version} at ${server.url}${redisInfo ? `; redis-server ${redisInfo.version} on ${HOST}:${redisInfo.port}` : ""}`);
  if (secure) progress(`secured nats-server ${secure.nats.server.version} at ${secure.url}; agent ${secure.agent.id}, caller ${secure.caller.id}, grant at ACL revision ${secure.revision}`);

  const fns = {} as Record<System, RunOne>;
  if (SYSTEMS.includes("agentbus")) fns.agentbus = await setupAgentbus("agentbus");
  if (SYSTEMS.includes("agentbus_secure")) fns.agentbus_secure = await setupAgentbus("agentbus_secure");
  if (SYSTEMS.includes("bullmq")) fns.bullmq = await setupBullmq(redisInfo!.port);
  if (SYSTEMS.includes("jetstream")) fns.jetstream = await setupJetstream();

  const natsOf = (s: BusSystem): NatsServer => (s === "agentbus" ? server! : secure!.nats.server);
  const busSystems = SYSTEMS.filter((s): s is BusSystem => s !== "bullmq" && s !== "jetstream");
  const connz0 = await Promise.all(busSystems.map((s) => connzTotals(natsOf(s))));
  const acc = await measure(fns);
  const connz1 = await Promise.all(busSystems.map((s) => connzTotals(natsOf(s))));

  progress("delayed tasks");
  const delayed = await measureDelayed();
  progress("prioritized tasks");
  const prioritized = await measurePrioritized();

  progress("tracing wire cost per task");
  const wire: Partial<Record<System, unknown>> = {};
  // The tap subscribes to `>` without credentials: the plain server only.
  if (fns.agentbus) wire.agentbus = await traceNats(fns.agentbus);
  if (fns.bullmq) wire.bullmq = await traceRedis(redisInfo!.port, fns.bullmq);

  const result = {} as Record<System, Record<string, unknown>>;
  const tps = {} as Record<System, number>;
  const p50 = {} as Record<System, number>;
  const p99 = {} as Record<System, number>;
  const thrP = {} as Record<System, { p50: number; p99: number }>;
  const cpuTotal = {} as Record<System, number>;
  for (const s of SYSTEMS) {
    const a = acc[s];
    const lat = summarize(a.lat);
    const thrLat = summarize(a.thr);
    const cpuUsPerTask = cpuOf(s).per(a.cpu, a.thr.length);
    tps[s] = rateOf(a.thr.length, a.thrBusy).opsPerSec;
    p50[s] = lat.p50;
    p99[s] = lat.p99;
    thrP[s] = { p50: thrLat.p50, p99: thrLat.p99 };
    cpuTotal[s] = cpuUsPerTask.total;
    result[s] = {
      throughput: { tasks: a.thr.length, tasksPerSec: tps[s], p50: thrLat.p50, p99: thrLat.p99, cpuUsPerTask },
      latency: {
        ...lat,
        tasksPerSec: rateOf(a.lat.length, a.latBusy).opsPerSec,
        // The two halves of a sequential task: submit (agentbus: bus.submit; bullmq: queue.add)
        // and wait (agentbus: handle.result(); bullmq: job.waitUntilFinished).
        submitP50: summarize(a.latSubmit).p50,
        waitP50: summarize(a.latWait).p50,
        waitP99: summarize(a.latWait).p99,
        // Share of sequential tasks over 10 ms (agentbus's result() re-polls the snapshot 10 ms after a final event that beat it).
        over10ms: round(a.lat.filter((x) => x > 10).length / a.lat.length, 3),
      },
      wire: wire[s],
    };
  }
  busSystems.forEach((s, i) => {
    // Over warm-up, latency and throughput phases (all of the system's tasks, plus a few timer-driven heartbeats).
    const n = WARMUP + Math.min(100, WARMUP) + acc[s].lat.length + acc[s].thr.length;
    const connz = { clientToServerMsgsPerTask: round((connz1[i]!.in - connz0[i]!.in) / n, 2), serverToClientMsgsPerTask: round((connz1[i]!.out - connz0[i]!.out) / n, 2) };
    result[s].wire = { ...(result[s].wire as Record<string, unknown> | undefined), connz };
  });

  const has = (...xs: System[]) => xs.every((x) => SYSTEMS.includes(x));
  const vs = (a: System, b: System) => ({
    throughput_ratio: ratio(tps[a], tps[b]),
    p50_ratio: ratio(p50[a], p50[b]),
    p99_ratio: ratio(p99[a], p99[b]),
    cpu_per_task_ratio: ratio(cpuTotal[a], cpuTotal[b]),
  });
  const ratios = has("agentbus", "bullmq")
    ? {
        ...vs("agentbus", "bullmq"),
        // The secured server's agentbus against BullMQ.
        ...(has("agentbus_secure") && Object.fromEntries(Object.entries(vs("agentbus_secure", "bullmq")).map(([k, v]) => [`secure_${k}`, v]))),
      }
    : undefined;
  // The secured server against the plain one, same workload: what security costs.
  const securedVsPlain = has("agentbus", "agentbus_secure")
    ? {
        ...vs("agentbus_secure", "agentbus"),
        conc_p50_ratio: ratio(thrP.agentbus_secure.p50, thrP.agentbus.p50),
        conc_p99_ratio: ratio(thrP.agentbus_secure.p99, thrP.agentbus.p99),
        extra_cpu_us_per_task: round(cpuTotal.agentbus_secure - cpuTotal.agentbus, 1),
      }
    : undefined;
  // The floor against BullMQ (what JetStream itself allows here), and the bus against the floor (what the bus adds).
  const floor = has("jetstream")
    ? {
        ...(has("bullmq") && Object.fromEntries(Object.entries(vs("jetstream", "bullmq")).map(([k, v]) => [`floor_vs_bullmq_${k}`, v]))),
        ...(has("agentbus") && Object.fromEntries(Object.entries(vs("agentbus", "jetstream")).map(([k, v]) => [`agentbus_vs_floor_${k}`, v]))),
      }
    : undefined;
  // Throughput ≥ 2× BullMQ's; sequential p50 ≤ BullMQ's.
  const targets = { throughput_ratio: 2, p50_ratio: 1 };
  emit({
    bench: "tasks",
    server: server.version,
    secureServer: secure?.nats.server.version,
    secureSkipped: secured && "skipped" in secured ? secured.skipped : undefined,
    redis: redisInfo?.version,
    node: process.version,
    tasks: TASKS,
    inflight: INFLIGHT,
    latN: LAT_N,
    workerConcurrency: CONCURRENCY,
    ...result,
    ratios,
    secured_vs_plain: securedVsPlain,
    floor,
    delayed,
    prioritized,
    targets,
    meets: ratios && { throughput_ratio: ratios.throughput_ratio >= targets.throughput_ratio, p50_ratio: ratios.p50_ratio <= targets.p50_ratio },
  });
}

/** Starts the secured server (bench/secure.ts); without auth callout (nats-server < 2.10), drops agentbus_secure from the run. */
async function startSecure(): Promise<{ started: true } | { skipped: string }> {
  try {
    secure = await startSecureBench(TENANT, "echo");
    return { started: true };
  } catch (err) {
    if ((err as { code?: string }).code !== "SERVER_TOO_OLD") throw err;
    progress(`secured run skipped: ${(err as Error).message}`);
    SYSTEMS = SYSTEMS.filter((s) => s !== "agentbus_secure");
    return { skipped: (err as Error).message };
  }
}

await runBench(main, stopAll);
