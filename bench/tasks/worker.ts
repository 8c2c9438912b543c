/**
 * Worker process for bench/tasks: runs the echo worker of one system, in its
 * own process so it does not share an event loop with the submitter.
 *
 *   node --import tsx bench/tasks/worker.ts agentbus <nats-url> <tenant> <concurrency>
 *   node --import tsx bench/tasks/worker.ts bullmq <redis-port> <queue> <concurrency>
 *   node --import tsx bench/tasks/worker.ts jetstream <nats-url> <consumer> <concurrency>
 *
 * - agentbus: `bus.agent({ name: "echo", skills: [{ id: "echo" }] },
 *   { echo: (ctx) => ctx.text }, { tasks: { concurrency } })`.
 * - bullmq: `new Worker(queue, (job) => job.data, { concurrency })` on its
 *   own ioredis connection.
 * - jetstream: the floor, raw nats.js with the bus's transport tuning
 *   (core/infra/natsfix.ts) and nothing else: a durable pull consumer on
 *   `FLOOR_WORK`; per work item, the result stored in `FLOOR_EVENTS` on
 *   `floor.ev.<id>` (JetStream-acked), then the item acked.
 *
 * Writes `READY <id>` on stdout once serving (the agent id, or `bullmq`);
 * exits on stdin close or SIGTERM.
 */
import { connect, createLogger, type Bus } from "../../core/index.js";
import { exitWithParent } from "../lib.js";

const [system, target, name = "bench", concText = "50"] = process.argv.slice(2);
const concurrency = Number(concText);
if (!system || !target || !Number.isSafeInteger(concurrency) || concurrency < 1) {
  process.stderr.write("usage: worker.ts agentbus <nats-url> <tenant> <concurrency> | bullmq <redis-port> <queue> <concurrency> | jetstream <nats-url> <consumer> <concurrency>\n");
  process.exit(2);
}

let close: () => Promise<unknown> = async () => {};

if (system === "agentbus") {
  const bus: Bus = await connect({ servers: target, tenant: name, name: "bench-tasks-worker", insecureAllowAll: true, logger: createLogger({ level: "error" }) });
  close = () => bus.close();
  await bus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text }, { tasks: { concurrency } });
  await bus.nc.flush();
  process.stdout.write(`READY ${bus.id}\n`);
} else if (system === "bullmq") {
  const { Worker } = await import("bullmq");
  const { Redis: IORedis } = await import("ioredis");
  const connection = new IORedis(Number(target), "127.0.0.1", { maxRetriesPerRequest: null });
  const worker = new Worker(name, async (job) => job.data, { connection, concurrency });
  worker.on("error", (err) => process.stderr.write(`bullmq worker error: ${String(err)}\n`));
  close = async () => {
    await worker.close();
    await connection.quit().catch(() => connection.disconnect());
  };
  await worker.waitUntilReady();
  process.stdout.write("READY bullmq\n");
} else if (system === "jetstream") {
  await import("../../core/infra/natsfix.js");
  const { connect: natsConnect } = await import("@nats-io/transport-node");
  const { jetstream } = await import("@nats-io/jetstream");
  const nc = await natsConnect({ servers: target, name: "bench-tasks-floor-worker" });
  const js = jetstream(nc);
  const messages = await (await js.consumers.get("FLOOR_WORK", name)).consume({ max_messages: concurrency });
  void (async () => {
    for await (const m of messages) {
      const id = m.headers?.get("Floor-Id") ?? "";
      js.publish(`floor.ev.${id}`, m.data, { msgID: `${id}.done` }).then(
        () => m.ack(),
        () => m.nak(),
      );
    }
  })();
  close = async () => {
    messages.stop();
    await nc.drain();
  };
  await nc.flush();
  process.stdout.write("READY jetstream\n");
} else {
  process.stderr.write(`unknown system ${system}\n`);
  process.exit(2);
}

exitWithParent(close);
