import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { monitorJson } from "../../nats/index.js";
import { useNatsCluster } from "../helpers/nats.js";

describe("startCluster(3)", () => {
  const nats = useNatsCluster(3);

  it("has three named nodes that agree on one JetStream meta leader", async () => {
    const { cluster } = nats;
    expect(cluster.servers.map((s) => s.name)).toEqual(["agentbus-n1", "agentbus-n2", "agentbus-n3"]);
    expect(new Set(cluster.urls).size).toBe(3);
    expect(new Set(cluster.servers.map((s) => s.storeDir)).size).toBe(3);
    const leaders = await Promise.all(
      cluster.servers.map(
        async (s) => (await monitorJson<{ meta_cluster: { leader: string } }>(s.monitorUrl, "/jsz")).meta_cluster.leader,
      ),
    );
    expect(new Set(leaders).size).toBe(1);
    expect(cluster.servers.map((s) => s.name)).toContain(leaders[0]);
    expect(await cluster.waitForMetaLeader()).toBe(leaders[0]);
  });

  it("creates an R3 stream and reads it back through another node", async () => {
    const { cluster } = nats;
    const nc = await connect({ servers: cluster.urls[0]! });
    const other = await connect({ servers: cluster.urls[2]! });
    try {
      const jsm = await jetstreamManager(nc);
      const info = await jsm.streams.add({ name: "R3", subjects: ["r3.>"], num_replicas: 3 });
      expect(info.config.num_replicas).toBe(3);
      expect((await jsm.jetstream().publish("r3.a", "replicated")).seq).toBe(1);

      const jsmOther = await jetstreamManager(other);
      const msg = await jsmOther.streams.getMessage("R3", { seq: 1 });
      expect(msg?.string()).toBe("replicated");
      const replicas = (await jsmOther.streams.info("R3")).cluster?.replicas ?? [];
      expect(replicas).toHaveLength(2);
    } finally {
      await Promise.all([nc.close(), other.close()]);
    }
  }, 30_000);

  it("takes a SIGKILLed node back after restart with its replica caught up", async () => {
    const { cluster } = nats;
    const victim = cluster.servers[2]!;
    const nc = await connect({ servers: cluster.urls[0]! });
    try {
      const jsm = await jetstreamManager(nc);
      await victim.stop("SIGKILL");
      // Two of three replicas still form a quorum, but if the victim led the
      // stream a new leader needs a moment: retry (msgID dedupes retries).
      const ack = await jsm.jetstream().publish("r3.b", "while-down", { retries: 30, msgID: "while-down" });
      expect(ack.seq).toBe(2);
      await victim.restart();
      await cluster.waitForMetaLeader();

      const direct = await connect({ servers: victim.url });
      try {
        const jsmVictim = await jetstreamManager(direct);
        const stored = await jsmVictim.streams.getMessage("R3", { seq: 2 });
        expect(stored?.string()).toBe("while-down");
      } finally {
        await direct.close();
      }
    } finally {
      await nc.close();
    }
  }, 60_000);
});
