import Fastify, { type FastifyInstance } from "fastify";
import { jetstreamManager } from "@nats-io/jetstream";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentBusError, connect, Identity, isAgentBusError, type Bus } from "../../core/index.js";
import { a2aBridge } from "../../bridges/a2a/index.js";
import { callObserver, metrics, rpcMethodOf } from "../../bridges/metrics/index.js";
import { eventually, grant, quietLogger, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { parseExposition, valueOf, type Family, type Labels } from "../helpers/prometheus.js";


describe("Prometheus text reader (used below)", () => {
  it("accepts the format and refuses what it does not allow", () => {
    const ok = '# HELP a_total A.\n# TYPE a_total counter\na_total{x="1",y="q\\"uote"} 2\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\nh_sum 3.5\nh_count 2\n';
    const f = parseExposition(ok);
    expect(valueOf(f, "a_total", { y: 'q"uote' })).toBe(2);
    expect(valueOf(f, "h_bucket", { le: "+Inf" })).toBe(2);
    expect(() => parseExposition("a{x=1} 2\n")).toThrow(/bad labels/);
    expect(() => parseExposition("a 2 3 4\n")).toThrow(/not a sample/);
    expect(() => parseExposition("a two\n")).toThrow(/bad value/);
    expect(() => parseExposition("a 1\nb 1\na 2\n")).toThrow(/interleaved/);
    expect(() => parseExposition("a 1\n# TYPE a counter\n")).toThrow(/TYPE after samples/);
    expect(() => parseExposition('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n')).toThrow(/cumulative/);
    expect(() => parseExposition('# TYPE h histogram\nh_bucket{le="+Inf"} 1\nh_count 1\n')).toThrow(/incomplete/);
  });
});

describe("rpcMethodOf", () => {
  const req = (body: unknown, method = "POST") => rpcMethodOf({ method, body } as Parameters<typeof rpcMethodOf>[0]);
  it("reads the top-level JSON-RPC method of parsed and string bodies, and nothing else", () => {
    expect(req({ jsonrpc: "2.0", method: "tools/call" })).toBe("tools/call");
    expect(req('{"jsonrpc":"2.0","params":{"method":"Nested","x":["method"]},"note":"method", "method" : "SendMessage"}')).toBe("SendMessage");
    expect(req('{"jsonrpc":"2.0","id":1,"method":"Get\\"Task"}')).toBeUndefined(); // not a plausible method name
    expect(req('["method"]')).toBeUndefined();
    expect(req([{ method: "a" }])).toBe("batch");
    expect(req("not json")).toBeUndefined();
    expect(req({ method: "x".repeat(100) })).toBeUndefined();
    expect(req({ method: "GetTask" }, "GET")).toBeUndefined();
  });
});

describe("metrics plugin", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "met", drainTimeoutMs: 300 });
  const registry = new Registry();
  let app: FastifyInstance;
  let baseUrl: string;
  let gateway: Bus;

  beforeAll(async () => {
    gateway = await connect({
      servers: nats.server.url, tenant: "met", identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger,
      observer: callObserver(registry, { tenant: "met" }),
    });
    app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(metrics, { bus: gateway, registry });
    // Registered after the plugin, in their own (encapsulated) contexts.
    await app.register(a2aBridge, { bus: gateway, open: true, push: false });
    await app.register(async (child) => {
      child.get<{ Params: { name: string } }>("/hello/:name", async (req, reply) => (req.params.name === "nobody" ? reply.code(404).send({ error: "no" }) : { hello: req.params.name }));
    });
    baseUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  });
  afterAll(async () => {
    await app?.close();
    await gateway?.close();
  });

  async function scrape(): Promise<Map<string, Family>> {
    const res = await fetch(`${baseUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    return parseExposition(await res.text());
  }
  const value = async (name: string, labels: Labels = {}) => valueOf(await scrape(), name, labels) ?? 0;

  it("serves the text format with HELP and TYPE for every agentbus metric, and the process metrics", async () => {
    const f = await scrape();
    const types = Object.fromEntries([...f].filter(([n]) => n.startsWith("agentbus_")).map(([n, fam]) => [n, fam.type]));
    expect(types).toEqual({
      agentbus_tasks_submitted_total: "counter",
      agentbus_tasks_finished_total: "counter",
      agentbus_task_duration_seconds: "histogram",
      agentbus_denials_total: "counter",
      agentbus_work_pending: "gauge",
      agentbus_tasks_delayed: "gauge",
      agentbus_schedules: "gauge",
      agentbus_schedule_next_run_timestamp_seconds: "gauge",
      agentbus_work_in_progress: "gauge",
      agentbus_agents_online: "gauge",
      agentbus_agent_instances_online: "gauge",
      agentbus_capability_providers_online: "gauge",
      agentbus_call_duration_seconds: "histogram",
      agentbus_http_requests_total: "counter",
      agentbus_http_request_duration_seconds: "histogram",
    });
    for (const [name, fam] of f) if (name.startsWith("agentbus_")) expect(fam.help, name).toBeTruthy();
    expect(f.get("process_cpu_user_seconds_total")?.type).toBe("counter");
    expect(f.get("nodejs_heap_size_used_bytes")?.type).toBe("gauge");
  });

  it("counts submitted, completed and failed tasks by capability, and times them", async () => {
    const worker = await open({ insecureAllowAll: true });
    await worker.agent(
      { name: "met-worker", skills: [{ id: "met.ok" }, { id: "met.fail" }] },
      {
        "met.ok": async (ctx) => {
          await new Promise((r) => setTimeout(r, 20));
          return `done ${ctx.text}`;
        },
        "met.fail": () => {
          throw new Error("boom");
        },
      },
      { tasks: { maxDeliver: 1 } },
    );
    const caller = await open();
    const labels = (capability: string) => ({ tenant: "met", capability });
    const before = await scrape();
    expect(valueOf(before, "agentbus_tasks_submitted_total", labels("met.ok"))).toBeUndefined();
    expect(valueOf(before, "agentbus_task_duration_seconds_bucket", { ...labels("met.ok"), state: "completed", le: "+Inf" })).toBeUndefined();

    const ok = await caller.submit("met.ok", "a");
    expect((await ok.result({ timeout: 15_000 })).status.state).toBe("TASK_STATE_COMPLETED");
    const failed = await caller.submit("met.fail", "b");
    expect((await failed.result({ timeout: 15_000 })).status.state).toBe("TASK_STATE_FAILED");

    await eventually(async () => (await value("agentbus_tasks_finished_total", { ...labels("met.fail"), state: "failed" })) === 1);
    await eventually(async () => (await value("agentbus_tasks_finished_total", { ...labels("met.ok"), state: "completed" })) === 1);
    const after = await scrape();
    expect(valueOf(after, "agentbus_tasks_submitted_total", labels("met.ok"))).toBe(1);
    expect(valueOf(after, "agentbus_tasks_submitted_total", labels("met.fail"))).toBe(1);
    expect(valueOf(after, "agentbus_tasks_finished_total", { ...labels("met.ok"), state: "failed" })).toBeUndefined();
    expect(valueOf(after, "agentbus_tasks_finished_total", { ...labels("met.fail"), state: "completed" })).toBeUndefined();

    const completed = { ...labels("met.ok"), state: "completed" };
    expect(valueOf(after, "agentbus_task_duration_seconds_count", completed)).toBe(1);
    const sum = valueOf(after, "agentbus_task_duration_seconds_sum", completed)!;
    expect(sum).toBeGreaterThanOrEqual(0.02); // the handler alone sleeps 20 ms
    expect(sum).toBeLessThan(15);
    // The observation sits in every bucket from its own upwards, and in none below.
    expect(valueOf(after, "agentbus_task_duration_seconds_bucket", { ...completed, le: "+Inf" })).toBe(1);
    expect(valueOf(after, "agentbus_task_duration_seconds_bucket", { ...completed, le: "30" })).toBe(1);
    expect(valueOf(after, "agentbus_task_duration_seconds_bucket", { ...completed, le: "0.05" })).toBe(sum <= 0.05 ? 1 : 0);
    expect(valueOf(after, "agentbus_task_duration_seconds_count", { ...labels("met.fail"), state: "failed" })).toBe(1);
  });

  it("counts a task canceled while queued", async () => {
    const caller = await open();
    const task = await caller.submit("met.cancelme", "x");
    await task.cancel();
    await eventually(async () => (await value("agentbus_tasks_finished_total", { tenant: "met", capability: "met.cancelme", state: "canceled" })) === 1);
    expect(await value("agentbus_tasks_submitted_total", { tenant: "met", capability: "met.cancelme" })).toBe(1);
  });

  it("counts a delayed task when it is submitted, and shows it waiting until its time", async () => {
    const caller = await open();
    if (!caller.server.schedules) return; // message schedules: nats-server 2.12+
    const before = await value("agentbus_tasks_delayed", { tenant: "met" });
    const task = await caller.submit("met.delayed", "x", { delayMs: 60_000 });
    await eventually(async () => (await value("agentbus_tasks_submitted_total", { tenant: "met", capability: "met.delayed" })) === 1);
    expect(await value("agentbus_tasks_delayed", { tenant: "met" })).toBe(before + 1);
    await task.cancel();
    await eventually(async () => (await value("agentbus_tasks_finished_total", { tenant: "met", capability: "met.delayed", state: "canceled" })) === 1);
  });

  it("shows queued work per capability and priority: with no worker ever, and with a stopped one", async () => {
    const caller = await open();
    for (let i = 0; i < 2; i++) await caller.submit("met.queued", `item ${i}`);
    await caller.submit("met.queued", "urgent", { priority: "high" });
    // A retried submit of a queued task id: JetStream keeps one copy, and it is counted once.
    await caller.submit("met.queued", "item 2", { taskId: "met-queued-retried" });
    await caller.submit("met.queued", "item 2", { taskId: "met-queued-retried" });
    // A capability whose worker ran once (its consumer exists) and stopped.
    const gone = await open({ insecureAllowAll: true });
    const agent = await gone.agent({ name: "met-gone", skills: [{ id: "met.later" }] }, { "met.later": () => "x" });
    await agent.stop(300);
    for (let i = 0; i < 2; i++) await caller.submit("met.later", `item ${i}`);

    // Submissions reach the gateway's subscription on their own time: wait for them.
    await eventually(async () => (await value("agentbus_tasks_submitted_total", { tenant: "met", capability: "met.later" })) === 2);
    const f = await scrape();
    expect(valueOf(f, "agentbus_tasks_submitted_total", { tenant: "met", capability: "met.queued" })).toBe(4);
    expect(valueOf(f, "agentbus_work_pending", { tenant: "met", capability: "met.queued", priority: "normal" })).toBe(3);
    expect(valueOf(f, "agentbus_work_pending", { tenant: "met", capability: "met.queued", priority: "high" })).toBe(1);
    expect(valueOf(f, "agentbus_work_pending", { tenant: "met", capability: "met.queued", priority: "low" })).toBe(0);
    expect(valueOf(f, "agentbus_work_in_progress", { tenant: "met", capability: "met.queued" })).toBe(0);
    expect(valueOf(f, "agentbus_work_pending", { tenant: "met", capability: "met.later", priority: "normal" })).toBe(2);
    expect(valueOf(f, "agentbus_capability_providers_online", { tenant: "met", capability: "met.queued" })).toBe(0);
    // Taken and acknowledged work leaves the queue.
    expect(valueOf(f, "agentbus_work_pending", { tenant: "met", capability: "met.ok", priority: "normal" }) ?? 0).toBe(0);
  });

  it("shows recurring schedules and when each runs next", async () => {
    const caller = await open();
    if (!caller.server.cron) return; // cron schedules: nats-server 2.14+
    const s = await caller.schedules.create({ id: "met-hourly", capability: "met.report", input: "x", cron: "@hourly" });
    await caller.schedules.create({ id: "met-paused", capability: "met.report", input: "x", everyMs: 60_000 });
    await caller.schedules.pause("met-paused");
    const f = await scrape();
    expect(valueOf(f, "agentbus_schedule_next_run_timestamp_seconds", { tenant: "met", capability: "met.report", schedule: "met-hourly" })).toBe(s.nextRunAt! / 1000);
    expect(valueOf(f, "agentbus_schedule_next_run_timestamp_seconds", { tenant: "met", schedule: "met-paused" })).toBeUndefined();
    expect(valueOf(f, "agentbus_schedules", { tenant: "met", state: "active" })).toBeGreaterThanOrEqual(1);
    expect(valueOf(f, "agentbus_schedules", { tenant: "met", state: "paused" })).toBeGreaterThanOrEqual(1);
    await caller.schedules.delete("met-hourly");
    await caller.schedules.delete("met-paused");
  });

  it("shows agents online", async () => {
    const before = await value("agentbus_agents_online", { tenant: "met" });
    const a = await open({ insecureAllowAll: true });
    await a.agent({ name: "met-a", skills: [{ id: "met.a" }] }, { "met.a": () => "a" });
    const b = await open({ insecureAllowAll: true });
    await b.agent({ name: "met-b", skills: [{ id: "met.a" }] }, { "met.a": () => "b" }, { tasks: false });
    await eventually(async () => (await value("agentbus_agents_online", { tenant: "met" })) === before + 2);
    expect(await value("agentbus_capability_providers_online", { tenant: "met", capability: "met.a" })).toBe(2);
    expect(await value("agentbus_agent_instances_online", { tenant: "met" })).toBeGreaterThanOrEqual(before + 2);
    await b.close();
    await eventually(async () => (await value("agentbus_agents_online", { tenant: "met" })) === before + 1);
  });

  it("counts ACL denials from the audit stream", async () => {
    const guarded = await open(); // not insecure: default deny
    await guarded.agent({ name: "met-guarded", skills: [{ id: "met.secret" }] }, { "met.secret": () => "secret" }, { tasks: false });
    const caller = await open();
    // Named in the ACL (so not an unknown sender), but granted another capability only.
    await grant(caller, "met-caller-other", { source: caller.id, target: "*", capabilities: ["met.other"] }, guarded);
    const before = await value("agentbus_denials_total", { tenant: "met", code: "DENIED" });
    let denied = 0;
    await eventually(async () => {
      const err = await caller.call("met.secret", "let me in", { timeout: 5000 }).then(() => undefined, (e: unknown) => e);
      expect(isAgentBusError(err)).toBe(true);
      if ((err as AgentBusError).code === "DENIED") denied++;
      return denied > 0;
    });
    await eventually(async () => (await value("agentbus_denials_total", { tenant: "met", code: "DENIED" })) === before + denied);
  });

  it("times the gateway connection's fast calls by capability and outcome", async () => {
    const echo = await open({ insecureAllowAll: true });
    await echo.agent({ name: "met-echo", skills: [{ id: "met.echo" }] }, { "met.echo": (ctx) => ctx.text }, { tasks: false });
    const ok = { tenant: "met", capability: "met.echo", outcome: "ok" };
    expect(await value("agentbus_call_duration_seconds_count", ok)).toBe(0);
    await gateway.call("met.echo", "hi");
    await gateway.call("met.echo", "again");
    await expect(gateway.call("met.nobody", "hi", { timeout: 2000 })).rejects.toMatchObject({ code: "NO_RESPONDERS" });
    const f = await scrape();
    expect(valueOf(f, "agentbus_call_duration_seconds_count", ok)).toBe(2);
    expect(valueOf(f, "agentbus_call_duration_seconds_bucket", { ...ok, le: "30" })).toBe(2);
    expect(valueOf(f, "agentbus_call_duration_seconds_count", { tenant: "met", capability: "met.nobody", outcome: "NO_RESPONDERS" })).toBe(1);
  });

  it("counts HTTP requests by route pattern, status and JSON-RPC method", async () => {
    const labels = (route: string, status: string, method = "GET", rpc = "") => ({ method, route, rpc_method: rpc, status });
    const before = await scrape();
    const get = (path: string) => fetch(`${baseUrl}${path}`).then(async (r) => (await r.arrayBuffer(), r.status));
    expect(await get("/hello/ann")).toBe(200);
    expect(await get("/hello/bob")).toBe(200);
    expect(await get("/hello/nobody")).toBe(404);
    expect(await get("/no/such/route")).toBe(404);
    const rpc = await fetch(`${baseUrl}/a2a`, {
      method: "POST",
      headers: { "content-type": "application/json", "A2A-Version": "1.0" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "GetTask", params: { id: "no-such-task" } }),
    });
    expect(((await rpc.json()) as { error?: { code: number } }).error?.code).toBe(-32001);

    const after = await scrape();
    const delta = (l: Labels) => (valueOf(after, "agentbus_http_requests_total", l) ?? 0) - (valueOf(before, "agentbus_http_requests_total", l) ?? 0);
    expect(delta(labels("/hello/:name", "200"))).toBe(2);
    expect(delta(labels("/hello/:name", "404"))).toBe(1);
    expect(delta(labels("unmatched", "404"))).toBe(1);
    expect(delta(labels("/a2a", "200", "POST", "GetTask"))).toBe(1);
    // Patterns, not raw URLs.
    expect(after.get("agentbus_http_requests_total")!.samples.some((s) => s.labels.route?.includes("ann"))).toBe(false);
    // The scrape before this one counted too.
    expect(delta(labels("/metrics", "200"))).toBeGreaterThanOrEqual(1);
    const durations = (f: Map<string, Family>) => valueOf(f, "agentbus_http_request_duration_seconds_count", { method: "GET", route: "/hello/:name", rpc_method: "" }) ?? 0;
    expect(durations(after) - durations(before)).toBe(3);
  });
});

describe("metrics plugin shutdown", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { tenant: "met2", drainTimeoutMs: 300 });

  it("removes its consumers and stops counting when the app closes", async () => {
    const gateway = await open();
    await gateway.taskHandle("x"); // the task streams exist before counting consumers
    const jsm = await jetstreamManager(gateway.nc);
    const consumers = async () => {
      let n = 0;
      for (const stream of [gateway.subjects.stream("EVENTS"), gateway.subjects.stream("AUDIT")]) for await (const _c of jsm.consumers.list(stream)) n++;
      return n;
    };
    const baseline = await consumers();
    const registry = new Registry();
    const app = Fastify();
    await app.register(metrics, { bus: gateway, registry, defaultMetrics: false });
    await app.ready();
    expect(await consumers()).toBe(baseline + 2); // the task event feed and the audit reader

    const caller = await open();
    const submitted = async () => (await registry.getSingleMetric("agentbus_tasks_submitted_total")!.get()).values.find((v) => v.labels.capability === "met2.x")?.value ?? 0;
    await caller.submit("met2.x", "one");
    await eventually(async () => (await submitted()) === 1);

    await app.close();
    await eventually(async () => (await consumers()) === baseline);
    await caller.submit("met2.x", "two");
    await caller.nc.flush();
    await gateway.nc.flush();
    expect(await submitted()).toBe(1);
  });
});
