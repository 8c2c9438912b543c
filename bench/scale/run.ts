/**
 * Scale benchmark: a tenant with many registered agents, and many agents in
 * one process, against raw NATS doing the same in the same run.
 *
 *  1. Registry: `BENCH_REGISTERED` (10 000) agent records, each signed by
 *     its own identity, written to `mesh_<t>_agents`. Then a new `connect()`:
 *     how long until its registry holds them all (`discover()` returns every
 *     one), and `discover` latency (by capability, by tag) over 1 000
 *     queries. The writer's bus is closed first: buses of one process on
 *     the same buckets share one registry view. Baseline: a raw KV watch of the same bucket reading every
 *     entry (no verification), on a fresh connection.
 *  2. Agents in one process: `BENCH_AGENTS` (1 000) agents started one
 *     after another in this process on a fresh tenant (one bus connection
 *     and one identity each, one skill; the process's buses share one
 *     registry view), with the time and RSS after every
 *     `BENCH_STEP` (100). Baseline: the same number of raw NATS connections,
 *     each with one subscription and one KV put (a registration's bare
 *     bones).
 *
 *   npx tsx bench/scale/run.ts
 *   BENCH_REGISTERED=2000 BENCH_AGENTS=200 npx tsx bench/scale/run.ts   # quick
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { Kvm } from "@nats-io/kv";
import { connect, createLogger, Identity, type Bus } from "../../core/index.js";
import { signRecord } from "../../core/store/registry.js";
import { startServer, type NatsServer } from "../../nats/index.js";
import { emit, now, progress, ratio, round, runBench, summarize } from "../lib.js";

const REGISTERED = Number(process.env.BENCH_REGISTERED ?? 10_000);
const AGENTS = Number(process.env.BENCH_AGENTS ?? 1_000);
const STEP = Number(process.env.BENCH_STEP ?? 100);
const QUERIES = Number(process.env.BENCH_QUERIES ?? 1_000);
const CAPS = 100;
const TAGS = 10;
const logger = createLogger({ level: "silent" });
const mb = (bytes: number) => round(bytes / 1024 / 1024, 1);
const rss = () => process.memoryUsage().rss;

let server: NatsServer | undefined;
const open: Array<Bus | NatsConnection> = [];

/** Resolves when `done()` holds, polling every 5 ms; the time it took (ms). */
async function until(done: () => boolean, limitMs = 600_000): Promise<number> {
  const t0 = now();
  while (!done()) {
    if (now() - t0 > limitMs) throw new Error(`not done in ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return now() - t0;
}

async function registry(url: string) {
  const tenant = "scale";
  const writer = await connect({ servers: url, tenant, insecureAllowAll: true, logger });
  open.push(writer);
  progress(`signing ${REGISTERED} agent records`);
  const records = Array.from({ length: REGISTERED }, (_, i) => {
    const identity = Identity.generate();
    return signRecord(identity, { name: `agent-${i}`, description: "", version: "1", skills: [{ id: `cap${i % CAPS}`, name: `cap${i % CAPS}`, description: "", tags: [`t${i % TAGS}`] }] } as never, {});
  });
  progress(`writing ${REGISTERED} records`);
  const tWrite = now();
  for (let i = 0; i < records.length; i += 256) {
    await Promise.all(records.slice(i, i + 256).map((r) => writer.buckets.agents.put(r.id, JSON.stringify(r))));
  }
  const writeMs = now() - tWrite;
  // Closed before the reader connects: a bus of this process still open on these buckets would share its (caught up) registry view with it.
  open.splice(open.indexOf(writer), 1);
  await writer.close();

  // Baseline: a raw watch of the bucket, every entry read once.
  const rawNc = await natsConnect({ servers: url });
  open.push(rawNc);
  const tRaw = now();
  const kv = await new Kvm(rawNc).open(writer.subjects.bucket("agents"));
  let seen = 0;
  const watch = await kv.watch({ include: "lastValue" as never });
  const rawDone = (async () => {
    for await (const e of watch) if (e.operation === "PUT" && ++seen === REGISTERED) break;
  })();
  await rawDone;
  const rawMs = now() - tRaw;
  watch.stop();

  // The bus: connect, then wait until discovery holds every record.
  const before = rss();
  const tBus = now();
  const reader = await connect({ servers: url, tenant, insecureAllowAll: true, logger });
  open.push(reader);
  const connectMs = now() - tBus;
  await until(() => reader.discover().length >= REGISTERED);
  const caughtUpMs = now() - tBus;
  const readerRss = rss() - before;

  const byCap: number[] = [];
  const byTag: number[] = [];
  for (let i = 0; i < QUERIES; i++) {
    let t = now();
    const a = reader.discover({ capability: `cap${i % CAPS}` });
    byCap.push(now() - t);
    t = now();
    const b = reader.discover({ tag: `t${i % TAGS}` });
    byTag.push(now() - t);
    if (a.length !== REGISTERED / CAPS || b.length !== REGISTERED / TAGS) throw new Error(`discover found ${a.length} and ${b.length}`);
  }
  return {
    registered: REGISTERED,
    writeMs: round(writeMs, 0),
    rawWatchAllMs: round(rawMs, 0),
    busConnectMs: round(connectMs, 0),
    busCaughtUpMs: round(caughtUpMs, 0),
    busRssMB: mb(readerRss),
    discoverByCapability: summarize(byCap.sort((x, y) => x - y)),
    discoverByTag: summarize(byTag.sort((x, y) => x - y)),
  };
}

async function agents(url: string) {
  const tenant = "scale-agents";
  const steps: Array<{ agents: number; ms: number; rssMB: number }> = [];
  const start = rss();
  const t0 = now();
  for (let i = 1; i <= AGENTS; i++) {
    const bus = await connect({ servers: url, tenant, insecureAllowAll: true, logger });
    open.push(bus);
    await bus.agent({ name: `a${i}`, skills: [{ id: `cap${i % CAPS}` }] }, { [`cap${i % CAPS}`]: (ctx) => ctx.text }, { tasks: false });
    if (i % STEP === 0 || i === AGENTS) {
      steps.push({ agents: i, ms: round(now() - t0, 0), rssMB: mb(rss() - start) });
      progress(`agents: ${i} in ${round((now() - t0) / 1000, 1)} s, +${mb(rss() - start)} MB`);
    }
  }
  return steps;
}

async function rawAgents(url: string) {
  const start = rss();
  const t0 = now();
  const raw: NatsConnection[] = [];
  const kv = await new Kvm(await natsConnect({ servers: url }).then((nc) => (open.push(nc), nc))).create("scale_raw_agents");
  for (let i = 1; i <= AGENTS; i++) {
    const nc = await natsConnect({ servers: url });
    raw.push(nc);
    open.push(nc);
    nc.subscribe(`raw.cap${i % CAPS}`, { queue: `cap${i % CAPS}`, callback: () => {} });
    await kv.put(`a${i}`, JSON.stringify({ name: `a${i}` }));
  }
  return { agents: AGENTS, ms: round(now() - t0, 0), rssMB: mb(rss() - start) };
}

await runBench(
  async () => {
    server = await startServer();
    progress(`nats-server ${server.version} on ${server.url}`);
    const reg = await registry(server.url);
    progress("registry", reg);
    const raw = await rawAgents(server.url);
    progress("raw agents", raw);
    const steps = await agents(server.url);
    const last = steps.at(-1)!;
    emit({
      bench: "scale",
      server: server.version,
      node: process.version,
      registry: reg,
      agentsInOneProcess: { steps, raw },
      ratios: {
        registry_caught_up_vs_raw_watch: ratio(reg.busCaughtUpMs, reg.rawWatchAllMs),
        agents_time_vs_raw: ratio(last.ms, raw.ms),
        agents_rss_vs_raw: ratio(last.rssMB, Math.max(raw.rssMB, 0.1)),
      },
      targets: {
        registry_caught_up_ms: { target: 2000, measured: reg.busCaughtUpMs, met: reg.busCaughtUpMs < 2000 },
        discover_p99_ms: { target: 1, measured: reg.discoverByCapability.p99, met: reg.discoverByCapability.p99 < 1 },
        agents_1000_rss_mb: { target: 300, measured: last.agents >= 1000 ? last.rssMB : null, met: last.agents >= 1000 && last.rssMB < 300 },
      },
    });
  },
  async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await server?.stop();
    await server?.cleanup?.();
  },
);
