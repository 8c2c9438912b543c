import { describe, expect, it } from "vitest";
import { textOf, type Task } from "../../core/index.js";
import { codeOf, eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;


const reason = (t: Task) => (t.status.message ? textOf(t.status.message) : "");

describe("task deadlines", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  /** A client, and a way to start the agent later: it records what ran and can wait for its signal. */
  const setup = async () => {
    const tenant = `deadline${++tenants}`;
    const ran: string[] = [];
    const aborted: string[] = [];
    const client = await open({ tenant });
    const serve = async () => {
      const agentBus = await open({ tenant, insecureAllowAll: true });
      await agentBus.agent({ name: "worker", skills: [{ id: "work" }] }, {
        work: async (ctx) => {
          ran.push(ctx.text);
          if (ctx.text !== "slow") return `done ${ctx.text}`;
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 15_000);
            ctx.signal.addEventListener("abort", () => {
              aborted.push(ctx.text);
              clearTimeout(timer);
              resolve();
            });
          });
          return "too late";
        },
      });
      return agentBus;
    };
    return { client, serve, ran, aborted };
  };

  it("a task no worker took by its deadline ends FAILED at the deadline and never runs", async () => {
    const { client, serve, ran } = await setup();
    const handle = await client.submit("work", "queued", { ttlMs: 800 });
    const deadline = (await client.task(handle.id)).metadata.deadline!;
    expect(deadline).toBeGreaterThan(Date.now());
    // The submitter waiting for it ends it at its deadline.
    const task = await handle.result({ timeout: 20_000 });
    expect(task.status.state).toBe("TASK_STATE_FAILED");
    expect(reason(task)).toContain(`deadline ${new Date(deadline).toISOString()} passed before the task started`);
    expect(Date.now()).toBeGreaterThanOrEqual(deadline);
    // An agent that comes later receives the work item, finds the task ended, and does not run it.
    await serve();
    const after = await client.submit("work", "after");
    expect((await after.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    expect(ran).toEqual(["after"]);
  });

  it("a worker that receives a task past its deadline ends it FAILED without running it", async () => {
    const { client, serve, ran } = await setup();
    const handle = await client.taskHandle((await client.submit("work", "late", { deadline: new Date(Date.now() + 500) })).id);
    await new Promise((r) => setTimeout(r, 800));
    // Nobody waited for it: the worker is the first to look.
    await serve();
    const task = await eventually(async () => {
      const t = await handle.get();
      return t.status.state === "TASK_STATE_FAILED" ? t : undefined;
    }, 15_000, 100);
    expect(reason(task!)).toContain("passed before the task started");
    expect(ran).toEqual([]);
  });

  it("a task still running at its deadline is canceled: its handler's signal aborts", async () => {
    const { client, serve, aborted } = await setup();
    await serve();
    const quick = await client.submit("work", "quick", { ttlMs: 10_000 });
    expect((await quick.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    const handle = await client.submit("work", "slow", { ttlMs: 1000 });
    const deadline = (await client.task(handle.id)).metadata.deadline!;
    const task = await handle.result({ timeout: 20_000 });
    expect(task.status.state).toBe("TASK_STATE_CANCELED");
    expect(reason(task)).toContain(`deadline ${new Date(deadline).toISOString()} passed while the task ran`);
    expect(aborted).toEqual(["slow"]);
  });

  it("bad deadlines are refused before anything is written", async () => {
    const { client } = await setup();
    expect(await codeOf(client.submit("work", "x", { deadline: Date.now() + 1000, ttlMs: 1000 }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("work", "x", { ttlMs: 0 }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("work", "x", { deadline: Date.now() - 1 }))).toBe("INVALID_INPUT");
    expect(await codeOf(client.submit("work", "x", { deadline: new Date("never") }))).toBe("INVALID_INPUT");
    if (client.server.schedules) {
      expect(await codeOf(client.submit("work", "x", { runAt: Date.now() + 5000, deadline: Date.now() + 4000 }))).toBe("INVALID_INPUT");
    }
    expect((await client.tasks()).tasks).toEqual([]);
  });
});
