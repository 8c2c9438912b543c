import { describe, expect, it } from "vitest";
import type { Bus, TaskPriority } from "../../core/index.js";
import { codeOf, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;


describe("task priorities", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  /** An agent taking one task at a time, recording the order it ran them in. */
  const serve = async (tenant: string, order: string[], concurrency = 1) => {
    const b = await open({ tenant, insecureAllowAll: true });
    await b.agent({ name: "job", skills: [{ id: "job" }] }, {
      job: async (ctx) => {
        order.push(ctx.text);
        await new Promise((r) => setTimeout(r, 20));
        return `did ${ctx.text}`;
      },
    }, { tasks: { concurrency } });
    return b;
  };

  it("a backlog runs highest first, and low work gets its share: of every 7 tasks, 4 high, 2 normal, 1 low", async () => {
    const tenant = `prio${++tenants}`;
    const client = await open({ tenant });
    const levels: TaskPriority[] = ["low", "normal", "high"];
    // Queued before any worker runs, interleaved.
    const handles = [];
    for (let i = 0; i < 12; i++) for (const p of levels) handles.push(await client.submit("job", `${p}-${i}`, { priority: p }));
    expect((await client.task(handles[2]!.id)).metadata.priority).toBe("high");
    expect((await client.task(handles[1]!.id)).metadata.priority).toBeUndefined();
    const order: string[] = [];
    await serve(tenant, order);
    for (const h of handles) expect((await h.result({ timeout: 30_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    const kinds = order.map((o) => o.split("-")[0]);
    expect(kinds[0]).toBe("high");
    // While all three wait, each run of 7 is 4 high, 2 normal, 1 low.
    const first7 = kinds.slice(0, 7);
    expect(first7.filter((k) => k === "high")).toHaveLength(4);
    expect(first7.filter((k) => k === "normal")).toHaveLength(2);
    expect(first7.filter((k) => k === "low")).toHaveLength(1);
    // The 12 high ones are done by the 21st task; low work never waited for all of them.
    expect(kinds.lastIndexOf("high")).toBeLessThan(21);
    expect(kinds.indexOf("low")).toBeLessThan(7);
    // Within a level, first in, first out.
    for (const p of levels) expect(order.filter((o) => o.startsWith(p))).toEqual(Array.from({ length: 12 }, (_, i) => `${p}-${i}`));
  }, 60_000);

  it("a running worker that has only seen normal work takes high and low work as it comes", async () => {
    const tenant = `prio${++tenants}`;
    const order: string[] = [];
    await serve(tenant, order, 4);
    const client = await open({ tenant });
    expect((await (await client.submit("job", "n")).result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    const high = await client.submit("job", "h", { priority: "high" });
    const low = await client.submit("job", "l", { priority: "low" });
    expect((await high.result({ timeout: 10_000 })).metadata.priority).toBe("high");
    expect((await low.result({ timeout: 10_000 })).metadata.priority).toBe("low");
    expect(order.sort()).toEqual(["h", "l", "n"]);
  });

  it("a bad priority is refused before anything is written", async () => {
    const tenant = `prio${++tenants}`;
    const client: Bus = await open({ tenant });
    expect(await codeOf(client.submit("job", "x", { priority: "urgent" as TaskPriority }))).toBe("INVALID_INPUT");
    expect((await client.tasks()).tasks).toEqual([]);
    const t = await client.submit("job", "x", { taskId: "t-prio", priority: "low" });
    expect(await codeOf(client.submit("job", "y", { taskId: "t-prio", priority: "high" }))).toBe("INVALID_INPUT");
    expect(t.id).toBe("t-prio");
  });
});
