import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { compareVersions, connect, textOf, type Bus, type ConnectOptions } from "../../core/index.js";
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

  it("a task's events are followed and replayed from either region with the same cursors", async () => {
    const tenant = `reg${++tenants}`;
    try {
      const eastAgent = await bus("east", tenant);
      await eastAgent.agent({ name: "steps", skills: [{ id: "steps" }] }, {
        steps: async (ctx) => {
          for (let i = 1; i <= 5; i++) await ctx.status(`step ${i}`);
          return `done in ${eastAgent.region}`;
        },
      });
      const westCaller = await bus("west", tenant);
      await eventually(() => westCaller.discover({ capability: "steps", online: true }).length === 1);
      const handle = await westCaller.submit("steps", "go");
      const done = await handle.result({ timeout: 20_000 });
      expect(done.artifacts[0]!.parts[0]!.text).toBe("done in east");
      // The same identity in the other region reads the same log.
      const eastReader = await bus("east", tenant, { identity: westCaller.identity });
      const read = async (b: Bus, fromSequence?: number) => {
        const out: Array<{ sequence: number; text: string }> = [];
        for await (const { sequence, event } of (await b.taskHandle(handle.id)).events(fromSequence === undefined ? {} : { fromSequence })) {
          out.push({ sequence, text: JSON.stringify(event) });
        }
        return out;
      };
      const fromWest = await read(westCaller);
      const fromEast = await read(eastReader);
      expect(fromEast).toEqual(fromWest);
      expect(fromWest.length).toBeGreaterThanOrEqual(7);
      // Resuming after a cursor, in either region: the rest, no gap, no repeat.
      const cursor = fromWest[2]!.sequence;
      expect(await read(eastReader, cursor + 1)).toEqual(fromWest.slice(3));
      expect(await read(westCaller, cursor + 1)).toEqual(fromWest.slice(3));
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close()));
    }
  }, 60_000);

  it("a region is a name", async () => {
    await expect(connect({ servers: nats.supercluster.urls, auth: nats.supercluster.auth, region: "east coast", logger: quietLogger })).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });
});

describe("regions: a registry kept per region", () => {
  const nats = useNatsSupercluster({ regions: ["east", "west"], nodesPerRegion: 1 });
  const open: Bus[] = [];
  const bus = async (region: string): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant: "fed", region, regions: ["east", "west"], insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger });
    open.push(b);
    return b;
  };

  it("a region must be one of the regions", async () => {
    await expect(connect({ servers: nats.supercluster.clusters["east"]!.urls, auth: nats.supercluster.auth, region: "north", regions: ["east", "west"], logger: quietLogger })).rejects.toMatchObject({ code: "INVALID_INPUT" });
  });

  it("each region writes its own registry and reads a view of every region's; it keeps answering when the other region is gone", async () => {
    if (compareVersions(nats.supercluster.servers[0]!.version, "2.10.0") < 0) {
      await expect(bus("east")).rejects.toMatchObject({ code: "SERVER_TOO_OLD" });
      return;
    }
    try {
      const [east, west] = [await bus("east"), await bus("west")];
      await east.agent({ name: "where", skills: [{ id: "where" }] }, { where: () => "east" });
      await west.agent({ name: "where", skills: [{ id: "where" }] }, { where: () => "west" });
      const caller = await bus("east");
      const other = await bus("west");
      // Each side sees both agents through its own region's view.
      await eventually(() => caller.discover({ capability: "where", online: true }).length === 2 && other.discover({ capability: "where", online: true }).length === 2, 15_000, 100);
      expect(other.discover({ capability: "where", region: "east" }).map((a) => a.id)).toEqual([east.id]);
      // The buckets: origins and views in their own region's cluster.
      const jsm = await jetstreamManager(caller.nc);
      const placed = async (name: string) => (await jsm.streams.info(`KV_${name}`)).cluster?.name;
      expect(await placed("mesh_fed_agents_east")).toBe("east");
      expect(await placed("mesh_fed_agents_west")).toBe("west");
      expect(await placed("mesh_fed_agents_east_view")).toBe("east");
      expect(await placed("mesh_fed_presence_west_view")).toBe("west");
      expect((await jsm.streams.info("KV_mesh_fed_agents_east_view")).config.sources?.map((x) => x.name).sort()).toEqual(["KV_mesh_fed_agents_east", "KV_mesh_fed_agents_west"]);

      // West is lost: east's view still answers; the west agent goes offline when its heartbeats stop; calls stay in east.
      await Promise.all(nats.supercluster.clusters["west"]!.servers.map((s) => s.stop("SIGKILL")));
      expect(caller.discover({ capability: "where" }).map((a) => a.name)).toEqual(["where", "where"]);
      await eventually(() => caller.discover({ capability: "where", online: true }).map((a) => a.id).join() === east.id, 15_000, 100);
      expect(textOf(await caller.call("where", {}))).toBe("east");
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 90_000);
});
