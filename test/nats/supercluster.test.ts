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

describe("startSupercluster with an edge site", () => {
  const nats = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1, edges: ["shop"] });

  it("the edge is a leaf node with its own JetStream domain: it keeps its streams while its link is cut, and reaches the regions again when it is back", async () => {
    const { supercluster } = nats;
    const edge = supercluster.edges["shop"]!;
    expect([supercluster.domain, edge.domain, edge.server.name]).toEqual(["hub", "shop", "shop-n1"]);
    const west = await connect({ servers: supercluster.clusters["west"]!.urls, ...supercluster.auth });
    const local = await connect({ servers: edge.server.url, ...supercluster.auth });
    try {
      // A stream at the edge lives in the edge's domain; the regions reach it by naming that domain.
      const edgeJsm = await jetstreamManager(local);
      await edgeJsm.streams.add({ name: "TILL", subjects: ["till.>"] });
      await edgeJsm.jetstream().publish("till.sale", "1");
      expect((await (await jetstreamManager(west, { domain: "shop" })).streams.info("TILL")).state.messages).toBe(1);
      await expect((await jetstreamManager(west)).streams.info("TILL")).rejects.toThrow(/not found/i);
      // Requests cross the leaf link and the gateway.
      const sub = west.subscribe("hq.ping");
      void (async () => {
        for await (const m of sub) m.respond("pong from west");
      })();
      await west.flush();
      expect((await eventually(() => local.request("hq.ping", "", { timeout: 2_000 }), 10_000, 100))!.string()).toBe("pong from west");

      // Link down: the edge serves itself (its stream takes writes), the regions are out of reach.
      edge.link.cut();
      await eventually(async () => (await local.request("hq.ping", "", { timeout: 500 }).then(() => false, () => true)), 10_000, 100);
      // It stays out of reach: the edge knows no way to the hub but its link (the hub's leaf port is not advertised).
      await new Promise((r) => setTimeout(r, 3_000));
      await expect(local.request("hq.ping", "", { timeout: 500 })).rejects.toThrow();
      await edgeJsm.jetstream().publish("till.sale", "2");
      expect((await edgeJsm.streams.info("TILL")).state.messages).toBe(2);

      // Link back: the leaf reconnects by itself.
      edge.link.restore();
      await edge.linked(30_000);
      expect((await eventually(() => local.request("hq.ping", "", { timeout: 2_000 }), 20_000, 200))!.string()).toBe("pong from west");
      expect((await (await jetstreamManager(west, { domain: "shop" })).streams.info("TILL")).state.messages).toBe(2);
    } finally {
      await Promise.all([west.close(), local.close()]);
    }
  }, 90_000);

  it("what the bus stores stays on its side of the link: streams of the same subjects at the edge and in the hub each keep their own writes; a region's plane and the hub's API prefix cross", async () => {
    const { supercluster } = nats;
    const edge = supercluster.edges["shop"]!;
    const hub = await connect({ servers: supercluster.clusters["east"]!.urls, ...supercluster.auth });
    const local = await connect({ servers: edge.server.url, ...supercluster.auth });
    try {
      const [hubJsm, edgeJsm] = await Promise.all([jetstreamManager(hub), jetstreamManager(local)]);
      // The tenant's single plane at both; a region's plane in the hub only.
      await hubJsm.streams.add({ name: "PLANE", subjects: ["mesh.t.work.>", "mesh.t.region.east.work.>"] });
      await edgeJsm.streams.add({ name: "PLANE", subjects: ["mesh.t.work.>"] });
      for (const jsm of [hubJsm, edgeJsm]) await jsm.streams.add({ name: "KV_b", subjects: ["$KV.b.>"] });
      await new Promise((r) => setTimeout(r, 500));
      await edgeJsm.jetstream().publish("mesh.t.work.cap", "edge");
      await hubJsm.jetstream().publish("mesh.t.work.cap", "hub");
      await edgeJsm.jetstream().publish("$KV.b.key", "edge");
      // Into the hub on purpose: a region's plane, and a KV write through the hub's API prefix.
      local.publish("mesh.t.region.east.work.cap", "to the region");
      await (await jetstreamManager(local, { domain: "hub" })).jetstream().publish("$JS.hub.API.$KV.b.key", "through the prefix");
      await local.flush();
      await eventually(async () => (await hubJsm.streams.info("PLANE")).state.messages === 2, 10_000, 100);
      const subjects = async (jsm: typeof hubJsm, stream: string) => {
        const n = (await jsm.streams.info(stream)).state.last_seq;
        const out: string[] = [];
        for (let seq = 1; seq <= n; seq++) {
          const m = await jsm.streams.getMessage(stream, { seq });
          out.push(`${m!.subject}=${m!.string()}`);
        }
        return out;
      };
      expect(await subjects(edgeJsm, "PLANE")).toEqual(["mesh.t.work.cap=edge"]);
      expect(await subjects(hubJsm, "PLANE")).toEqual(["mesh.t.work.cap=hub", "mesh.t.region.east.work.cap=to the region"]);
      expect(await subjects(edgeJsm, "KV_b")).toEqual(["$KV.b.key=edge"]);
      expect(await subjects(hubJsm, "KV_b")).toEqual(["$KV.b.key=through the prefix"]);
    } finally {
      await Promise.all([hub.close(), local.close()]);
    }
  }, 60_000);
});
