/**
 * Tenants as NATS accounts, identities authenticated by their key, role
 * permissions enforced by nats-server through the authority's auth
 * callout: attacked with raw NATS clients as well as through the library.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect as natsConnect, headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createUser } from "@nats-io/nkeys";
import { startSecureNats, type SecureNats } from "../../authority/index.js";
import { connect, Envelopes, Identity, isAgentBusError, readAudit, textOf, type AuditEntry, type Bus, type ConnectOptions, type Task } from "../../core/index.js";
import { natsServerVersion, findNatsServer } from "../../nats/index.js";
import { eventually, quietLogger } from "../helpers/bus.js";
import { connectRaw, publishRefused } from "../helpers/nats.js";

const enc = new TextEncoder();
const [, minor] = natsServerVersion(findNatsServer()).split(".").map(Number);
const calloutServer = minor! >= 10;

describe.skipIf(!calloutServer)("tenants as accounts, permissions by role (auth callout)", () => {
  let dir: string;
  let nats: SecureNats;
  let acmeAdmin: Identity;
  let betaAdmin: Identity;
  const open: Array<Bus | NatsConnection> = [];

  const bus = async (tenant: string, identity: Identity, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.server.url, tenant, identity, auth: { nkey: true }, logger: quietLogger, ...extra });
    open.push(b);
    return b;
  };
  /** A raw NATS client authenticated with an identity's key: no library checks at all. */
  const raw = async (identity: Identity, inboxPrefix = `_INBOX.${identity.id}`): Promise<NatsConnection> => {
    const nc = await connectRaw(nats.server.url, identity, inboxPrefix);
    open.push(nc);
    return nc;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "agentbus-authority-"));
    nats = await startSecureNats({ dir, tenants: ["acme", "beta"], logger: quietLogger });
    acmeAdmin = await nats.createTenant("acme");
    betaAdmin = await nats.createTenant("beta");
  }, 60_000);

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close().catch(() => {})));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("an issued agent and a granted caller work through the library: fast call and durable task", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["greet"] });
    const callerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    const rev = await admin.acl.putRule("greet-callers", { source: callerId.id, target: "*", capabilities: ["greet"] });
    const agent = await bus("acme", agentId);
    await agent.agent({ name: "greeter", skills: [{ id: "greet" }] }, { greet: (ctx) => `hello, ${ctx.text}` });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    expect(textOf(await caller.call("greet", "Ada"))).toBe("hello, Ada");
    // An operator sees task events live on `task.<task>.events` (the events stream republishes them).
    const live: string[] = [];
    admin.nc.subscribe("mesh.acme.task.*.events", { callback: (e, m) => void (e ? undefined : live.push(`${m.subject} ${m.headers?.get("Nats-Subject")}`)) });
    await admin.nc.flush();
    const task = await caller.submit("greet", "Grace");
    expect((await task.result()).status.state).toBe("TASK_STATE_COMPLETED");
    await eventually(() => live.length >= 2, 3000);
    expect(live).toContain(`mesh.acme.task.${task.id}.events mesh.acme.events.${callerId.id}.${task.id}`);
    // Lists: the caller its own tasks, the agent those it served; another caller none of them.
    expect((await caller.tasks()).tasks.map((t) => t.id)).toContain(task.id);
    expect((await agent.tasks()).tasks.map((t) => t.id)).toContain(task.id);
    const other = await bus("acme", await nats.issue("acme", "caller"));
    expect((await other.tasks()).tasks.map((t) => t.id)).not.toContain(task.id);
    await expect(other.task(task.id)).rejects.toMatchObject({ code: "TASK_NOT_FOUND" });
    // Replaying the task's events: a consumer whose filter names the task.
    const states: string[] = [];
    for await (const { event } of (await caller.taskHandle(task.id)).events()) if ("statusUpdate" in event) states.push(event.statusUpdate.status.state);
    expect(states.at(-1)).toBe("TASK_STATE_COMPLETED");
    // A raw caller cannot open an unfiltered consumer on the events stream, nor one on the work queue.
    const rawOther = await raw(await nats.issue("acme", "caller"));
    const jsm = await jetstream(rawOther).jetstreamManager();
    await expect(jsm.consumers.add("MESH_ACME_EVENTS", { name: "all" })).rejects.toThrow();
    await expect(jsm.consumers.add("MESH_ACME_WORK", { name: "steal", filter_subject: "mesh.acme.work.greet" })).rejects.toThrow();
  });

  it("a granted caller's delayed task runs at its time; a raw caller may schedule only under its own id", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["later"] });
    const callerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    const rev = await admin.acl.putRule("later-callers", { source: callerId.id, target: "*", capabilities: ["later"] });
    const agent = await bus("acme", agentId);
    let ranAt = 0;
    await agent.agent({ name: "later", skills: [{ id: "later" }] }, {
      later: (ctx) => {
        ranAt = Date.now();
        return `later, ${ctx.text}`;
      },
    });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    if (!caller.server.schedules) return; // message schedules: nats-server 2.12+
    const handle = await caller.submit("later", "Ada", { delayMs: 1200 });
    const runAt = (await caller.task(handle.id)).metadata.runAt!;
    const task = await handle.result({ timeout: 20_000 });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(ranAt).toBeGreaterThanOrEqual(runAt);
    const nc = await raw(callerId);
    expect(await publishRefused(nc, `mesh.acme.delayed.${agentId.id}.x`)).toBe(true);
    expect(await publishRefused(nc, `mesh.acme.delayed.${callerId.id}.x`)).toBe(false);
  });

  it("recurring schedules under the role permissions: a raw caller writes only its own, and a tick another schedule aims at a victim's runs nothing", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["digest"] });
    const callerId = await nats.issue("acme", "caller");
    const otherId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    if (!admin.server.cron) return; // cron schedules: nats-server 2.14+
    await admin.provision();
    await admin.acl.putRule("digest-callers", { source: callerId.id, target: "*", capabilities: ["digest"] });
    const rev = await admin.acl.putRule("digest-other", { source: otherId.id, target: "*", capabilities: ["digest"] });
    const agent = await bus("acme", agentId);
    const ran: string[] = [];
    await agent.agent({ name: "digest", skills: [{ id: "digest" }] }, {
      digest: (ctx) => {
        ran.push(`${ctx.task!.metadata.submitter} ${ctx.text}`);
        return "ok";
      },
    });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    await caller.schedules.create({ id: "mine", capability: "digest", input: "from caller", everyMs: 1000 });
    expect((await caller.schedules.list()).map((s) => s.id)).toEqual(["mine"]);
    await eventually(() => ran.includes(`${callerId.id} from caller`), 15_000);
    const runs = (await caller.tasks()).tasks.filter((t) => t.metadata.schedule === "mine");
    expect(runs.length).toBeGreaterThan(0);

    // Another caller, raw: cannot touch the first one's schedule message or record, nor publish ticks.
    const nc = await raw(otherId);
    expect(await publishRefused(nc, `mesh.acme.schedule.${callerId.id}.mine`)).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_schedules.${callerId.id}.mine`)).toBe(true);
    expect(await publishRefused(nc, "mesh.acme.tick.digest.mine")).toBe(true);
    expect(await publishRefused(nc, `$JS.API.DIRECT.GET.KV_mesh_acme_schedules.$KV.mesh_acme_schedules.${callerId.id}.mine`)).toBe(true);
    // Its own schedule, aimed by hand at the first caller's tick subject: the tick names its real schedule, so the worker refuses it.
    const js = jetstream(nc);
    const h = natsHeaders();
    h.set("Nats-Schedule", "@every 1s");
    h.set("Nats-Schedule-Target", "mesh.acme.tick.digest.mine");
    h.set("Nats-Rollup", "sub");
    await js.publish(`mesh.acme.schedule.${otherId.id}.evil`, enc.encode("{}"), { headers: h });
    let refusal: AuditEntry | undefined;
    for await (const e of readAudit(admin, { from: 1, kinds: ["bad_signature"] })) {
      if (String(e.record.reason).includes("names no schedule")) {
        refusal = e;
        break;
      }
    }
    expect(refusal).toMatchObject({ verified: true, signer: agentId.id, record: { code: "BAD_SIGNATURE", subject: "mesh.acme.tick.digest.mine" } });
    expect(ran.every((r) => r.startsWith(callerId.id))).toBe(true);
    await caller.schedules.delete("mine");
    const off = natsHeaders();
    off.set("Nats-Rollup", "sub");
    off.set("Nats-TTL", "1s");
    await js.publish(`mesh.acme.schedule.${otherId.id}.evil`, enc.encode("{}"), { headers: off });
  });

  it("capability limits under the role permissions: the serving agent keeps them; a raw caller or another agent cannot reset them", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["metered"] });
    const otherAgentId = await nats.issue("acme", "agent", { serves: ["other"] });
    const callerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    await admin.provision();
    const rev = await admin.acl.putRule("metered-callers", { source: callerId.id, target: "*", capabilities: ["metered"] });
    const agent = await bus("acme", agentId);
    let running = 0;
    let most = 0;
    await agent.agent({ name: "metered", skills: [{ id: "metered" }] }, {
      metered: async () => {
        most = Math.max(most, ++running);
        await new Promise((r) => setTimeout(r, 100));
        running--;
        return "ok";
      },
    }, { limits: { metered: { maxInFlight: 1 } } });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    const tasks = await Promise.all([0, 1, 2].map((i) => caller.submit("metered", `m${i}`)));
    for (const t of tasks) expect((await t.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    expect(most).toBe(1);
    expect(await publishRefused(await raw(callerId), "$KV.mesh_acme_limits.metered", "{}")).toBe(true);
    expect(await publishRefused(await raw(otherAgentId), "$KV.mesh_acme_limits.metered", "{}")).toBe(true);
  });

  it("a flow under the role permissions: the parent's agent fans out to another agent's capability and is resumed when the children end", async () => {
    const sumId = await nats.issue("acme", "agent", { serves: ["sum"] });
    const squareId = await nats.issue("acme", "agent", { serves: ["square"] });
    const callerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    await admin.acl.putRule("sum-callers", { source: callerId.id, target: "*", capabilities: ["sum"] });
    const rev = await admin.acl.putRule("sum-squares", { source: sumId.id, target: "*", capabilities: ["square"] });
    const squarer = await bus("acme", squareId);
    await squarer.agent({ name: "squarer", skills: [{ id: "square" }] }, { square: (ctx) => ({ square: (ctx.input as { n: number }).n ** 2 }) });
    const summer = await bus("acme", sumId);
    await summer.agent({ name: "summer", skills: [{ id: "sum" }] }, {
      sum: async (ctx) => {
        const children = await ctx.fanOut([1, 2, 3].map((n) => ({ capability: "square", input: { n } })));
        return children.reduce((a, c) => a + (c.artifacts[0]!.parts[0]!.data as { square: number }).square, 0);
      },
    });
    await Promise.all([squarer.acl.applied(rev), summer.acl.applied(rev)]);
    const caller = await bus("acme", callerId);
    const done = await (await caller.submit("sum", "go", { priority: "high" })).result({ timeout: 20_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts[0]!.parts[0]!.data).toBe(14);
    expect((await caller.task(done.id)).metadata.children).toHaveLength(3);
  });

  it("refuses identities that are not issued, keys not proven, and a tenant the identity does not belong to", async () => {
    await expect(bus("acme", Identity.generate())).rejects.toMatchObject({ code: "DENIED" });
    const betaCaller = await nats.issue("beta", "caller");
    await expect(bus("acme", betaCaller)).rejects.toMatchObject({ code: "DENIED" });
    // A client that names an issued key but signs the nonce with another.
    const issued = await nats.issue("acme", "caller");
    const other = createUser();
    await expect(
      natsConnect({
        servers: nats.server.url, reconnect: false,
        authenticator: (nonce?: string) => ({ nkey: issued.id, sig: Buffer.from(other.sign(enc.encode(nonce ?? ""))).toString("base64url") }) as never,
      }),
    ).rejects.toThrow(/Authorization/i);
    // No credentials at all.
    await expect(natsConnect({ servers: nats.server.url, reconnect: false })).rejects.toThrow(/Authorization/i);
  });

  it("a raw caller cannot write policy, the registry or another identity's presence, nor sniff calls", async () => {
    const callerId = await nats.issue("acme", "caller");
    const agentId = await nats.issue("acme", "agent", { serves: ["sniffed"] });
    const admin = await bus("acme", acmeAdmin);
    const sniffCaller = await nats.issue("acme", "caller");
    await admin.acl.putRule("sniffed", { source: sniffCaller.id, target: "*", capabilities: ["sniffed"] });
    const nc = await raw(callerId);
    expect(await publishRefused(nc, `$KV.mesh_acme_acl.rule.mine`, JSON.stringify({ source: callerId.id, target: "*", capabilities: [">"] }))).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_revoked.${callerId.id}`)).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_agents.${agentId.id}`)).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_presence.${agentId.id}.x`)).toBe(true);
    // Nothing landed in the policy bucket.
    const kv = await new Kvm(admin.nc).open("mesh_acme_acl");
    expect(await kv.get("rule.mine")).toBeNull();
    // Subscribing to the tenant's traffic is refused; a call made meanwhile is not seen.
    const seen: string[] = [];
    const sub = nc.subscribe("mesh.acme.>", { callback: (e, m) => void (e ? undefined : seen.push(m.subject)) });
    const agent = await bus("acme", agentId);
    await agent.agent({ name: "sniffed", skills: [{ id: "sniffed" }] }, { sniffed: () => "secret" });
    const caller = await bus("acme", sniffCaller);
    expect(textOf(await caller.call("sniffed", "payload"))).toBe("secret");
    await new Promise((r) => setTimeout(r, 200));
    expect(seen).toEqual([]);
    sub.unsubscribe();
  });

  it("a raw agent writes only its own registry entry and cannot consume another capability's work queue", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["mine"] });
    const victim = await nats.issue("acme", "agent", { serves: ["theirs"] });
    const nc = await raw(agentId);
    expect(await publishRefused(nc, `$KV.mesh_acme_agents.${victim.id}`)).toBe(true);
    expect(await publishRefused(nc, `$KV.mesh_acme_agents.${agentId.id}`, "{}")).toBe(false);
    const js = jetstream(nc);
    await expect(js.jetstreamManager().then((m) => m.consumers.add("MESH_ACME_WORK", { durable_name: "steal", filter_subject: "mesh.acme.work.theirs" }))).rejects.toThrow();
  });

  it("tenant B sees nothing of tenant A: raw subscriptions, streams, buckets, and calls by subject", async () => {
    const acmeAgent = await nats.issue("acme", "agent", { serves: ["private"] });
    const admin = await bus("acme", acmeAdmin);
    const acmeCallerId = await nats.issue("acme", "caller");
    await admin.acl.putRule("private", { source: acmeCallerId.id, target: "*", capabilities: ["private"] });
    const agent = await bus("acme", acmeAgent);
    let ran = 0;
    await agent.agent({ name: "private", skills: [{ id: "private" }] }, { private: () => (ran++, "acme only") });
    const betaAdminNc = await raw(betaAdmin);
    // Even beta's admin: acme's subjects do not exist in beta's account.
    const seen: string[] = [];
    betaAdminNc.subscribe(">", { callback: (_e, m) => void seen.push(m.subject) });
    const acmeCaller = await bus("acme", acmeCallerId);
    expect(textOf(await acmeCaller.call("private", "x"))).toBe("acme only");
    await new Promise((r) => setTimeout(r, 200));
    expect(seen.filter((s) => s.startsWith("mesh.acme."))).toEqual([]);
    await expect(betaAdminNc.request("mesh.acme.cap.private", enc.encode("{}"), { timeout: 1000 })).rejects.toThrow();
    const jsm = await jetstream(betaAdminNc).jetstreamManager();
    await expect(jsm.streams.info("MESH_ACME_WORK")).rejects.toThrow(/not found/i);
    await expect(new Kvm(betaAdminNc).open("mesh_acme_tasks").then((kv) => kv.keys())).rejects.toThrow();
    expect(ran).toBe(1);
  });

  it("an exported capability crosses to the importing tenant, and nothing else does", async () => {
    const acmeAgent = await nats.issue("acme", "agent", { serves: ["shared", "kept"] });
    const betaCaller = await nats.issue("beta", "caller");
    const admin = await bus("acme", acmeAdmin);
    const rev = await admin.acl.putRule("beta-shared", { source: betaCaller.id, target: "*", capabilities: ["shared", "kept"] });
    await nats.exportCapability("acme", "shared", "beta");
    const betaAdminBus = await bus("beta", betaAdmin);
    await betaAdminBus.acl.putRule("beta-caller-shared", { source: betaCaller.id, target: "*", capabilities: ["shared"] });
    const agent = await bus("acme", acmeAgent);
    let keptRan = 0;
    await agent.agent({ name: "sharer", skills: [{ id: "shared" }, { id: "kept" }] }, { shared: (ctx) => `shared ${ctx.text}`, kept: () => (keptRan++, "kept") });
    await agent.acl.applied(rev);
    const caller = await bus("beta", betaCaller);
    expect(textOf(await caller.call("shared", "hi", { tenant: "acme" }))).toBe("shared hi");
    // Granted by acme's ACL, but not exported: the subject does not reach acme's account.
    const err = await caller.call("kept", "hi", { tenant: "acme", timeout: 1000 }).catch((e: unknown) => e);
    expect(isAgentBusError(err)).toBe(true);
    expect(keptRan).toBe(0);
    // And a raw beta client cannot reach acme's other subjects either.
    const rawBeta = await raw(betaAdmin);
    await expect(rawBeta.request(`mesh.acme.agent.${acmeAgent.id}.call`, enc.encode("{}"), { timeout: 1000 })).rejects.toThrow();
  });

  it("a caller reads and writes only its own tasks; a forged snapshot is refused by every reader, audited, and replaced by the worker's next write", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["held"] });
    const otherAgentId = await nats.issue("acme", "agent", { serves: ["elsewhere"] });
    const callerId = await nats.issue("acme", "caller");
    const attackerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    await admin.acl.putRule("held-callers", { source: callerId.id, target: "*", capabilities: ["held"] });
    const agent = await bus("acme", agentId);
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    await agent.agent({ name: "holder", skills: [{ id: "held" }] }, { held: async (ctx) => (await ctx.status("halfway: secret progress"), await released, `done: ${ctx.text}`) });
    const otherAgent = await bus("acme", otherAgentId);
    await otherAgent.agent({ name: "elsewhere", skills: [{ id: "elsewhere" }] }, { elsewhere: () => "x" });
    const caller = await bus("acme", callerId);
    const task = await caller.submit("held", "real input");
    await eventually(async () => (await caller.task(task.id)).status.state === "TASK_STATE_WORKING", 5000);
    const genuine = await caller.task(task.id);
    const own = `$KV.mesh_acme_tasks.${callerId.id}.${task.id}`;

    // The attacker learnt the id. nats-server keeps it out of the caller's
    // task: it may not read the snapshot or the events, nor write either.
    const nc = await raw(attackerId);
    const js = jetstream(nc);
    const jsm = await js.jetstreamManager();
    await expect(jsm.direct.getMessage("KV_mesh_acme_tasks", { last_by_subj: own })).rejects.toThrow(/permission/i);
    await expect(jsm.direct.getMessage("KV_mesh_acme_tasks", { last_by_subj: `$KV.mesh_acme_tasks.*.${task.id}` })).rejects.toThrow(/permission/i);
    await expect(jsm.direct.getMessage("MESH_ACME_EVENTS", { last_by_subj: `mesh.acme.events.*.${task.id}` })).rejects.toThrow(/permission/i);
    await expect(jsm.consumers.add("MESH_ACME_EVENTS", { name: "peek", filter_subject: `mesh.acme.events.${callerId.id}.*` })).rejects.toThrow();
    await expect(jsm.consumers.add("MESH_ACME_EVENTS", { name: "peek2", filter_subject: "mesh.acme.events.*.*" })).rejects.toThrow();
    await expect(js.publish(own, enc.encode("{}"))).rejects.toThrow(/permission/i);
    expect(await publishRefused(nc, `mesh.acme.events.${callerId.id}.${task.id}`)).toBe(true);
    const seen: string[] = [];
    for (const subject of ["mesh.acme.events.>", "mesh.acme.task.*.events"]) nc.subscribe(subject, { callback: (e, m) => void (e ? undefined : seen.push(m.subject)) });
    // Through the library the same: not found.
    const attackerBus = await bus("acme", attackerId);
    await expect(attackerBus.task(task.id)).rejects.toMatchObject({ code: "TASK_NOT_FOUND" });

    // Under its own key it may file what it likes: a reader by id skips it.
    const completed: Task = {
      ...genuine,
      status: { state: "TASK_STATE_COMPLETED", timestamp: new Date().toISOString() },
      artifacts: [{ artifactId: "a", parts: [{ text: "forged result" }] }],
    };
    await js.publish(`$KV.mesh_acme_tasks.${attackerId.id}.${task.id}`, enc.encode(JSON.stringify(completed)));
    expect((await agent.task(task.id)).status.state).toBe("TASK_STATE_WORKING");

    // An agent may write any task's snapshot (it serves others' tasks), but
    // not one of a capability it does not serve: readers refuse it however it is made.
    const rogue = await raw(otherAgentId);
    const rjs = jetstream(rogue);
    const sealer = new Envelopes(otherAgentId);
    const sealed = (t: Task) => {
      const body = enc.encode(JSON.stringify(t));
      return rjs.publish(own, body, { headers: sealer.seal(own, body, { task: task.id }, [], { sign: true }) });
    };
    await rjs.publish(own, enc.encode(JSON.stringify(completed)));
    await expect(caller.task(task.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
    await sealed(completed);
    await expect(caller.task(task.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
    await sealed({ ...completed, metadata: { ...completed.metadata, submitter: otherAgentId.id } });
    await expect(caller.task(task.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
    await expect(agent.task(task.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
    expect((await agent.tasks()).tasks.map((t) => t.id)).not.toContain(task.id);

    // The worker's next write goes over the forgery from the last snapshot it verified; the real result stands.
    release();
    const result = await task.result();
    expect(result.status.state).toBe("TASK_STATE_COMPLETED");
    expect(result.artifacts[0]!.parts[0]!.text).toBe("done: real input");
    const read = await caller.task(task.id);
    expect(read.status.state).toBe("TASK_STATE_COMPLETED");
    expect(read.artifacts[0]!.parts[0]!.text).toBe("done: real input");
    // Nothing of the task reached the attacker's subscriptions.
    expect(seen).toEqual([]);

    // Each refusal is in the audit stream, signed by the identity that refused it.
    const forged: AuditEntry[] = [];
    for await (const e of readAudit(admin, { from: 1, kinds: ["forged_snapshot"] })) {
      if (e.record.task === task.id) forged.push(e);
      if (forged.some((f) => f.record.from === otherAgentId.id) && forged.some((f) => f.signer === agentId.id) && forged.some((f) => f.signer === callerId.id)) break;
    }
    expect(forged.every((e) => e.verified && e.record.code === "BAD_SIGNATURE")).toBe(true);
  });

  it("large task content works under the role permissions; a raw caller reading the blob bucket sees only ciphertext, cannot purge it, and a blob it swaps is refused", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["bulk"] });
    const callerId = await nats.issue("acme", "caller");
    const attackerId = await nats.issue("acme", "caller");
    const admin = await bus("acme", acmeAdmin);
    const rev = await admin.acl.putRule("bulk-callers", { source: callerId.id, target: "*", capabilities: ["bulk"] });
    const agent = await bus("acme", agentId);
    await agent.agent({ name: "bulk", skills: [{ id: "bulk" }] }, { bulk: (ctx) => `OUT-MARK ${ctx.text.length} ${"o".repeat(1_500_000)}` });
    await agent.acl.applied(rev);
    const caller = await bus("acme", callerId);
    const input = `IN-MARK ${"i".repeat(2_000_000)}`;
    const handle = await caller.submit("bulk", input);
    const done = await handle.result({ timeout: 20_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts[0]!.parts[0]!.text).toBe(`OUT-MARK ${input.length} ${"o".repeat(1_500_000)}`);
    expect(textOf((await caller.task(handle.id)).history[0]!)).toBe(input);

    // The attacker lists the bucket's records and reads every object: ciphertext only.
    const nc = await raw(attackerId);
    const js = jetstream(nc);
    const jsm = await js.jetstreamManager();
    const info = await jsm.streams.info("OBJ_mesh_acme_blobs", { subjects_filter: "$O.mesh_acme_blobs.M.>" });
    const metas = Object.keys(info.state.subjects ?? {});
    expect(metas.length).toBeGreaterThanOrEqual(2);
    const { Objm } = await import("@nats-io/obj");
    const os = await new Objm(nc).open("mesh_acme_blobs");
    let read = 0;
    for (const subject of metas) {
      const name = Buffer.from(subject.split(".").at(-1)!, "base64url").toString();
      if (!name.startsWith(`${callerId.id}.${handle.id}.`)) continue;
      const bytes = Buffer.from((await os.getBlob(name))!);
      read += bytes.length;
      for (const mark of ["IN-MARK", "OUT-MARK", "iiiiiiiiiiiiiiii", "oooooooooooooooo"]) expect(bytes.includes(mark)).toBe(false);
    }
    expect(read).toBeGreaterThan(3_500_000);
    // It may neither purge nor delete the bucket, nor read it through an unfiltered consumer.
    await expect(jsm.streams.purge("OBJ_mesh_acme_blobs")).rejects.toThrow();
    await expect(jsm.streams.delete("OBJ_mesh_acme_blobs")).rejects.toThrow();
    await expect(jsm.consumers.add("OBJ_mesh_acme_blobs", { name: "all" })).rejects.toThrow();
    // It may write the bucket: a blob it swaps under the input's name is refused, never taken for the input.
    const inputName = metas.map((m) => Buffer.from(m.split(".").at(-1)!, "base64url").toString()).find((n) => n.startsWith(`${callerId.id}.${handle.id}.`))!;
    await os.putBlob({ name: inputName }, enc.encode("forged"));
    await expect(caller.task(handle.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
  });

  it("revoking an identity closes its connections within seconds and refuses it afterwards", async () => {
    const callerId = await nats.issue("acme", "caller");
    const caller = await bus("acme", callerId);
    const nc = await raw(callerId);
    const refusedAgain = new Promise<boolean>((resolve) => {
      void (async () => {
        for await (const s of caller.nc.status()) if (s.type === "error" && /Authorization/i.test(String(s.error))) return resolve(true);
      })();
      setTimeout(() => resolve(false), 8000);
    });
    const started = Date.now();
    await nats.authority.revoke(callerId.id, "compromised");
    // The raw connection (no reconnect) is closed by the server; the library's keeps trying and is refused.
    await eventually(() => nc.isClosed(), 5000);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await refusedAgain).toBe(true);
    await expect(bus("acme", callerId)).rejects.toMatchObject({ code: "DENIED" });
  });

  it("a revocation signed by the tenant admin closes the identity's connections too, and refuses it afterwards", async () => {
    const callerId = await nats.issue("acme", "caller");
    const nc = await raw(callerId);
    const admin = await bus("acme", acmeAdmin);
    const started = Date.now();
    await admin.revoke(callerId.id, "left the team");
    await eventually(() => nc.isClosed(), 5000);
    expect(Date.now() - started).toBeLessThan(5000);
    await expect(bus("acme", callerId)).rejects.toMatchObject({ code: "DENIED" });
  });
});
