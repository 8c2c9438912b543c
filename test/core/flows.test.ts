import { describe, expect, it } from "vitest";
import { AgentBusError } from "../../core/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("flows: a parent task waiting for its children", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  /**
   * `square` squares a number after a while (failing its first attempt for
   * the number 7); `sum` fans out one child per number and adds the results.
   */
  const setup = async (tenant: string, parentRuns: string[], childRuns: string[]) => {
    const workers = await open({ tenant, insecureAllowAll: true });
    const attempts = new Map<number, number>();
    await workers.agent({ name: "squarer", skills: [{ id: "square" }] }, {
      square: async (ctx) => {
        const n = (ctx.input as { n: number }).n;
        childRuns.push(ctx.task!.id);
        attempts.set(n, (attempts.get(n) ?? 0) + 1);
        await sleep(100 + 20 * n);
        if (n === 7 && attempts.get(n) === 1) throw new Error("flaky the first time");
        return { square: n * n };
      },
    }, { tasks: { backoffMs: 100, concurrency: 4 } });
    const parentBus = await open({ tenant, insecureAllowAll: true });
    await parentBus.agent({ name: "summer", skills: [{ id: "sum" }] }, {
      sum: async (ctx) => {
        parentRuns.push(ctx.task!.id);
        const ns = (ctx.input as { ns: number[] }).ns;
        const children = await ctx.fanOut(ns.map((n) => ({ capability: "square", input: { n }, key: `n${n}` })));
        const failed = children.filter((c) => c.status.state !== "TASK_STATE_COMPLETED");
        if (failed.length > 0) return ctx.fail(`${failed.length} children failed`);
        const total = children.reduce((a, c) => a + (c.artifacts[0]!.parts[0]!.data as { square: number }).square, 0);
        return { total, from: ctx.from };
      },
    });
    return { workers, parentBus, attempts };
  };

  it("a parent with 10 children, one of which fails once and is retried: resumed when all have ended, its snapshot lists them", async () => {
    const tenant = `flow${++tenants}`;
    const parentRuns: string[] = [];
    const childRuns: string[] = [];
    const { attempts, parentBus } = await setup(tenant, parentRuns, childRuns);
    const client = await open({ tenant });
    const ns = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const handle = await client.submit("sum", { ns });

    // While the children run, the parent waits: WORKING, its children listed, no slot held.
    const waiting = await eventually(async () => {
      const t = await client.task(handle.id);
      return t.metadata.waiting === "children" ? t : undefined;
    }, 10_000, 50);
    expect(waiting!.status.state).toBe("TASK_STATE_WORKING");
    expect(waiting!.metadata.children).toEqual(ns.map((n) => ({ id: `${handle.id}-n${n}`, capability: "square" })));

    const done = await handle.result({ timeout: 30_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts[0]!.parts[0]!.data).toEqual({ total: ns.reduce((a, n) => a + n * n, 0), from: client.id });
    const stored = await client.task(handle.id);
    expect(stored.metadata.waiting).toBeUndefined();
    expect(stored.metadata.children).toHaveLength(10);
    // The handler ran twice (once to fan out, once resumed); each child once, the flaky one twice.
    expect(parentRuns).toEqual([handle.id, handle.id]);
    expect(attempts.get(7)).toBe(2);
    expect(childRuns.filter((id) => id.endsWith("-n7"))).toHaveLength(2);
    expect(childRuns).toHaveLength(11);
    // Each child is a task of the parent's agent, linked to its parent.
    const child = await parentBus.task(`${handle.id}-n3`);
    expect(child.metadata).toMatchObject({ parent: handle.id, flow: { parent: handle.id, submitter: client.id, capability: "sum" } });
    expect(child.contextId).toBe(done.contextId);
  }, 60_000);

  it("a parent whose agent is down when the last child ends is resumed when it is back", async () => {
    const tenant = `flow${++tenants}`;
    const parentRuns: string[] = [];
    const childRuns: string[] = [];
    const { parentBus } = await setup(tenant, parentRuns, childRuns);
    const client = await open({ tenant });
    const handle = await client.submit("sum", { ns: [5, 6] });
    await eventually(async () => (await client.task(handle.id)).metadata.waiting === "children", 10_000, 50);
    // The parent's agent goes away; the children end meanwhile.
    await parentBus.close();
    await eventually(() => childRuns.length >= 2, 10_000, 50);
    await sleep(400);
    expect((await client.task(handle.id)).status.state).toBe("TASK_STATE_WORKING");
    // Back: it finds the ended children in its durable consumer and resumes the parent.
    const again = await open({ tenant, insecureAllowAll: true, identity: parentBus.identity });
    await again.agent({ name: "summer", skills: [{ id: "sum" }] }, {
      sum: async (ctx) => {
        const children = await ctx.fanOut([5, 6].map((n) => ({ capability: "square", input: { n }, key: `n${n}` })));
        return children.map((c) => (c.artifacts[0]!.parts[0]!.data as { square: number }).square).join("+");
      },
    });
    const done = await handle.result({ timeout: 30_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    expect(done.artifacts[0]!.parts[0]!.text).toBe("25+36");
  }, 60_000);

  it("fanOut needs a durable task", async () => {
    const tenant = `flow${++tenants}`;
    const b = await open({ tenant, insecureAllowAll: true });
    await b.agent({ name: "fan", skills: [{ id: "fan" }] }, { fan: async (ctx) => (await ctx.fanOut([{ capability: "x", input: "y" }])).length });
    const client = await open({ tenant });
    const err = await client.call("fan", "x").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AgentBusError);
    expect((err as AgentBusError).message).toMatch(/fanOut needs a durable task/);
  });
});
