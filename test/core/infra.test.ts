import { describe, expect, it } from "vitest";
import { connect } from "@nats-io/transport-node";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { AgentBusError, ensureBucket, ensureConsumer, ensureStream } from "../../core/index.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

describe("streams and buckets are created idempotently; a mismatching config is reported", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("reopens with the same settings, refuses other settings with CONFIG_MISMATCH and leaves them unchanged", async () => {
    const a = await open({ tenant: "infra", presenceMaxAgeMs: 3000 });
    await (await a.submit("x", "first use creates the task streams")).get();
    const b = await open({ tenant: "infra", presenceMaxAgeMs: 3000 });
    await (await b.submit("x", "again")).get();

    const err = await open({ tenant: "infra", presenceMaxAgeMs: 9000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentBusError);
    expect((err as AgentBusError).code).toBe("CONFIG_MISMATCH");
    expect((err as AgentBusError).message).toMatch(/mesh_infra_presence.*max age 3000 ms \(wanted 9000\)/);
    expect((await b.buckets.presence.status()).ttl).toBe(3000);

    const other = await open({ tenant: "infra", eventsMaxAgeMs: 60_000 });
    const err2 = await other.submit("x", "y").catch((e: unknown) => e);
    expect((err2 as AgentBusError).code).toBe("CONFIG_MISMATCH");
  });

  it("processes creating the same bucket, stream and consumer at the same moment all succeed", async () => {
    const conns = await Promise.all(Array.from({ length: 8 }, () => connect({ servers: nats.server.url })));
    try {
      for (let round = 0; round < 10; round++) {
        const results = await Promise.allSettled(
          conns.map(async (nc) => {
            await ensureBucket(new Kvm(nc), `race_${round}`, { history: 1 });
            const jsm = await jetstreamManager(nc);
            await ensureStream(jsm, { name: `RACE_${round}`, subjects: [`race.${round}.>`] });
            await ensureConsumer(jsm, `RACE_${round}`, { durable_name: "worker", filter_subject: `race.${round}.work`, ack_wait: 5_000_000_000 });
          }),
        );
        expect(results.filter((r) => r.status === "rejected")).toEqual([]);
      }
    } finally {
      await Promise.all(conns.map((nc) => nc.close()));
    }
  });
});
