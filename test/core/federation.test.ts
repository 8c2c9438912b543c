import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { compareVersions, connect, type Bus, type ConnectOptions, type Task } from "../../core/index.js";
import { codeOf, eventually, quietLogger } from "../helpers/bus.js";
import { useNatsSupercluster } from "../helpers/nats.js";

const REGIONS = ["east", "west"];

describe("federation: a task plane per region", () => {
  const nats = useNatsSupercluster({ regions: REGIONS, nodesPerRegion: 1 });
  const open: Bus[] = [];
  let tenants = 0;
  const tooOld = () => compareVersions(nats.supercluster.servers[0]!.version, "2.10.0") < 0;
  /** A federated bus connected to a region's own servers. */
  const bus = async (region: string, tenant: string, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant, region, regions: REGIONS, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };
  /** An agent serving `cap` that answers with the region its connection says. */
  const serve = async (b: Bus, cap: string) => b.agent({ name: cap, skills: [{ id: cap }] }, { [cap]: () => `ran in ${b.region}` });
  const text = (t: Task) => t.artifacts[0]?.parts[0]?.text;

  it("work is queued where a provider runs (the submitter's region, else the nearest with one), a pinned task waits for one in its region, and the task is read and replayed from either region", async () => {
    if (tooOld()) return;
    const tenant = `fed${++tenants}`;
    try {
      const [eastWorker, westWorker] = [await bus("east", tenant), await bus("west", tenant)];
      await serve(eastWorker, "both");
      await serve(westWorker, "both");
      await serve(await bus("west", tenant), "westonly");
      const eastCaller = await bus("east", tenant);
      const westCaller = await bus("west", tenant);
      await eventually(() => eastCaller.discover({ capability: "both", online: true }).length === 2 && eastCaller.discover({ capability: "westonly", online: true }).length === 1, 15_000, 100);

      // A provider in the submitter's region: queued and run there.
      for (const [caller, region] of [[eastCaller, "east"], [westCaller, "west"]] as const) {
        const done = await (await caller.submit("both", "x")).result({ timeout: 20_000 });
        expect(done.status.state).toBe("TASK_STATE_COMPLETED");
        expect(done.metadata.region).toBe(region);
        expect(text(done)).toBe(`ran in ${region}`);
      }
      // None in the submitter's region: routed to the region with one; the snapshot says where.
      const routed = await eastCaller.submit("westonly", "x");
      const done = await routed.result({ timeout: 20_000 });
      expect(done.metadata.region).toBe("west");
      expect(done.metadata.pinned).toBeUndefined();
      expect(text(done)).toBe("ran in west");

      // Each region's plane lives in its own cluster: work, events, snapshots.
      const jsm = await jetstreamManager(eastCaller.nc);
      const placed = async (stream: string) => (await jsm.streams.info(stream)).cluster?.name;
      const T = tenant.toUpperCase();
      expect(await placed(`MESH_${T}_WORK_WEST`)).toBe("west");
      expect(await placed(`MESH_${T}_EVENTS_EAST`)).toBe("east");
      expect(await placed(`KV_mesh_${tenant}_tasks_west`)).toBe("west");
      expect((await jsm.streams.info(`MESH_${T}_EVENTS_WEST`)).config.subjects).toEqual([`mesh.${tenant}.region.west.events.>`]);
      const westTasks = await jsm.streams.info(`KV_mesh_${tenant}_tasks_west`, { subjects_filter: ">" });
      expect(Object.keys(westTasks.state.subjects ?? {}).some((s) => s.endsWith(`.${done.id}`))).toBe(true);
      const eastTasks = await jsm.streams.info(`KV_mesh_${tenant}_tasks_east`, { subjects_filter: ">" });
      expect(Object.keys(eastTasks.state.subjects ?? {}).some((s) => s.endsWith(`.${done.id}`))).toBe(false);

      // Read, listed and replayed from either region by the same identity, with the same cursors.
      const westReader = await bus("west", tenant, { identity: eastCaller.identity });
      expect((await westReader.task(done.id)).status.state).toBe("TASK_STATE_COMPLETED");
      expect((await eastCaller.tasks()).tasks.map((t) => t.id)).toContain(done.id);
      expect((await westReader.tasks()).tasks.map((t) => t.id).sort()).toEqual((await eastCaller.tasks()).tasks.map((t) => t.id).sort());
      const read = async (b: Bus, fromSequence?: number) => {
        const out: Array<{ sequence: number; text: string }> = [];
        for await (const { sequence, event } of (await b.taskHandle(done.id)).events(fromSequence === undefined ? {} : { fromSequence })) out.push({ sequence, text: JSON.stringify(event) });
        return out;
      };
      const fromEast = await read(eastCaller);
      expect(fromEast.length).toBeGreaterThanOrEqual(2);
      expect(await read(westReader)).toEqual(fromEast);
      expect(await read(westReader, fromEast[0]!.sequence + 1)).toEqual(fromEast.slice(1));
      expect((await eastCaller.taskSubjects(done.id)).stream("EVENTS")).toBe(`MESH_${T}_EVENTS_WEST`);

      // Pinned to east, where nothing serves it: it waits there, never run in west.
      const pinned = await eastCaller.submit("westonly", "stay", { region: "east" });
      await new Promise((r) => setTimeout(r, 1500));
      const waiting = await eastCaller.task(pinned.id);
      expect(waiting.status.state).toBe("TASK_STATE_SUBMITTED");
      expect(waiting.metadata).toMatchObject({ region: "east", pinned: true });
      // A provider comes up in east: it runs there.
      await serve(await bus("east", tenant), "westonly");
      const ranPinned = await pinned.result({ timeout: 20_000 });
      expect(ranPinned.metadata.region).toBe("east");
      expect(text(ranPinned)).toBe("ran in east");
      // The same id submitted again from the other region finds the task in its own region (not a new one in west).
      expect(await codeOf(westReader.submit("westonly", "stay", { taskId: pinned.id }))).toBe("TASK_FINISHED");

      expect(await codeOf(eastCaller.submit("both", "x", { region: "north" }))).toBe("INVALID_INPUT");
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 120_000);

  it("a parent fans out to children served in another region and is resumed when they have ended", async () => {
    if (tooOld()) return;
    const tenant = `fed${++tenants}`;
    try {
      const west = await bus("west", tenant);
      await serve(west, "leaf");
      const east = await bus("east", tenant);
      await east.agent({ name: "root", skills: [{ id: "root" }] }, {
        root: async (ctx) => {
          const children = await ctx.fanOut([0, 1, 2].map((i) => ({ capability: "leaf", input: `child ${i}`, key: String(i) })));
          return children.map((c) => `${c.metadata.region}:${text(c)}`).join(",");
        },
      });
      const caller = await bus("east", tenant);
      await eventually(() => caller.discover({ capability: "leaf", online: true }).length === 1 && caller.discover({ capability: "root", online: true }).length === 1, 15_000, 100);
      const done = await (await caller.submit("root", "go")).result({ timeout: 30_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(done.metadata.region).toBe("east");
      expect(text(done)).toBe("west:ran in west,west:ran in west,west:ran in west");
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 90_000);
});
