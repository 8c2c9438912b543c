import { DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { compareVersions, connect, textOf, type Bus, type ConnectOptions, type Task, type TaskEvent } from "../../core/index.js";
import { codeOf, eventually, quietLogger } from "../helpers/bus.js";
import { useNatsSupercluster } from "../helpers/nats.js";
import { findNatsServer, natsServerVersion, waitForMetaLeader } from "../../nats/index.js";

const REGIONS = ["east", "west"];
// A registry per region needs nats-server 2.10 (test/core/regions.test.ts checks the refusal before it): no supercluster is started on older ones.
const federates = compareVersions(natsServerVersion(findNatsServer()), "2.10.0") >= 0;

describe.skipIf(!federates)("federation: a task plane per region", () => {
  const nats = useNatsSupercluster({ regions: REGIONS, nodesPerRegion: 1 });
  const open: Bus[] = [];
  let tenants = 0;
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
      // The topology as each side sees it: both regions, the local one marked, the other heard from.
      const topology = await eastCaller.topology();
      expect(topology).toMatchObject({ region: "east", federated: true });
      expect(topology.regions.map((r) => [r.name, r.local, r.agents])).toEqual([["east", true, 1], ["west", false, 2]]);
      expect(topology.regions[1]!.link).toMatchObject({ up: true });
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
      // The same id submitted again from the submitter's region finds the task where it is kept, wherever that is.
      const retry = await bus("east", tenant, { identity: eastCaller.identity });
      expect(await codeOf(retry.submit("westonly", "stay", { taskId: pinned.id }))).toBe("TASK_FINISHED");
      expect(await codeOf(retry.submit("westonly", "x", { taskId: done.id }))).toBe("TASK_FINISHED");

      expect(await codeOf(eastCaller.submit("both", "x", { region: "north" }))).toBe("INVALID_INPUT");
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 120_000);

  it("a parent fans out to children served in another region and is resumed when they have ended", async () => {
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

  it("large content stays in its task's region: a pinned task's blobs are in that region's store, and a call across regions carries its large input and reply through each side's own store", async () => {
    const tenant = `fed${++tenants}`;
    try {
      const west = await bus("west", tenant);
      const big = "w".repeat(300_000);
      await west.agent({ name: "size", skills: [{ id: "size" }] }, { size: (ctx) => `${ctx.text.length} bytes in ${west.region}; ${big}` });
      const east = await bus("east", tenant);
      await eventually(() => east.discover({ capability: "size", online: true }).length === 1, 15_000, 100);
      const input = "e".repeat(400_000);
      // Pinned to west: its input (and its result) stored in west's object store, placed in west; none in east's.
      const done = await (await east.submit("size", input, { region: "west" })).result({ timeout: 30_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(text(done)).toBe(`400000 bytes in west; ${big}`);
      const jsm = await jetstreamManager(east.nc);
      const T = tenant;
      const westStore = await jsm.streams.info(`OBJ_mesh_${T}_blobs_west`);
      expect(westStore.cluster?.name).toBe("west");
      expect(westStore.state.messages).toBeGreaterThan(0);
      const eastStored = async () => (await jsm.streams.info(`OBJ_mesh_${T}_blobs_east`).catch(() => undefined))?.state.messages ?? 0;
      expect(await eastStored()).toBe(0);
      // A fast call from east to west: the input carried through east's store, the reply through west's.
      const reply = await east.call("size", input, { region: "west", timeout: 30_000 });
      expect(textOf(reply)).toBe(`400000 bytes in west; ${big}`);
      expect((await jsm.streams.info(`OBJ_mesh_${T}_blobs_east`)).cluster?.name).toBe("east");
      expect(await eastStored()).toBeGreaterThan(0);
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 90_000);
});

// Regions of one node each, and of three (every stream and bucket of a region replicated on its three nodes).
describe.skipIf(!federates).each([1, 3])("federation: losing a region of %i node(s)", (nodes) => {
  const nats = useNatsSupercluster({ regions: REGIONS, nodesPerRegion: nodes });
  const open: Bus[] = [];
  const bus = async (region: string, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant: "loss", region, regions: REGIONS, replicas: nodes, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };

  it("every node of one region is killed during 1,000 tasks: the other region serves its work on, and the lost region's queued work is neither lost nor run twice and completes when it returns", async () => {
    try {
      const runs = new Map<string, number>();
      for (const region of REGIONS) {
        const worker = await bus(region);
        await worker.agent({ name: "job", skills: [{ id: "job" }] }, {
          job: async (ctx) => {
            runs.set(ctx.taskId!, (runs.get(ctx.taskId!) ?? 0) + 1);
            await new Promise((r) => setTimeout(r, 30));
            return worker.region!;
          },
        }, { tasks: { concurrency: 8, ackWaitMs: 5000 } });
      }
      const callers = { east: await bus("east"), west: await bus("west") };
      await eventually(() => callers.east.discover({ capability: "job", online: true }).length === 2 && callers.west.discover({ capability: "job", online: true }).length === 2, 15_000, 100).catch((err) => {
        throw new Error(`${String(err)}: ${JSON.stringify([callers.east.discover({ capability: "job" }), callers.west.discover({ capability: "job" })].map((l) => l.map((a) => [a.id, a.online, a.regions])))}`);
      });

      const perRegion = 500;
      const west = nats.supercluster.clusters["west"]!;
      let westDown = false;
      let eastDoneWhileWestDown = 0;
      let firstAfterLossMs: number | undefined;
      const regionOf = new Map<string, string>();
      /** Submits task `id` from `caller`, again after a failure (an outage), until it is accepted. */
      const submitOne = async (caller: Bus, id: string): Promise<void> => {
        for (let attempt = 0; ; attempt++) {
          try {
            await caller.submit("job", id, { taskId: id });
            return;
          } catch (err) {
            if ((err as { code?: string }).code === "TASK_FINISHED") return;
            if (attempt > 200) throw new Error(`task ${id}: ${String(err)}`, { cause: err });
            await new Promise((r) => setTimeout(r, 500));
          }
        }
      };
      /** Waits for task `id` to complete, reading again after a failure (an outage). */
      const awaitOne = async (caller: Bus, id: string): Promise<void> => {
        for (let attempt = 0; ; attempt++) {
          try {
            const t = await (await caller.taskHandle(id)).result({ timeout: 60_000 });
            expect(t.status.state).toBe("TASK_STATE_COMPLETED");
            regionOf.set(id, String(t.metadata.region));
            return;
          } catch (err) {
            if (attempt > 200) throw new Error(`task ${id}: ${String(err)}`, { cause: err });
            await new Promise((r) => setTimeout(r, 500));
          }
        }
      };
      let back: Promise<void> | undefined;
      const restartWest = () => (back ??= (async () => {
        for (const s of west.servers) await s.restart();
      })());
      let queuedAtLoss = 0;
      let linkSeenDown = false;
      const acceptedBeforeLoss = new Set<string>();
      // West queues its 500 at once (a backlog), and loses every node once 300 are queued.
      const westIds = Array.from({ length: perRegion }, (_, i) => `west-${i}`);
      let nextWest = 0;
      const westSubmits = Promise.all(Array.from({ length: 20 }, async () => {
        while (nextWest < perRegion) {
          const i = nextWest++;
          if (i === 300 && !westDown) {
            westDown = true;
            queuedAtLoss = [...acceptedBeforeLoss].filter((id) => !runs.has(id)).length;
            await Promise.all(west.servers.map((s) => s.stop("SIGKILL")));
            void eventually(async () => !(await westLink()).up, 30_000, 200).then(() => (linkSeenDown = true), () => {});
          }
          await submitOne(callers.west, westIds[i]!);
          if (!westDown) acceptedBeforeLoss.add(westIds[i]!);
        }
      }));
      // East sees the west link go down.
      const westLink = async () => (await callers.east.topology()).regions.find((r) => r.name === "west")!.link!;
      expect((await westLink()).up).toBe(true);
      // East submits and waits, task by task, through the loss; west comes back once east has served 200 tasks without it.
      let nextEast = 0;
      await Promise.all(Array.from({ length: 20 }, async () => {
        while (nextEast < perRegion) {
          const id = `east-${nextEast++}`;
          const lost = westDown && back === undefined;
          const started = Date.now();
          await submitOne(callers.east, id);
          await awaitOne(callers.east, id);
          if (lost) {
            firstAfterLossMs ??= Date.now() - started;
            if (++eastDoneWhileWestDown >= 200 && linkSeenDown) void restartWest();
          }
        }
      }));
      // East's topology shows the west link down (no heartbeat heard for three periods) before west returns.
      await eventually(() => linkSeenDown, 30_000, 100);
      await restartWest();
      await westSubmits;
      await eventually(async () => (await westLink()).up, 30_000, 200);
      await Promise.all(westIds.map((id) => awaitOne(callers.west, id)));
      expect(westDown).toBe(true);
      expect(queuedAtLoss).toBeGreaterThan(0);
      expect(eastDoneWhileWestDown).toBeGreaterThanOrEqual(200);
      expect(firstAfterLossMs).toBeDefined();

      // East's ran in east; west's accepted before the loss ran in west when it returned (those accepted
      // after it may have gone to east while west's own worker was not yet back in west's view).
      // Each completed once: count COMPLETED events in each region's events stream.
      expect(regionOf.size).toBe(2 * perRegion);
      for (const [id, region] of regionOf) {
        const from = id.split("-")[0]!;
        if (from === "east" || acceptedBeforeLoss.has(id)) expect(region, id).toBe(from);
        else expect(REGIONS, id).toContain(region);
      }
      const completed = new Map<string, number>();
      const jsm = await jetstreamManager(callers.east.nc);
      for (const region of REGIONS) {
        const stream = `MESH_LOSS_EVENTS_${region.toUpperCase()}`;
        await eventually(async () => (await jsm.streams.info(`MESH_LOSS_WORK_${region.toUpperCase()}`)).state.messages === 0, 60_000, 500);
        const consumer = await eventually(() => jetstream(callers.east.nc).consumers.get(stream, { deliver_policy: DeliverPolicy.All }), 30_000, 500);
        let left = (await eventually(() => consumer.info(), 30_000, 500)).num_pending;
        const iter = await consumer.consume();
        for await (const m of iter) {
          const e = m.json<TaskEvent>();
          if ("statusUpdate" in e && e.statusUpdate.status.state === "TASK_STATE_COMPLETED") completed.set(e.statusUpdate.taskId, (completed.get(e.statusUpdate.taskId) ?? 0) + 1);
          if (--left === 0) break;
        }
        iter.stop();
      }
      expect(completed.size).toBe(2 * perRegion);
      expect([...completed.entries()].filter(([, n]) => n !== 1)).toEqual([]);
      for (const id of regionOf.keys()) expect(runs.get(id) ?? 0).toBeGreaterThanOrEqual(1);
    } finally {
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 300_000);
});

describe.skipIf(!federates)("federation: an edge site", () => {
  const nats = useNatsSupercluster({ regions: REGIONS, nodesPerRegion: 1, edges: ["shop"] });
  const open: Bus[] = [];
  const hubBus = async (region: string): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant: "edge", region, regions: REGIONS, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger });
    open.push(b);
    return b;
  };
  const edgeBus = async (extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster.edges["shop"]!.server.url, auth: nats.supercluster.auth, tenant: "edge", hub: { domain: "hub", region: "east" }, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };

  it("the hub's regions discover and call the edge's agents; with its link down, the edge serves its own work, and stores tasks for the hub's capabilities; when the link is back they are forwarded in order, run once, and their results reach the edge", async () => {
    const edge = nats.supercluster.edges["shop"]!;
    try {
      // The hub serves `far` (one worker, so it runs what it takes in order); the edge serves `near`.
      const hub = await hubBus("east");
      const ranAtHub: string[] = [];
      await hub.agent({ name: "far", skills: [{ id: "far" }] }, { far: (ctx) => (ranAtHub.push(ctx.text), `far: ${ctx.text}`) }, { tasks: { concurrency: 1 } });
      const edgeAgent = await edgeBus();
      await edgeAgent.agent({ name: "near", skills: [{ id: "near" }] }, { near: (ctx) => `near: ${ctx.text}` });
      const caller = await edgeBus();
      await eventually(() => caller.discover({ capability: "near", online: true }).length === 1, 15_000, 100);
      // Its connections are in the edge's region (its domain, named by no option).
      expect(caller.region).toBe("shop");
      expect(caller.discover({ capability: "near" })[0]!.regions).toEqual(["shop"]);
      // The edge's set-up joins the hub: every region discovers its agents, calls them through the link, and hears from it.
      await edgeAgent.provision();
      const west = await hubBus("west");
      for (const b of [hub, west]) {
        await eventually(() => b.discover({ capability: "near", online: true }).length === 1, 15_000, 100);
        expect(b.discover({ capability: "near" })[0]!.regions).toEqual(["shop"]);
        await eventually(async () => (await b.topology()).edges?.[0]?.link.up === true, 15_000, 100);
        expect((await b.topology()).edges).toMatchObject([{ name: "shop", agents: 1, instances: 1 }]);
      }
      expect(textOf(await west.call("near", "from west"))).toBe("near: from west");

      // Linked: a task for the hub goes there and its result comes back.
      const first = await (await caller.submit("far", "linked")).result({ timeout: 30_000 });
      expect(first.status.state).toBe("TASK_STATE_COMPLETED");
      expect(first.artifacts[0]!.parts[0]!.text).toBe("far: linked");
      expect(first.metadata.region).toBe("east");
      // Content over the inline size is forwarded in the task (the edge's blobs stay at the edge, the link carries no object store writes).
      const bulky = await (await caller.submit("far", "b".repeat(300_000))).result({ timeout: 30_000 });
      expect(bulky.status.state).toBe("TASK_STATE_COMPLETED");
      expect(bulky.artifacts[0]!.parts[0]!.text).toBe(`far: ${"b".repeat(300_000)}`);

      // The link is cut: the edge's own work runs on; work for the hub is stored at the edge.
      edge.link.cut();
      await eventually(async () => (await caller.nc.request("$JS.hub.API.INFO", "", { timeout: 500 }).then(() => false, () => true)), 10_000, 100);
      expect((await (await caller.submit("near", "offline")).result({ timeout: 20_000 })).artifacts[0]!.parts[0]!.text).toBe("near: offline");
      const stored = [];
      for (let i = 1; i <= 5; i++) stored.push(await caller.submit("far", `order ${i}`));
      await new Promise((r) => setTimeout(r, 1_000));
      for (const h of stored) {
        const t = await h.get();
        expect(t.status.state).toBe("TASK_STATE_SUBMITTED");
        expect(t.metadata.forward).toMatchObject({ domain: "hub", region: "east" });
        expect(t.metadata.forwarded).toBeUndefined();
      }
      // The edge's topology: the hub's link down, this identity's five tasks waiting; the hub's: the edge not heard from.
      expect((await caller.topology()).hub).toEqual({ domain: "hub", region: "east", up: false, waiting: 5 });
      await eventually(async () => (await hub.topology()).edges?.[0]?.link.up === false, 15_000, 200);
      // One canceled while it waits at the edge never leaves.
      const canceled = await caller.submit("far", "never");
      expect((await canceled.cancel()).status.state).toBe("TASK_STATE_CANCELED");
      expect(ranAtHub).toEqual(["linked", "b".repeat(300_000)]);

      // The link is back: forwarded in order, each once; results reach the edge.
      edge.link.restore();
      await edge.linked(30_000);
      const done = await Promise.all(stored.map((h) => h.result({ timeout: 60_000 })));
      expect(done.map((t) => t.status.state)).toEqual(Array(5).fill("TASK_STATE_COMPLETED"));
      expect(done.map((t) => t.artifacts[0]!.parts[0]!.text)).toEqual([1, 2, 3, 4, 5].map((i) => `far: order ${i}`));
      expect(ranAtHub).toEqual(["linked", "b".repeat(300_000), ...[1, 2, 3, 4, 5].map((i) => `order ${i}`)]);
      // The events too, from the edge, through a handle made there.
      const states: string[] = [];
      for await (const { event } of (await caller.taskHandle(stored[2]!.id)).events()) if ("statusUpdate" in event) states.push(event.statusUpdate.status.state);
      expect(states.at(-1)).toBe("TASK_STATE_COMPLETED");
      // The hub holds each once (its work stream drained), the canceled one never.
      const hubJsm = await jetstreamManager(hub.nc);
      await eventually(async () => (await hubJsm.streams.info("MESH_EDGE_WORK_EAST")).state.messages === 0, 10_000, 100);
      await expect(hub.task(canceled.id)).rejects.toMatchObject({ code: "TASK_NOT_FOUND" });
      expect((await (await jetstreamManager(caller.nc)).streams.info("MESH_EDGE_OUTBOX")).state.messages).toBe(0);
      expect((await caller.topology()).hub).toEqual({ domain: "hub", region: "east", up: true, waiting: 0 });
      await eventually(async () => (await hub.topology()).edges?.[0]?.link.up === true, 15_000, 200);
    } finally {
      edge.link.restore();
      await Promise.all(open.splice(0).map((b) => b.close().catch(() => {})));
    }
  }, 180_000);
});

// Two regions and a third site running JetStream only (a cluster of the supercluster that is not one of the bus's regions).
describe.skipIf(!federates)("federation: two regions and a witness site", () => {
  const nats = useNatsSupercluster({ regions: [...REGIONS, "witness"], nodesPerRegion: 1 });

  it("when one region is lost the JetStream meta group keeps its majority: in the other, a new agent makes its work consumer, tasks run, and listings answer", async () => {
    const open: Bus[] = [];
    const bus = async (region: string): Promise<Bus> => {
      const b = await connect({ servers: nats.supercluster.clusters[region]!.urls, auth: nats.supercluster.auth, tenant: "wit", region, regions: REGIONS, insecureAllowAll: true, presenceMaxAgeMs: 3000, logger: quietLogger });
      open.push(b);
      return b;
    };
    try {
      // Both regions' planes exist before the loss (the set-up of a federated tenant).
      await (await bus("east")).provision();
      const caller = await bus("east");
      await Promise.all(nats.supercluster.clusters["west"]!.servers.map((s) => s.stop("SIGKILL")));
      // East and the witness elect a meta leader between them (when west held it: seconds).
      const left = [...nats.supercluster.clusters["east"]!.servers, ...nats.supercluster.clusters["witness"]!.servers];
      await waitForMetaLeader(left, 30_000);
      // A new agent in east, after the loss: its consumer is made, its work runs, the listing answers.
      const agent = await bus("east");
      await agent.agent({ name: "late", skills: [{ id: "late" }] }, { late: (ctx) => `late: ${ctx.text}` });
      await eventually(() => caller.discover({ capability: "late", online: true }).length === 1, 15_000, 100);
      const done = await (await caller.submit("late", "x")).result({ timeout: 30_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(done.metadata.region).toBe("east");
      expect((await caller.tasks()).tasks.map((t) => t.id)).toContain(done.id);
    } finally {
      await Promise.all(open.map((b) => b.close().catch(() => {})));
    }
  }, 120_000);
});
