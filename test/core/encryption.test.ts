/**
 * End-to-end encryption (`encrypt: true`): what a raw NATS subscriber and a
 * raw KV reader see, what the parties see, several provider identities,
 * revoked and late providers, and readers that are not parties.
 */
import { describe, expect, it } from "vitest";
import { connect as natsConnect } from "@nats-io/transport-node";
import { MsgHdrsImpl, type NatsConnection } from "@nats-io/nats-core";
import { Kvm } from "@nats-io/kv";
import {
  AgentBusError,
  E2E_SCHEME,
  Envelopes,
  Header,
  Identity,
  isEncryptedPart,
  textOf,
  type Bus,
  type InboxMessage,
  type Task,
} from "../../core/index.js";
import { eventually, grant, revokeAsAdmin, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;
const tenant = () => `e2e${process.pid}-${++tenants}`;
const hintOf = (id: string) => id.slice(1, 13);

/**
 * Every byte (headers and body) a raw subscriber on `>` receives, as text:
 * the bus's subjects (`mesh.>`), replies (`_INBOX.>`), and JetStream and KV
 * traffic (`$JS.>`, `$KV.>`).
 */
class Sniffer {
  readonly #chunks: string[] = [];
  readonly #headers: Array<{ subject: string; enc?: string; to?: string }> = [];

  private constructor(readonly nc: NatsConnection) {}

  static async start(url: string): Promise<Sniffer> {
    const s = new Sniffer(await natsConnect({ servers: url }));
    s.nc.subscribe(">", {
      callback: (_err, m) => {
        let head = "";
        for (const [k, v] of (m.headers as MsgHdrsImpl | undefined) ?? []) head += `${k}: ${v.join(",")}\n`;
        s.#chunks.push(`${m.subject}\n${head}\n${Buffer.from(m.data).toString("latin1")}`);
        s.#headers.push({ subject: m.subject, enc: m.headers?.get(Header.enc) || undefined, to: m.headers?.get(Header.to) || undefined });
      },
    });
    await s.nc.flush();
    return s;
  }

  /** The envelope headers of everything seen so far, once the server has delivered what came before. */
  async headers(): Promise<Array<{ subject: string; enc?: string; to?: string }>> {
    await this.nc.flush();
    return this.#headers;
  }

  /** Everything seen so far, once the server has delivered what came before. */
  async text(): Promise<string> {
    await this.nc.flush();
    return this.#chunks.join("\n");
  }

  close(): Promise<void> {
    return this.nc.close();
  }
}

/** The `mesh_<t>_tasks` entry of a task, read raw through @nats-io/kv. */
async function rawSnapshot(url: string, bus: Bus, taskId: string): Promise<string> {
  // Keyed `<submitter>.<task>`: the bus submitted it.
  const nc = await natsConnect({ servers: url });
  try {
    const kv = await new Kvm(nc).open(bus.subjects.bucket("tasks"));
    return (await kv.get(`${bus.id}.${taskId}`))?.string() ?? "";
  } finally {
    await nc.close();
  }
}

const allText = (task: Task) => [...task.history.map(textOf), ...task.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? ""))].join("\n");

async function rejectsWith(p: Promise<unknown>, code: string): Promise<AgentBusError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(AgentBusError);
  expect((err as AgentBusError).code).toBe(code);
  return err as AgentBusError;
}

describe("end-to-end encryption", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  /** One agent offering `secret` (fast calls, tasks, inbox), a caller granted everything. */
  async function setup() {
    const t = tenant();
    const agentBus = await open({ tenant: t });
    const caller = await open({ tenant: t });
    await grant(agentBus, "caller", { source: caller.id, target: "*", capabilities: [">"] }, caller);
    const inbox: InboxMessage[] = [];
    await agentBus.agent(
      { name: "vault", skills: [{ id: "secret" }] },
      {
        secret: async (ctx) => {
          await ctx.status(`STATUS-MARK for ${ctx.text.length}`);
          if (ctx.task) await ctx.artifact(`ARTIFACT-MARK ${[...ctx.text].reverse().join("")}`, { name: "notes" });
          return `RESULT-MARK ${[...ctx.text].reverse().join("")}`;
        },
      },
      { inbox: (m) => void inbox.push(m) },
    );
    await eventually(() => caller.discover({ capability: "secret", online: true }).length === 1);
    return { t, agentBus, caller, inbox };
  }

  it("a fast call: a raw subscriber sees neither input nor result; the caller gets the result", async () => {
    const { caller } = await setup();
    const sniff = await Sniffer.start(nats.server.url);
    try {
      // The sniffer works: a plain call shows its input and result.
      expect(textOf(await caller.call("secret", "PLAIN-INPUT-1"))).toBe("RESULT-MARK 1-TUPNI-NIALP");
      expect(await sniff.text()).toContain("PLAIN-INPUT-1");
      expect(await sniff.text()).toContain("RESULT-MARK");

      const reply = await caller.call("secret", "INPUT-MARK-2", { encrypt: true });
      expect(textOf(reply)).toBe("RESULT-MARK 2-KRAM-TUPNI");
      const seen = await sniff.text();
      expect(seen).not.toContain("INPUT-MARK-2");
      expect(seen).not.toContain("2-KRAM-TUPNI");
      // Request and reply both carry Mesh-Enc and a Mesh-To.
      const encrypted = (await sniff.headers()).filter((h) => h.enc === E2E_SCHEME);
      expect(encrypted.length).toBe(2);
      expect(encrypted.every((h) => h.to && h.to.length > 0)).toBe(true);
    } finally {
      await sniff.close();
    }
  });

  it("a fast call's handler failure comes back encrypted, with its reason intact for the caller", async () => {
    const t = tenant();
    const agentBus = await open({ tenant: t });
    const caller = await open({ tenant: t });
    await grant(agentBus, "caller", { source: caller.id, target: "*", capabilities: [">"] }, caller);
    await agentBus.agent({ name: "grumpy", skills: [{ id: "grump" }] }, { grump: (ctx) => ctx.fail(`no to ${ctx.text}`) });
    await eventually(() => caller.discover({ capability: "grump", online: true }).length === 1);
    const sniff = await Sniffer.start(nats.server.url);
    try {
      const err = await rejectsWith(caller.call("grump", "FAIL-MARK", { encrypt: true }), "HANDLER_FAILED");
      expect(err.message).toContain("no to FAIL-MARK");
      expect(await sniff.text()).not.toContain("FAIL-MARK");
    } finally {
      await sniff.close();
    }
  });

  it("a durable task: work item, events and the stored snapshot hold no plaintext; the submitter reads it all", async () => {
    const { caller, agentBus } = await setup();
    const sniff = await Sniffer.start(nats.server.url);
    try {
      const handle = await caller.submit("secret", "TASK-MARK-3", { encrypt: true });
      const done = await handle.result({ timeout: 20_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      // The submitter's view: plain.
      expect(textOf(done.history[0]!)).toBe("TASK-MARK-3");
      const text = allText(done);
      expect(text).toContain("ARTIFACT-MARK 3-KRAM-KSAT");
      expect(text).toContain("RESULT-MARK 3-KRAM-KSAT");
      expect(done.history.map(textOf)).toContain("STATUS-MARK for 11");
      const read = await caller.task(handle.id);
      expect(allText(read)).toBe(text);
      expect(read.artifacts.find((a) => a.name === "notes")).toBeDefined();
      const events = [];
      for await (const e of handle.events()) events.push(e.event);
      expect(JSON.stringify(events)).toContain("ARTIFACT-MARK 3-KRAM-KSAT");

      // On the wire: the work item and every event, without plaintext.
      const seen = await sniff.text();
      for (const mark of ["TASK-MARK-3", "3-KRAM-KSAT", "STATUS-MARK"]) expect(seen).not.toContain(mark);
      const work = (await sniff.headers()).find((h) => h.subject === caller.subjects.work("secret"));
      expect(work?.enc).toBe(E2E_SCHEME);
      expect(work?.to).toContain(hintOf(agentBus.id));
      expect((await sniff.headers()).some((h) => h.subject === caller.subjects.taskEventLog(caller.id, handle.id))).toBe(true);

      // In the tasks bucket: encrypted parts, marked as such.
      const raw = await rawSnapshot(nats.server.url, caller, handle.id);
      expect(raw).toContain(handle.id);
      for (const mark of ["TASK-MARK-3", "3-KRAM-KSAT", "STATUS-MARK"]) expect(raw).not.toContain(mark);
      const stored = JSON.parse(raw) as Task;
      expect(stored.metadata.encrypted).toBe(E2E_SCHEME);
      expect(stored.history.every((m) => m.parts.every(isEncryptedPart))).toBe(true);
      expect(stored.artifacts.length).toBe(2);
      expect(stored.artifacts.every((a) => a.parts.every(isEncryptedPart))).toBe(true);
    } finally {
      await sniff.close();
    }
  });

  it("a durable task larger than one message: its blobs hold ciphertext and their references travel sealed; the submitter reads it all", async () => {
    const { caller } = await setup();
    const sniff = await Sniffer.start(nats.server.url);
    try {
      const input = `BIG-MARK-${"q".repeat(2_000_000)}-END`;
      const handle = await caller.submit("secret", input, { encrypt: true });
      const done = await handle.result({ timeout: 30_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(textOf(done.history[0]!)).toBe(input);
      const reversed = [...input].reverse().join("");
      expect(done.artifacts.find((a) => a.name === "notes")!.parts[0]!.text).toBe(`ARTIFACT-MARK ${reversed}`);
      expect(textOf((await caller.task(handle.id)).history[0]!)).toBe(input);
      // Everything on the wire, the object store's chunks included: no plaintext, and no reference (it holds the blob's key) in the clear.
      const seen = await sniff.text();
      expect(seen).toContain(`$O.${caller.subjects.bucket("blobs")}.C.`);
      for (const mark of ["BIG-MARK", "KRAM-GIB", "qqqqqqqqqqqqqqqq", "application/vnd.agentbus.blob+json"]) expect(seen).not.toContain(mark);
      const raw = await rawSnapshot(nats.server.url, caller, handle.id);
      expect(raw.length).toBeLessThan(64 * 1024);
      expect(raw).not.toContain("application/vnd.agentbus.blob+json");
    } finally {
      await sniff.close();
    }
  });

  it("a direct message: the inbox stream holds ciphertext; the agent's handler reads plain text", async () => {
    const { caller, agentBus, inbox } = await setup();
    const sniff = await Sniffer.start(nats.server.url);
    try {
      await caller.send(agentBus.id, "DM-MARK-4", { encrypt: true });
      await eventually(() => inbox.length === 1);
      expect(textOf(inbox[0]!.message)).toBe("DM-MARK-4");
      expect(inbox[0]!.from).toBe(caller.id);
      expect(inbox[0]!.envelope.enc).toBe(E2E_SCHEME);
      expect(await sniff.text()).not.toContain("DM-MARK-4");
    } finally {
      await sniff.close();
    }
  });

  it("a capability served by two provider identities serves encrypted calls and tasks on both", async () => {
    const t = tenant();
    const caller = await open({ tenant: t });
    const replicas = await Promise.all([open({ tenant: t }), open({ tenant: t })]);
    await grant(caller, "caller", { source: caller.id, target: "*", capabilities: [">"] }, ...replicas);
    for (const r of replicas) {
      await r.agent(
        { name: "twin", skills: [{ id: "twin" }] },
        {
          twin: async (ctx) => {
            if (ctx.task) await new Promise((res) => setTimeout(res, 60)); // let the other replica pull too
            return `${r.id}:${ctx.text}`;
          },
        },
        { tasks: { concurrency: 1 } },
      );
    }
    await eventually(() => caller.discover({ capability: "twin", online: true }).length === 2);
    const callers = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const [who, text] = textOf(await caller.call("twin", `c${i}`, { encrypt: true })).split(":");
      expect(text).toBe(`c${i}`);
      callers.add(who!);
    }
    expect(callers).toEqual(new Set(replicas.map((r) => r.id)));

    const handles = await Promise.all(Array.from({ length: 12 }, (_, i) => caller.submit("twin", `t${i}`, { encrypt: true })));
    const done = await Promise.all(handles.map((h) => h.result({ timeout: 30_000 })));
    const workers = new Set<string>();
    done.forEach((task, i) => {
      expect(task.status.state).toBe("TASK_STATE_COMPLETED");
      const [who, text] = allText(task).split("\n").at(-1)!.split(":");
      expect(text).toBe(`t${i}`);
      workers.add(who!);
    });
    expect(workers).toEqual(new Set(replicas.map((r) => r.id)));
  });

  it("work is encrypted for registered providers, online or not, never a revoked one; a later provider gets new work; none: refused", async () => {
    const t = tenant();
    const caller = await open({ tenant: t });
    const [online, revoked, offline, later] = [Identity.generate(), Identity.generate(), Identity.generate(), Identity.generate()];
    await grant(caller, "caller", { source: caller.id, target: "*", capabilities: [">"] });
    const handler = { relay: (ctx: { text: string }) => `relayed ${ctx.text}` };
    // Two providers registered and stopped (offline), one of them then revoked; one online.
    for (const id of [revoked, offline]) {
      const b = await open({ tenant: t, identity: id });
      await (await b.agent({ name: "relay", skills: [{ id: "relay" }] }, handler)).stop();
    }
    const onlineBus = await open({ tenant: t, identity: online });
    await onlineBus.agent({ name: "relay", skills: [{ id: "relay" }] }, handler);
    await eventually(() => caller.discover({ capability: "relay" }).length === 3);
    await revokeAsAdmin(caller, revoked.id, "compromised", onlineBus);

    // Nothing registered offers this one: refused rather than encrypted for nobody.
    const refused = await rejectsWith(caller.submit("nobody-serves", "x", { encrypt: true }), "NO_RESPONDERS");
    expect(refused.message).toContain("encrypt");

    const sniff = await Sniffer.start(nats.server.url);
    try {
      const first = await caller.submit("relay", "R1", { encrypt: true });
      expect(textOf((await first.result({ timeout: 20_000 })).history[0]!)).toBe("R1");
      // The work item as published, and as delivered to the worker (same subject).
      const work = async () => (await sniff.headers()).filter((h) => h.subject === caller.subjects.work("relay"));
      const firstItems = await work();
      expect(firstItems.length).toBeGreaterThan(0);
      for (const item of firstItems) {
        expect(item.to).toContain(hintOf(online.id));
        expect(item.to).toContain(hintOf(offline.id));
        expect(item.to).not.toContain(hintOf(revoked.id));
      }
      // The snapshot's parts and the events' parts are not for the revoked provider either.
      const raw = await rawSnapshot(nats.server.url, caller, first.id);
      expect(raw).toContain(hintOf(online.id));
      expect(raw).not.toContain(hintOf(revoked.id));
      // An encrypted fast call is for the online providers only, not the revoked one.
      await caller.call("relay", "R2", { encrypt: true });
      // Addressed to the online provider's running instance, and encrypted for it alone.
      const call = (await sniff.headers()).find((h) => h.subject.startsWith(`${caller.subjects.agentCall(online.id)}.`));
      expect(call?.to).toContain(hintOf(online.id));
      expect(call?.to).not.toContain(hintOf(revoked.id));

      // A provider that registers later is a recipient of new work.
      const laterBus = await open({ tenant: t, identity: later });
      await laterBus.agent({ name: "relay", skills: [{ id: "relay" }] }, handler);
      await eventually(() => caller.discover({ capability: "relay" }).length === 4);
      const second = await caller.submit("relay", "R3", { encrypt: true });
      await second.result({ timeout: 20_000 });
      const secondItems = (await work()).slice(firstItems.length);
      expect(secondItems.length).toBeGreaterThan(0);
      for (const item of secondItems) {
        expect(item.to).toContain(hintOf(later.id));
        expect(item.to).not.toContain(hintOf(revoked.id));
      }
    } finally {
      await sniff.close();
    }
  });

  it("a multi-turn encrypted task: the next turn stays encrypted and its handler reads the earlier turns in plain", async () => {
    const t = tenant();
    const agentBus = await open({ tenant: t });
    const caller = await open({ tenant: t });
    await grant(agentBus, "caller", { source: caller.id, target: "*", capabilities: [">"] }, caller);
    let seenHistory: string[] = [];
    await agentBus.agent({ name: "asker", skills: [{ id: "ask" }] }, {
      ask: async (ctx) => {
        if (ctx.history.length < 3) return ctx.inputRequired(`QUESTION-MARK about ${ctx.text}`);
        seenHistory = ctx.history.map(textOf);
        return `ANSWER-MARK ${ctx.text}`;
      },
    });
    await eventually(() => caller.discover({ capability: "ask", online: true }).length === 1);
    const sniff = await Sniffer.start(nats.server.url);
    try {
      const first = await caller.submit("ask", "TURN1-MARK", { encrypt: true });
      expect((await first.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
      // The follow-up does not say encrypt: the task does.
      const second = await caller.submit("ask", "TURN2-MARK", { taskId: first.id });
      const done = await second.result({ timeout: 20_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(seenHistory).toEqual(["TURN1-MARK", "QUESTION-MARK about TURN1-MARK", "TURN2-MARK"]);
      expect(allText(done)).toContain("ANSWER-MARK TURN2-MARK");
      const seen = await sniff.text();
      for (const mark of ["TURN1-MARK", "TURN2-MARK", "QUESTION-MARK", "ANSWER-MARK"]) expect(seen).not.toContain(mark);
    } finally {
      await sniff.close();
    }
  });

  it("an identity that is not a party sees that a task is encrypted, not its content, even with a task grant", async () => {
    const { t, caller, agentBus } = await setup();
    const observer = await open({ tenant: t });
    await grant(agentBus, "observer", { source: observer.id, target: "*", capabilities: ["task.secret"] }, observer);
    const handle = await caller.submit("secret", "PRIVATE-MARK-5", { encrypt: true });
    await handle.result({ timeout: 20_000 });

    const seen = await observer.task(handle.id);
    expect(seen.status.state).toBe("TASK_STATE_COMPLETED");
    expect(seen.metadata.encrypted).toBe(E2E_SCHEME);
    expect(seen.history.length).toBeGreaterThan(0);
    expect(seen.history.every((m) => m.parts.every(isEncryptedPart))).toBe(true);
    expect(seen.artifacts.every((a) => a.parts.every(isEncryptedPart))).toBe(true);
    expect(JSON.stringify(seen)).not.toContain("PRIVATE-MARK");
    expect(JSON.stringify(seen)).not.toContain("5-KRAM-ETAVIRP");
    const events = [];
    for await (const e of (await observer.taskHandle(handle.id)).events()) events.push(e.event);
    expect(events.length).toBeGreaterThan(0);
    expect(JSON.stringify(events)).not.toContain("5-KRAM-ETAVIRP");
    // The parties still read it.
    expect(textOf((await caller.task(handle.id)).history[0]!)).toBe("PRIVATE-MARK-5");
    expect(textOf((await agentBus.task(handle.id)).history[0]!)).toBe("PRIVATE-MARK-5");
  });
});

describe("encrypted envelopes", () => {
  const sender = Identity.generate();
  const receiver = Identity.generate();
  const other = Identity.generate();
  const subject = "mesh.default.cap.echo";
  const plain = Buffer.from(JSON.stringify({ messageId: "m", role: "ROLE_USER", parts: [{ text: "ENVELOPE-MARK" }] }));

  function sealed(macFor?: string[]) {
    const { headers, body } = new Envelopes(sender).sealEncrypted(subject, plain, [receiver.id], {}, macFor);
    return { subject, data: body, headers };
  }

  it("opens for a recipient, after verifying; the body is ciphertext", () => {
    for (const macFor of [undefined, [receiver.id]]) {
      const msg = sealed(macFor);
      expect(Buffer.from(msg.data).toString("latin1")).not.toContain("ENVELOPE-MARK");
      const opener = new Envelopes(receiver);
      const env = opener.open(msg);
      expect(env.enc).toBe(E2E_SCHEME);
      expect(Buffer.from(opener.decrypt(env, msg.data)).toString()).toContain("ENVELOPE-MARK");
    }
  });

  it("refuses another identity (NOT_RECIPIENT) and tampered Mesh-Enc, Mesh-To or ciphertext (BAD_SIGNATURE)", () => {
    const msg = sealed();
    const outsider = new Envelopes(other);
    expect(() => outsider.decrypt(outsider.open(msg), msg.data)).toThrow(expect.objectContaining({ code: "NOT_RECIPIENT" }));

    const stripped = sealed();
    (stripped.headers as MsgHdrsImpl).headers.delete(Header.enc);
    expect(() => new Envelopes(receiver).open(stripped)).toThrow(expect.objectContaining({ code: "BAD_SIGNATURE" }));

    const rewrapped = sealed();
    const to = rewrapped.headers.get(Header.to);
    (rewrapped.headers as MsgHdrsImpl).headers.set(Header.to, [`${to.slice(0, -2)}AA`]);
    expect(() => new Envelopes(receiver).open(rewrapped)).toThrow(expect.objectContaining({ code: "BAD_SIGNATURE" }));

    const flipped = sealed();
    const data = Buffer.from(flipped.data);
    data[0] = data[0]! ^ 1;
    expect(() => new Envelopes(receiver).open({ ...flipped, data })).toThrow(expect.objectContaining({ code: "BAD_SIGNATURE" }));
  });

  it("refuses more recipients than the limit, and none", () => {
    const many = Array.from({ length: 65 }, () => Identity.generate().id);
    expect(() => new Envelopes(sender).sealEncrypted(subject, plain, many)).toThrow(expect.objectContaining({ code: "INVALID_INPUT" }));
    expect(() => new Envelopes(sender).sealEncrypted(subject, plain, [])).toThrow(expect.objectContaining({ code: "INVALID_INPUT" }));
  });
});
