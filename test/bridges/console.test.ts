import { setTimeout as sleep } from "node:timers/promises";
import Fastify from "fastify";
import type { Page } from "playwright-core";
import { beforeAll, describe, expect, it } from "vitest";
import { type Bus, type Task } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { monitor, type MonitorEvent } from "../../bridges/monitor/index.js";
import { startEcho } from "../../agents/echo.js";
import { startWriter } from "../../agents/writer.js";
import { startOrchestrator } from "../../agents/orchestrator.js";
import { eventually, grant, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useMonitor } from "../helpers/monitor.js";
import { hasChromium, openPage, screenshot, useBrowser } from "../helpers/browser.js";

const SHOTS = "console";

type TaskWithView = Task & { view: { capability: string; agent?: { id: string; name?: string }; createdAt: string; endedAt?: string; input: string; parent?: string; retryOf?: string } };
type TreeNode = { task: TaskWithView; parentId?: string; depth: number; events: MonitorEvent[] };
type StatsPoint = { t: string; completed: number; failed: number; canceled: number; p50: number | null; p95: number | null; p99: number | null; queued: number; running: number; deadLetters: number };

/** The page's view of `hash` (`#/tasks`, `#/tasks/<id>`, …), as the nav's links go there. */
const go = (page: Page, hash: string) => page.evaluate((h) => void ((globalThis as unknown as { location: { hash: string } }).location.hash = h), hash);

/** Whether the page scrolls sideways (wider content than the window). */
const scrollWidth = (page: Page) => page.evaluate(() => (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document.documentElement.scrollWidth);

describe("console: the monitor's web page in Chromium", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "con", drainTimeoutMs: 300 });
  const browser = useBrowser("console page");
  const monitored = useMonitor(() => nats.server.url, "con");
  let baseUrl: string;
  let monitorBus: Bus;
  beforeAll(() => void ({ baseUrl, bus: monitorBus } = monitored()));

  const api = async <T = Record<string, unknown>>(path: string): Promise<T> => {
    const res = await fetch(`${baseUrl}/v1/${path}`);
    expect(res.status, path).toBe(200);
    return (await res.json()) as T;
  };
  const online = (...buses: Bus[]) => eventually(() => buses.every((b) => monitorBus.discover({ online: true }).some((a) => a.id === b.id)));

  it.skipIf(!hasChromium)("online agents, queued work, schedules, a sent message's reply streamed in, the task's live events", async () => {
    const echo = await open({ insecureAllowAll: true });
    await echo.agent({ name: "echo", description: "Repeats the text", skills: [{ id: "echo", tags: ["demo"] }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const others = await open({ insecureAllowAll: true });
    await others.agent({ name: "others", skills: [{ id: "tell" }] }, {
      tell: async (ctx) => {
        for (const word of ["Once", " upon", " a time"]) {
          await ctx.artifact(word, { artifactId: "story", append: true, lastChunk: false });
          await sleep(400);
        }
        return ".";
      },
    });
    await online(echo, others);
    // A delayed task with a deadline, queued before the page loads: the list shows both times.
    const submitter = await open({ insecureAllowAll: true });
    const later = submitter.server.schedules ? await submitter.submit("echo", "later", { delayMs: 600_000, ttlMs: 900_000, priority: "low" }) : undefined;
    // Queued work no agent serves: the work table shows it by priority.
    await submitter.submit("queued.only", "a", { priority: "high" });
    await submitter.submit("queued.only", "b");
    const { page, errors } = await openPage(browser(), `${baseUrl}/monitor/`);
    try {
      await page.locator('#agents tr[data-agent="echo"] td.online').first().waitFor();
      await page.locator("#feed-status.live").waitFor();
      const queued = page.locator('#work tr[data-capability="queued.only"] td');
      await queued.first().waitFor();
      // high, normal, low, running, and no worker pulls it
      expect(await queued.allTextContents()).toEqual(["queued.only", "1", "1", "0", "0", "0"]);
      if (monitorBus.server.cron) {
        // A schedule made in the page, paused and deleted with its buttons.
        await page.click("#schedule-new summary");
        await page.fill("#schedule-id", "page-made");
        await page.fill("#schedule-capability", "queued.only");
        await page.fill("#schedule-text", "from the page");
        await page.fill("#schedule-cron", "0 15 10 * * *");
        await page.fill("#schedule-tz", "Europe/Berlin");
        await page.click("#schedule-form button");
        const row = page.locator('#schedules tr[data-schedule="page-made"]');
        await row.waitFor();
        expect((await monitorBus.schedules.get("page-made"))?.timeZone).toBe("Europe/Berlin");
        await row.locator('button[data-action="pause"]').click();
        await row.locator("td", { hasText: "paused" }).waitFor();
        await expect.poll(async () => (await monitorBus.schedules.get("page-made"))?.paused).toBe(true);
        await row.locator('button[data-action="delete"]').click();
        await row.waitFor({ state: "detached" });
        expect(await monitorBus.schedules.get("page-made")).toBeUndefined();
      }
      if (later) {
        await page.click('#nav a[data-view="tasks"]');
        const when = page.locator(`#tasks tr[data-task="${later.id}"] .when`);
        await when.filter({ hasText: "runs at" }).waitFor();
        expect(await when.textContent()).toContain("deadline");
        expect(await when.textContent()).toContain("low priority");
        await later.cancel();
        await page.click('#nav a[data-view="overview"]');
      }

      await page.selectOption("#capability", "echo");
      await page.fill("#text", "hello from chromium");
      await page.click("#send");
      await page.locator("#reply-state", { hasText: "completed" }).waitFor();
      expect(await page.textContent("#reply")).toBe("echo: hello from chromium");
      const taskId = (await page.textContent("#reply-task"))!;
      expect(taskId).toMatch(/^[0-9a-f]{48}$/);
      // The task list follows the live feed (EventSource): the task and its state; its view, its events.
      await page.click('#nav a[data-view="tasks"]');
      const item = page.locator(`#tasks tr[data-task="${taskId}"]`);
      await item.locator(".state", { hasText: "completed" }).waitFor();
      await item.locator("a.task-link").first().click();
      // A quick task's events: its result and its final state (no WORKING event for a task that returns at once).
      const events = page.locator(`#task-view[data-task="${taskId}"] #task-events li`);
      await expect.poll(() => events.allTextContents(), { timeout: 10_000 }).toEqual([
        expect.stringMatching(/artifact result: echo: hello from chromium$/),
        expect.stringMatching(/completed$/),
      ]);

      // Streaming: the first words are on the page while the task still runs.
      await page.click('#nav a[data-view="overview"]');
      await page.selectOption("#capability", "tell");
      await page.fill("#text", "a story");
      await page.click("#send");
      // (Polled from here: the page's Content-Security-Policy forbids the string evaluation waitForFunction uses.)
      const partial = async () => (await page.textContent("#reply"))!.startsWith("Once") && (await page.textContent("#reply-state")) === "working";
      await expect.poll(partial, { timeout: 10_000, interval: 50 }).toBe(true);
      await page.locator("#reply-state", { hasText: "completed" }).waitFor();
      expect(await page.textContent("#reply")).toBe("Once upon a time.");
      expect(errors).toEqual([]);
    } finally {
      await page.close();
    }
  }, 60_000);

  it.skipIf(!hasChromium)("with API keys: asks for a key, then shows the key's tenant and its live tasks", async () => {
    const keyed = await open({ tenant: "keyed" });
    const agentBus = await open({ tenant: "keyed", insecureAllowAll: true });
    await agentBus.agent({ name: "keyed-echo", skills: [{ id: "echo" }] }, { echo: (ctx) => `keyed: ${ctx.text}` });
    await eventually(() => keyed.discover({ name: "keyed-echo", online: true }).length === 1);
    const keyedApp = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await keyedApp.register(monitor, { bus: monitorBus, apiKeys: [{ name: "ops", sha256: hashApiKey("sesame"), bus: keyed }] });
    const url = await keyedApp.listen({ port: 0, host: "127.0.0.1" });
    const { page, errors } = await openPage(browser(), `${url}/monitor/`);
    try {
      await page.locator("#key-form").waitFor();
      await page.fill("#key", "sesame");
      await page.click("#key-form button");
      await page.locator('#agents tr[data-agent="keyed-echo"] td.online').waitFor();
      expect(await page.locator('#agents tr[data-agent="echo"]').count()).toBe(0); // another tenant's agent
      await page.locator("#feed-status.live").waitFor();
      // A task the key's caller submitted elsewhere (another route, same caller) shows up through the fetch-based feed.
      await page.click('#nav a[data-view="tasks"]');
      const task = await keyed.submit("echo", "from elsewhere", { caller: "ops" });
      await task.result({ timeout: 10_000 });
      await page.locator(`#tasks tr[data-task="${task.id}"] .state`, { hasText: "completed" }).waitFor();
      // Every request carried the key: no API error shown.
      expect(await page.locator("#error").isHidden()).toBe(true);
      expect(errors).toEqual([]);
    } finally {
      await page.close();
      await keyedApp.close();
    }
  }, 60_000);

  it.skipIf(!hasChromium)("a multi-agent run: agents with their load, a task tree across agents, a dead letter requeued, a task canceled, charts, filters, the audit trail; wide and at 360 px", async () => {
    // An echo that stopped (its registration stays, offline) and the one running now.
    const oldEcho = await open({ insecureAllowAll: true });
    await startEcho(oldEcho);
    await online(oldEcho);
    await oldEcho.close();
    const echo = await open({ insecureAllowAll: true });
    await startEcho(echo);
    // Two writers (two identities of one name: one row, two instances) and the orchestrator that asks echo and write.
    const writers = [await open({ insecureAllowAll: true }), await open({ insecureAllowAll: true })];
    for (const w of writers) await startWriter(w, { delayMs: 150 });
    const orchestrator = await open({ insecureAllowAll: true });
    await startOrchestrator(orchestrator);
    // A ledger whose database is down the first time it sees an entry: one delivery, then the dead-letter queue.
    const seen = new Set<string>();
    const ledger = await open({ insecureAllowAll: true });
    await ledger.agent({ name: "ledger", description: "Posts entries to the ledger", skills: [{ id: "ledger.post" }] }, {
      "ledger.post": (ctx) => {
        if (!seen.has(ctx.text)) {
          seen.add(ctx.text);
          throw new Error("ledger database unreachable");
        }
        return [{ text: `posted ${ctx.text}` }, { data: { posted: ctx.text, entries: 1 } }];
      },
    }, { tasks: { maxDeliver: 1 } });
    // A report that takes minutes, unless canceled.
    const slow = await open({ insecureAllowAll: true });
    await slow.agent({ name: "slow", description: "Writes the quarterly report", skills: [{ id: "slow.report" }] }, {
      "slow.report": async (ctx) => {
        await sleep(300_000, undefined, { signal: ctx.signal }).catch(() => undefined);
      },
    });
    // A vault that enforces the ACL, and a stranger it refuses (an audited DENIED).
    const vault = await open();
    await vault.agent({ name: "vault", skills: [{ id: "vault.open" }] }, { "vault.open": () => "opened" });
    const stranger = await open();
    await grant(vault, "stranger-other", { source: stranger.id, target: vault.id, capabilities: ["other"] }, vault);
    // One that went away without stopping (its connection dropped): offline after its last heartbeat, nothing else of its name.
    const retired = await open({ insecureAllowAll: true });
    await retired.agent({ name: "retired", skills: [{ id: "retired.job" }] }, { "retired.job": () => "" });
    await online(echo, ...writers, orchestrator, ledger, slow, vault, retired);
    await retired.nc.close();
    await eventually(() => monitorBus.discover({ name: "retired" }).every((a) => !a.online), 10_000);

    await expect(stranger.call("vault.open", "let me in")).rejects.toMatchObject({ code: "DENIED" });
    const slowTask = await monitorBus.submit("slow.report", "Q3");
    await eventually(async () => (await monitorBus.task(slowTask.id)).status.state === "TASK_STATE_WORKING");

    const { page, errors, consoleErrors } = await openPage(browser(), `${baseUrl}/monitor/`, { width: 1440, height: 900 });
    try {
      // ---- agents: one row per name, with load ----
      await page.locator("#feed-status.live").waitFor();
      const agentRow = (name: string) => page.locator(`#agents tr[data-agent="${name}"]`);
      await agentRow("orchestrator").locator("td.online").waitFor();
      const echoRegs = (await api<{ agents: Array<{ id: string; online: boolean }> }>("agents?name=echo")).agents;
      expect(echoRegs.filter((a) => a.id === oldEcho.id || a.id === echo.id).map((a) => [a.id, a.online])).toEqual(expect.arrayContaining([[oldEcho.id, false], [echo.id, true]]));
      expect(await agentRow("echo").count()).toBe(1); // the offline registration hidden behind the online one
      expect(await agentRow("echo").getAttribute("class")).not.toContain("dimmed");
      expect(await agentRow("writer").count()).toBe(1);
      await expect.poll(() => agentRow("writer").locator("td.instances").textContent()).toBe("2");
      expect(await agentRow("retired").getAttribute("class")).toContain("dimmed");
      const retiredSeen = (await api<{ agents: Array<{ lastSeen?: string }> }>("agents?name=retired")).agents[0]!.lastSeen!;
      expect(await agentRow("retired").locator("td.offline").textContent()).toMatch(/^offline\s*last seen /);
      expect(await agentRow("retired").locator(`td.offline time[datetime="${retiredSeen}"]`).count()).toBe(1);
      expect(await agentRow("orchestrator").locator('li[data-capability="orchestrate"]').count()).toBe(1);
      // The slow agent holds its task: in flight, running, and a worker on its capability.
      await expect.poll(() => agentRow("slow").locator("td.in-flight").textContent(), { timeout: 10_000 }).toBe("1");
      const slowLoad = agentRow("slow").locator('li[data-capability="slow.report"] .load');
      await expect.poll(() => slowLoad.textContent(), { timeout: 10_000 }).toMatch(/0 queued · 1 running · [1-9]\d* workers?$/);
      expect(await page.locator("#regions-section").isHidden()).toBe(true); // one region, not federated

      // ---- a task across agents, sent from the page ----
      await page.locator('#capability option[value="orchestrate"]').waitFor({ state: "attached" });
      await page.selectOption("#capability", "orchestrate");
      await page.fill("#text", "hello | the sea");
      await page.click("#send");
      await page.locator("#reply-state", { hasText: "completed" }).waitFor({ timeout: 20_000 });
      const orchId = (await page.textContent("#reply-task"))!;
      const orchTask = await monitorBus.task(orchId);
      const [textPart, dataPart] = orchTask.artifacts.find((a) => a.name === "result")!.parts;
      const childId = (dataPart!.data as { children: { write: string } }).children.write;
      // The reply: the text part streamed as text, the data part as JSON on its own.
      expect(await page.textContent("#reply")).toMatch(new RegExp(`${textPart!.text!.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`));
      expect(JSON.parse((await page.textContent("#reply-data pre.part-data"))!)).toEqual(dataPart!.data);

      // ---- the ledger's entries fail and are dead-lettered ----
      const entries = [await monitorBus.submit("ledger.post", "invoice 42"), await monitorBus.submit("ledger.post", "invoice 43")];
      for (const e of entries) expect((await e.result({ timeout: 20_000 })).status.state).toBe("TASK_STATE_FAILED");
      await screenshot(page, SHOTS, "wide-overview");

      // ---- the task list and the orchestrator's task view ----
      await page.click('#nav a[data-view="tasks"]');
      const taskRow = (id: string) => page.locator(`#tasks tr[data-task="${id}"]`);
      await taskRow(orchId).locator(".state", { hasText: "completed" }).waitFor();
      expect(await taskRow(orchId).locator("td.input").textContent()).toBe("hello | the sea");
      expect(await taskRow(orchId).locator("td.agent").textContent()).toBe("orchestrator");
      expect(await taskRow(orchId).locator("td.updated").textContent()).toMatch(/^ended /);
      expect(await taskRow(orchId).locator("td.duration").textContent()).toMatch(/^\d+(\.\d+)? (ms|s)$/);
      expect(await taskRow(orchId).locator("button").count()).toBe(0); // completed: neither cancel nor retry
      await taskRow(childId).locator(".state", { hasText: "completed" }).waitFor();
      expect(await taskRow(childId).textContent()).toContain("sub-task of");
      for (const e of entries) {
        await taskRow(e.id).locator(".state", { hasText: "failed" }).waitFor();
        expect(await taskRow(e.id).locator("button").allTextContents()).toEqual(["retry"]);
      }
      expect(await taskRow(slowTask.id).locator("button").allTextContents()).toEqual(["cancel"]);

      await taskRow(orchId).locator("a.task-link").first().click();
      const view = page.locator(`#task-view[data-task="${orchId}"]`);
      await view.locator('#task-tree li[data-depth="1"]').waitFor();
      const tree = await api<{ root: string; nodes: TreeNode[] }>(`tasks/${orchId}/tree`);
      const child = tree.nodes.find((n) => n.task.id === childId)!;
      expect(child).toMatchObject({ parentId: orchId, depth: 1 });
      const writerName = child.task.view.agent?.name;
      expect(writerName).toBe("writer");
      // The tree: the orchestrator's task, its write task under it, served by another agent.
      const childItem = view.locator(`#task-tree li[data-task="${orchId}"] > ul > li[data-task="${childId}"]`);
      expect(await childItem.locator(".capability").first().textContent()).toBe("write");
      expect(await childItem.locator(".agent").first().textContent()).toBe("· writer");
      // The waterfall: a bar per task and a tick per stored event, each naming its sender.
      for (const n of tree.nodes) {
        const wf = view.locator(`#waterfall .wf-row[data-task="${n.task.id}"]`);
        expect(await wf.locator(".wf-bar").count()).toBe(1);
        expect(await wf.locator(".wf-tick").count()).toBe(n.events.length);
        expect(new Set(await wf.locator(".wf-tick").evaluateAll((ts) => ts.map((t) => t.getAttribute("data-from"))))).toEqual(new Set(n.events.map((e) => e.from)));
      }
      expect(child.events.every((e) => e.from === child.task.metadata.agent)).toBe(true);
      expect(tree.nodes.find((n) => n.task.id === orchId)!.events.every((e) => e.from === orchestrator.id)).toBe(true);
      // Every event of both tasks, the child's MACed for the orchestrator: said neutrally, nothing flagged.
      expect(await view.locator("#task-events li").count()).toBe(tree.nodes.reduce((n, x) => n + x.events.length, 0));
      expect(await view.locator(`#task-events li[data-task="${childId}"]`).first().getAttribute("title")).toBe("sender as claimed; MACed for the submitter");
      expect(await view.locator(`#task-events li[data-task="${childId}"] .from`).first().textContent()).toBe("from writer");
      expect(await page.content()).not.toMatch(/unverified/i);
      // The result: the text part as text, the data part as JSON under it, apart.
      expect(await view.locator("#task-result .part-text").allTextContents()).toEqual([textPart!.text]);
      expect(JSON.parse((await view.locator("#task-result .part-data").textContent())!)).toEqual(dataPart!.data);
      await screenshot(page, SHOTS, "wide-tasks");
      await page.emulateMedia({ colorScheme: "dark" });
      await screenshot(page, SHOTS, "wide-tasks-dark");
      await page.emulateMedia({ colorScheme: "light" });

      // ---- cancel the slow report from its button; retry it, cancel the retry from the task view ----
      await taskRow(slowTask.id).locator('button[data-action="cancel"]').click();
      await taskRow(slowTask.id).locator(".state", { hasText: "canceled" }).waitFor();
      expect((await monitorBus.task(slowTask.id)).status.state).toBe("TASK_STATE_CANCELED");
      await taskRow(slowTask.id).locator('button[data-action="retry"]').click();
      const retried = page.locator("#tasks-status a.task-link");
      await retried.waitFor();
      const retryId = (await retried.getAttribute("title"))!;
      expect((await monitorBus.task(retryId)).metadata).toMatchObject({ capability: "slow.report", retryOf: slowTask.id });
      await retried.click();
      await page.locator(`#task-view[data-task="${retryId}"] #task-actions button[data-action="cancel"]`).click();
      await page.locator(`#task-view[data-task="${retryId}"] #task-title .state`, { hasText: "canceled" }).waitFor();
      await taskRow(retryId).locator(".state", { hasText: "canceled" }).waitFor();
      expect((await monitorBus.task(retryId)).status.state).toBe("TASK_STATE_CANCELED");

      // ---- dead letters: requeue the first entry (the ledger takes it now) ----
      await page.click('#nav a[data-view="dead-letters"]');
      const dead = (id: string) => page.locator(`#dead-letters tr[data-task="${id}"]`);
      for (const e of entries) await dead(e.id).waitFor();
      expect(await dead(entries[0]!.id).locator("td.reason").textContent()).toContain("ledger database unreachable");
      expect(await dead(entries[0]!.id).locator("td.input").textContent()).toBe("invoice 42");
      expect(await page.textContent("#dlq-count")).toBe("2");
      await screenshot(page, SHOTS, "wide-dead-letters");
      await dead(entries[0]!.id).locator('button[data-action="requeue"]').click();
      const requeued = page.locator("#dlq-status a.requeued");
      await requeued.waitFor();
      const requeuedId = (await requeued.textContent())!;
      await dead(entries[0]!.id).waitFor({ state: "detached" });
      const done = await (await monitorBus.taskHandle(requeuedId)).result({ timeout: 20_000 });
      expect(done.status.state).toBe("TASK_STATE_COMPLETED");
      expect(done.metadata.retryOf).toBe(entries[0]!.id);
      await requeued.click();
      const requeuedView = page.locator(`#task-view[data-task="${requeuedId}"]`);
      await requeuedView.locator("#task-title .state", { hasText: "completed" }).waitFor();
      expect(await requeuedView.locator("#task-result .part-text").allTextContents()).toEqual(["posted invoice 42"]);
      expect(JSON.parse((await requeuedView.locator("#task-result .part-data").textContent())!)).toEqual({ posted: "invoice 42", entries: 1 });
      expect(await requeuedView.locator("#task-meta").textContent()).toContain(`retry of${entries[0]!.id}`);
      await taskRow(requeuedId).locator(".state", { hasText: "completed" }).waitFor();

      // ---- filters narrow the list (capability, state, agent, text) ----
      await go(page, "#/tasks");
      const listed = async () => page.locator("#tasks tr[data-task]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-task")));
      const capsListed = async () => page.locator("#tasks tr[data-task] strong.capability").allTextContents();
      const all = (await listed()).length;
      await page.selectOption("#filter-capability", "write");
      await expect.poll(capsListed).toEqual(["write"]);
      expect(await listed()).toEqual([childId]);
      await page.selectOption("#filter-capability", "");
      await page.selectOption("#filter-state", "TASK_STATE_FAILED");
      const statesListed = async () => page.locator("#tasks tr[data-task]").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-state")));
      await expect.poll(statesListed).toEqual(entries.map(() => "TASK_STATE_FAILED"));
      expect(new Set(await listed())).toEqual(new Set(entries.map((e) => e.id)));
      await page.selectOption("#filter-state", "");
      await page.selectOption("#filter-agent", "orchestrator");
      await expect.poll(listed).toEqual([orchId]);
      await page.selectOption("#filter-agent", "");
      await page.fill("#filter-q", "invoice 42");
      await expect.poll(async () => new Set(await listed())).toEqual(new Set([entries[0]!.id, requeuedId]));
      await page.click("#filter-reset");
      await expect.poll(async () => (await listed()).length).toBeGreaterThanOrEqual(all);
      // Newest first, live arrivals included.
      const created = await page.locator("#tasks tr[data-task] td.created time").evaluateAll((ts) => ts.map((t) => Date.parse(t.getAttribute("datetime") ?? "")));
      expect(created).toEqual([...created].sort((a, b) => b - a));

      // ---- charts, from /v1/stats every 10 s ----
      await page.click('#nav a[data-view="charts"]');
      for (const id of ["throughput", "latency", "failures", "queue", "dead-letters"]) await page.locator(`#chart-${id} canvas`).first().waitFor();
      const stats = await api<{ bucketMs: number; capabilities: Array<{ capability: string; points: StatsPoint[] }> }>("stats?minutes=60");
      const total = (cap: string, key: "completed" | "failed" | "canceled") => stats.capabilities.find((c) => c.capability === cap)?.points.reduce((n, p) => n + p[key], 0) ?? 0;
      expect(total("orchestrate", "completed")).toBeGreaterThanOrEqual(1);
      expect(total("write", "completed")).toBeGreaterThanOrEqual(1);
      expect(total("ledger.post", "failed")).toBe(2);
      expect(total("slow.report", "canceled")).toBe(2);
      expect(stats.capabilities.find((c) => c.capability === "orchestrate")!.points.some((p) => (p.p50 ?? 0) > 0)).toBe(true);
      // All capabilities, then one: the page's totals are the API's sums.
      await expect.poll(() => page.textContent("#chart-throughput .chart-total"), { timeout: 25_000 }).toMatch(/[1-9]\d* completed/);
      await page.selectOption("#chart-capability", "ledger.post");
      await expect.poll(() => page.textContent("#chart-failures .chart-total"), { timeout: 25_000 }).toBe("· 2 failed, 0 canceled");
      await page.selectOption("#chart-capability", "slow.report");
      await expect.poll(() => page.textContent("#chart-failures .chart-total")).toBe("· 0 failed, 2 canceled");
      await page.selectOption("#chart-capability", "");
      await screenshot(page, SHOTS, "wide-charts");

      // ---- the audit trail: the vault's refusal, newest first ----
      await page.click('#nav a[data-view="audit"]');
      const refusal = page.locator(`#audit tr[data-code="DENIED"]`).filter({ has: page.locator(`td[title="${stranger.id}"]`) });
      await refusal.first().waitFor({ timeout: 20_000 });
      expect(await refusal.first().locator("td.kind").textContent()).toBe("denied");
      const times = await page.locator("#audit tr[data-sequence] time").evaluateAll((ts) => ts.map((t) => Date.parse(t.getAttribute("datetime") ?? "")));
      expect(times).toEqual([...times].sort((a, b) => b - a));
      await screenshot(page, SHOTS, "wide-audit");

      // ---- at 360 px: no sideways scrolling in any view ----
      const narrow = await openPage(browser(), `${baseUrl}/monitor/`, { width: 360, height: 800 });
      try {
        const n = narrow.page;
        await n.locator('#agents tr[data-agent="orchestrator"] td.online').waitFor();
        const views: Array<[string, string, string]> = [
          ["overview", "#/overview", '#agents tr[data-agent="slow"]'],
          ["tasks", `#/tasks/${orchId}`, `#task-view[data-task="${orchId}"] #waterfall .wf-row[data-task="${childId}"]`],
          ["charts", "#/charts", "#chart-queue canvas"],
          ["dead-letters", "#/dead-letters", `#dead-letters tr[data-task="${entries[1]!.id}"]`],
          ["audit", "#/audit", '#audit tr[data-code="DENIED"]'],
        ];
        for (const [name, hash, ready] of views) {
          await go(n, hash);
          await n.locator(ready).first().waitFor();
          expect(await scrollWidth(n), name).toBeLessThanOrEqual(360);
          await screenshot(n, SHOTS, `narrow-${name}`);
        }
        expect(narrow.errors).toEqual([]);
      } finally {
        await narrow.page.close();
      }

      // ---- discard the other dead letter (the button asks once more) ----
      await page.click('#nav a[data-view="dead-letters"]');
      const discard = dead(entries[1]!.id).locator('button[data-action="discard"]');
      await discard.click();
      expect(await discard.textContent()).toBe("confirm discard");
      await discard.click();
      await dead(entries[1]!.id).waitFor({ state: "detached" });
      const left = await api<{ deadLetters: Array<{ taskId?: string }> }>("dead-letters");
      expect(left.deadLetters.map((d) => d.taskId)).not.toContain(entries[1]!.id);
      expect(await page.locator("#dlq-count").isHidden()).toBe(true);
      // Nothing thrown, every file loaded, nothing refused by the Content-Security-Policy, no API error shown.
      expect(errors).toEqual([]);
      expect(consoleErrors).toEqual([]);
      expect(await page.locator("#error").isHidden()).toBe(true);
    } finally {
      await page.close();
    }
  }, 240_000);
});

