/**
 * The console's API in the monitor: agents' load, workers per capability,
 * task filters and views, a task's tree, cancel and retry, charts over
 * time (live and backfilled), and the page's files (any page file, the
 * chart library).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify from "fastify";
import { jetstreamManager } from "@nats-io/jetstream";
import { beforeAll, describe, expect, it } from "vitest";
import { type Bus, type Task } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { monitor, type MonitorEvent, type Stats, type TaskView, type TreeNode } from "../../bridges/monitor/index.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useMonitor } from "../helpers/monitor.js";

type Viewed = Task & { view: TaskView };
type Page = { tasks: Viewed[]; nextPageToken?: string; totalSize: number };

const stateOf = (e: MonitorEvent) => ("statusUpdate" in e.event ? e.event.statusUpdate.status.state : undefined);

/** A gate a handler waits at until the test opens it (or the task is canceled). */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { open, wait: (signal: AbortSignal) => Promise.race([opened, new Promise<never>((_r, reject) => signal.addEventListener("abort", () => reject(signal.reason), { once: true }))]) };
}

describe("console API", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "con", drainTimeoutMs: 300 });
  const monitored = useMonitor(() => nats.server.url, "con");
  let baseUrl: string;
  let monitorBus: Bus;
  beforeAll(() => void ({ baseUrl, bus: monitorBus } = monitored()));

  const get = async <T>(path: string, url = baseUrl): Promise<T> => {
    const res = await fetch(`${url}${path}`);
    expect(res.status, path).toBe(200);
    return (await res.json()) as T;
  };
  const post = (path: string, url = baseUrl, headers: Record<string, string> = {}) => fetch(`${url}${path}`, { method: "POST", headers });
  const tasks = (query: string) => get<Page>(`/v1/tasks?${query}`);

  /** Two agents: `alpha` echoes, `beta` upper-cases or fails on request. */
  async function agents() {
    const alpha = await open({ insecureAllowAll: true });
    await alpha.agent({ name: "alpha", skills: [{ id: "con.echo" }] }, { "con.echo": (ctx) => `echo: ${ctx.text}` });
    const beta = await open({ insecureAllowAll: true });
    await beta.agent({ name: "beta", skills: [{ id: "con.upper" }, { id: "con.fail" }] }, {
      "con.upper": (ctx) => ctx.text.toUpperCase(),
      "con.fail": (ctx) => ctx.fail(`no: ${ctx.text}`),
    });
    await eventually(() => monitorBus.discover({ online: true }).filter((a) => a.id === alpha.id || a.id === beta.id).length === 2);
    return { alpha, beta };
  }

  it("GET /v1/tasks: several states, capability, agent (name or id), q, each with its view; paging counts the filtered tasks", async () => {
    const { alpha, beta } = await agents();
    const submitter = await open({ insecureAllowAll: true });
    const contextId = `ctx-${Date.now()}`;
    const run = async (cap: string, input: Parameters<Bus["submit"]>[1]) => (await submitter.submit(cap, input, { contextId })).result({ timeout: 10_000 });
    const apple = await run("con.echo", "Apple pie");
    const banana = await run("con.upper", "banana split");
    const data = await run("con.echo", { fruit: "cherry", n: 3 });
    const failed = await run("con.fail", "durian");
    const long = await run("con.echo", "x".repeat(500));
    expect([apple, banana, data, failed, long].map((t) => t.status.state)).toEqual(["TASK_STATE_COMPLETED", "TASK_STATE_COMPLETED", "TASK_STATE_COMPLETED", "TASK_STATE_FAILED", "TASK_STATE_COMPLETED"]);
    const ids = (p: Page) => new Set(p.tasks.map((t) => t.id));

    // Several states at once; one state.
    expect(ids(await tasks(`contextId=${contextId}&state=TASK_STATE_COMPLETED,TASK_STATE_FAILED`))).toEqual(new Set([apple.id, banana.id, data.id, failed.id, long.id]));
    expect(ids(await tasks(`contextId=${contextId}&state=TASK_STATE_FAILED`))).toEqual(new Set([failed.id]));
    expect((await tasks(`contextId=${contextId}&state=TASK_STATE_CANCELED,TASK_STATE_WORKING`)).tasks).toEqual([]);
    // Capability.
    expect(ids(await tasks(`contextId=${contextId}&capability=con.echo`))).toEqual(new Set([apple.id, data.id, long.id]));
    // The agent that served it, by name or by id.
    expect(ids(await tasks(`contextId=${contextId}&agent=beta`))).toEqual(new Set([banana.id, failed.id]));
    expect(ids(await tasks(`contextId=${contextId}&agent=${alpha.id}`))).toEqual(new Set([apple.id, data.id, long.id]));
    expect((await tasks(`contextId=${contextId}&agent=nobody`)).tasks).toEqual([]);
    // Text search, case-insensitive: the input preview (text and data), the capability, the agent's name, the id.
    expect(ids(await tasks(`contextId=${contextId}&q=APPLE`))).toEqual(new Set([apple.id]));
    expect(ids(await tasks(`contextId=${contextId}&q=cherry`))).toEqual(new Set([data.id]));
    expect(ids(await tasks(`contextId=${contextId}&q=CON.FAIL`))).toEqual(new Set([failed.id]));
    expect(ids(await tasks(`contextId=${contextId}&q=Beta`))).toEqual(new Set([banana.id, failed.id]));
    expect(ids(await tasks(`contextId=${contextId}&q=${banana.id.slice(10, 30)}`))).toEqual(new Set([banana.id]));
    // Filters combine.
    expect(ids(await tasks(`contextId=${contextId}&capability=con.echo&q=pie&state=TASK_STATE_COMPLETED`))).toEqual(new Set([apple.id]));

    // Paging through a filtered list: the total and the pages count only what passes.
    const seen: string[] = [];
    let token: string | undefined;
    do {
      const page = await tasks(`contextId=${contextId}&q=echo&pageSize=1${token ? `&pageToken=${token}` : ""}`);
      expect(page.totalSize).toBe(3); // "echo" is in con.echo's capability name
      expect(page.tasks).toHaveLength(1);
      seen.push(page.tasks[0]!.id);
      token = page.nextPageToken;
    } while (token);
    expect(new Set(seen)).toEqual(new Set([apple.id, data.id, long.id]));
    expect(seen).toHaveLength(3);

    // Each task's view.
    const byId = new Map((await tasks(`contextId=${contextId}`)).tasks.map((t) => [t.id, t]));
    const a = byId.get(apple.id)!.view;
    expect(a).toMatchObject({ capability: "con.echo", agent: { id: alpha.id, name: "alpha" }, input: "Apple pie", depth: 0 });
    expect(a.parent).toBeUndefined();
    expect(a.retryOf).toBeUndefined();
    expect(Date.parse(a.createdAt)).toBeLessThanOrEqual(Date.parse(a.updatedAt));
    expect(a.endedAt).toBe(a.updatedAt);
    expect(a.updatedAt).toBe(apple.status.timestamp);
    expect(byId.get(data.id)!.view.input).toBe('{"fruit":"cherry","n":3}');
    expect(byId.get(failed.id)!.view).toMatchObject({ capability: "con.fail", agent: { id: beta.id, name: "beta" }, input: "durian" });
    const longView = byId.get(long.id)!.view.input;
    expect(longView).toHaveLength(200);
    expect(longView.endsWith("…")).toBe(true);

    // One task: its view, and its events.
    const one = await get<{ task: Viewed; events: MonitorEvent[] }>(`/v1/tasks/${banana.id}`);
    expect(one.task.view).toMatchObject({ capability: "con.upper", agent: { id: beta.id, name: "beta" }, input: "banana split", endedAt: banana.status.timestamp });
    expect(one.events.map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_COMPLETED"]);

    const bad = await fetch(`${baseUrl}/v1/tasks?state=TASK_STATE_COMPLETED,DONE`);
    expect([bad.status, ((await bad.json()) as { code: string }).code]).toEqual([400, "INVALID_INPUT"]);
  });

  it("GET /v1/tasks/:id/tree and ?parent: an orchestrator's sub-tasks across agents, depth first, with their events", async () => {
    await agents();
    // A relay that hands its input on, and a planner that submits to two agents, one after the other.
    const relay = await open({ insecureAllowAll: true });
    await relay.agent({ name: "relay", skills: [{ id: "con.relay" }] }, {
      "con.relay": async (ctx) => {
        const inner = await (await ctx.submit("con.upper", ctx.text)).result({ timeout: 10_000 });
        return `relayed ${inner.artifacts[0]?.parts[0]?.text}`;
      },
    });
    const planner = await open({ insecureAllowAll: true });
    await planner.agent({ name: "planner", skills: [{ id: "con.plan" }] }, {
      "con.plan": async (ctx) => {
        const first = await (await ctx.submit("con.echo", `first ${ctx.text}`)).result({ timeout: 10_000 });
        const second = await (await ctx.submit("con.relay", `second ${ctx.text}`)).result({ timeout: 10_000 });
        return [first, second].map((t) => t.artifacts[0]?.parts[0]?.text).join(" | ");
      },
    });
    await eventually(() => monitorBus.discover({ online: true, name: "planner" }).length === 1 && monitorBus.discover({ online: true, name: "relay" }).length === 1);
    const submitter = await open({ insecureAllowAll: true });
    const root = await (await submitter.submit("con.plan", "go")).result({ timeout: 20_000 });
    expect(root.status.state).toBe("TASK_STATE_COMPLETED");

    const { root: rootId, nodes } = await get<{ root: string; nodes: TreeNode[] }>(`/v1/tasks/${root.id}/tree`);
    expect(rootId).toBe(root.id);
    expect(nodes).toHaveLength(4);
    expect(nodes[0]).toMatchObject({ depth: 0, task: { id: root.id, view: { capability: "con.plan", agent: { id: planner.id, name: "planner" }, input: "go" } } });
    expect(nodes[0]!.parentId).toBeUndefined();
    const node = (cap: string) => nodes.find((n) => n.task.view.capability === cap)!;
    const echo = node("con.echo");
    const relayed = node("con.relay");
    const upper = node("con.upper");
    expect(echo).toMatchObject({ depth: 1, parentId: root.id, task: { view: { parent: root.id, depth: 1, agent: { name: "alpha" }, input: "first go" } } });
    expect(relayed).toMatchObject({ depth: 1, parentId: root.id, task: { view: { parent: root.id, agent: { id: relay.id, name: "relay" } } } });
    expect(upper).toMatchObject({ depth: 2, parentId: relayed.task.id, task: { view: { parent: relayed.task.id, depth: 2, agent: { name: "beta" }, input: "second go" } } });
    // Depth first: a node's sub-tree follows it.
    expect(nodes.indexOf(upper)).toBe(nodes.indexOf(relayed) + 1);
    for (const n of nodes) {
      expect(n.events.every((e) => e.taskId === n.task.id)).toBe(true);
      expect(n.events.map(stateOf).filter(Boolean).at(-1)).toBe("TASK_STATE_COMPLETED");
      expect(n.task.view.endedAt).toBe(n.task.status.timestamp);
    }
    // Each event names the hop that published it.
    expect(upper.events.every((e) => e.from === upper.task.metadata.agent)).toBe(true);

    // The direct children of a task.
    const children = await tasks(`parent=${root.id}`);
    expect(new Set(children.tasks.map((t) => t.id))).toEqual(new Set([echo.task.id, relayed.task.id]));
    expect((await tasks(`parent=${relayed.task.id}`)).tasks.map((t) => t.id)).toEqual([upper.task.id]);

    // A leaf is a tree of one; an unknown task is not found.
    expect((await get<{ nodes: TreeNode[] }>(`/v1/tasks/${upper.task.id}/tree`)).nodes.map((n) => n.task.id)).toEqual([upper.task.id]);
    const unknown = await fetch(`${baseUrl}/v1/tasks/no-such-task/tree`);
    expect([unknown.status, ((await unknown.json()) as { code: string }).code]).toEqual([404, "TASK_NOT_FOUND"]);
  });

  it("POST /v1/tasks/:id/cancel and /retry: cancel a running task, submit it again as a new one", async () => {
    const held = gate();
    const worker = await open({ insecureAllowAll: true });
    await worker.agent({ name: "holder", skills: [{ id: "con.hold" }] }, {
      "con.hold": async (ctx) => {
        await held.wait(ctx.signal);
        return `done ${ctx.text}`;
      },
    });
    await eventually(() => monitorBus.discover({ online: true, name: "holder" }).length === 1);
    // Submitted by another identity: the monitor's identity may cancel it through its grant.
    const submitter = await open({ insecureAllowAll: true });
    const handle = await submitter.submit("con.hold", "job 1", { priority: "high" });
    await eventually(async () => (await submitter.task(handle.id)).status.state === "TASK_STATE_WORKING");

    const canceled = await post(`/v1/tasks/${handle.id}/cancel`);
    expect(canceled.status).toBe(200);
    const { task } = (await canceled.json()) as { task: Viewed };
    expect(task).toMatchObject({ id: handle.id, status: { state: "TASK_STATE_CANCELED" } });
    expect(task.view.endedAt).toBe(task.status.timestamp);
    expect((await handle.result({ timeout: 10_000 })).status.state).toBe("TASK_STATE_CANCELED");
    const again = await post(`/v1/tasks/${handle.id}/cancel`);
    expect([again.status, ((await again.json()) as { code: string }).code]).toEqual([409, "NOT_CANCELABLE"]);

    // Retried: a new task with the same capability, input, context and priority, submitted by the monitor, pointing at the old one.
    const retried = await post(`/v1/tasks/${handle.id}/retry`);
    expect(retried.status).toBe(201);
    const fresh = ((await retried.json()) as { task: Viewed }).task;
    expect(fresh.id).not.toBe(handle.id);
    expect(fresh).toMatchObject({ contextId: task.contextId, metadata: { capability: "con.hold", submitter: monitorBus.id, retryOf: handle.id, priority: "high" }, view: { retryOf: handle.id, input: "job 1" } });
    expect(fresh.history[0]!.messageId).not.toBe(task.history[0]!.messageId);
    held.open();
    const finished = await (await monitorBus.taskHandle(fresh.id)).result({ timeout: 10_000 });
    expect(finished.status.state).toBe("TASK_STATE_COMPLETED");
    expect(finished.artifacts[0]?.parts[0]?.text).toBe("done job 1");
    // Found by its new field.
    expect((await get<{ task: Viewed }>(`/v1/tasks/${fresh.id}`)).task.view).toMatchObject({ retryOf: handle.id, endedAt: finished.status.timestamp });

    for (const action of ["cancel", "retry"]) {
      const res = await post(`/v1/tasks/no-such-task/${action}`);
      expect([res.status, ((await res.json()) as { code: string }).code], action).toEqual([404, "TASK_NOT_FOUND"]);
    }
  });

  it("GET /v1/agents: inFlight counts the tasks and calls an agent's instances run; GET /v1/work: workers pulling", async () => {
    const held = gate();
    const worker = await open({ insecureAllowAll: true });
    await worker.agent({ name: "loaded", skills: [{ id: "con.load" }] }, { "con.load": async (ctx) => (await held.wait(ctx.signal), "ok") });
    const inFlight = async () => (await get<{ agents: Array<{ id: string; inFlight: number; online: boolean }> }>("/v1/agents?name=loaded")).agents.find((a) => a.id === worker.id);
    await eventually(async () => (await inFlight())?.online === true);
    expect((await inFlight())!.inFlight).toBe(0);
    // An idle worker keeps a pull request open on its capability's consumer.
    await eventually(async () => {
      const work = await get<{ capabilities: Array<{ capability: string; workers: number; pending: Record<string, number>; inProgress: number }> }>("/v1/work");
      const load = work.capabilities.find((c) => c.capability === "con.load");
      return load !== undefined && load.workers >= 1 && load.inProgress === 0;
    });

    const caller = await open({ insecureAllowAll: true });
    const task = await caller.submit("con.load", "task");
    const call = caller.call("con.load", "call", { timeout: 20_000 });
    call.catch(() => {}); // awaited below; a failure before that is the test's
    // Shown at the instance's next heartbeat.
    await eventually(async () => (await inFlight())?.inFlight === 2);
    const busy = await get<{ capabilities: Array<{ capability: string; inProgress: number; workers: number }> }>("/v1/work");
    expect(busy.capabilities.find((c) => c.capability === "con.load")).toMatchObject({ inProgress: 1 });
    held.open();
    await Promise.all([call, task.result({ timeout: 10_000 })]);
    await eventually(async () => (await inFlight())?.inFlight === 0);
    // Offline: nothing in flight.
    await worker.close();
    await eventually(async () => {
      const a = await inFlight();
      return a?.online === false && a.inFlight === 0;
    });
  });

  it("GET /v1/stats: completed, failed and canceled counts with latency percentiles, per 10 s bucket; a new monitor backfills them", async () => {
    const worker = await open({ insecureAllowAll: true });
    await worker.agent({ name: "stats", skills: [{ id: "stat.ok" }, { id: "stat.bad" }, { id: "stat.wait" }] }, {
      "stat.ok": (ctx) => ctx.text,
      "stat.bad": (ctx) => ctx.fail("bad"),
      "stat.wait": (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
    });
    await eventually(() => monitorBus.discover({ online: true, name: "stats" }).length === 1);
    const caller = await open({ insecureAllowAll: true });
    for (const text of ["a", "b", "c"]) await (await caller.submit("stat.ok", text)).result({ timeout: 10_000 });
    for (const text of ["d", "e"]) await (await caller.submit("stat.bad", text)).result({ timeout: 10_000 });
    const waiting = await caller.submit("stat.wait", "f");
    await eventually(async () => (await caller.task(waiting.id)).status.state === "TASK_STATE_WORKING");
    await waiting.cancel();

    type Totals = Record<"completed" | "failed" | "canceled", number>;
    const totals = (stats: Stats, cap: string): Totals => {
      const points = stats.capabilities.find((c) => c.capability === cap)?.points ?? [];
      return {
        completed: points.reduce((n, p) => n + p.completed, 0),
        failed: points.reduce((n, p) => n + p.failed, 0),
        canceled: points.reduce((n, p) => n + p.canceled, 0),
      };
    };
    const check = (stats: Stats) => {
      expect(stats.bucketMs).toBe(10_000);
      for (const { points } of stats.capabilities) {
        // One point per bucket, oldest first, no gaps, ending with the bucket holding `now`.
        expect(points).toHaveLength(30);
        points.forEach((p, i) => i > 0 && expect(Date.parse(p.t) - Date.parse(points[i - 1]!.t)).toBe(10_000));
        expect(Date.parse(points.at(-1)!.t)).toBe(Math.floor(Date.parse(stats.now) / 10_000) * 10_000);
        for (const p of points) {
          const ended = p.completed + p.failed + p.canceled;
          if (ended === 0) expect([p.p50, p.p95, p.p99]).toEqual([null, null, null]);
          else {
            expect(p.p50).not.toBeNull();
            expect(p.p50!).toBeGreaterThanOrEqual(0);
            expect(p.p50!).toBeLessThanOrEqual(p.p95!);
            expect(p.p95!).toBeLessThanOrEqual(p.p99!);
          }
        }
      }
    };
    const live = (await eventually(async () => {
      const stats = await get<Stats>("/v1/stats?minutes=5");
      const [ok, bad, wait] = ["stat.ok", "stat.bad", "stat.wait"].map((c) => totals(stats, c));
      return ok!.completed === 3 && bad!.failed === 2 && wait!.canceled === 1 ? stats : undefined;
    }))!;
    check(live);
    expect(totals(live, "stat.ok")).toEqual({ completed: 3, failed: 0, canceled: 0 });
    expect(totals(live, "stat.bad")).toEqual({ completed: 0, failed: 2, canceled: 0 });
    // The default window is an hour.
    expect((await get<Stats>("/v1/stats")).capabilities.find((c) => c.capability === "stat.ok")!.points).toHaveLength(360);
    for (const minutes of ["0", "1441", "x"]) {
      const res = await fetch(`${baseUrl}/v1/stats?minutes=${minutes}`);
      expect([res.status, ((await res.json()) as { code: string }).code], minutes).toEqual([400, "INVALID_INPUT"]);
    }

    // A monitor started afterwards reads the last hour of stored events; closing it removes its reading.
    const jsm = await jetstreamManager(monitorBus.nc);
    const consumers = async () => (await jsm.streams.info(monitorBus.subjects.stream("EVENTS"))).state.consumer_count;
    const before = await consumers();
    const later = Fastify({ forceCloseConnections: true });
    await later.register(monitor, { bus: monitorBus, open: true });
    const laterUrl = await later.listen({ port: 0, host: "127.0.0.1" });
    try {
      const backfilled = (await eventually(async () => {
        const stats = await get<Stats>("/v1/stats?minutes=5", laterUrl);
        return totals(stats, "stat.ok").completed === 3 && totals(stats, "stat.bad").failed === 2 && totals(stats, "stat.wait").canceled === 1 ? stats : undefined;
      }))!;
      check(backfilled);
      expect(totals(backfilled, "stat.ok")).toEqual(totals(live, "stat.ok"));
      expect(await consumers()).toBe(before + 1);
    } finally {
      await later.close();
    }
    await eventually(async () => (await consumers()) === before);
  });

  it("serves any page file of the folder, and the chart library from the uplot package", async () => {
    const dir = mkdtempSync(join(tmpdir(), "monitor-page-"));
    try {
      writeFileSync(join(dir, "index.html"), "<!doctype html><title>t</title>");
      writeFileSync(join(dir, "charts.js"), "export const charts = 1;");
      writeFileSync(join(dir, "icon.svg"), "<svg xmlns='http://www.w3.org/2000/svg'/>");
      writeFileSync(join(dir, "notes.txt"), "not served");
      mkdirSync(join(dir, "sub"));
      writeFileSync(join(dir, "sub", "inner.js"), "not served");
      const page = Fastify();
      await page.register(monitor, { bus: monitorBus, open: true, publicDir: dir });
      const url = await page.listen({ port: 0, host: "127.0.0.1" });
      try {
        const served = async (path: string, type: string, body: string) => {
          const res = await fetch(`${url}/monitor/${path}`);
          expect(res.status, path).toBe(200);
          expect(res.headers.get("content-type"), path).toBe(type);
          expect(res.headers.get("content-security-policy"), path).toBe("default-src 'self'; img-src 'self' data:");
          expect(res.headers.get("x-content-type-options"), path).toBe("nosniff");
          expect(await res.text(), path).toContain(body);
        };
        await served("", "text/html; charset=utf-8", "<title>t</title>");
        await served("charts.js", "text/javascript; charset=utf-8", "export const charts");
        await served("icon.svg", "image/svg+xml", "<svg");
        await served("vendor/uPlot.esm.js", "text/javascript; charset=utf-8", "export { uPlot as default }");
        await served("vendor/uPlot.min.css", "text/css; charset=utf-8", ".uplot");
        for (const path of ["notes.txt", "vendor/uPlot.cjs.js", "vendor/..%2Fpackage.json"]) {
          const res = await fetch(`${url}/monitor/${path}`);
          expect([res.status, ((await res.json()) as { code: string }).code], path).toEqual([404, "NOT_FOUND"]);
        }
        expect((await fetch(`${url}/monitor/sub/inner.js`)).status).toBe(404);
      } finally {
        await page.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("console API behind API keys", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "conk", drainTimeoutMs: 300 });

  it("cancel and retry act on the caller's own tasks; another's is not found; stats are the tenant's", async () => {
    const monitorBus = await open();
    // The monitor's own identity may read every task of the tenant: its charts count them all.
    await grant(monitorBus, "monitor-sees-all", { source: monitorBus.id, target: "*", capabilities: ["task.>"] });
    const team = await open();
    const worker = await open({ insecureAllowAll: true });
    await worker.agent({ name: "keyed", skills: [{ id: "conk.wait" }, { id: "conk.ok" }] }, {
      "conk.wait": (ctx) => new Promise((_r, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
      "conk.ok": (ctx) => ctx.text,
    });
    await eventually(() => team.discover({ online: true, name: "keyed" }).length === 1);
    const app = Fastify({ forceCloseConnections: true });
    await app.register(monitor, { bus: monitorBus, apiKeys: [{ name: "ops", sha256: hashApiKey("key-ops"), bus: team }, { name: "dev", sha256: hashApiKey("key-dev"), bus: team }] });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const as = (key: string) => ({ "X-API-Key": key });
    try {
      // Submitted for the caller "ops" through the key's identity.
      const mine = await team.submit("conk.wait", "held", { caller: "ops" });
      await eventually(async () => (await team.task(mine.id)).status.state === "TASK_STATE_WORKING");
      // The same identity, another caller: not there for it.
      for (const action of ["cancel", "retry"]) {
        const res = await fetch(`${url}/v1/tasks/${mine.id}/${action}`, { method: "POST", headers: as("key-dev") });
        expect([res.status, ((await res.json()) as { code: string }).code], action).toEqual([404, "TASK_NOT_FOUND"]);
      }
      const canceled = await fetch(`${url}/v1/tasks/${mine.id}/cancel`, { method: "POST", headers: as("key-ops") });
      expect(canceled.status).toBe(200);
      expect(((await canceled.json()) as { task: Task }).task.status.state).toBe("TASK_STATE_CANCELED");
      const retried = await fetch(`${url}/v1/tasks/${mine.id}/retry`, { method: "POST", headers: as("key-ops") });
      expect(retried.status).toBe(201);
      const fresh = ((await retried.json()) as { task: Task }).task;
      expect(fresh.metadata).toMatchObject({ caller: "ops", submitter: team.id, retryOf: mine.id });
      // The retried task is the caller's: listed for it, not for the other.
      const list = async (key: string) => ((await (await fetch(`${url}/v1/tasks?q=held`, { headers: as(key) })).json()) as Page).tasks.map((t) => t.id);
      expect(new Set(await list("key-ops"))).toEqual(new Set([mine.id, fresh.id]));
      expect(await list("key-dev")).toEqual([]);
      await (await team.taskHandle(fresh.id, { caller: "ops" })).cancel();

      // Stats are the tenant's aggregates, whoever submitted.
      const other = await open({ insecureAllowAll: true });
      await (await other.submit("conk.ok", "x")).result({ timeout: 10_000 });
      await eventually(async () => {
        const stats = (await (await fetch(`${url}/v1/stats?minutes=5`, { headers: as("key-dev") })).json()) as Stats;
        const ended = (cap: string, kind: "completed" | "canceled") => stats.capabilities.find((c) => c.capability === cap)?.points.reduce((n, p) => n + p[kind], 0) ?? 0;
        return ended("conk.ok", "completed") === 1 && ended("conk.wait", "canceled") === 2;
      });
      expect((await fetch(`${url}/v1/stats`)).status).toBe(401);
    } finally {
      await app.close();
    }
  });
});
