import { describe, expect, it } from "vitest";
import type { Bus } from "../../core/index.js";
import { codeOf, eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;


describe("delayed tasks", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  /** An agent that records when each task started, and a client. */
  const setup = async (tenant = `delayed${++tenants}`) => {
    const started = new Map<string, number>();
    const serve = async () => {
      const agentBus = await open({ tenant, insecureAllowAll: true });
      await agentBus.agent({ name: "clock", skills: [{ id: "stamp" }] }, {
        stamp: (ctx) => {
          started.set(ctx.task!.id, Date.now());
          return `ran ${ctx.text}`;
        },
      });
      return agentBus;
    };
    const agentBus = await serve();
    const client = await open({ tenant });
    return { tenant, agentBus, client, started, serve };
  };
  const supported = (bus: Bus) => bus.server.schedules;

  it("a delayed task is SUBMITTED at once, readable and listed, and runs at its time, not before", async () => {
    const { client, started } = await setup();
    if (!supported(client)) {
      // Before nats-server 2.12: refused before anything is written; a time already past runs now.
      expect(await codeOf(client.submit("stamp", "later", { delayMs: 1000 }))).toBe("SERVER_TOO_OLD");
      expect((await client.tasks()).tasks).toEqual([]);
      const now = await client.submit("stamp", "now", { runAt: new Date(Date.now() - 1000) });
      expect((await now.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
      return;
    }
    const before = Date.now();
    const handle = await client.submit("stamp", "later", { delayMs: 1500 });
    const submitted = await client.task(handle.id);
    expect(submitted.status.state).toBe("TASK_STATE_SUBMITTED");
    const runAt = submitted.metadata.runAt as number;
    expect(runAt).toBeGreaterThanOrEqual(before + 1500);
    expect((await client.tasks()).tasks.map((t) => t.id)).toEqual([handle.id]);
    const task = await handle.result({ timeout: 20_000 });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(task.artifacts[0]?.parts[0]?.text).toBe("ran later");
    // The agent's clock and the server's are the same machine's.
    expect(started.get(handle.id)).toBeGreaterThanOrEqual(runAt);

    // runAt as a Date and as ms since the epoch; a time already past runs now, with no runAt recorded.
    const at = await client.submit("stamp", "at", { runAt: new Date(Date.now() + 500) });
    const past = await client.submit("stamp", "past", { runAt: Date.now() - 60_000 });
    expect((await past.result({ timeout: 10_000 })).metadata.runAt).toBeUndefined();
    expect((await at.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    expect(started.get(at.id)).toBeGreaterThanOrEqual((await client.task(at.id)).metadata.runAt as number);
  });

  it("a delayed task cancelled before its time never runs", async () => {
    const { client, started } = await setup();
    if (!supported(client)) return;
    const handle = await client.submit("stamp", "never", { delayMs: 1500 });
    expect((await handle.cancel()).status.state).toBe("TASK_STATE_CANCELED");
    // Its work item still comes due: the worker finds the task ended and acks it.
    const other = await client.submit("stamp", "after", { delayMs: 1600 });
    expect((await other.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    expect(started.has(handle.id)).toBe(false);
    expect((await client.task(handle.id)).status.state).toBe("TASK_STATE_CANCELED");
  });

  it("survives a restart of nats-server and of the agent before its time", async () => {
    const { client, agentBus, started, serve } = await setup();
    if (!supported(client)) return;
    const handle = await client.submit("stamp", "durable", { delayMs: 4000 });
    const runAt = (await client.task(handle.id)).metadata.runAt!;
    await agentBus.close();
    await nats.server.stop("SIGKILL");
    await nats.server.restart();
    await serve();
    const task = await eventually(async () => {
      const t = await client.task(handle.id);
      return t.status.state === "TASK_STATE_COMPLETED" ? t : undefined;
    }, 30_000, 200);
    expect(task?.artifacts[0]?.parts[0]?.text).toBe("ran durable");
    expect(started.get(handle.id)).toBeGreaterThanOrEqual(runAt);
  });

  it("bad times are refused before anything is written", async () => {
    const { client } = await setup();
    expect(await codeOf(client.submit("stamp", "x", { runAt: Date.now() + 1000, delayMs: 1000 }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("stamp", "x", { delayMs: -1 }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("stamp", "x", { runAt: new Date("not a date") }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("stamp", "x", { runAt: Number.NaN }))).toBe("INVALID_INPUT");
    // Beyond the task retention (7 days by default): the snapshot would be gone before it ran.
    expect(await codeOf(client.submit("stamp", "x", { delayMs: 8 * 24 * 3600_000 }))).toBe("INVALID_INPUT");
    expect((await client.tasks()).tasks).toEqual([]);
    // A runAt in the caller's own metadata is not a delay: the task runs now, without it.
    const meta = await client.submit("stamp", "meta", { metadata: { runAt: Date.now() + 60_000, note: "kept" } });
    const ran = await meta.result({ timeout: 10_000 });
    expect(ran.status.state).toBe("TASK_STATE_COMPLETED");
    expect(ran.metadata).toMatchObject({ note: "kept" });
    expect(ran.metadata.runAt).toBeUndefined();
    if (!supported(client)) return;
    // A delay applies to a new task, not to a later turn of one that exists.
    const first = await client.submit("stamp", "first", { taskId: "t-delay-1" });
    await first.result({ timeout: 10_000 });
    expect(await codeOf(client.submit("stamp", "again", { taskId: "t-delay-1", delayMs: 1000 }))).toBe("INVALID_INPUT");
  });
});
