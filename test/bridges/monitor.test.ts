import Fastify from "fastify";
import { parseSseStream } from "@a2a-js/sdk";
import { jetstreamManager } from "@nats-io/jetstream";
import { beforeAll, describe, expect, it } from "vitest";
import { type Bus, type Task } from "../../core/index.js";
import { hashApiKey } from "../../bridges/a2a/index.js";
import { monitor, type MonitorEvent } from "../../bridges/monitor/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useMonitor } from "../helpers/monitor.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const stateOf = (e: MonitorEvent) => ("statusUpdate" in e.event ? e.event.statusUpdate.status.state : undefined);
const textOfArtifacts = (events: MonitorEvent[]) =>
  events.flatMap((e) => ("artifactUpdate" in e.event ? e.event.artifactUpdate.artifact.parts.map((p) => p.text ?? "") : [])).join("");

type SseItem = { type: string; data: Record<string, unknown> };

/** An SSE response read with the A2A SDK's parser; `next()` is undefined once the server ends the stream. */
async function openSse(url: string, init: RequestInit = {}) {
  const ac = new AbortController();
  const res = await fetch(url, { ...init, signal: ac.signal });
  const iterator = res.ok ? parseSseStream(res)[Symbol.asyncIterator]() : undefined;
  return {
    res,
    async next(timeoutMs = 10_000): Promise<SseItem | undefined> {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_r, reject) => (timer = setTimeout(() => reject(new Error(`no SSE event in ${timeoutMs} ms`)), timeoutMs)));
      try {
        const r = await Promise.race([iterator!.next(), timeout]);
        return r.done ? undefined : { type: r.value.type, data: JSON.parse(r.value.data) as Record<string, unknown> };
      } finally {
        clearTimeout(timer);
      }
    },
    /** Events until `done` holds for one (included). */
    async until(done: (e: MonitorEvent) => boolean): Promise<MonitorEvent[]> {
      const out: MonitorEvent[] = [];
      for (;;) {
        const item = await this.next();
        if (!item) throw new Error(`stream ended after ${out.length} events`);
        expect(item.type).toBe("message");
        out.push(item.data as unknown as MonitorEvent);
        if (done(out.at(-1)!)) return out;
      }
    },
    close: () => ac.abort(),
  };
}

describe("monitor: REST, SSE and the web page", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "mon", drainTimeoutMs: 300 });
  const monitored = useMonitor(() => nats.server.url, "mon");
  let baseUrl: string;
  let monitorBus: Bus;
  beforeAll(() => void ({ baseUrl, bus: monitorBus } = monitored()));

  /** Agents of this test (closed after it): echo, upper, a multi-turn one, a slow storyteller. */
  async function agents() {
    const echo = await open({ insecureAllowAll: true });
    await echo.agent({ name: "echo", description: "Repeats the text", skills: [{ id: "echo", tags: ["demo"] }] }, { echo: (ctx) => `echo: ${ctx.text}` });
    const others = await open({ insecureAllowAll: true });
    await others.agent({ name: "others", skills: [{ id: "upper" }, { id: "ask" }, { id: "tell" }] }, {
      upper: (ctx) => ctx.text.toUpperCase(),
      ask: (ctx) => (ctx.history.length < 2 ? ctx.inputRequired("your name?") : `hello ${ctx.text}`),
      tell: async (ctx) => {
        for (const word of ["Once", " upon", " a time"]) {
          await ctx.artifact(word, { artifactId: "story", append: true, lastChunk: false });
          await sleep(400);
        }
        return ".";
      },
    });
    await eventually(() => monitorBus.discover({ online: true }).filter((a) => a.id === echo.id || a.id === others.id).length === 2);
    return { echo, others };
  }

  /** A caller with its own identity: the monitor cannot verify the events of its tasks. */
  const caller = () => open({ insecureAllowAll: true });

  it("GET /v1/agents: cards and liveness, with filters", async () => {
    const { echo } = await agents();
    const res = await fetch(`${baseUrl}/v1/agents?capability=echo&online=true`);
    expect(res.status).toBe(200);
    const { agents: list } = (await res.json()) as { agents: Array<Record<string, unknown> & { card: { skills: Array<{ id: string }> } }> };
    const mine = list.find((a) => a.id === echo.id)!;
    expect(mine).toMatchObject({ name: "echo", description: "Repeats the text", capabilities: ["echo"], tags: ["demo"], online: true, instances: 1 });
    expect(Date.now() - Date.parse(mine.lastSeen as string)).toBeLessThan(10_000);
    expect(mine.card.skills.map((s) => s.id)).toEqual(["echo"]);
    expect(list.every((a) => a.online === true && (a.capabilities as string[]).includes("echo"))).toBe(true);

    const offline = (await (await fetch(`${baseUrl}/v1/agents?online=false`)).json()) as { agents: Array<{ id: string }> };
    expect(offline.agents.map((a) => a.id)).not.toContain(echo.id);
    const bad = await fetch(`${baseUrl}/v1/agents?online=maybe`);
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ code: "INVALID_INPUT", message: "online must be true or false" });

    // A stopped agent is listed as offline.
    await echo.close();
    await eventually(async () => {
      const all = (await (await fetch(`${baseUrl}/v1/agents`)).json()) as { agents: Array<{ id: string; online: boolean }> };
      return all.agents.find((a) => a.id === echo.id)?.online === false;
    });
  });

  it("GET /v1/work: queued work by capability and priority, and every schedule with its next run", async () => {
    const submitter = await caller();
    await submitter.submit("work.view", "x", { priority: "low" });
    const scheduled = monitorBus.server.cron ? await submitter.schedules.create({ id: "nightly-view", capability: "work.view", input: "n", cron: "0 0 3 * * *", timeZone: "Asia/Tokyo" }) : undefined;
    const res = await fetch(`${baseUrl}/v1/work`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { capabilities: Array<{ capability: string }>; delayed: number; schedules?: Array<{ id: string; nextRunAt: number }> };
    expect(body.capabilities).toContainEqual({ capability: "work.view", pending: { high: 0, normal: 0, low: 1 }, inProgress: 0, workers: 0 }); // no agent pulls work.view
    expect(typeof body.delayed).toBe("number");
    if (scheduled) {
      expect(body.schedules).toContainEqual(expect.objectContaining({ id: "nightly-view", creator: submitter.id, capability: "work.view", timeZone: "Asia/Tokyo", nextRunAt: scheduled.nextRunAt }));
      await submitter.schedules.delete("nightly-view");
    }
    if (!monitorBus.server.cron) {
      const old = await fetch(`${baseUrl}/v1/schedules`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "work.view", text: "x", everyMs: 60_000 }) });
      expect([old.status, ((await old.json()) as { code: string }).code]).toEqual([501, "SERVER_TOO_OLD"]);
      return;
    }
    // The monitor's own schedules: create, pause, resume, delete; another identity's is not there for it.
    const post = (path: string, body?: unknown) => fetch(`${baseUrl}/v1/${path}`, { method: "POST", ...(body !== undefined && { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }) });
    const created = await post("schedules", { id: "from-console", capability: "work.view", text: "hello", cron: "0 0 9 * * mon-fri", timeZone: "Europe/Paris", priority: "high" });
    expect(created.status).toBe(201);
    expect(((await created.json()) as { schedule: unknown }).schedule).toMatchObject({ id: "from-console", creator: monitorBus.id, cron: "0 0 9 * * mon-fri", priority: "high", paused: false });
    expect((await (await post("schedules/from-console/pause")).json()) as unknown).toMatchObject({ schedule: { paused: true } });
    expect((await (await post("schedules/from-console/resume")).json()) as unknown).toMatchObject({ schedule: { paused: false } });
    const mine = (await (await fetch(`${baseUrl}/v1/work`)).json()) as { me: string; schedules: Array<{ id: string; creator: string }> };
    expect(mine.me).toBe(monitorBus.id);
    expect(mine.schedules).toContainEqual(expect.objectContaining({ id: "from-console", creator: monitorBus.id }));
    expect((await fetch(`${baseUrl}/v1/schedules/from-console`, { method: "DELETE" })).status).toBe(204);
    const gone = await fetch(`${baseUrl}/v1/schedules/from-console`, { method: "DELETE" });
    expect([gone.status, ((await gone.json()) as { code: string }).code]).toEqual([404, "SCHEDULE_NOT_FOUND"]);
    const bad = await post("schedules", { capability: "work.view", text: "x", cron: "never" });
    expect([bad.status, ((await bad.json()) as { code: string }).code]).toEqual([400, "INVALID_INPUT"]);
    const unknown = await post("schedules", { capability: "work.view", text: "x", everyMs: 5000, color: "red" });
    expect(((await unknown.json()) as { message: string }).message).toBe("unknown field color");
  });

  it("GET /v1/tasks and /v1/tasks/:id: snapshots, filters, paging, and each task's stored events", async () => {
    await agents();
    const submitter = await caller();
    const first = await submitter.submit("echo", "hi");
    const done = await first.result({ timeout: 10_000 });
    expect(done.status.state).toBe("TASK_STATE_COMPLETED");
    const second = await submitter.submit("upper", "again", { contextId: done.contextId });
    await second.result({ timeout: 10_000 });

    const inContext = (await (await fetch(`${baseUrl}/v1/tasks?contextId=${done.contextId}`)).json()) as { tasks: Task[]; totalSize: number };
    expect(new Set(inContext.tasks.map((t) => t.id))).toEqual(new Set([first.id, second.id]));
    expect(inContext.totalSize).toBe(2);
    const completed = (await (await fetch(`${baseUrl}/v1/tasks?state=TASK_STATE_COMPLETED&pageSize=1000`)).json()) as { tasks: Task[] };
    expect(completed.tasks.map((t) => t.id)).toContain(first.id);
    expect(completed.tasks.every((t) => t.status.state === "TASK_STATE_COMPLETED")).toBe(true);
    const failed = (await (await fetch(`${baseUrl}/v1/tasks?state=TASK_STATE_FAILED&contextId=${done.contextId}`)).json()) as { tasks: Task[] };
    expect(failed.tasks).toEqual([]);

    // Paging, one per page.
    const p1 = (await (await fetch(`${baseUrl}/v1/tasks?contextId=${done.contextId}&pageSize=1`)).json()) as { tasks: Task[]; nextPageToken?: string };
    expect(p1.tasks).toHaveLength(1);
    const p2 = (await (await fetch(`${baseUrl}/v1/tasks?contextId=${done.contextId}&pageSize=1&pageToken=${p1.nextPageToken}`)).json()) as { tasks: Task[]; nextPageToken?: string };
    expect(p2.nextPageToken).toBeUndefined();
    expect(new Set([...p1.tasks, ...p2.tasks].map((t) => t.id))).toEqual(new Set([first.id, second.id]));

    const res = await fetch(`${baseUrl}/v1/tasks/${first.id}`);
    expect(res.status).toBe(200);
    const { task, events } = (await res.json()) as { task: Task; events: MonitorEvent[] };
    expect(task).toMatchObject({ id: first.id, contextId: done.contextId, status: { state: "TASK_STATE_COMPLETED" }, metadata: { capability: "echo", submitter: submitter.id } });
    expect(events.map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_COMPLETED"]);
    expect(textOfArtifacts(events)).toBe("echo: hi");
    expect(events.every((e) => e.taskId === first.id && e.capability === "echo")).toBe(true);
    expect(events.map((e) => e.sequence)).toEqual([...events.map((e) => e.sequence)].sort((a, b) => a - b));
    expect(Date.now() - Date.parse(events[0]!.time)).toBeLessThan(30_000);
    // MACed for the submitter only: the monitor shows them as operator data, unverified, with the claimed sender.
    expect(events.every((e) => e.verified === false && e.from === task.metadata.agent)).toBe(true);

    // A task the monitor's own identity submitted: its events verify.
    const own = await monitorBus.submit("echo", "mine");
    await own.result({ timeout: 10_000 });
    const ownView = (await (await fetch(`${baseUrl}/v1/tasks/${own.id}`)).json()) as { events: MonitorEvent[] };
    expect(ownView.events.length).toBeGreaterThanOrEqual(2);
    expect(ownView.events.every((e) => e.verified)).toBe(true);
  });

  it("typed JSON errors: unknown task 404 TASK_NOT_FOUND, bad queries 400", async () => {
    const unknown = await fetch(`${baseUrl}/v1/tasks/no-such-task`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ code: "TASK_NOT_FOUND", message: "task no-such-task not found" });
    const dotted = await fetch(`${baseUrl}/v1/tasks/a.b`);
    expect(dotted.status).toBe(404);
    expect(((await dotted.json()) as { code: string }).code).toBe("TASK_NOT_FOUND");
    for (const query of ["state=DONE", "pageSize=0", "pageSize=x", "pageToken=zz", "state=TASK_STATE_FAILED,DONE"]) {
      const res = await fetch(`${baseUrl}/v1/tasks?${query}`);
      expect(res.status, query).toBe(400);
      expect(((await res.json()) as { code: string }).code, query).toBe("INVALID_INPUT");
    }
    const badFeed = await fetch(`${baseUrl}/v1/events?state=DONE`);
    expect(badFeed.status).toBe(400);
    expect(badFeed.headers.get("content-type")).toContain("application/json");
  });

  it("GET /v1/events: a task's events live, filtered by capability, state and task", async () => {
    await agents();
    const byCap = await openSse(`${baseUrl}/v1/events?capability=echo`);
    const byOtherCap = await openSse(`${baseUrl}/v1/events?capability=upper,nothing`);
    const byState = await openSse(`${baseUrl}/v1/events?state=TASK_STATE_COMPLETED`);
    const byTask = await openSse(`${baseUrl}/v1/events?task=the-echo-task`);
    for (const s of [byCap, byOtherCap, byState, byTask]) {
      expect(s.res.status).toBe(200);
      expect(s.res.headers.get("content-type")).toBe("text/event-stream");
    }
    try {
      // Subscribed once the headers are in: everything from here on arrives.
      const submitter = await caller();
      const echoTask = await submitter.submit("echo", "live", { taskId: "the-echo-task" });
      await echoTask.result({ timeout: 10_000 });
      const upperTask = await submitter.submit("upper", "later");
      await upperTask.result({ timeout: 10_000 });

      const echoEvents = await byCap.until((e) => e.taskId === echoTask.id && stateOf(e) === "TASK_STATE_COMPLETED");
      const mineOnly = echoEvents.filter((e) => e.taskId === echoTask.id);
      expect(mineOnly.map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_COMPLETED"]);
      expect(textOfArtifacts(mineOnly)).toBe("echo: live");
      expect(echoEvents.every((e) => e.capability === "echo")).toBe(true);

      // The upper task came after the echo task: had the filter let echo events through, they would come first.
      const upperEvents = await byOtherCap.until((e) => e.taskId === upperTask.id && stateOf(e) === "TASK_STATE_COMPLETED");
      expect(upperEvents.every((e) => e.capability === "upper")).toBe(true);
      expect(upperEvents.filter((e) => e.taskId === upperTask.id).map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_COMPLETED"]);

      const finals = await byState.until((e) => e.taskId === upperTask.id);
      expect(finals.map((e) => e.taskId)).toContain(echoTask.id);
      expect(finals.every((e) => stateOf(e) === "TASK_STATE_COMPLETED")).toBe(true);

      const one = await byTask.until((e) => stateOf(e) === "TASK_STATE_COMPLETED");
      expect(one.every((e) => e.taskId === echoTask.id)).toBe(true);
      expect(one).toHaveLength(2); // its result and its final state

      // Replay from a stream sequence: what is stored comes at once.
      const replay = await openSse(`${baseUrl}/v1/events?task=${echoTask.id}&from=${one[0]!.sequence}`);
      try {
        expect((await replay.until((e) => stateOf(e) === "TASK_STATE_COMPLETED")).map((e) => e.sequence)).toEqual(one.map((e) => e.sequence));
      } finally {
        replay.close();
      }
    } finally {
      for (const s of [byCap, byOtherCap, byState, byTask]) s.close();
    }
  });

  it("GET /v1/events: keep-alive comments; a client that goes away frees its consumer", async () => {
    const jsm = await jetstreamManager(monitorBus.nc);
    const stream = monitorBus.subjects.stream("EVENTS");
    const consumers = async () => new Set((await jsm.consumers.list(stream).next()).map((c) => c.name));
    await monitorBus.tasks({ pageSize: 1 }); // the task streams exist
    const before = await consumers();
    const ac = new AbortController();
    const res = await fetch(`${baseUrl}/v1/events`, { signal: ac.signal });
    const mine = [...(await consumers())].filter((name) => !before.has(name));
    expect(mine).toHaveLength(1);
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes(": keep-alive")) text += new TextDecoder().decode((await reader.read()).value);
    ac.abort();
    await eventually(async () => !(await consumers()).has(mine[0]!));
  });

  it("POST /v1/send: submits a task and streams it until it is final; multi-turn; errors", async () => {
    await agents();
    const sent = await openSse(`${baseUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "echo", text: "ping" }) });
    expect(sent.res.status).toBe(200);
    const first = (await sent.next())!;
    const task = first.data.task as Task;
    expect(task).toMatchObject({ status: { state: "TASK_STATE_SUBMITTED" }, metadata: { capability: "echo", submitter: monitorBus.id } });
    const events = await sent.until((e) => stateOf(e) === "TASK_STATE_COMPLETED");
    expect(textOfArtifacts(events)).toBe("echo: ping");
    expect(events.every((e) => e.taskId === task.id && e.verified)).toBe(true);
    expect(await sent.next()).toBeUndefined(); // the stream ends with the task

    // Multi-turn: the first turn ends at INPUT_REQUIRED, the continuation streams only what follows.
    const ask = await openSse(`${baseUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "ask", text: "hi" }) });
    const askTask = (await ask.next())!.data.task as Task;
    const turn1 = await ask.until((e) => stateOf(e) === "TASK_STATE_INPUT_REQUIRED");
    expect(await ask.next()).toBeUndefined();
    // A turn that ends within a moment sends no WORKING event (see the worker's start).
    expect(turn1.map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_INPUT_REQUIRED"]);
    const reply = await openSse(`${baseUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "ask", text: "Ada", taskId: askTask.id }) });
    expect(((await reply.next())!.data.task as Task).id).toBe(askTask.id);
    const turn2 = await reply.until((e) => stateOf(e) === "TASK_STATE_COMPLETED");
    expect(turn2.map(stateOf).filter(Boolean)).toEqual(["TASK_STATE_COMPLETED"]);
    expect(textOfArtifacts(turn2)).toBe("hello Ada");

    // A client that goes away stops its stream, not the task.
    const told = await openSse(`${baseUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "tell", text: "go" }) });
    const toldTask = (await told.next())!.data.task as Task;
    told.close();
    const toldDone = await (await monitorBus.taskHandle(toldTask.id)).result({ timeout: 10_000 });
    expect(toldDone.status.state).toBe("TASK_STATE_COMPLETED");
    expect(toldDone.artifacts.flatMap((a) => a.parts.map((p) => p.text)).join("")).toBe("Once upon a time.");

    const post = (body: string) => fetch(`${baseUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const nobody = await post(JSON.stringify({ capability: "nobody.here", text: "x" }));
    expect(nobody.status).toBe(404);
    expect(await nobody.json()).toEqual({ code: "NO_RESPONDERS", message: "no agent offers capability nobody.here" });
    for (const body of ["{}", JSON.stringify({ capability: "echo" }), JSON.stringify({ capability: "echo", text: "a", input: { a: 1 } }), JSON.stringify({ capability: "echo", text: 5 }), "{not json"]) {
      const res = await post(body);
      expect(res.status, body).toBe(400);
      expect(((await res.json()) as { code: string }).code, body).toBe("INVALID_INPUT");
    }
    const finished = await post(JSON.stringify({ capability: "echo", text: "again", taskId: task.id }));
    expect(finished.status).toBe(409);
    expect(((await finished.json()) as { code: string }).code).toBe("TASK_FINISHED");
  });

  it("serves the page's files at /monitor/", async () => {
    const redirect = await fetch(`${baseUrl}/monitor`, { redirect: "manual" });
    expect(redirect.status).toBe(302);
    expect(new URL(redirect.headers.get("location")!, `${baseUrl}/monitor`).pathname).toBe("/monitor/");
    const html = await fetch(`${baseUrl}/monitor/`);
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(html.headers.get("content-security-policy")).toContain("default-src 'self'");
    expect(await html.text()).toContain('<script type="module" src="app.js">');
    const js = await fetch(`${baseUrl}/monitor/app.js`);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(await js.text()).toContain("new EventSource(");
    expect((await fetch(`${baseUrl}/monitor/style.css`)).status).toBe(200);
    const missing = await fetch(`${baseUrl}/monitor/secrets.json`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { code: string }).code).toBe("NOT_FOUND");
  });
});

describe("monitor: API keys", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 300 });

  it("requires a key when keys are configured; each key sees its own tenant", async () => {
    const monitorBus = await open({ tenant: "ops" });
    const teamA = await open({ tenant: "team-a" });
    const agentA = await open({ tenant: "team-a", insecureAllowAll: true });
    await agentA.agent({ name: "a-echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text });
    await eventually(() => teamA.discover({ online: true }).length === 1);
    const app = Fastify({ forceCloseConnections: true });
    await app.register(monitor, { bus: monitorBus, apiKeys: [{ name: "team-a", sha256: hashApiKey("key-a"), bus: teamA }] });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    try {
      for (const path of ["/v1/agents", "/v1/tasks", "/v1/tasks/x", "/v1/events"]) {
        for (const headers of [{}, { "X-API-Key": "wrong" }, { authorization: "Bearer wrong" }] as Array<Record<string, string>>) {
          const res = await fetch(`${url}${path}`, { headers });
          expect(res.status, path).toBe(401);
          expect(res.headers.get("www-authenticate")).toBe('ApiKey header="X-API-Key"');
          expect(await res.json()).toEqual({ code: "UNAUTHORIZED", message: "missing or invalid API key" });
        }
      }
      const denied = await fetch(`${url}/v1/send`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ capability: "echo", text: "x" }) });
      expect(denied.status).toBe(401);

      for (const headers of [{ "X-API-Key": "key-a" }, { authorization: "Bearer key-a" }] as Array<Record<string, string>>) {
        const res = await fetch(`${url}/v1/agents`, { headers });
        expect(res.status).toBe(200);
        expect(((await res.json()) as { agents: Array<{ name: string }> }).agents.map((a) => a.name)).toEqual(["a-echo"]);
      }
      // A send acts as the key's identity, in its tenant: its events verify.
      const sent = await openSse(`${url}/v1/send`, { method: "POST", headers: { "content-type": "application/json", "X-API-Key": "key-a" }, body: JSON.stringify({ capability: "echo", text: "hi" }) });
      const task = (await sent.next())!.data.task as Task;
      expect(task.metadata.submitter).toBe(teamA.id);
      const events = await sent.until((e) => stateOf(e) === "TASK_STATE_COMPLETED");
      expect(events.every((e) => e.verified)).toBe(true);
      expect((await teamA.task(task.id)).status.state).toBe("TASK_STATE_COMPLETED");
      // The page itself holds no data: no key needed (and this app does not ignore trailing slashes).
      expect((await fetch(`${url}/monitor/`)).status).toBe(200);
      expect((await fetch(`${url}/monitor`, { redirect: "manual" })).headers.get("location")).toBe("monitor/");
    } finally {
      await app.close();
    }
  });

  it("closing the server ends open streams (no need for forceCloseConnections)", async () => {
    const bus = await open({ tenant: "ops" });
    const app = Fastify();
    await app.register(monitor, { bus, open: true });
    const url = await app.listen({ port: 0, host: "127.0.0.1" });
    const feed = await openSse(`${url}/v1/events`);
    expect(feed.res.status).toBe(200);
    const started = Date.now();
    await app.close();
    expect(Date.now() - started).toBeLessThan(2000);
    expect(await feed.next()).toBeUndefined();
  });

  it("refuses to start with neither or both of open and apiKeys", async () => {
    const bus = await open({ tenant: "ops" });
    for (const options of [{ bus }, { bus, open: true, apiKeys: [{ name: "k", sha256: hashApiKey("k"), bus }] }]) {
      const app = Fastify();
      void app.register(monitor, options);
      await expect(app.ready()).rejects.toThrow(/either apiKeys/);
      await app.close().catch(() => {});
    }
  });
});
