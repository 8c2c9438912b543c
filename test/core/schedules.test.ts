import { describe, expect, it } from "vitest";
import type { Bus, Task } from "../../core/index.js";
import { codeOf, eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";

let tenants = 0;


const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("recurring tasks", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url);
  /** `replicas` agent replicas (each its own connection) recording every run by task id, and a client. */
  const setup = async (replicas = 1, tenant = `sched${++tenants}`) => {
    const runs = new Map<string, number>();
    const byReplica: number[] = [];
    const serve = async (n: number) => {
      const agentBus = await open({ tenant, insecureAllowAll: true });
      byReplica[n] = 0;
      await agentBus.agent({ name: "report", skills: [{ id: "report" }] }, {
        report: async (ctx) => {
          runs.set(ctx.task!.id, (runs.get(ctx.task!.id) ?? 0) + 1);
          byReplica[n]!++;
          await sleep(50);
          return `report: ${ctx.text}`;
        },
      });
      return agentBus;
    };
    const agents = await Promise.all(Array.from({ length: replicas }, (_, i) => serve(i)));
    const client = await open({ tenant });
    return { tenant, agents, client, runs, byReplica, serve };
  };
  const supported = (bus: Bus) => bus.server.cron;
  const runsOf = async (client: Bus, schedule: string): Promise<Task[]> =>
    (await client.tasks({ pageSize: 100 })).tasks.filter((t) => t.metadata.schedule === schedule);

  it("an interval schedule with 3 agent replicas: every tick runs once, as a task of its creator linked to the schedule", async () => {
    const { client, runs, byReplica } = await setup(3);
    if (!supported(client)) {
      expect(await codeOf(client.schedules.create({ capability: "report", input: "x", everyMs: 1000 }))).toBe("SERVER_TOO_OLD");
      expect(await codeOf(client.schedules.list())).toBe("SERVER_TOO_OLD");
      return;
    }
    const created = await client.schedules.create({ id: "every-second", capability: "report", input: "daily numbers", everyMs: 1000, ttlMs: 60_000, metadata: { team: "ops" } });
    expect(created).toMatchObject({ id: "every-second", creator: client.id, capability: "report", everyMs: 1000, paused: false });
    expect(created.nextRunAt).toBeGreaterThan(Date.now() - 10);
    expect(created.nextRunAt).toBeLessThanOrEqual(Date.now() + 1000);
    const done = (await eventually(async () => {
      const r = (await runsOf(client, "every-second")).filter((t) => t.status.state === "TASK_STATE_COMPLETED");
      return r.length >= 6 ? r : undefined;
    }, 20_000, 200))!;
    await client.schedules.delete("every-second");
    await sleep(1500); // a tick published just before the delete may still run
    const all = await runsOf(client, "every-second");
    // Each tick is one task, run once, by whichever replica took it.
    expect(new Set(all.map((t) => t.id)).size).toBe(all.length);
    for (const t of all) expect(runs.get(t.id) ?? 0).toBeLessThanOrEqual(1);
    for (const t of done) expect(runs.get(t.id)).toBe(1);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    expect(byReplica.reduce((a, b) => a + b, 0)).toBe(runs.size);
    // Ticks one interval apart, each run its creator's task with the schedule's input, metadata and deadline.
    const ticks = all.map((t) => t.metadata.scheduledAt as number).sort((a, b) => a - b);
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBeGreaterThanOrEqual(900);
    const one = done[0]!;
    expect(one.metadata).toMatchObject({ submitter: client.id, capability: "report", schedule: "every-second", team: "ops" });
    expect(one.metadata.deadline).toBe((one.metadata.scheduledAt as number) + 60_000);
    expect(one.artifacts[0]?.parts[0]?.text).toBe("report: daily numbers");
    expect(one.id).toBe(`every-second-${one.metadata.scheduledAt}`);
    // Deleted: no more ticks.
    const count = runs.size;
    await sleep(2000);
    expect(runs.size).toBe(count);
    expect(await client.schedules.get("every-second")).toBeUndefined();
    expect(await client.schedules.list()).toEqual([]);
  });

  it("pause stops the ticks and resume starts them again; a schedule is listed with its next run", async () => {
    const { client, runs } = await setup(1);
    if (!supported(client)) return;
    await client.schedules.create({ id: "nightly", capability: "report", input: "n", cron: "0 30 2 * * *", timeZone: "Europe/Berlin" });
    const fast = await client.schedules.create({ id: "fast", capability: "report", input: "f", cron: "* * * * * *" });
    expect(fast.cron).toBe("* * * * * *");
    const listed = await client.schedules.list();
    expect(listed.map((s) => s.id)).toEqual(["fast", "nightly"]);
    const nightly = listed[1]!;
    // 02:30 in Berlin is 01:30 UTC in winter, 00:30 in summer.
    expect(new Date(nightly.nextRunAt!).getUTCMinutes()).toBe(30);
    expect([0, 1]).toContain(new Date(nightly.nextRunAt!).getUTCHours());
    expect(nightly.nextRunAt! - Date.now()).toBeLessThanOrEqual(24 * 3600_000);

    await eventually(() => runs.size >= 2, 15_000, 100);
    const paused = await client.schedules.pause("fast");
    expect(paused.paused).toBe(true);
    expect(paused.nextRunAt).toBeUndefined();
    await sleep(1500); // a tick already published runs
    const before = runs.size;
    await sleep(2500);
    expect(runs.size).toBe(before);
    expect((await client.schedules.get("fast"))?.paused).toBe(true);
    await client.schedules.resume("fast");
    await eventually(() => runs.size >= before + 2, 15_000, 100);
    expect(await codeOf(client.schedules.pause("nosuch"))).toBe("SCHEDULE_NOT_FOUND");
    expect(await client.schedules.delete("nosuch")).toBe(false);
    await client.schedules.delete("fast");
    await client.schedules.delete("nightly");
  });

  it("bad schedules are refused before anything is stored", async () => {
    const { client } = await setup(0);
    if (!supported(client)) return;
    const bad = [
      { capability: "report", input: "x" },
      { capability: "report", input: "x", cron: "* * * * * *", everyMs: 1000 },
      { capability: "report", input: "x", cron: "not cron" },
      { capability: "report", input: "x", cron: "0 0 9 ? * 1#2" },
      { capability: "report", input: "x", cron: "0 9 * * *", timeZone: "Mars/Olympus" },
      { capability: "report", input: "x", everyMs: 10 },
      { capability: "report", input: "x", everyMs: 1000, timeZone: "UTC" },
      { capability: "Not A Cap", input: "x", everyMs: 1000 },
      { id: "has.dot", capability: "report", input: "x", everyMs: 1000 },
      { capability: "report", input: "x", everyMs: 1000, ttlMs: -5 },
    ];
    for (const spec of bad) expect([JSON.stringify(spec), await codeOf(client.schedules.create(spec as never))]).toEqual([JSON.stringify(spec), "INVALID_INPUT"]);
    expect(await client.schedules.list()).toEqual([]);
    // 5 fields are minutes first; predefined names are taken.
    expect((await client.schedules.create({ id: "m", capability: "report", input: "x", cron: "15 9 * * mon-fri" })).cron).toBe("0 15 9 * * mon-fri");
    expect((await client.schedules.create({ id: "h", capability: "report", input: "x", cron: "@hourly" })).cron).toBe("0 0 * * * *");
    expect((await client.schedules.list()).map((s) => s.id)).toEqual(["h", "m"]);
  });

  it("survives a restart of nats-server and of the agents: the schedule goes on ticking", async () => {
    const { client, agents, runs, serve } = await setup(1);
    if (!supported(client)) return;
    await client.schedules.create({ id: "durable", capability: "report", input: "d", everyMs: 1000 });
    await eventually(() => runs.size >= 1, 15_000, 100);
    await agents[0]!.close();
    await nats.server.stop("SIGKILL");
    await nats.server.restart();
    await serve(1);
    const before = runs.size;
    await eventually(() => runs.size >= before + 2, 30_000, 200);
    expect([...runs.values()].every((n) => n === 1)).toBe(true);
    await client.schedules.delete("durable");
  });
});
