/**
 * Task ownership: a task is read, followed, listed and cancelled only by
 * its submitter (behind a bridge: the same caller), the agent serving it and
 * identities granted `task.<cap>`; to everyone else it does not exist.
 */
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { connect as natsConnect } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { AgentBusError, Header, type Bus, type StoredEvent, type Task } from "../../core/index.js";
import { ownerKey } from "../../core/store/task-snapshots.js";
import { taskIdBinds } from "../../core/wire/task.js";
import { codeOf, eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;


async function collect(it: AsyncIterable<StoredEvent>): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

const ids = (tasks: Task[]) => tasks.map((t) => t.id).sort();
const textOfResult = (t: Task) => t.artifacts.flatMap((x) => x.parts.map((p) => p.text ?? "")).join("");

describe("task ownership", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  /**
   * An agent serving `hold` (runs until released or cancelled) and `echo`;
   * A and B may call it; G is granted `task.hold` and `task.echo` on any agent.
   */
  const setup = async () => {
    const tenant = `own${++tenants}`;
    const [agentBus, a, b, g] = await Promise.all([open({ tenant }), open({ tenant }), open({ tenant }), open({ tenant })]);
    const gates = new Map<string, () => void>();
    const callers = new Map<string, string | undefined>();
    await agentBus.agent({ name: "holder", skills: [{ id: "hold" }, { id: "echo" }] }, {
      hold: async (ctx) => {
        callers.set(ctx.taskId!, ctx.caller);
        await ctx.status("holding");
        await new Promise<void>((resolve, reject) => {
          gates.set(ctx.taskId!, resolve);
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
        });
        return "released";
      },
      echo: (ctx) => {
        callers.set(ctx.taskId!, ctx.caller);
        return ctx.text;
      },
    });
    const all = [agentBus, a, b, g];
    await grant(a, "a", { source: a.id, target: agentBus.id, capabilities: ["hold", "echo"] }, ...all);
    await grant(a, "b", { source: b.id, target: agentBus.id, capabilities: ["hold", "echo"] }, ...all);
    await grant(a, "g", { source: g.id, target: "*", capabilities: ["task.hold", "task.echo"] }, ...all);
    const working = async (bus: Bus, id: string, caller?: string) =>
      eventually(async () => (await bus.task(id, { caller })).status.state === "TASK_STATE_WORKING" && gates.has(id));
    return { tenant, agentBus, a, b, g, gates, callers, working };
  };

  it("another identity gets TASK_NOT_FOUND for get, events, result, lastSequence, cancel, continuing, and does not list it", async () => {
    const { a, b, gates, working } = await setup();
    const handle = await a.submit("hold", "x");
    await working(a, handle.id);

    const unknown = "0123456789abcdef0123456789abcdef";
    for (const id of [handle.id, unknown]) {
      const other = await b.taskHandle(id);
      expect(await codeOf(b.task(id))).toBe("TASK_NOT_FOUND");
      expect(await codeOf(other.get())).toBe("TASK_NOT_FOUND");
      expect(await codeOf(collect(other.events()))).toBe("TASK_NOT_FOUND");
      expect(await codeOf(other.result({ timeout: 2000 }))).toBe("TASK_NOT_FOUND");
      expect(await codeOf(other.lastSequence())).toBe("TASK_NOT_FOUND");
      expect(await codeOf(other.cancel())).toBe("TASK_NOT_FOUND");
    }
    // The same words for a task that exists as for one that does not.
    const message = (id: string) => b.task(id).catch((e: AgentBusError) => e.message.replace(id, "<id>"));
    expect(await message(handle.id)).toBe(await message(unknown));
    // Continuing someone else's task is refused the same way, and leaves it as it is.
    expect(await codeOf(b.submit("hold", { messageId: "m2", role: "ROLE_USER", parts: [{ text: "mine now" }], taskId: handle.id }))).toBe("TASK_NOT_FOUND");
    expect((await b.tasks()).tasks).toEqual([]);

    // The submitter still sees and lists it, and it was not cancelled.
    expect((await a.task(handle.id)).status.state).toBe("TASK_STATE_WORKING");
    expect(ids((await a.tasks()).tasks)).toEqual([handle.id]);
    gates.get(handle.id)!();
    expect((await handle.result()).status.state).toBe("TASK_STATE_COMPLETED");
    expect(JSON.stringify((await a.task(handle.id)).history)).not.toContain("mine now");
  });

  it("the serving agent and a granted identity get, list and follow the task; the granted one cancels it", async () => {
    const { agentBus, a, b, g, gates, working } = await setup();
    const done = await a.submit("echo", "hello");
    expect((await done.result()).status.state).toBe("TASK_STATE_COMPLETED");
    const held = await a.submit("hold", "x");
    const mine = await b.submit("echo", "b's");
    await mine.result();
    await working(a, held.id);

    for (const viewer of [agentBus, g]) {
      expect((await viewer.task(done.id)).metadata.submitter).toBe(a.id);
      expect((await viewer.task(held.id)).status.state).toBe("TASK_STATE_WORKING");
      // Both of A's tasks and B's: they serve or are granted on every one of them.
      expect(ids((await viewer.tasks()).tasks)).toEqual([done.id, held.id, mine.id].sort());
      const events = await collect((await viewer.taskHandle(done.id)).events());
      expect(events.at(-1)!.event).toMatchObject({ statusUpdate: { status: { state: "TASK_STATE_COMPLETED" } } });
      // MACed for the submitter: read as the stream holds them, from the agent.
      expect(events.every((e) => !e.verified && e.from === agentBus.id)).toBe(true);
    }
    // The submitter verifies every event.
    expect((await collect(done.events())).every((e) => e.verified && e.from === agentBus.id)).toBe(true);

    // The granted identity cancels the running task: the worker accepts its request.
    const canceled = await (await g.taskHandle(held.id)).cancel();
    expect(canceled.status.state).toBe("TASK_STATE_CANCELED");
    expect((await held.result()).status.state).toBe("TASK_STATE_CANCELED");
    expect(gates.has(held.id)).toBe(true);

    // A grant on another capability gives nothing.
    await grant(a, "g", { source: g.id, target: "*", capabilities: ["task.echo"] }, g);
    expect(await codeOf(g.task(held.id))).toBe("TASK_NOT_FOUND");
    expect(ids((await g.tasks()).tasks)).toEqual([done.id, mine.id].sort());
  });

  it("a cancel request on the cancel subject from a raw NATS client or an identity without the right changes nothing", async () => {
    const { tenant, agentBus, a, b, g, gates, working } = await setup();
    const handle = await a.submit("hold", "x");
    await working(a, handle.id);
    const subject = a.subjects.taskCancel(handle.id);

    const raw = await natsConnect({ servers: nats.server.url });
    try {
      const unsigned = await raw.request(subject, new TextEncoder().encode("{}"), { timeout: 2000 });
      expect(unsigned.headers?.get(Header.error)).toBe("UNSIGNED");
      raw.publish(subject, new TextEncoder().encode("{}"));
      // Signed by an identity that may call the capability but holds no task right.
      const body = Buffer.from("{}");
      const signed = await raw.request(subject, body, { timeout: 2000, headers: b.envelopes.seal(subject, body, { task: handle.id }, [agentBus.id]) });
      expect(signed.headers?.get(Header.error)).toBe("TASK_NOT_FOUND");
      await raw.flush();
    } finally {
      await raw.close();
    }
    // The task still runs; the refusal was audited.
    await new Promise((r) => setTimeout(r, 300));
    expect((await a.task(handle.id)).status.state).toBe("TASK_STATE_WORKING");
    const audit = await (await jetstream(a.nc).consumers.get(a.subjects.stream("AUDIT"), { filter_subjects: `mesh.${tenant}.audit.denied` })).next({ expires: 5000 });
    expect(audit?.json<{ reason: string }>().reason).toContain(b.id);

    // The same request from the granted identity is accepted.
    const body = Buffer.from("{}");
    const accepted = await g.nc.request(subject, body, { timeout: 5000, headers: g.envelopes.seal(subject, body, { task: handle.id }, [agentBus.id]) });
    expect(accepted.headers?.get(Header.error) ?? "").toBe("");
    expect((await handle.result()).status.state).toBe("TASK_STATE_CANCELED");
    expect(gates.has(handle.id)).toBe(true);
  });

  it("behind one identity, each caller sees, lists, cancels and continues only its own tasks; the agent sees the caller", async () => {
    const { a, callers, working } = await setup();
    const k1 = await a.submit("echo", "one", { caller: "key-1" });
    const k2 = await a.submit("echo", "two", { caller: "oidc:alice@example.com" });
    const held = await a.submit("hold", "x", { caller: "key-1" });
    await Promise.all([k1.result(), k2.result()]);
    await working(a, held.id, "key-1");
    expect(callers.get(k1.id)).toBe("key-1");
    expect(callers.get(k2.id)).toBe("oidc:alice@example.com");
    expect((await a.task(k1.id)).metadata.caller).toBe("key-1");

    const asK2 = { caller: "oidc:alice@example.com" };
    expect((await a.task(k2.id, asK2)).status.state).toBe("TASK_STATE_COMPLETED");
    expect(await codeOf(a.task(k1.id, asK2))).toBe("TASK_NOT_FOUND");
    expect(await codeOf((await a.taskHandle(held.id, asK2)).cancel())).toBe("TASK_NOT_FOUND");
    expect(await codeOf(collect((await a.taskHandle(k1.id, asK2)).events()))).toBe("TASK_NOT_FOUND");
    expect(await codeOf(a.submit("echo", { messageId: "m2", role: "ROLE_USER", parts: [{ text: "x" }], taskId: k1.id }, asK2))).toBe("TASK_NOT_FOUND");

    expect(ids((await a.tasks({ caller: "key-1" })).tasks)).toEqual([k1.id, held.id].sort());
    expect(ids((await a.tasks(asK2)).tasks)).toEqual([k2.id]);
    expect((await a.tasks({ caller: "key-3" })).tasks).toEqual([]);
    // The identity itself (no caller) sees everything it submitted, for any caller.
    expect(ids((await a.tasks()).tasks)).toEqual([k1.id, k2.id, held.id].sort());

    expect((await (await a.taskHandle(held.id, { caller: "key-1" })).cancel()).status.state).toBe("TASK_STATE_CANCELED");
  });

  it("whoever may see a task may see the tasks an agent submitted for it; its caller too; nobody else", async () => {
    const { tenant, a, b } = await setup();
    const orchestrator = await open({ tenant });
    const children = new Map<string, string>();
    await orchestrator.agent({ name: "orchestrator", skills: [{ id: "outer" }, { id: "inner" }] }, {
      outer: async (ctx) => {
        const child = await ctx.submit("inner", "x");
        children.set(ctx.taskId!, child.id);
        return (await child.result()).status.state;
      },
      inner: () => "inner done",
    });
    const everyone = [orchestrator, a, b];
    await grant(a, "outer", { source: a.id, target: orchestrator.id, capabilities: ["outer"] }, ...everyone);
    await grant(a, "inner", { source: orchestrator.id, target: orchestrator.id, capabilities: ["inner"] }, ...everyone);

    const parent = await a.submit("outer", "go", { caller: "key-1" });
    expect(textOfResult(await parent.result())).toBe("TASK_STATE_COMPLETED");
    const childId = children.get(parent.id)!;
    const child = await a.task(childId);
    expect(child.metadata).toMatchObject({ submitter: orchestrator.id, parent: parent.id });
    expect((await a.task(childId, { caller: "key-1" })).id).toBe(childId);
    expect((await collect((await a.taskHandle(childId, { caller: "key-1" })).events())).at(-1)!.event).toMatchObject({ statusUpdate: { status: { state: "TASK_STATE_COMPLETED" } } });
    // Another caller of the same identity, and another identity, do not see it.
    expect(await codeOf(a.task(childId, { caller: "key-2" }))).toBe("TASK_NOT_FOUND");
    expect(await codeOf(b.task(childId))).toBe("TASK_NOT_FOUND");
    // Seeing a child is not owning it: it cannot be continued or cancelled, and is listed only by its submitter.
    expect(await codeOf(a.submit("inner", { messageId: "m2", role: "ROLE_USER", parts: [{ text: "more" }], taskId: childId }))).toBe("TASK_NOT_FOUND");
    expect(await codeOf((await a.taskHandle(childId)).cancel())).toBe("TASK_NOT_FOUND");
    expect(ids((await a.tasks()).tasks)).toEqual([parent.id]);
  });

  it("new task ids carry 128 random bits and name their submitter; a submitter lists its own key prefix, not the tenant's snapshots", async () => {
    const { tenant, a, b } = await setup();
    const handles = await Promise.all([a.submit("echo", "1"), a.submit("echo", "2"), b.submit("echo", "3")]);
    for (const h of handles) expect(h.id).toMatch(/^[0-9a-f]{48}$/);
    expect(new Set(handles.map((h) => h.id)).size).toBe(3);
    expect(handles.map((h, i) => taskIdBinds(h.id, i < 2 ? a.id : b.id))).toEqual([true, true, true]);
    expect(taskIdBinds(handles[0]!.id, b.id)).toBe(false);
    await Promise.all(handles.map((h) => h.result()));

    // Each snapshot is filed under its submitter; a task without a caller needs no owner-index entry.
    const kv = await new Kvm(a.nc).open(`mesh_${tenant}_tasks`);
    const keys: string[] = [];
    for await (const k of await kv.keys()) keys.push(k);
    expect(keys.sort()).toEqual([`${a.id}.${handles[0]!.id}`, `${a.id}.${handles[1]!.id}`, `${b.id}.${handles[2]!.id}`].sort());
    const owners = await new Kvm(a.nc).open(`mesh_${tenant}_owners`);
    expect(await owners.get(ownerKey(a.id, undefined, handles[0]!.id))).toBeNull();
    // A snapshot written raw under A's key carries no envelope: reading it is refused, and A's listing leaves it out.
    const stray = { ...(await a.task(handles[0]!.id)), id: "fedcba9876543210fedcba9876543210" };
    await kv.put(`${a.id}.${stray.id}`, JSON.stringify(stray));
    await expect(a.task(stray.id)).rejects.toMatchObject({ code: "BAD_SIGNATURE" });
    expect(ids((await a.tasks()).tasks)).toEqual([handles[0]!.id, handles[1]!.id].sort());
    expect(ids((await b.tasks()).tasks)).toEqual([handles[2]!.id]);
  });
});
