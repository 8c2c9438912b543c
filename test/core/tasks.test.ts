import { jetstreamManager } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { AgentBusError, stateOf, textOf, type Bus, type Message, type StoredEvent, type Task } from "../../core/index.js";

/** The data a message carries (its first data part). */
const structured = (m: Message): unknown => m.parts.find((p) => "data" in p)?.data;
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;
const artifactText = (t: Task) => t.artifacts.flatMap((a) => a.parts.map((p) => p.text ?? JSON.stringify(p.data))).join("");
const kinds = (events: StoredEvent[]) =>
  events.map(({ event: e }) => ("statusUpdate" in e ? e.statusUpdate.status.state.replace("TASK_STATE_", "") : "artifactUpdate" in e ? "artifact" : "message"));

async function collect(it: AsyncIterable<StoredEvent>): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(AgentBusError);
  expect((err as AgentBusError).code).toBe(code);
}

describe("durable tasks", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  const pair = async () => {
    const tenant = `tasks${++tenants}`;
    const agentBus = await open({ tenant, insecureAllowAll: true });
    const client = await open({ tenant });
    return { tenant, agentBus, client };
  };

  it("runs a task to COMPLETED; events replay from the start and from a cursor, two readers at once", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "writer", skills: [{ id: "write" }] }, {
      write: async (ctx) => {
        await ctx.status("thinking");
        await ctx.artifact("Hello, ", { artifactId: "a1", lastChunk: false });
        await ctx.artifact(ctx.text, { artifactId: "a1", append: true, lastChunk: true });
      },
    });
    const handle = await client.submit("write", "world");
    const task = await handle.result({ timeout: 10_000 });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(task)).toBe("Hello, world");
    expect(task.history[0]!.parts[0]!.text).toBe("world");
    expect((await client.task(handle.id)).status.state).toBe("TASK_STATE_COMPLETED");

    const [a, b] = await Promise.all([collect(handle.events()), collect(handle.events())]);
    expect(kinds(a)).toEqual(["WORKING", "WORKING", "artifact", "artifact", "COMPLETED"]);
    expect(b.map((e) => e.sequence)).toEqual(a.map((e) => e.sequence));
    const fromCursor = await collect(handle.events({ fromSequence: a[2]!.sequence }));
    expect(fromCursor.map((e) => e.sequence)).toEqual(a.slice(2).map((e) => e.sequence));
    expect(await collect(handle.events({ fromSequence: a[4]!.sequence + 1 }))).toEqual([]);
  });

  it("a task that outgrows one message completes through the object store; over maxTaskBytes it fails visibly (PAYLOAD_TOO_LARGE) and its work item is acked", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "big", skills: [{ id: "big" }] }, {
      big: async (ctx) => (ctx.text === "huge artifact" ? "a".repeat(1_500_000) : "x".repeat(700_000)),
    });
    // Input and result fit one by one, not together in one message: their parts are stored as blobs.
    const grown = await client.submit("big", "y".repeat(500_000));
    const done = await grown.result({ timeout: 20_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(done)).toBe("x".repeat(700_000));
    expect((await client.task(grown.id)).history[0]!.parts[0]!.text).toBe("y".repeat(500_000));
    // An artifact bigger than one message.
    const huge = await client.submit("big", "huge artifact");
    expect(artifactText(await huge.result({ timeout: 20_000 }))).toBe("a".repeat(1_500_000));
    // An input bigger than one message.
    const big = await client.submit("big", "z".repeat(1_100_000));
    expect((await big.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_COMPLETED");

    // Over the configured maximum: a task that outgrows it fails and its work item is acked; a submit over it is refused with nothing stored.
    const small = await open({ tenant: client.subjects.tenant, maxTaskBytes: 1_000_000 });
    await agentBus.close();
    const agent = await open({ tenant: client.subjects.tenant, insecureAllowAll: true, maxTaskBytes: 1_000_000 });
    await agent.agent({ name: "big", skills: [{ id: "big" }] }, { big: () => "a".repeat(1_500_000) });
    const failed = await (await small.submit("big", "grow")).result({ timeout: 20_000 });
    expect(failed.status.state).toBe("TASK_STATE_FAILED");
    expect(textOf(failed.status.message!)).toMatch(/^PAYLOAD_TOO_LARGE: task .* exceeds the limit of 1000000 bytes per task/);
    const jsm = await jetstreamManager(client.nc);
    await eventually(async () => (await jsm.streams.info(client.subjects.stream("WORK"))).state.messages === 0, 5000);
    const before = (await small.tasks()).totalSize;
    await rejectsWith(small.submit("big", "z".repeat(1_100_000)), "PAYLOAD_TOO_LARGE");
    expect((await small.tasks()).totalSize).toBe(before);
    expect((await jsm.streams.info(client.subjects.stream("WORK"))).state.messages).toBe(0);
  });

  it("follows a running task live", async () => {
    const { agentBus, client } = await pair();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "slow", skills: [{ id: "slow" }] }, {
      slow: async (ctx) => {
        await ctx.status("started");
        await gate;
        return "done";
      },
    });
    const handle = await client.submit("slow", "x");
    const seen: string[] = [];
    const reading = (async () => {
      for await (const e of handle.events()) {
        seen.push(kinds([e])[0]!);
        if (seen.length === 2) release();
      }
    })();
    await reading;
    expect(seen).toEqual(["WORKING", "WORKING", "artifact", "COMPLETED"]);
  });

  it("resubmitting the same task id does not enqueue it twice", async () => {
    const { agentBus, client } = await pair();
    let runs = 0;
    // Held until the retry is in: a retry of a task still queued or running is the same task.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    await agentBus.agent({ name: "count", skills: [{ id: "count" }] }, {
      count: async () => {
        runs++;
        await gate;
        return `run ${runs}`;
      },
    });
    const first = await client.submit("count", "x", { taskId: "same-id" });
    const retry = await client.submit("count", "x", { taskId: "same-id" });
    expect(retry.id).toBe(first.id);
    release();
    await first.result();
    await rejectsWith(client.submit("count", "x", { taskId: "same-id" }), "TASK_FINISHED");
    await new Promise((r) => setTimeout(r, 300));
    expect(runs).toBe(1);
  });

  it("retries a throwing handler with backoff, then FAILED and dead-lettered", async () => {
    const { agentBus, client } = await pair();
    let attempts = 0;
    await agentBus.agent({ name: "flaky", skills: [{ id: "flaky" }] }, {
      flaky: () => {
        attempts++;
        throw new Error("boom");
      },
    }, { tasks: { maxDeliver: 3, backoffMs: 50 } });
    const handle = await client.submit("flaky", "x");
    const task = await handle.result({ timeout: 15_000 });
    expect(task.status.state).toBe("TASK_STATE_FAILED");
    expect(textOf(task.status.message!)).toMatch(/gave up after 3 attempts: boom/);
    expect(attempts).toBe(3);
    const jsm = await jetstreamManager(client.nc);
    const dead = await jsm.streams.getMessage(client.subjects.stream("DLQ"), { last_by_subj: client.subjects.dlq("flaky") });
    expect(dead!.header.get("Mesh-Task")).toBe(handle.id);
    expect(dead!.header.get("Mesh-Dlq-Reason")).toMatch(/boom/);
    expect(dead!.header.get("Mesh-Dlq-Deliveries")).toBe("3");
  });

  it("a handler that misuses the library (MISUSE) fails its task and dead-letters it at once, without retries", async () => {
    const { agentBus, client } = await pair();
    let attempts = 0;
    await agentBus.agent({ name: "buggy", skills: [{ id: "buggy" }] }, {
      buggy: async (ctx) => {
        attempts++;
        await (await ctx.session()).put(["not", "an", "object"] as never);
      },
    }, { tasks: { maxDeliver: 3, backoffMs: 50 } });
    const handle = await client.submit("buggy", "x");
    const task = await handle.result({ timeout: 15_000 });
    expect(task.status.state).toBe("TASK_STATE_FAILED");
    expect(textOf(task.status.message!)).toMatch(/^MISUSE: session .*: value must be a JSON object/);
    expect(attempts).toBe(1);
    const jsm = await jetstreamManager(client.nc);
    const dead = await jsm.streams.getMessage(client.subjects.stream("DLQ"), { last_by_subj: client.subjects.dlq("buggy") });
    expect(dead!.header.get("Mesh-Task")).toBe(handle.id);
    expect(dead!.header.get("Mesh-Dlq-Deliveries")).toBe("1");
  });

  it("fails at once on input the schema refuses (no retry)", async () => {
    const { agentBus, client } = await pair();
    let runs = 0;
    await agentBus.agent(
      { name: "typed", skills: [{ id: "typed", inputSchema: { type: "object", required: ["n"], properties: { n: { type: "number" } } } }] },
      { typed: () => ++runs },
    );
    const task = await (await client.submit("typed", { n: "no" })).result();
    expect(task.status.state).toBe("TASK_STATE_FAILED");
    expect(textOf(task.status.message!)).toMatch(/INVALID_INPUT/);
    expect(runs).toBe(0);
  });

  it("cancels running, queued and finished tasks", async () => {
    const { tenant, agentBus, client } = await pair();
    await agentBus.agent({ name: "waiter", skills: [{ id: "wait" }] }, {
      wait: (ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
    });
    // Running: the handler's signal aborts.
    const running = await client.submit("wait", "x");
    await eventually(async () => (await running.get()).status.state === "TASK_STATE_WORKING");
    expect((await running.cancel()).status.state).toBe("TASK_STATE_CANCELED");

    // Queued: nobody serves `later` yet; the worker that comes skips it.
    let laterRuns = 0;
    const queued = await client.submit("later", "x");
    expect((await queued.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    const lateBus = await open({ tenant, insecureAllowAll: true });
    await lateBus.agent({ name: "late", skills: [{ id: "later" }] }, { later: () => ++laterRuns });
    const done = await client.submit("later", "y");
    expect((await done.result()).status.state).toBe("TASK_STATE_COMPLETED");
    expect(laterRuns).toBe(1);
    expect((await queued.get()).status.state).toBe("TASK_STATE_CANCELED");

    // Finished: refused with a clear code.
    await rejectsWith(done.cancel(), "NOT_CANCELABLE");
    await rejectsWith(client.task("no-such-task"), "TASK_NOT_FOUND");
  });

  it("a cancel that races the worker's first snapshot write still stops the handler", async () => {
    const { agentBus, client } = await pair();
    // Queued first and followed from the start, so each WORKING event is seen at once.
    const handles = await Promise.all(Array.from({ length: 30 }, () => client.submit("sleep", "x")));
    const working = handles.map(async (h) => {
      for await (const { event } of h.events()) if (stateOf(event) === "TASK_STATE_WORKING") return;
    });
    await new Promise((r) => setTimeout(r, 200)); // the followers are subscribed
    let aborted = 0;
    await agentBus.agent({ name: "sleeper", skills: [{ id: "sleep" }] }, {
      // Waits far longer than the test: only a cancel ends it.
      sleep: (ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => (aborted++, reject(ctx.signal.reason)))),
    }, { tasks: { concurrency: 32 } });
    // The worker folds its first events into the snapshot ~20 ms after
    // WORKING. Cancels 0–3 ms after that event: some read SUBMITTED and then
    // find the worker's write landed before theirs (without the notice to
    // the worker, its handler would never hear of the cancel).
    await Promise.all(handles.map(async (h, i) => {
      await working[i];
      await new Promise((r) => setTimeout(r, i % 4));
      expect((await h.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    }));
    await eventually(() => aborted === 30);
    for (const h of handles) expect((await h.get()).status.state).toBe("TASK_STATE_CANCELED");
  });

  it("multi-turn: INPUT_REQUIRED, then a message with the task id resumes it with its history", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "asker", skills: [{ id: "greet" }] }, {
      greet: async (ctx) => {
        if (ctx.history.length < 2) return ctx.inputRequired("What is your name?");
        return `Hello ${ctx.text}, you first said "${textOf(ctx.history[0]!)}"`;
      },
    });
    const handle = await client.submit("greet", "hi");
    const waiting = await handle.result();
    expect(waiting.status.state).toBe("TASK_STATE_INPUT_REQUIRED");
    expect(textOf(waiting.status.message!)).toBe("What is your name?");
    const events = await collect(handle.events());
    expect(kinds(events).at(-1)).toBe("INPUT_REQUIRED");

    await client.submit("greet", { messageId: "m2", role: "ROLE_USER", parts: [{ text: "Ada" }], taskId: handle.id });
    const done = await handle.result();
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(done)).toBe('Hello Ada, you first said "hi"');
    expect(done.history.map(textOf)).toEqual(["hi", "What is your name?", "Ada"]);
    expect(kinds(await collect(handle.events())).at(-1)).toBe("COMPLETED");
  });

  it("multi-turn with an input schema: the first turn is checked against it, the answer to the agent's question is not", async () => {
    const { agentBus, client } = await pair();
    const schema = { type: "object", required: ["order"], properties: { order: { type: "string" } } };
    await agentBus.agent({ name: "shop", skills: [{ id: "buy", inputSchema: schema }] }, {
      buy: async (ctx) => {
        if (ctx.history.length < 2) return ctx.inputRequired("Which size?");
        return `${(structured(ctx.history[0]!) as { order: string }).order} in ${ctx.text}`;
      },
    });
    await rejectsWith(client.call("buy", { size: "M" }), "INVALID_INPUT");
    const handle = await client.submit("buy", { order: "tea" });
    expect((await handle.result()).status.state).toBe("TASK_STATE_INPUT_REQUIRED");
    await client.submit("buy", { messageId: "size", role: "ROLE_USER", parts: [{ text: "M" }], taskId: handle.id });
    const done = await handle.result();
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(artifactText(done)).toBe("tea in M");
  });

  it("agent-to-agent tasks carry context, parent and depth; past the limit DEPTH_EXCEEDED", async () => {
    const tenant = `tasks${++tenants}`;
    const agentBus = await open({ tenant, insecureAllowAll: true, maxDepth: 2 });
    const client = await open({ tenant });
    const seen: Array<{ depth: number; parent?: string; context?: string }> = [];
    await agentBus.agent({ name: "chain", skills: [{ id: "inner" }, { id: "outer" }, { id: "loop" }] }, {
      inner: (ctx) => {
        seen.push({ depth: ctx.envelope.depth, parent: ctx.task?.metadata.parent as string, context: ctx.contextId });
        return "inner";
      },
      outer: async (ctx) => artifactText(await (await ctx.submit("inner", "x")).result()),
      loop: async (ctx) => {
        const t = await (await ctx.submit("loop", "again")).result();
        return t.status.state === "TASK_STATE_COMPLETED" ? artifactText(t) : ctx.fail(`inner: ${textOf(t.status.message!)}`);
      },
    });
    const outer = await client.submit("outer", "go", { contextId: "ctx-1" });
    const done = await outer.result();
    expect(artifactText(done)).toBe("inner");
    expect(seen).toEqual([{ depth: 1, parent: outer.id, context: "ctx-1" }]);
    const loop = await (await client.submit("loop", "x")).result({ timeout: 20_000 });
    expect(loop.status.state).toBe("TASK_STATE_FAILED");
    expect(JSON.stringify(loop.status)).toMatch(/DEPTH_EXCEEDED/);
  });

  it("lists tasks by context and state, paged", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
    const handles = [];
    for (let i = 0; i < 5; i++) handles.push(await client.submit("echo", `m${i}`, { contextId: i < 3 ? "ctx-a" : "ctx-b" }));
    await Promise.all(handles.map((h) => h.result()));
    const page1 = await client.tasks({ contextId: "ctx-a", pageSize: 2 });
    expect(page1.tasks).toHaveLength(2);
    expect(page1.totalSize).toBe(3);
    const page2 = await client.tasks({ contextId: "ctx-a", pageSize: 2, pageToken: page1.nextPageToken });
    expect(page2.tasks).toHaveLength(1);
    expect(page2.nextPageToken).toBeUndefined();
    expect(new Set([...page1.tasks, ...page2.tasks].map((t) => t.id))).toEqual(new Set(handles.slice(0, 3).map((h) => h.id)));
    expect((await client.tasks({ state: "TASK_STATE_COMPLETED" })).totalSize).toBe(5);
    expect((await client.tasks({ state: "TASK_STATE_FAILED" })).totalSize).toBe(0);
  });

  it("a fast call to the same handler collects artifacts into the reply", async () => {
    const { agentBus, client } = await pair();
    await agentBus.agent({ name: "both", skills: [{ id: "both" }] }, {
      both: async (ctx) => {
        await ctx.artifact("part one; ");
        return "part two";
      },
    });
    expect(textOf(await client.call("both", "x"))).toBe("part one; \npart two");
  });

  it("sessions: two agents updating one context concurrently lose no write", async () => {
    const { agentBus, client } = await pair();
    const [s1, s2] = await Promise.all([agentBus.session<{ n?: number }>("ctx-s"), client.session<{ n?: number }>("ctx-s")]);
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? s1 : s2).update((v) => ({ n: (v?.n ?? 0) + 1 }))));
    expect((await s1.get())!.value.n).toBe(20);
    expect((await s2.history()).length).toBeGreaterThan(1);
  });
});

export type { Bus };
