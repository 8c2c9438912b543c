/**
 * Large-payload benchmark: a 20 MB input and a 50 MB artifact through a
 * durable task (claim check: the bus stores each large part encrypted in
 * the tenant's object store and carries a reference), against a raw
 * object-store put + get of the same bytes with `@nats-io/obj`, same
 * server, same chunk size (the server's `max_payload`), same run.
 *
 * Layout: one private nats-server (JetStream on disk) on a free loopback
 * port; the agent and the submitter are two bus connections in this
 * process; the raw baseline is a third plain connection.
 *
 *  - input:    `h = await bus.submit("sink", [{raw: <20 MB, base64>}]); await h.result()`
 *              (the agent takes the part and answers "ok"),
 *              baseline `await os.putBlob(20 MB); await os.getBlob()`.
 *  - artifact: `h = await bus.submit("source", "go"); task = await h.result()`
 *              (the agent returns a 50 MB raw part; result() brings it back),
 *              baseline `await os.putBlob(50 MB); await os.getBlob()`.
 *
 * The bytes are base64 before the clock starts (A2A's JSON form of a raw
 * part; the baseline takes a Buffer), and checked (SHA-256) after it stops.
 * Each case runs ROUNDS times, bus and raw interleaved (the order rotates),
 * after one warm-up of each; the median time is reported, and the ratio
 * bus / raw (target ≤ 1.5).
 *
 *   npx tsx bench/payload/run.ts
 *   BENCH_ROUNDS=3 npx tsx bench/payload/run.ts     # quick
 *
 * Prints one JSON line on stdout; progress on stderr.
 */
import { createHash, randomBytes } from "node:crypto";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { Objm, setSha256Backend, type ObjectStore } from "@nats-io/obj";
import { connect, createLogger, type Bus } from "../../core/index.js";
import { startServer, type NatsServer } from "../../nats/index.js";
import { bounded, emit, now, progress, ratio, round, runBench } from "../lib.js";

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const MB = 1024 * 1024;
const INPUT_BYTES = 20 * MB;
const ARTIFACT_BYTES = 50 * MB;
const TENANT = "bench";
const TIMEOUT = 120_000;

let server: NatsServer | undefined;
let agentBus: Bus | undefined;
let client: Bus | undefined;
let rawNc: NatsConnection | undefined;

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  server = await startServer();
  progress(`nats-server ${server.version} at ${server.url}`);
  const logger = createLogger({ level: "error" });
  agentBus = await connect({ servers: server.url, tenant: TENANT, insecureAllowAll: true, logger });
  client = await connect({ servers: server.url, tenant: TENANT, logger });
  const input = randomBytes(INPUT_BYTES);
  const artifact = randomBytes(ARTIFACT_BYTES);
  const artifactB64 = artifact.toString("base64");
  const inputSha = sha(input);
  const artifactSha = sha(artifact);
  const inputB64 = input.toString("base64");
  // What the agent got, checked after the clock stops (the baseline checks nothing either).
  let received = "";
  await agentBus.agent({ name: "payload", skills: [{ id: "sink" }, { id: "source" }] }, {
    sink: (ctx) => {
      received = ctx.userMessage.parts[0]!.raw!;
      return "ok";
    },
    source: () => [{ raw: artifactB64, mediaType: "application/octet-stream" }],
  });
  await client.ensureTasks();

  // The baseline: the same object store client, SHA-256 on node:crypto as the bus sets it, the same chunk size.
  rawNc = await natsConnect({ servers: server.url });
  setSha256Backend("native");
  const objm = new Objm(rawNc);
  const os: ObjectStore = await objm.create("bench_raw", { replicas: 1 });
  const chunk = rawNc.info?.max_payload ?? MB;
  let n = 0;
  const raw = async (bytes: Buffer): Promise<number> => {
    const name = `o${++n}`;
    const t0 = now();
    await os.putBlob({ name, options: { max_chunk_size: chunk } }, bytes);
    const back = await os.getBlob(name);
    const ms = now() - t0;
    if (!back || back.length !== bytes.length) throw new Error("raw object store round trip lost bytes");
    await os.delete(name);
    return ms;
  };
  const busInput = async (): Promise<number> => {
    received = "";
    const t0 = now();
    const h = await client!.submit("sink", [{ raw: inputB64, mediaType: "application/octet-stream" }]);
    const task = await h.result({ timeout: TIMEOUT });
    const ms = now() - t0;
    if (task.status.state !== "TASK_STATE_COMPLETED" || sha(Buffer.from(received, "base64")) !== inputSha) throw new Error(`input case: ${task.status.state}`);
    return ms;
  };
  const busArtifact = async (): Promise<number> => {
    const t0 = now();
    const h = await client!.submit("source", "go");
    const task = await h.result({ timeout: TIMEOUT });
    const ms = now() - t0;
    const part = task.artifacts[0]?.parts[0];
    if (task.status.state !== "TASK_STATE_COMPLETED" || !part?.raw || sha(Buffer.from(part.raw, "base64")) !== artifactSha) throw new Error(`artifact case: ${task.status.state}`);
    return ms;
  };

  const cases = {
    input: { bus: busInput, raw: () => raw(input) },
    artifact: { bus: busArtifact, raw: () => raw(artifact) },
  };
  const times: Record<string, { bus: number[]; raw: number[] }> = { input: { bus: [], raw: [] }, artifact: { bus: [], raw: [] } };
  for (const [name, c] of Object.entries(cases)) {
    progress(`${name}: warm-up`);
    await c.bus();
    await c.raw();
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 === 0 ? (["bus", "raw"] as const) : (["raw", "bus"] as const);
      for (const who of order) times[name]![who].push(await c[who]());
      progress(`${name} round ${r + 1}/${ROUNDS}: bus ${round(times[name]!.bus.at(-1)!, 1)} ms, raw ${round(times[name]!.raw.at(-1)!, 1)} ms`);
    }
  }
  const result = (name: string, bytes: number) => {
    const bus = median(times[name]!.bus);
    const base = median(times[name]!.raw);
    return {
      bytes,
      bus_ms: round(bus, 1),
      raw_ms: round(base, 1),
      bus_mb_s: round(bytes / MB / (bus / 1000), 1),
      raw_mb_s: round(bytes / MB / (base / 1000), 1),
      ratio: ratio(bus, base),
      bus_all_ms: times[name]!.bus.map((x) => round(x, 1)),
      raw_all_ms: times[name]!.raw.map((x) => round(x, 1)),
    };
  };
  emit({
    bench: "payload",
    server: server.version,
    rounds: ROUNDS,
    chunk_bytes: chunk,
    baseline: "raw @nats-io/obj putBlob + getBlob of the same bytes, same server and chunk size",
    input: result("input", INPUT_BYTES),
    artifact: result("artifact", ARTIFACT_BYTES),
  });
}

async function stop(): Promise<void> {
  await bounded(client?.close());
  await bounded(agentBus?.close());
  await bounded(rawNc?.close());
  await bounded(server?.stop());
}

await runBench(main, stop);
