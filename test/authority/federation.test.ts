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
import { connect as natsConnect, nkeyAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { startSecureNats, type SecureNats } from "../../authority/index.js";
import { connect, textOf, type Bus, type ConnectOptions, type Identity } from "../../core/index.js";
import { natsServerVersion, findNatsServer } from "../../nats/index.js";
import { eventually, quietLogger } from "../helpers/bus.js";

const enc = new TextEncoder();
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
    const nc = await natsConnect({ servers: urls(region), authenticator: nkeyAuthenticator(enc.encode(identity.exportSeed())), inboxPrefix: `_INBOX.${identity.id}`, reconnect: false });
    open.push(nc);
    return nc;
  };
  /** Publishes and reports whether the server refused it (a permissions violation arrives asynchronously). */
  const refused = async (nc: NatsConnection, subject: string, data = "x"): Promise<boolean> => {
    const errors: string[] = [];
    void (async () => {
      for await (const s of nc.status()) if (s.type === "error") errors.push(String(s.error));
    })();
    nc.publish(subject, enc.encode(data));
    await nc.flush();
    await new Promise((r) => setTimeout(r, 150));
    return errors.some((e) => /permission/i.test(e) && e.includes(subject));
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
    expect(await refused(nc, `$KV.mesh_acme_agents_west.${agentId.id}`, "{}")).toBe(true);
    expect(await refused(nc, `$KV.mesh_acme_tasks_west.${callerId.id}.${task.id}`, "{}")).toBe(true);
    expect(await refused(nc, "mesh.acme.region.west.work.echo")).toBe(true);
    // What the caller itself may do there, as a control: its own owner-index keys in west, its own delayed work items.
    const callerRaw = await raw("east", callerId);
    expect(await refused(callerRaw, `$KV.mesh_acme_owners_west.${callerId.id}.region.probe`, "west")).toBe(false);
    expect(await refused(callerRaw, `mesh.acme.region.west.delayed.${callerId.id}.probe`)).toBe(false);
    expect(await refused(callerRaw, `mesh.acme.region.west.delayed.${intruder.id}.probe`)).toBe(true);
    // The agent may not serve what it was not issued for, in any region.
    const agentRaw = await raw("west", agentId);
    await expect((await jetstream(agentRaw).jetstreamManager()).consumers.add("MESH_ACME_WORK_EAST", { durable_name: "cap_other", filter_subject: "mesh.acme.region.east.work.other" })).rejects.toThrow();
  }, 120_000);
});
