/**
 * A federated tenant under accounts and the auth callout: every node of a
 * two-region supercluster has the tenants' accounts, and role permissions
 * name each region's registry and task plane. Attacked with raw NATS
 * clients as well as used through the library.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { startSecureNats, type SecureNats } from "../../authority/index.js";
import { connect, textOf, type Bus, type ConnectOptions, type Identity } from "../../core/index.js";
import { natsServerVersion, findNatsServer } from "../../nats/index.js";
import { eventually, quietLogger } from "../helpers/bus.js";
import { connectRaw, publishRefused } from "../helpers/nats.js";

const [, minor] = natsServerVersion(findNatsServer()).split(".").map(Number);
const REGIONS = ["east", "west"];

describe.skipIf(minor! < 10)("a federated tenant under accounts and the auth callout", () => {
  let dir: string;
  let nats: SecureNats;
  let admin: Identity;
  const open: Array<Bus | NatsConnection> = [];
  const urls = (region: string) => nats.supercluster!.clusters[region]!.urls;

  const bus = async (region: string, identity: Identity, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: urls(region), tenant: "acme", identity, auth: { nkey: true }, region, regions: REGIONS, presenceMaxAgeMs: 3000, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };
  const raw = async (region: string, identity: Identity): Promise<NatsConnection> => {
    const nc = await connectRaw(urls(region), identity);
    open.push(nc);
    return nc;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "agentbus-federation-"));
    nats = await startSecureNats({ dir, tenants: [], regions: REGIONS, logger: quietLogger });
    admin = await nats.createTenant("acme");
  }, 120_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("the tenant's set-up makes every region's registry and task plane in its own cluster; an agent in west serves a caller in east through them", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["echo"] });
    const callerId = await nats.issue("acme", "caller");
    const adminBus = await bus("east", admin);
    const rev = await adminBus.acl.putRule("echo-callers", { source: callerId.id, target: "*", capabilities: ["echo"] });
    const jsm = await jetstream(adminBus.nc).jetstreamManager();
    for (const region of REGIONS) {
      for (const stream of [`MESH_ACME_WORK_${region.toUpperCase()}`, `MESH_ACME_EVENTS_${region.toUpperCase()}`, `KV_mesh_acme_tasks_${region}`, `KV_mesh_acme_agents_${region}_view`]) {
        expect((await jsm.streams.info(stream)).cluster?.name, stream).toBe(region);
      }
    }
    const agent = await bus("west", agentId);
    await agent.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `${ctx.text} from ${agent.region}` });
    await agent.acl.applied(rev);
    const caller = await bus("east", callerId);
    await eventually(() => caller.discover({ capability: "echo", online: true }).length === 1, 15_000, 100);
    expect(caller.discover({ capability: "echo" })[0]!.regions).toEqual(["west"]);
    expect(textOf(await caller.call("echo", "hi"))).toBe("hi from west");
    const task = await (await caller.submit("echo", "task")).result({ timeout: 20_000 });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(task.metadata.region).toBe("west");
    // The same caller from west reads and lists it; the agent lists what it served.
    const westCaller = await bus("west", callerId);
    expect((await westCaller.task(task.id)).artifacts[0]!.parts[0]!.text).toBe("task from west");
    expect((await westCaller.tasks()).tasks.map((t) => t.id)).toContain(task.id);
    expect((await agent.tasks()).tasks.map((t) => t.id)).toContain(task.id);
    // Pinned to east, where no provider runs: it waits there.
    const pinned = await caller.submit("echo", "stay", { region: "east" });
    expect((await caller.task(pinned.id)).metadata).toMatchObject({ region: "east", pinned: true });

    // Raw clients: another caller reads nothing of it in either region, and cannot write the agent's registry entry in west.
    const intruder = await nats.issue("acme", "caller");
    const nc = await raw("east", intruder);
    const js = jetstream(nc);
    const kvm = await (await js.jetstreamManager()).direct;
    await expect(kvm.getMessage("KV_mesh_acme_tasks_west", { last_by_subj: `$KV.mesh_acme_tasks_west.${callerId.id}.${task.id}` })).rejects.toThrow();
    await expect((await js.jetstreamManager()).consumers.add("MESH_ACME_EVENTS_WEST", { name: "all" })).rejects.toThrow();
    await expect((await js.jetstreamManager()).consumers.add("MESH_ACME_WORK_WEST", { name: "steal", filter_subject: "mesh.acme.region.west.work.echo" })).rejects.toThrow();
    expect(await publishRefused(nc, `$KV.mesh_acme_agents_west.${agentId.id}`, "{}")).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_tasks_west.${callerId.id}.${task.id}`, "{}")).toBe(true);
    expect(await publishRefused(nc, "mesh.acme.region.west.work.echo")).toBe(true);
    // What the caller itself may do there, as a control: its own owner-index keys in west, its own delayed work items.
    const callerRaw = await raw("east", callerId);
    expect(await publishRefused(callerRaw, `$KV.mesh_acme_owners_west.${callerId.id}.region.probe`, "west")).toBe(false);
    expect(await publishRefused(callerRaw, `mesh.acme.region.west.delayed.${callerId.id}.probe`)).toBe(false);
    expect(await publishRefused(callerRaw, `mesh.acme.region.west.delayed.${intruder.id}.probe`)).toBe(true);
    // The agent may not serve what it was not issued for, in any region.
    const agentRaw = await raw("west", agentId);
    await expect((await jetstream(agentRaw).jetstreamManager()).consumers.add("MESH_ACME_WORK_EAST", { durable_name: "cap_other", filter_subject: "mesh.acme.region.east.work.other" })).rejects.toThrow();
  }, 120_000);
});

describe.skipIf(minor! < 14)("an edge site under tenant accounts", () => {
  let dir: string;
  let nats: SecureNats;
  let admin: Identity;
  const open: Array<Bus | NatsConnection> = [];
  const edgeUrl = () => nats.supercluster!.edges["shop"]!.server.url;
  const hub = { domain: "hub", region: "east" };

  const hubBus = async (identity: Identity): Promise<Bus> => {
    const b = await connect({ servers: nats.supercluster!.clusters["east"]!.urls, tenant: "acme", identity, auth: { nkey: true }, region: "east", regions: REGIONS, presenceMaxAgeMs: 3000, logger: quietLogger });
    open.push(b);
    return b;
  };
  const edgeBus = async (identity: Identity): Promise<Bus> => {
    const b = await connect({ servers: edgeUrl(), tenant: "acme", identity, auth: { nkey: true }, hub, logger: quietLogger });
    open.push(b);
    return b;
  };
  const raw = async (identity: Identity): Promise<NatsConnection> => {
    const nc = await connectRaw(edgeUrl(), identity);
    open.push(nc);
    return nc;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "agentbus-edge-"));
    nats = await startSecureNats({ dir, tenants: [], regions: REGIONS, edges: ["shop"], logger: quietLogger });
    admin = await nats.createTenant("acme");
  }, 180_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("the edge authenticates its clients itself, takes the hub's policy, keeps its own work when the link is cut and forwards the rest; raw clients stay in their rights on both sides of the link", async () => {
    const edge = nats.supercluster!.edges["shop"]!;
    const hubAgentId = await nats.issue("acme", "agent", { serves: ["far"] });
    const edgeAgentId = await nats.issue("acme", "agent", { serves: ["near"] });
    const callerId = await nats.issue("acme", "caller");
    const intruder = await nats.issue("acme", "caller");
    // Policy is written once, at the hub; the edge reads it from its mirror.
    const adminBus = await hubBus(admin);
    const rev = await adminBus.acl.putRule("callers", { source: callerId.id, target: "*", capabilities: ["near", "far"] });
    const hubAgent = await hubBus(hubAgentId);
    await hubAgent.agent({ name: "far", skills: [{ id: "far" }] }, { far: (ctx) => `far: ${ctx.text}` }, { tasks: { concurrency: 1 } });
    const edgeAgent = await edgeBus(edgeAgentId);
    await edgeAgent.agent({ name: "near", skills: [{ id: "near" }] }, { near: (ctx) => `near: ${ctx.text}` });
    const caller = await edgeBus(callerId);
    expect(await caller.acl.applied(rev, 15_000)).toBe(true);
    await eventually(() => caller.discover({ capability: "near", online: true }).length === 1, 15_000, 100);
    expect(textOf(await caller.call("near", "hi"))).toBe("near: hi");
    // Linked: a task for the hub's capability runs there, its result read at the edge.
    const linked = await caller.submit("far", "one");
    expect((await linked.result({ timeout: 30_000 })).artifacts[0]!.parts[0]!.text).toBe("far: one");

    // Raw clients at the edge: another caller reads nothing of the caller's tasks (here or at the hub), writes no policy (here or at the hub), takes no work.
    const nc = await raw(intruder);
    const js = jetstream(nc);
    const hubJsm = await jetstream(nc, { domain: "hub" }).jetstreamManager();
    await expect(hubJsm.direct.getMessage("KV_mesh_acme_tasks_east", { last_by_subj: `$KV.mesh_acme_tasks_east.${callerId.id}.${linked.id}` })).rejects.toThrow();
    await expect((await js.jetstreamManager()).consumers.add("MESH_ACME_OUTBOX", { name: "steal", filter_subject: `mesh.acme.outbox.${callerId.id}.*` })).rejects.toThrow();
    expect(await publishRefused(nc, "$KV.mesh_acme_acl.rule.grant-all", "{}")).toBe(true);
    expect(await publishRefused(nc, "$JS.hub.API.$KV.mesh_acme_acl.rule.grant-all", "{}")).toBe(true);
    expect(await publishRefused(nc, `$JS.hub.API.$KV.mesh_acme_tasks_east.${callerId.id}.${linked.id}`, "{}")).toBe(true);
    expect(await publishRefused(nc, `mesh.acme.outbox.${callerId.id}.forged`, "{}")).toBe(true);
    expect(await publishRefused(nc, "mesh.acme.region.east.work.far")).toBe(true);
    // As a control, what the caller itself may do: read its task at the hub, write its own outbox and owner entries.
    const callerRaw = await raw(callerId);
    const own = await (await jetstream(callerRaw, { domain: "hub" }).jetstreamManager()).direct.getMessage("KV_mesh_acme_tasks_east", { last_by_subj: `$KV.mesh_acme_tasks_east.${callerId.id}.${linked.id}` });
    expect(own?.subject).toBe(`$KV.mesh_acme_tasks_east.${callerId.id}.${linked.id}`);
    expect(await publishRefused(callerRaw, `mesh.acme.region.east.work.far`)).toBe(false);

    // The link is cut: a new connection is still authenticated at the edge, its work runs, the hub's is stored.
    edge.link.cut();
    await eventually(async () => caller.nc.request("$JS.hub.API.INFO", "", { timeout: 500 }).then(() => false, () => true), 15_000, 100);
    const late = await edgeBus(callerId);
    expect(textOf(await late.call("near", "offline"))).toBe("near: offline");
    const stored = await late.submit("far", "two");
    expect((await late.task(stored.id)).metadata.forward).toMatchObject(hub);
    // The link is back: forwarded, run at the hub, its result at the edge.
    edge.link.restore();
    await edge.linked(30_000);
    expect((await stored.result({ timeout: 60_000 })).artifacts[0]!.parts[0]!.text).toBe("far: two");

    // A revocation at the hub reaches the edge: the intruder's edge connection is closed and its next one refused.
    await nats.authority.revoke(intruder.id, "test");
    await eventually(() => nc.isClosed(), 15_000, 100);
    await expect(raw(intruder)).rejects.toThrow();
  }, 180_000);

  it("a leaf user of the hub signs in only as a leaf connection, and only with the leaf password", async () => {
    const hubUrls = nats.supercluster!.clusters["east"]!.urls;
    // The password is right, but a client is not a leaf node.
    await expect(natsConnect({ servers: hubUrls, user: "leaf-acme", pass: nats.state.leafPassword, reconnect: false })).rejects.toThrow();
    await expect(natsConnect({ servers: hubUrls, user: "leaf-acme", pass: "guess", reconnect: false })).rejects.toThrow();
    // The edge's link of the tenant's account is up (the same password, as a leaf node).
    const leafz = await (await fetch(`${nats.supercluster!.edges["shop"]!.server.monitorUrl}/leafz`)).json() as { leafs?: Array<{ account: string }> };
    expect(leafz.leafs?.map((l) => l.account).sort()).toEqual(["AUTH", "acme"]);
  });
});
