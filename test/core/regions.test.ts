import { describe, expect, it } from "vitest";
import { connect, textOf, type Bus, type ConnectOptions } from "../../core/index.js";
import { codeOf, eventually, quietLogger } from "../helpers/bus.js";
import { useNatsSupercluster } from "../helpers/nats.js";

describe("regions: two clusters joined by gateways", () => {
  const nats = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });
  const open: Bus[] = [];
  let tenants = 0;
  /** A bus connected to a region's own servers, saying that region by configuration. */
  const bus = async (region: string, tenant: string, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant, region, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };
  /** The same agent code in any region: it answers with the region its connection says. */
  const serveWhere = (b: Bus) => b.agent({ name: "where", skills: [{ id: "where" }] }, { where: () => b.region ?? "none" });

  it("discovery shows each agent's region; calls prefer the caller's region, fail over to another, and a required region is kept", async () => {
    const tenant = `reg${++tenants}`;
    try {
      const [east, west] = [await bus("east", tenant), await bus("west", tenant)];
      const [eastAgent] = [await serveWhere(east), await serveWhere(west)];
      const callerEast = await bus("east", tenant);
      const callerWest = await bus("west", tenant);
      await eventually(() => callerEast.discover({ capability: "where", online: true }).length === 2 && callerWest.discover({ capability: "where", online: true }).length === 2);
      expect(callerEast.discover({ capability: "where", region: "east" }).map((a) => a.id)).toEqual([east.id]);
      expect(callerWest.discover({ capability: "where" }).map((a) => a.regions).sort()).toEqual([["east"], ["west"]]);

      // Local first, from either side.
      for (let i = 0; i < 10; i++) {
        expect(textOf(await callerEast.call("where", {}))).toBe("east");
        expect(textOf(await callerWest.call("where", {}))).toBe("west");
      }
      // A required region, even when it is the other one.
      expect(textOf(await callerEast.call("where", {}, { region: "west" }))).toBe("west");
      expect(await codeOf(callerEast.call("where", {}, { region: "north" }))).toBe("NO_RESPONDERS");

      // A durable task says where it ran.
      const task = await (await callerWest.submit("where", "x")).result({ timeout: 20_000 });
      expect(task.status.state).toBe("TASK_STATE_COMPLETED");
      const stored = await callerWest.task(task.id);
      expect(["east", "west"]).toContain(stored.metadata.region);
      expect(task.artifacts[0]!.parts[0]!.text).toBe(stored.metadata.region);

      // The east agent stops: east callers fail over to west.
      await eastAgent.stop();
      await eventually(() => callerEast.discover({ capability: "where", online: true }).length === 1);
      expect(textOf(await callerEast.call("where", {}))).toBe("west");
      expect(await codeOf(callerEast.call("where", {}, { region: "east" }))).toBe("NO_RESPONDERS");
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close()));
    }
  }, 90_000);

  it("a region is a name", async () => {
    await expect(connect({ servers: nats.supercluster.urls, auth: nats.supercluster.auth, region: "east coast", logger: quietLogger })).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });
});
