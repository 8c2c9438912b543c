/**
 * `bus.deadLetters`: dead-lettered work items listed with their reason and
 * input, submitted again as new tasks, removed; against a real nats-server,
 * and under the role permissions with raw clients.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { headers as natsHeaders, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSecureNats, type SecureNats } from "../../authority/index.js";
import { AgentBusError, connect, Identity, textOf, type Bus, type ConnectOptions, type DeadLetter, type Task } from "../../core/index.js";
import { findNatsServer, natsServerVersion } from "../../nats/index.js";
import { codeOf, eventually, quietLogger, useBuses } from "../helpers/bus.js";
import { connectRaw, useNatsServer } from "../helpers/nats.js";

let tenants = 0;
const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? "")).join("");
const inputText = (d: DeadLetter) => (d.input ? textOf(d.input) : undefined);

/** A handler that fails for good (MISUSE: dead-lettered at once, no retry) on its first `failures` runs, then answers. */
function failing(failures = 1) {
  let runs = 0;
  return {
    get runs() {
      return runs;
    },
    handler: (ctx: { text: string }) => {
      runs++;
      if (runs <= failures) throw new AgentBusError("MISUSE", `broken on run ${runs}`);
      return `done: ${ctx.text}`;
    },
  };
}

describe("dead letters", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  /** An agent bus, a submitting client and an operator (another identity), in a tenant of their own. */
  const setup = async () => {
    const tenant = `dlq${++tenants}`;
    const agent = await open({ tenant, insecureAllowAll: true });
    const client = await open({ tenant });
    const operator = await open({ tenant });
    return { tenant, agent, client, operator };
  };

  /** Waits until `bus` lists `n` dead letters (of `capability`). */
  const listed = async (bus: Bus, n: number, capability?: string): Promise<DeadLetter[]> => (await eventually(async () => {
    const list = await bus.deadLetters.list({ capability });
    return list.length === n ? list : undefined;
  }))!;

  it("lists a task that failed for good with its reason and input; requeued, it runs again as a new task of the requeuer and the dead letter is gone", async () => {
    const { agent, client, operator } = await setup();
    const fragile = failing(1);
    await agent.agent({ name: "fragile", skills: [{ id: "fragile" }] }, { fragile: fragile.handler });
    const before = Date.now();
    const dead = await (await client.submit("fragile", "hello")).result({ timeout: 10_000 });
    expect(dead.status.state).toBe("TASK_STATE_FAILED");

    const [entry] = await listed(operator, 1);
    expect(entry).toMatchObject({ capability: "fragile", taskId: dead.id, deliveries: 1, verified: true, submitter: client.id });
    expect(entry!.reason).toMatch(/^MISUSE: broken on run 1/);
    expect(inputText(entry!)).toBe("hello");
    expect(entry!.time.getTime()).toBeGreaterThanOrEqual(before - 1000);
    expect(entry!.time.getTime()).toBeLessThanOrEqual(Date.now());

    const handle = await operator.deadLetters.requeue(entry!.sequence);
    expect(handle.id).not.toBe(dead.id);
    const again = await handle.result({ timeout: 10_000 });
    expect(again.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(again)).toBe("done: hello");
    expect(again.metadata).toMatchObject({ retryOf: dead.id, submitter: operator.id, capability: "fragile" });
    expect(again.contextId).toBe(dead.contextId);
    expect(again.history[0]!.messageId).not.toBe(dead.history[0]!.messageId);
    expect(fragile.runs).toBe(2);
    expect(await operator.deadLetters.list()).toEqual([]);
    // Gone: a second requeue finds nothing, and nothing more runs.
    expect(await codeOf(operator.deadLetters.requeue(entry!.sequence))).toBe("DEAD_LETTER_NOT_FOUND");
    expect(await operator.deadLetters.discard(entry!.sequence)).toBe(false);
    expect(fragile.runs).toBe(2);
  });

  it("two requeues of one dead letter at once submit one task", async () => {
    const { agent, client, operator } = await setup();
    const once = failing(1);
    await agent.agent({ name: "once", skills: [{ id: "once" }] }, { once: once.handler });
    await (await client.submit("once", "only once")).result({ timeout: 10_000 });
    const [entry] = await listed(operator, 1);
    const outcomes = await Promise.allSettled([operator.deadLetters.requeue(entry!.sequence), operator.deadLetters.requeue(entry!.sequence)]);
    const handles = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : []));
    for (const o of outcomes) if (o.status === "rejected") expect((o.reason as AgentBusError).code).toBe("DEAD_LETTER_NOT_FOUND");
    expect(handles.length).toBeGreaterThanOrEqual(1);
    expect(new Set(handles.map((h) => h.id)).size).toBe(1);
    expect((await handles[0]!.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    await new Promise((r) => setTimeout(r, 500));
    expect(once.runs).toBe(2);
    expect(await operator.deadLetters.list()).toEqual([]);
  });

  it("discards one, filters by capability, keeps the newest first; unknown and malformed sequences and queries are refused", async () => {
    const { agent, client, operator } = await setup();
    await agent.agent({ name: "two", skills: [{ id: "one" }, { id: "other" }] }, { one: failing(99).handler, other: failing(99).handler });
    const first = await (await client.submit("one", "first")).result({ timeout: 10_000 });
    const second = await (await client.submit("one", "second")).result({ timeout: 10_000 });
    const third = await (await client.submit("other", "third")).result({ timeout: 10_000 });
    const all = await listed(operator, 3);
    expect(all.map((d) => d.taskId)).toEqual([third.id, second.id, first.id]);
    expect(all.map((d) => d.sequence)).toEqual([...all.map((d) => d.sequence)].sort((a, b) => b - a));
    expect((await operator.deadLetters.list({ capability: "one" })).map((d) => d.taskId)).toEqual([second.id, first.id]);
    expect((await operator.deadLetters.list({ capability: "one", limit: 1 })).map((d) => d.taskId)).toEqual([second.id]);
    expect(await operator.deadLetters.list({ capability: "none" })).toEqual([]);

    expect(await operator.deadLetters.discard(all[2]!.sequence)).toBe(true);
    expect((await operator.deadLetters.list()).map((d) => d.taskId)).toEqual([third.id, second.id]);
    expect(await operator.deadLetters.discard(all[2]!.sequence)).toBe(false);

    expect(await codeOf(operator.deadLetters.requeue(all[0]!.sequence + 1000))).toBe("DEAD_LETTER_NOT_FOUND");
    for (const bad of [0, -1, 1.5, Number.NaN]) {
      expect(await codeOf(operator.deadLetters.requeue(bad))).toBe("INVALID_INPUT");
      expect(await codeOf(operator.deadLetters.discard(bad))).toBe("INVALID_INPUT");
    }
    for (const limit of [0, 1001, 2.5]) expect(await codeOf(operator.deadLetters.list({ limit }))).toBe("INVALID_INPUT");
    expect(await codeOf(operator.deadLetters.list({ capability: "Not A Capability" }))).toBe("INVALID_INPUT");
    expect(await codeOf(operator.deadLetters.list({ region: "elsewhere" }))).toBe("INVALID_INPUT");
  });

  it("a later turn's work item and a high-priority one verify; a requeue keeps the priority", async () => {
    const { agent, client, operator } = await setup();
    const urgent = failing(1);
    await agent.agent({ name: "turns", skills: [{ id: "chat" }, { id: "urgent" }] }, {
      chat: (ctx) => (ctx.history.filter((m) => m.role === "ROLE_USER").length < 2 ? ctx.inputRequired("your name?") : failing(1).handler(ctx)),
      urgent: urgent.handler,
    });
    const chat = await client.submit("chat", "hi");
    expect((await chat.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
    const turn = await client.submit("chat", "Ada", { taskId: chat.id });
    expect((await turn.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_FAILED");
    const [second] = await listed(operator, 1, "chat");
    expect(second).toMatchObject({ taskId: chat.id, verified: true, submitter: client.id });
    expect(inputText(second!)).toBe("Ada");

    const high = await (await client.submit("urgent", "now", { priority: "high" })).result({ timeout: 10_000 });
    expect(high.status.state).toBe("TASK_STATE_FAILED");
    const [entry] = await listed(operator, 1, "urgent");
    expect(entry).toMatchObject({ taskId: high.id, verified: true });
    const again = await (await operator.deadLetters.requeue(entry!.sequence)).result({ timeout: 10_000 });
    expect(again.status.state).toBe("TASK_STATE_COMPLETED");
    expect(again.metadata).toMatchObject({ priority: "high", retryOf: high.id });
  });

  it("an end-to-end encrypted task: another identity sees no input and cannot requeue it; its submitter reads the input from the task and requeues it encrypted", async () => {
    const { agent, client, operator } = await setup();
    const secret = failing(1);
    await agent.agent({ name: "secret", skills: [{ id: "secret" }] }, { secret: secret.handler });
    await eventually(() => client.discover({ capability: "secret" }).length === 1);
    const dead = await (await client.submit("secret", "classified", { encrypt: true })).result({ timeout: 10_000 });
    expect(dead.status.state).toBe("TASK_STATE_FAILED");

    const [seen] = await listed(operator, 1);
    expect(seen).toMatchObject({ taskId: dead.id, verified: true, submitter: client.id });
    expect(seen!.input).toBeUndefined();
    expect(await codeOf(operator.deadLetters.requeue(seen!.sequence))).toBe("NOT_RECIPIENT");

    // The work item is encrypted for the providers only; the submitter's snapshot holds the input for it.
    const [own] = await client.deadLetters.list();
    expect(inputText(own!)).toBe("classified");
    const again = await (await client.deadLetters.requeue(own!.sequence)).result({ timeout: 10_000 });
    expect(again.status.state).toBe("TASK_STATE_COMPLETED");
    expect(again.metadata.encrypted).toBeDefined();
    expect(artifactText(again)).toBe("done: classified");
    expect(await client.deadLetters.list()).toEqual([]);
  });

  it("with a caller, only the dead letters of that caller's tasks exist; a requeue is submitted for it", async () => {
    const { agent, operator: front } = await setup();
    await agent.agent({ name: "always", skills: [{ id: "always" }] }, { always: failing(99).handler });
    const alice = await (await front.submit("always", "from alice", { caller: "alice" })).result({ timeout: 10_000 });
    const bob = await (await front.submit("always", "from bob", { caller: "bob" })).result({ timeout: 10_000 });
    const all = await listed(front, 2);
    const ofBob = all.find((d) => d.taskId === bob.id)!;
    const ofAlice = all.find((d) => d.taskId === alice.id)!;
    expect((await front.deadLetters.list({ caller: "alice" })).map((d) => d.taskId)).toEqual([alice.id]);
    expect(await front.deadLetters.list({ caller: "carol" })).toEqual([]);
    expect(await codeOf(front.deadLetters.requeue(ofBob.sequence, { caller: "alice" }))).toBe("DEAD_LETTER_NOT_FOUND");
    expect(await front.deadLetters.discard(ofBob.sequence, { caller: "alice" })).toBe(false);
    expect(await front.deadLetters.discard(ofAlice.sequence, { caller: "alice" })).toBe(true);

    const again = await (await front.deadLetters.requeue(ofBob.sequence, { caller: "bob" })).result({ timeout: 10_000 });
    expect(again.metadata).toMatchObject({ caller: "bob", retryOf: bob.id });
    await expect(front.task(again.id, { caller: "alice" })).rejects.toMatchObject({ code: "TASK_NOT_FOUND" });
  });

  it("a copy forged on a dead-letter subject is shown unverified, without input (even naming a real task), and cannot be requeued", async () => {
    const { agent, client, operator } = await setup();
    await agent.agent({ name: "real", skills: [{ id: "real" }] }, { real: failing(99).handler });
    const real = await (await client.submit("real", "genuine")).result({ timeout: 10_000 });
    await listed(client, 1);
    const h = natsHeaders();
    h.set("Mesh-From", client.id);
    h.set("Mesh-Ts", String(Date.now()));
    h.set("Mesh-Task", real.id);
    h.set("Mesh-Sig", "AAAA");
    h.set("Mesh-Dlq-Reason", "forged");
    h.set("Mesh-Dlq-Deliveries", "7");
    const body = JSON.stringify({ messageId: "m-forged", role: "ROLE_USER", parts: [{ text: "rm -rf /" }] });
    // As the real task's copy on another capability, and as a copy of it on its own.
    await jetstream(client.nc).publish(client.subjects.dlq("other"), body, { headers: h });
    await jetstream(client.nc).publish(client.subjects.dlq("real"), body, { headers: h });

    // The submitter may see the real task, but its snapshot is of another capability than the forged copy's.
    const [onOther] = await client.deadLetters.list({ capability: "other" });
    expect(onOther).toMatchObject({ capability: "other", taskId: real.id, reason: "forged", deliveries: 7, verified: false });
    expect(onOther!.input).toBeUndefined();
    expect(onOther!.submitter).toBeUndefined();
    expect(await codeOf(client.deadLetters.requeue(onOther!.sequence))).toBe("BAD_SIGNATURE");
    // On the real task's capability the submitter sees the task's own input, never the forged body.
    const forgedReal = (await client.deadLetters.list({ capability: "real" })).find((d) => !d.verified)!;
    expect(inputText(forgedReal)).toBe("genuine");
    // Someone who may not see the task gets nothing from it.
    const [unseen] = (await operator.deadLetters.list({ capability: "real" })).filter((d) => !d.verified);
    expect(unseen!.input).toBeUndefined();
    expect(await codeOf(operator.deadLetters.requeue(unseen!.sequence))).toBe("BAD_SIGNATURE");
    expect(await operator.deadLetters.discard(onOther!.sequence)).toBe(true);
  });

  it("finds an old dead letter of one capability behind many of another, and keeps to the limit", async () => {
    const { client, operator } = await setup();
    await client.ensureTasks();
    const js = jetstream(client.nc);
    const put = (cap: string, i: number) => {
      const h = natsHeaders();
      h.set("Mesh-Dlq-Reason", `${cap} ${i}`);
      return js.publish(client.subjects.dlq(cap), "{}", { headers: h });
    };
    await put("old", 0);
    for (let i = 0; i < 300; i += 50) await Promise.all(Array.from({ length: 50 }, (_, j) => put("noise", i + j)));
    const old = await operator.deadLetters.list({ capability: "old", limit: 5 });
    expect(old.map((d) => d.reason)).toEqual(["old 0"]);
    expect((await operator.deadLetters.list({ limit: 3 })).map((d) => d.reason)).toEqual(["noise 299", "noise 298", "noise 297"]);
    const every = await operator.deadLetters.list({ limit: 1000 });
    expect(every).toHaveLength(301);
    expect(every.at(-1)!.reason).toBe("old 0");
  });

  it("a direct message its inbox handler kept failing is listed as one, and is not requeued as a task", async () => {
    const { agent, client, operator } = await setup();
    await agent.agent({ name: "mailbox", skills: [{ id: "noop" }] }, { noop: () => "" }, {
      inbox: () => {
        throw new Error("cannot take mail");
      },
    });
    await client.send(agent.id, "letter");
    const [entry] = (await eventually(async () => {
      const list = await operator.deadLetters.list({ capability: "inbox" });
      return list.length === 1 ? list : undefined;
    }, 20_000, 200))!;
    expect(entry).toMatchObject({ capability: "inbox", deliveries: 0, verified: false });
    expect(entry!.reason).toMatch(/inbox handler failed/);
    expect(await codeOf(operator.deadLetters.requeue(entry!.sequence))).toBe("INVALID_INPUT");
    expect(await operator.deadLetters.discard(entry!.sequence)).toBe(true);
  }, 30_000);
});

const [, minor] = natsServerVersion(findNatsServer()).split(".").map(Number);

describe.skipIf(minor! < 10)("dead letters under the role permissions (auth callout)", () => {
  let dir: string;
  let nats: SecureNats;
  let admin: Identity;
  const opened: Array<Bus | NatsConnection> = [];
  const bus = async (identity: Identity, extra: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const b = await connect({ servers: nats.server.url, tenant: "acme", identity, auth: { nkey: true }, logger: quietLogger, ...extra });
    opened.push(b);
    return b;
  };
  const raw = async (identity: Identity): Promise<NatsConnection> => {
    const nc = await connectRaw(nats.server.url, identity);
    opened.push(nc);
    return nc;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "agentbus-dlq-"));
    nats = await startSecureNats({ dir, tenants: ["acme"], logger: quietLogger });
    admin = await nats.createTenant("acme");
  }, 60_000);
  afterAll(async () => {
    await Promise.all(opened.map((c) => c.close().catch(() => {})));
    await nats?.stop();
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  it("a bridge lists, requeues and discards dead letters; a caller cannot read or remove them, through the library or with a raw client", async () => {
    const agentId = await nats.issue("acme", "agent", { serves: ["fragile"] });
    const callerId = await nats.issue("acme", "caller");
    const bridgeId = await nats.issue("acme", "bridge");
    const adminBus = await bus(admin);
    await adminBus.provision();
    await adminBus.acl.putRule("fragile-caller", { source: callerId.id, target: "*", capabilities: ["fragile"] });
    const rev = await adminBus.acl.putRule("fragile-bridge", { source: bridgeId.id, target: "*", capabilities: ["fragile"] });
    const agent = await bus(agentId);
    const fragile = failing(2);
    await agent.agent({ name: "fragile", skills: [{ id: "fragile" }] }, { fragile: fragile.handler });
    await agent.acl.applied(rev);
    const caller = await bus(callerId);
    const bridge = await bus(bridgeId);
    const first = await (await caller.submit("fragile", "one")).result({ timeout: 15_000 });
    const second = await (await caller.submit("fragile", "two")).result({ timeout: 15_000 });
    expect([first.status.state, second.status.state]).toEqual(["TASK_STATE_FAILED", "TASK_STATE_FAILED"]);

    const entries = (await eventually(async () => {
      const list = await bridge.deadLetters.list();
      return list.length === 2 ? list : undefined;
    }))!;
    expect(entries.map((d) => [d.taskId, inputText(d), d.verified])).toEqual([[second.id, "two", true], [first.id, "one", true]]);
    const stream = bridge.subjects.stream("DLQ");

    // The caller, through the library: refused by the server.
    expect(await codeOf(caller.deadLetters.list())).toBe("DENIED");
    expect(await codeOf(caller.deadLetters.requeue(entries[0]!.sequence))).toBe("DENIED");
    expect(await codeOf(caller.deadLetters.discard(entries[0]!.sequence))).toBe("DENIED");
    // With a raw client: no message read by sequence, no consumer, no delete; nor for the agent that wrote them.
    for (const id of [callerId, agentId]) {
      const jsm = await jetstreamManager(await raw(id));
      await expect(jsm.streams.getMessage(stream, { seq: entries[0]!.sequence })).rejects.toThrow();
      await expect(jsm.streams.getMessage(stream, { last_by_subj: bridge.subjects.dlq("fragile") })).rejects.toThrow();
      await expect(jsm.consumers.add(stream, { name: `peek${id.id.slice(1, 8).toLowerCase()}` })).rejects.toThrow();
      await expect(jsm.streams.deleteMessage(stream, entries[0]!.sequence)).rejects.toThrow();
    }
    expect(await bridge.deadLetters.list()).toHaveLength(2);

    // The bridge requeues one (it runs, as the bridge's task) and discards the other.
    const again = await (await bridge.deadLetters.requeue(entries[1]!.sequence)).result({ timeout: 15_000 });
    expect(again.status.state).toBe("TASK_STATE_COMPLETED");
    expect(again.metadata).toMatchObject({ submitter: bridgeId.id, retryOf: first.id });
    expect(artifactText(again)).toBe("done: one");
    expect(await bridge.deadLetters.discard(entries[0]!.sequence)).toBe(true);
    expect(await bridge.deadLetters.list()).toEqual([]);
    // The console's workload with workers per capability (the work stream's consumers listed): a bridge may, a caller may not.
    const work = (await bridge.workload({ workers: true })).capabilities.find((c) => c.capability === "fragile");
    expect(work?.workers).toBeGreaterThanOrEqual(1);
    expect(await codeOf(caller.workload({ workers: true }))).toBe("DENIED");
  }, 60_000);
});
