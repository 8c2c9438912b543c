import { describe, expect, it } from "vitest";
import { AgentBusError, type Bus, type Task } from "../../core/index.js";
import { useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { startFixture, type FixtureProcess } from "../helpers/process.js";

let tenants = 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Span {
  pid?: number;
  start: number;
  end: number;
}

/** The most spans running at one moment. */
function maxOverlap(spans: Span[]): number {
  const edges = spans.flatMap((s) => [[s.start, 1], [s.end, -1]] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let now = 0;
  let max = 0;
  for (const [, d] of edges) max = Math.max(max, (now += d));
  return max;
}

const spanOf = (t: Task): Span => t.artifacts[0]!.parts[0]!.data as unknown as Span;

describe("capability limits across replicas", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);

  it("a concurrency limit of 2 holds across 3 worker processes; a killed one's tasks run again within the limit", async () => {
    const tenant = `limits${++tenants}`;
    const client = await open({ tenant });
    const workers: FixtureProcess[] = [];
    for (let i = 0; i < 3; i++) workers.push(await startFixture("limited-worker", [nats.server.url, tenant, "2", "300", "2000"]));
    const handles = await Promise.all(Array.from({ length: 18 }, (_, i) => client.submit("slow", `n${i}`)));
    const done = await Promise.all(handles.map((h) => h.result({ timeout: 60_000 })));
    expect(done.every((t) => t.status.state === "TASK_STATE_COMPLETED")).toBe(true);
    const spans = done.map(spanOf);
    expect(maxOverlap(spans)).toBe(2);
    // More than one process took work: the limit is the bus's, not one process's.
    expect(new Set(spans.map((s) => s.pid)).size).toBeGreaterThan(1);

    // A process killed while it runs a task: its task is taken again after the ack wait, and the limit still holds.
    const more = await Promise.all(Array.from({ length: 6 }, (_, i) => client.submit("slow", `m${i}`)));
    await sleep(150);
    await workers[0]!.kill("SIGKILL");
    const after = await Promise.all(more.map((h) => h.result({ timeout: 60_000 })));
    expect(after.every((t) => t.status.state === "TASK_STATE_COMPLETED")).toBe(true);
    const live = after.map(spanOf).filter((s) => s.pid !== workers[0]!.child.pid);
    expect(maxOverlap(live)).toBeLessThanOrEqual(2);
    for (const w of workers.slice(1)) await w.kill();
  }, 120_000);

  it("a rate limit holds across two replicas: no window holds more starts than allowed, and every task runs", async () => {
    const tenant = `limits${++tenants}`;
    const starts: number[] = [];
    for (let i = 0; i < 2; i++) {
      const b = await open({ tenant, insecureAllowAll: true });
      await b.agent({ name: "api", skills: [{ id: "api" }] }, {
        api: () => {
          starts.push(Date.now());
          return "ok";
        },
      }, { limits: { api: { rate: { max: 4, perMs: 1000 } } } });
    }
    const client = await open({ tenant });
    const t0 = Date.now();
    const handles = await Promise.all(Array.from({ length: 12 }, (_, i) => client.submit("api", `r${i}`)));
    const done = await Promise.all(handles.map((h) => h.result({ timeout: 30_000 })));
    expect(done.every((t) => t.status.state === "TASK_STATE_COMPLETED")).toBe(true);
    starts.sort((a, b) => a - b);
    expect(starts).toHaveLength(12);
    // Any 1 s window: at most 4 starts (i and i+4 are at least 1 s apart; a handler starts a few ms after its turn is recorded).
    for (let i = 0; i + 4 < starts.length; i++) expect(starts[i + 4]! - starts[i]!).toBeGreaterThanOrEqual(1000 - 50);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
  }, 60_000);

  it("fast calls wait their turn under the same limit; a task whose deadline passes while it waits ends FAILED, not run late", async () => {
    const tenant = `limits${++tenants}`;
    const spans: Span[] = [];
    const agents: Bus[] = [];
    for (let i = 0; i < 2; i++) {
      const b = await open({ tenant, insecureAllowAll: true });
      agents.push(b);
      await b.agent({ name: "one", skills: [{ id: "one" }] }, {
        one: async (ctx) => {
          const start = Date.now();
          await sleep(ctx.text === "long" ? 1500 : 100);
          spans.push({ start, end: Date.now() });
          return "ok";
        },
      }, { limits: { one: { maxInFlight: 1 } } });
    }
    const client = await open({ tenant });
    await Promise.all(Array.from({ length: 6 }, () => client.call("one", "short")));
    expect(maxOverlap(spans)).toBe(1);
    expect(spans).toHaveLength(6);

    const long = await client.submit("one", "long");
    await sleep(200);
    const late = await client.submit("one", "short", { ttlMs: 500 });
    const ended = await late.result({ timeout: 10_000 });
    expect(ended.status.state).toBe("TASK_STATE_FAILED");
    expect(ended.status.message?.parts[0]?.text).toMatch(/passed before the task started/);
    expect((await long.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    expect(spans).toHaveLength(7);

    // Limits name capabilities the agent offers, with sane numbers.
    const b = await open({ tenant, insecureAllowAll: true });
    await expect(b.agent({ name: "x", skills: [{ id: "x" }] }, { x: () => "x" }, { limits: { y: { maxInFlight: 1 } } })).rejects.toMatchObject({ code: "MISUSE" });
    const bad = await b.agent({ name: "x", skills: [{ id: "x" }] }, { x: () => "x" }, { limits: { x: { maxInFlight: 0 } } }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(AgentBusError);
    expect((bad as AgentBusError).code).toBe("INVALID_INPUT");
  }, 60_000);
});
