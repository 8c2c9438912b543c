import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { eventually } from "../helpers/bus.js";
import { useNatsSupercluster } from "../helpers/nats.js";

describe("startSupercluster", () => {
  const nats = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });

  it("names one cluster per region, each node speaking to the other region", () => {
    const { supercluster } = nats;
    expect(supercluster.regions).toEqual(["east", "west"]);
    expect(Object.keys(supercluster.clusters)).toEqual(["east", "west"]);
    expect(supercluster.servers.map((s) => s.name)).toEqual(["east-n1", "west-n1"]);
  });

  it("rejects clients without the app credentials", async () => {
    await expect(connect({ servers: nats.supercluster.urls[0]!, reconnect: false })).rejects.toThrow(/authorization/i);
  });

  it("routes a request from west to a responder in east and the reply back", async () => {
    const { supercluster } = nats;
    const east = await connect({ servers: supercluster.clusters["east"]!.urls, ...supercluster.auth });
    const west = await connect({ servers: supercluster.clusters["west"]!.urls, ...supercluster.auth });
    try {
      const sub = east.subscribe("geo.whereami");
      void (async () => {
        for await (const m of sub) m.respond(`east got ${m.string()}`);
      })();
      await east.flush();
      // Interest crosses a gateway asynchronously: until it has, west has no responders.
      const reply = await eventually(() => west.request("geo.whereami", "hello from west", { timeout: 5_000 }), 10_000, 100);
      expect(reply!.string()).toBe("east got hello from west");
    } finally {
      await Promise.all([east.close(), west.close()]);
    }
  }, 30_000);

  it("gives the app account JetStream in every region", async () => {
    const { supercluster } = nats;
    const west = await connect({ servers: supercluster.clusters["west"]!.urls, ...supercluster.auth });
    try {
      const jsm = await jetstreamManager(west);
      await jsm.streams.add({ name: "GEO", subjects: ["geo.events.>"], num_replicas: 1 });
      expect((await jsm.jetstream().publish("geo.events.a", "x")).stream).toBe("GEO");
    } finally {
      await west.close();
    }
  }, 30_000);
});
