/**
 * Replays by a raw NATS client (no library on its side) of captured calls,
 * direct messages and work items: refused across restarts, across replicas
 * of a capability, and after a stream's duplicate window.
 */
import { describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { jetstreamManager, type PubAck } from "@nats-io/jetstream";
import type { Msg, NatsConnection } from "@nats-io/nats-core";
import { Header, Identity, textOf, type Bus, type Handler } from "../../core/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

const enc = new TextEncoder();
let tenants = 0;

describe("replay refused everywhere", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const tenant = () => `replay${process.pid}-${++tenants}`;

  /** A raw client recording every message on `subject` (a core subscription sees JetStream publishes too). */
  async function capture(subject: string): Promise<{ raw: NatsConnection; seen: Msg[]; stop: () => Promise<void> }> {
    const raw = await natsConnect({ servers: nats.server.url });
    const seen: Msg[] = [];
    const sub = raw.subscribe(subject, { callback: (_e, m) => void seen.push(m) });
    await raw.flush();
    // Stopped before replaying to a subject it listens on (a listener would count as a responder there).
    return { raw, seen, stop: async () => (sub.unsubscribe(), await raw.flush()) };
  }

  /** Sends a captured request again, byte for byte; the reply's error code or "OK". */
  async function replay(raw: NatsConnection, m: Msg): Promise<string> {
    const reply = await raw.request(m.subject, m.data, { headers: m.headers, timeout: 5000 });
    return reply.headers?.get(Header.error) || "OK";
  }

  /** Stores a captured JetStream message again, byte for byte; the server's ack. */
  async function restore(raw: NatsConnection, m: Msg): Promise<PubAck> {
    const reply = await raw.request(m.subject, m.data, { headers: m.headers, timeout: 5000 });
    return reply.json<PubAck>();
  }

  async function auditKinds(bus: Bus): Promise<Record<string, number>> {
    const jsm = await jetstreamManager(bus.nc);
    const info = await jsm.streams.info(bus.subjects.stream("AUDIT"), { subjects_filter: ">" });
    return Object.fromEntries(Object.entries(info.state.subjects ?? {}).map(([s, n]) => [s.slice(s.lastIndexOf(".") + 1), n]));
  }

  /** Sends a captured request again, byte for byte, to `subject`: the reply's error code, "OK", or NO_RESPONDERS when nobody listens there. */
  async function replayTo(raw: NatsConnection, m: Msg, subject: string): Promise<string> {
    try {
      const reply = await raw.request(subject, m.data, { headers: m.headers, timeout: 5000 });
      return reply.headers?.get(Header.error) || "OK";
    } catch (err) {
      if (/no responders/i.test(String(err)) || (err as { code?: string }).code === "503") return "NO_RESPONDERS";
      throw err;
    }
  }

  it("a captured call never runs again: replayed to its instance, after the agent restarts with the same identity, or re-addressed", async () => {
    const t = tenant();
    const identity = Identity.generate();
    let runs = 0;
    const echo: Handler = (ctx) => (runs++, `echo: ${ctx.text}`);
    const first = await open({ tenant: t, identity });
    const caller = await open({ tenant: t });
    await grant(first, "caller", { source: caller.id, target: identity.id, capabilities: ["echo"] });
    await first.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo });
    await eventually(() => caller.registry.instances(identity.id).length === 1);
    // The caller knows the agent: the call is addressed to its running instance.
    const { raw, seen, stop } = await capture(`${first.subjects.agentCall(identity.id)}.*`);
    try {
      expect(textOf(await caller.call("echo", "hi"))).toBe("echo: hi");
      await eventually(() => seen.length === 1);
      expect(seen[0]!.headers?.get(Header.mac)).not.toBe("");
      expect(runs).toBe(1);
      await stop();
      // To the same instance: it remembers the message.
      expect(await replayTo(raw, seen[0]!, seen[0]!.subject)).toBe("REPLAYED");

      await first.close();
      const second = await open({ tenant: t, identity });
      const restarted = await second.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo });
      // The ended instance's subject has no listener; the new instance and the capability's
      // queue group do not verify a message addressed elsewhere (the MAC covers the subject).
      expect(await replayTo(raw, seen[0]!, seen[0]!.subject)).toBe("NO_RESPONDERS");
      expect(await replayTo(raw, seen[0]!, second.subjects.instanceCall(identity.id, restarted.instance))).toBe("BAD_SIGNATURE");
      expect(await replayTo(raw, seen[0]!, second.subjects.cap("echo"))).toBe("BAD_SIGNATURE");
      expect(await replayTo(raw, seen[0]!, second.subjects.agentCall(identity.id))).toBe("BAD_SIGNATURE");
      expect(runs).toBe(1);
      // The restarted agent still serves new calls.
      expect(textOf(await caller.call("echo", "again"))).toBe("echo: again");
      expect(runs).toBe(2);
      await eventually(async () => (await auditKinds(second)).bad_signature === 3);
      expect((await auditKinds(second)).replayed).toBe(1);
    } finally {
      await raw.close();
    }
  });

  it("a signed call on the capability's queue group replayed after the agent restarts with the same identity is REPLAYED (shared replay memory)", async () => {
    const t = tenant();
    const identity = Identity.generate();
    let runs = 0;
    const first = await open({ tenant: t, identity });
    const caller = await open({ tenant: t });
    await grant(first, "caller", { source: caller.id, target: identity.id, capabilities: ["echo"] });
    await first.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => (runs++, ctx.text) });
    const subject = caller.subjects.cap("echo");
    const raw = await natsConnect({ servers: nats.server.url });
    try {
      // What a caller that knows no provider sends: signed, to the queue group.
      const body = enc.encode(JSON.stringify({ messageId: "m1", role: "ROLE_USER", parts: [{ text: "hi" }] }));
      const headers = caller.envelopes.seal(subject, body);
      expect((await raw.request(subject, body, { headers, timeout: 5000 })).headers?.get(Header.error) || "OK").toBe("OK");
      await first.close();
      const second = await open({ tenant: t, identity });
      await second.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => (runs++, ctx.text) });
      expect((await raw.request(subject, body, { headers, timeout: 5000 })).headers?.get(Header.error)).toBe("REPLAYED");
      expect(runs).toBe(1);
    } finally {
      await raw.close();
    }
  });

  it("a captured call replayed to another replica of the capability is REPLAYED (signed, replicas with their own identities)", async () => {
    const t = tenant();
    const replicas = await Promise.all([0, 1].map(() => open({ tenant: t })));
    const caller = await open({ tenant: t });
    await grant(replicas[0]!, "caller", { source: caller.id, target: "*", capabilities: ["echo"] }, replicas[1]!);
    const runs = [0, 0];
    for (const [i, r] of replicas.entries()) {
      await r.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => (runs[i]!++, ctx.text) });
    }
    const subject = caller.subjects.cap("echo");
    const { raw, seen } = await capture(subject);
    try {
      // The caller's signed request, sent by the raw client.
      const body = enc.encode(JSON.stringify({ messageId: "m1", role: "ROLE_USER", parts: [{ text: "hi" }] }));
      const reply = await raw.request(subject, body, { headers: caller.envelopes.seal(subject, body), timeout: 5000 });
      expect(reply.headers?.get(Header.error) || "OK").toBe("OK");
      await eventually(() => seen.length === 1);
      expect(seen[0]!.headers?.get(Header.sig)).not.toBe("");
      const ran = runs.findIndex((n) => n === 1);
      expect(ran).toBeGreaterThanOrEqual(0);
      // Only the replica that did not run it is left to receive the replay.
      await replicas[ran]!.close();
      expect(await replay(raw, seen[0]!)).toBe("REPLAYED");
      expect(runs[0]! + runs[1]!).toBe(1);
    } finally {
      await raw.close();
    }
  });

  it("a captured MACed call cannot be run by another replica sharing the agent's identity", async () => {
    const t = tenant();
    const shared = Identity.generate();
    const buses = await Promise.all([0, 1].map(() => open({ tenant: t, identity: shared })));
    const caller = await open({ tenant: t });
    await grant(buses[0]!, "caller", { source: caller.id, target: "*", capabilities: ["echo"] }, buses[1]!);
    const runs = [0, 0];
    const agents = [];
    for (const [i, r] of buses.entries()) agents.push(await r.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => (runs[i]!++, ctx.text) }));
    await eventually(() => caller.registry.instances(shared.id).length === 2);
    const { raw, seen, stop } = await capture(`${caller.subjects.agentCall(shared.id)}.*`);
    try {
      expect(textOf(await caller.call("echo", "hi"))).toBe("hi");
      await eventually(() => seen.length === 1);
      expect(seen[0]!.headers?.get(Header.mac)).not.toBe("");
      const ran = runs.findIndex((n) => n === 1);
      expect(ran).toBeGreaterThanOrEqual(0);
      const other = agents[1 - ran]!;
      await stop();
      await buses[ran]!.close();
      // Re-addressed to the other replica's instance, or to the queue groups both serve: it does not verify there.
      expect(await replayTo(raw, seen[0]!, caller.subjects.instanceCall(shared.id, other.instance))).toBe("BAD_SIGNATURE");
      expect(await replayTo(raw, seen[0]!, caller.subjects.cap("echo"))).toBe("BAD_SIGNATURE");
      expect(await replayTo(raw, seen[0]!, caller.subjects.agentCall(shared.id))).toBe("BAD_SIGNATURE");
      expect(await replayTo(raw, seen[0]!, seen[0]!.subject)).toBe("NO_RESPONDERS");
      expect(runs[0]! + runs[1]!).toBe(1);
    } finally {
      await raw.close();
    }
  });

  it("a direct message replayed inside the inbox's duplicate window is a duplicate; after it, EXPIRED and audited", async () => {
    const t = tenant();
    const short = { tenant: t, windowMs: 1500, duplicateWindowMs: 1500 };
    const agentBus = await open(short);
    const sender = await open(short);
    await grant(agentBus, "sender", { source: sender.id, target: agentBus.id, capabilities: ["inbox"] });
    const got: string[] = [];
    await agentBus.agent({ name: "mailbox", skills: [{ id: "noop" }] }, { noop: () => "" }, { inbox: (m) => void got.push(textOf(m.message)) });
    const jsm = await jetstreamManager(agentBus.nc);
    expect((await jsm.streams.info(agentBus.subjects.stream("INBOX"))).config.duplicate_window).toBe(1500 * 1_000_000);
    const { raw, seen } = await capture(agentBus.subjects.inbox(agentBus.id));
    try {
      await sender.send(agentBus.id, "hello");
      await eventually(() => got.length === 1 && seen.length === 1);
      expect((await restore(raw, seen[0]!)).duplicate).toBe(true);
      await new Promise((r) => setTimeout(r, 1800));
      expect((await restore(raw, seen[0]!)).duplicate).toBeFalsy(); // stored again
      await eventually(async () => (await auditKinds(agentBus)).expired === 1);
      expect(got).toEqual(["hello"]);
    } finally {
      await raw.close();
    }
  });

  it("bus.receive() refuses a direct message stored again after the duplicate window (EXPIRED, audited)", async () => {
    const t = tenant();
    const short = { tenant: t, windowMs: 1500, duplicateWindowMs: 1500 };
    const reader = await open(short);
    const sender = await open(short);
    await grant(reader, "sender", { source: sender.id, target: reader.id, capabilities: ["inbox"] });
    await reader.ensureTasks();
    const { raw, seen } = await capture(reader.subjects.inbox(reader.id));
    try {
      await sender.send(reader.id, "once");
      expect((await reader.receive({ waitMs: 2000 })).map((m) => textOf(m.message))).toEqual(["once"]);
      await eventually(() => seen.length === 1);
      await new Promise((r) => setTimeout(r, 1800));
      expect((await restore(raw, seen[0]!)).duplicate).toBeFalsy();
      expect(await reader.receive({ waitMs: 1000 })).toEqual([]);
      await eventually(async () => (await auditKinds(reader)).expired === 1);
    } finally {
      await raw.close();
    }
  });

  it("a work item replayed inside the duplicate window is a duplicate; after it, EXPIRED and audited; the task ran once", async () => {
    const t = tenant();
    const short = { tenant: t, windowMs: 1500, duplicateWindowMs: 1500 };
    const agentBus = await open(short);
    const submitter = await open(short);
    await grant(agentBus, "submitter", { source: submitter.id, target: agentBus.id, capabilities: ["job"] });
    let runs = 0;
    await agentBus.agent({ name: "worker", skills: [{ id: "job" }] }, { job: (ctx) => (runs++, `done ${ctx.text}`) });
    const { raw, seen } = await capture(agentBus.subjects.work("job"));
    try {
      const task = await submitter.submit("job", "x");
      expect((await task.result()).status.state).toBe("TASK_STATE_COMPLETED");
      await eventually(() => seen.length === 1);
      expect((await restore(raw, seen[0]!)).duplicate).toBe(true);
      await new Promise((r) => setTimeout(r, 1800));
      expect((await restore(raw, seen[0]!)).duplicate).toBeFalsy();
      await eventually(async () => (await auditKinds(agentBus)).expired === 1);
      const jsm = await jetstreamManager(agentBus.nc);
      await eventually(async () => (await jsm.streams.info(agentBus.subjects.stream("WORK"))).state.messages === 0);
      expect(runs).toBe(1);
    } finally {
      await raw.close();
    }
  });
});
