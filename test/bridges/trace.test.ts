/**
 * Trace context end to end: a W3C `traceparent` on an HTTP request into a
 * bridge is continued through the bus (call and submit envelopes, work
 * items, task events) to the agent's handler (`ctx.trace`,
 * `ctx.otelContext`) and out again on the adapters' requests (HTTP
 * `traceparent` header, A2A service parameters, MCP `_meta`). With an
 * OpenTelemetry tracer provider registered every span shares the one trace
 * id and forms one parent chain; without one the ids still travel.
 * The tracing tests register the OpenTelemetry SDK (`sdk-trace-base`) with
 * a span processor that records every span from its start.
 */
import { randomBytes } from "node:crypto";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import Fastify, { type FastifyInstance } from "fastify";
import { jetstream } from "@nats-io/jetstream";
import { DiagLogLevel, SpanKind, SpanStatusCode, context, diag, trace, type Attributes, type SpanContext, type SpanStatus, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, type ReadableSpan, type Span as SdkSpan, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { Server as McpServer } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { CallToolRequestSchema, ListToolsRequestSchema, type CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterEach, describe, expect, it } from "vitest";
import { dataOf, textOf, traceIdOf, type Bus, type ConnectOptions, type TraceContext } from "../../core/index.js";
import { activeTracer } from "../../core/wire/trace.js";
import { a2aBridge } from "../../bridges/a2a/index.js";
import { mcpHttp } from "../../bridges/mcp/index.js";
import { monitor } from "../../bridges/monitor/index.js";
import { joinRemoteAgent } from "../../adapters/a2a/index.js";
import { serveHttp } from "../../adapters/http/index.js";
import { startMcpGateway, type McpGateway } from "../../adapters/mcp/index.js";
import { eventually, useBuses } from "../helpers/bus.js";
import { useNatsServer } from "../helpers/nats.js";
import { useHttpServers } from "../helpers/http.js";

// --- the OpenTelemetry SDK, recording every span it starts and ends ----------

const hex = (bytes: number) => randomBytes(bytes).toString("hex");

interface Recorded {
  name: string;
  kind: SpanKind;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  attributes: Attributes;
  status: SpanStatus;
  /** How many times the span ended (a second end is ignored by the SDK, which warns: see withTracing). */
  ends: number;
}

/** A span processor that keeps every span from its start, so unended spans show too. */
class Recorder implements SpanProcessor {
  readonly spans: Recorded[] = [];
  readonly #byId = new Map<string, Recorded>();
  onStart(span: SdkSpan): void {
    const sc = span.spanContext();
    const record: Recorded = { name: span.name, kind: span.kind, traceId: sc.traceId, spanId: sc.spanId, parentSpanId: span.parentSpanContext?.spanId, attributes: span.attributes, status: span.status, ends: 0 };
    this.#byId.set(sc.spanId, record);
    this.spans.push(record);
  }
  onEnd(span: ReadableSpan): void {
    const record = this.#byId.get(span.spanContext().spanId)!;
    Object.assign(record, { name: span.name, attributes: span.attributes, status: span.status, ends: record.ends + 1 });
  }
  forceFlush = async () => {};
  shutdown = async () => {};
}

/** Registers the SDK (tracer provider and an AsyncLocalStorage context manager) for the length of `fn`. */
async function withTracing(fn: (tracer: { spans: Recorded[]; startSpan: Tracer["startSpan"] }) => Promise<void>): Promise<void> {
  const recorder = new Recorder();
  const provider = new BasicTracerProvider({ spanProcessors: [recorder] });
  const endedTwice: string[] = [];
  diag.setLogger({ error: () => {}, warn: (m: string) => void (m.includes("ended Span") && endedTwice.push(m)), info: () => {}, debug: () => {}, verbose: () => {} }, DiagLogLevel.WARN);
  expect(context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())).toBe(true);
  expect(trace.setGlobalTracerProvider(provider)).toBe(true);
  const tracer = provider.getTracer("test");
  try {
    await fn({ spans: recorder.spans, startSpan: tracer.startSpan.bind(tracer) });
    expect(endedTwice, "spans ended more than once").toEqual([]);
  } finally {
    await provider.shutdown();
    trace.disable();
    context.disable();
    diag.disable();
  }
}

// --- HTTP helpers --------------------------------------------------------------

const apps: FastifyInstance[] = [];
const gateways: McpGateway[] = [];
afterEach(async () => {
  await Promise.all(gateways.splice(0).map((g) => g.close()));
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

const serve = useHttpServers();
const listen = async (handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> => (await serve(handler)).url;

/** A plain HTTP endpoint that answers `{rows: 3}` and records the headers it got. */
async function downstream(): Promise<{ url: string; seen: IncomingHttpHeaders[] }> {
  const seen: IncomingHttpHeaders[] = [];
  const url = await listen((req, res) => {
    req.resume();
    req.on("end", () => {
      seen.push(req.headers);
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ rows: 3 }));
    });
  });
  return { url, seen };
}

async function a2aApp(bus: Bus): Promise<string> {
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
  apps.push(app);
  await app.register(a2aBridge, { bus, open: true, push: false });
  return app.listen({ port: 0, host: "127.0.0.1" });
}

const newTrace = (): { traceId: string; spanId: string; traceparent: string } => {
  const traceId = hex(16);
  const spanId = hex(8);
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01` };
};
const spanIdOf = (traceparent: string | undefined) => traceparent?.split("-")[2];

/** A2A v1.0 SendMessage as plain JSON-RPC, blocking until the task is final. */
async function sendMessage(url: string, text: string, headers: Record<string, string>) {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", "A2A-Version": "1.0", ...headers },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "SendMessage", params: { message: { messageId: hex(8), role: "ROLE_USER", parts: [{ text }] } } }),
  });
  const body = (await res.json()) as { result?: { task?: { id: string; status: { state: string }; artifacts: Array<{ parts: Array<{ data?: unknown; text?: string }> }> } }; error?: unknown };
  expect(body.error).toBeUndefined();
  return { task: body.result!.task!, traceresponse: res.headers.get("traceresponse") };
}

// A payload that must never show up in a span.
const SECRET = "payload-s3cret-42";

describe("trace context end to end", () => {
  const nats = useNatsServer();
  const open = useBuses(() => nats.server.url, { drainTimeoutMs: 500 });
  const agentBus = (tenant: string, o: Partial<ConnectOptions> = {}) => open({ tenant, insecureAllowAll: true, ...o });

  it("without an OpenTelemetry SDK: A2A and monitor requests' traceparent reaches the handler and the HTTP adapter's request, one new span id per hop", async () => {
    expect(activeTracer()).toBeUndefined();
    const tenant = "trace-plain";
    const api = await downstream();
    await serveHttp(await agentBus(tenant), { capability: "fetch.rows", url: `${api.url}/rows` });
    const handled: Array<{ trace: TraceContext; envelope?: TraceContext; active: SpanContext }> = [];
    await (await agentBus(tenant)).agent({ name: "planner", skills: [{ id: "plan" }] }, {
      plan: async (ctx) => {
        handled.push({ trace: ctx.trace, envelope: ctx.envelope.trace, active: trace.getSpanContext(ctx.otelContext)! });
        return { rows: dataOf(await ctx.call("fetch.rows", { q: ctx.text })) };
      },
    });
    const bridgeBus = await open({ tenant });
    const url = await a2aApp(bridgeBus);
    await eventually(() => bridgeBus.discover({ name: "planner", online: true }).length === 1 && bridgeBus.discover({ capability: "fetch.rows", online: true }).length === 1);

    const incoming = newTrace();
    const { task, traceresponse } = await sendMessage(`${url}/a2a/planner`, "go", { traceparent: incoming.traceparent, tracestate: "vendor=abc" });
    expect(task.status.state).toBe("TASK_STATE_COMPLETED");
    expect(task.artifacts[0]!.parts[0]!.data).toEqual({ rows: { rows: 3 } });
    // The bridge answers with the hop it made; the handler and the endpoint share the trace id.
    expect(traceIdOf(traceresponse ?? undefined)).toBe(incoming.traceId);
    expect(handled).toHaveLength(1);
    const [h] = handled;
    expect(traceIdOf(h!.trace.traceparent)).toBe(incoming.traceId);
    expect(h!.trace).toBe(h!.envelope); // no SDK: the handler goes on with the work item's trace
    expect(h!.trace.tracestate).toBe("vendor=abc");
    expect(h!.active).toMatchObject({ traceId: incoming.traceId, spanId: spanIdOf(h!.trace.traceparent), isRemote: true });
    expect(api.seen).toHaveLength(1);
    const sent = api.seen[0]!.traceparent as string;
    expect(traceIdOf(sent)).toBe(incoming.traceId);
    expect(api.seen[0]!.tracestate).toBe("vendor=abc");
    const hops = [incoming.traceparent, traceresponse ?? undefined, h!.trace.traceparent, sent].map(spanIdOf);
    expect(new Set(hops).size).toBe(hops.length);

    // A malformed traceparent is not continued: a new trace starts.
    const { traceresponse: fresh } = await sendMessage(`${url}/a2a/planner`, "again", { traceparent: `00-${"0".repeat(32)}-${incoming.spanId}-01` });
    expect(traceIdOf(fresh ?? undefined)).toMatch(/^[0-9a-f]{32}$/);
    expect(traceIdOf(fresh ?? undefined)).not.toBe("0".repeat(32));
    expect(traceIdOf(handled[1]!.trace.traceparent)).toBe(traceIdOf(fresh ?? undefined));

    // The monitor's POST /v1/send continues it too.
    const monitorApp = Fastify({ forceCloseConnections: true });
    apps.push(monitorApp);
    await monitorApp.register(monitor, { bus: bridgeBus, open: true });
    const monitorUrl = await monitorApp.listen({ port: 0, host: "127.0.0.1" });
    const viaMonitor = newTrace();
    const res = await fetch(`${monitorUrl}/v1/send`, { method: "POST", headers: { "content-type": "application/json", traceparent: viaMonitor.traceparent }, body: JSON.stringify({ capability: "plan", text: "from the page" }) });
    expect(res.status).toBe(200);
    expect(traceIdOf(res.headers.get("traceresponse") ?? undefined)).toBe(viaMonitor.traceId);
    expect(await res.text()).toContain("TASK_STATE_COMPLETED"); // the stream ends with the task
    expect(traceIdOf(handled[2]!.trace.traceparent)).toBe(viaMonitor.traceId);
    expect(traceIdOf(api.seen[2]!.traceparent as string)).toBe(viaMonitor.traceId);
  });

  it("without an OpenTelemetry SDK: a cancel and a direct message carry the caller's trace, as a new hop", async () => {
    const tenant = "trace-side";
    const caller = await open({ tenant, insecureAllowAll: true });
    const receiver = await open({ tenant, insecureAllowAll: true });

    // A queued task (no agent offers the capability) canceled with a trace: the CANCELED event carries it.
    const handle = await caller.submit("nobody.home", "wait");
    const incoming = newTrace();
    expect((await handle.cancel({ trace: { traceparent: incoming.traceparent } })).status.state).toBe("TASK_STATE_CANCELED");
    const consumer = await jetstream(caller.nc).consumers.get(caller.subjects.stream("EVENTS"), { filter_subjects: caller.subjects.taskEventLog(caller.id, handle.id) });
    const last = await consumer.next({ expires: 2000 });
    expect(JSON.stringify(last?.json())).toContain("TASK_STATE_CANCELED");
    const carried = last?.headers?.get("traceparent");
    expect(traceIdOf(carried)).toBe(incoming.traceId);
    expect(spanIdOf(carried)).not.toBe(incoming.spanId);

    // A direct message sent with a trace reaches the receiver's envelope as a child hop.
    const sent = newTrace();
    await caller.send(receiver.id, "hello", { trace: { traceparent: sent.traceparent } });
    const [received] = await receiver.receive({ max: 1, waitMs: 2000 });
    expect(traceIdOf(received?.envelope.trace?.traceparent)).toBe(sent.traceId);
    expect(spanIdOf(received?.envelope.trace?.traceparent)).not.toBe(sent.spanId);
  });

  it("with an OpenTelemetry tracer provider: one trace id and one parent chain from the HTTP request through the bridge, bus, agents, the HTTP adapter and a remote A2A agent", async () => {
    await withTracing(async (tracer) => {
      const tenant = "trace-otel";
      const inner = "trace-otel-inner";
      const api = await downstream();

      // Tenant "inner": an agent reached over A2A, through its own bridge.
      const innerSeen: TraceContext[] = [];
      await (await agentBus(inner)).agent({ name: "inner", skills: [{ id: "inner.echo" }] }, {
        "inner.echo": (ctx) => {
          innerSeen.push(ctx.trace);
          return `inner: ${ctx.text}`;
        },
      });
      const innerBridgeBus = await open({ tenant: inner });
      const innerUrl = await a2aApp(innerBridgeBus);
      await eventually(() => innerBridgeBus.discover({ name: "inner", online: true }).length === 1);

      // Tenant "otel": the HTTP adapter, the remote A2A adapter, and the planner calling both.
      const fetchBus = await agentBus(tenant);
      await serveHttp(fetchBus, { capability: "fetch.rows", url: `${api.url}/rows` });
      const remote = await joinRemoteAgent({ bus: await agentBus(tenant), cardUrl: `${innerUrl}/a2a/inner/.well-known/agent-card.json` });
      const planned: Array<{ trace: TraceContext; envelope?: TraceContext; active?: SpanContext }> = [];
      const plannerBus = await agentBus(tenant);
      await plannerBus.agent({ name: "planner", skills: [{ id: "plan" }] }, {
        plan: async (ctx) => {
          planned.push({ trace: ctx.trace, envelope: ctx.envelope.trace, active: trace.getActiveSpan()?.spanContext() });
          tracer.startSpan("planner.think", { attributes: { step: 1 } }, ctx.otelContext).end();
          const rows = dataOf(await ctx.call("fetch.rows", { q: SECRET }));
          const echoed = textOf(await ctx.call("inner.echo", "hello"));
          return { rows, echoed };
        },
      });
      const bridgeBus = await open({ tenant });
      const url = await a2aApp(bridgeBus);
      await eventually(() => ["plan", "fetch.rows", "inner.echo"].every((cap) => bridgeBus.discover({ capability: cap, online: true }).length === 1));

      const incoming = newTrace();
      const { task, traceresponse } = await sendMessage(`${url}/a2a/planner`, SECRET, { traceparent: incoming.traceparent, tracestate: "vendor=abc" });
      expect(task.status.state).toBe("TASK_STATE_COMPLETED");
      expect(task.artifacts[0]!.parts[0]!.data).toEqual({ rows: { rows: 3 }, echoed: "inner: hello" });
      await remote.stop();

      // Every span: the caller's trace id, ended exactly once.
      const spans = tracer.spans;
      expect(spans.length).toBeGreaterThanOrEqual(13);
      for (const s of spans) {
        expect(s.traceId, s.name).toBe(incoming.traceId);
        expect(s.ends, s.name).toBe(1);
      }
      const one = (name: string, kind: SpanKind) => {
        const found = spans.filter((s) => s.name === name && s.kind === kind);
        expect(found, `${name} (${SpanKind[kind]})`).toHaveLength(1);
        return found[0]!;
      };
      const a2aIn = one("A2A SendMessage", SpanKind.SERVER);
      const submitPlan = one("submit plan", SpanKind.PRODUCER);
      const handlePlan = one("handle plan", SpanKind.CONSUMER);
      const think = one("planner.think", SpanKind.INTERNAL);
      const callFetch = one("call fetch.rows", SpanKind.CLIENT);
      const handleFetch = one("handle fetch.rows", SpanKind.SERVER);
      const post = one("POST", SpanKind.CLIENT);
      const callInner = one("call inner.echo", SpanKind.CLIENT);
      const handleRemote = one("handle inner.echo", SpanKind.SERVER);
      const a2aOut = one("A2A SendStreamingMessage", SpanKind.CLIENT);
      const a2aInnerIn = one("A2A SendStreamingMessage", SpanKind.SERVER);
      const submitInner = one("submit inner.echo", SpanKind.PRODUCER);
      const handleInner = one("handle inner.echo", SpanKind.CONSUMER);
      // One parent chain, hop by hop.
      const chain: Array<[Recorded, Recorded | string]> = [
        [a2aIn, incoming.spanId],
        [submitPlan, a2aIn],
        [handlePlan, submitPlan],
        [think, handlePlan],
        [callFetch, handlePlan],
        [handleFetch, callFetch],
        [post, handleFetch],
        [callInner, handlePlan],
        [handleRemote, callInner],
        [a2aOut, handleRemote],
        [a2aInnerIn, a2aOut],
        [submitInner, a2aInnerIn],
        [handleInner, submitInner],
      ];
      for (const [child, parent] of chain) expect(child.parentSpanId, child.name).toBe(typeof parent === "string" ? parent : parent.spanId);

      // What crossed the wire is those spans' context.
      expect(traceresponse).toBe(`00-${incoming.traceId}-${a2aIn.spanId}-01`);
      expect(planned).toHaveLength(1);
      expect(planned[0]!.envelope?.traceparent).toBe(`00-${incoming.traceId}-${submitPlan.spanId}-01`);
      expect(planned[0]!.envelope?.tracestate).toBe("vendor=abc");
      expect(planned[0]!.trace.traceparent).toBe(`00-${incoming.traceId}-${handlePlan.spanId}-01`);
      expect(planned[0]!.active?.spanId).toBe(handlePlan.spanId); // the handler runs in its span
      expect(api.seen).toHaveLength(1);
      expect(api.seen[0]!.traceparent).toBe(`00-${incoming.traceId}-${post.spanId}-01`);
      expect(api.seen[0]!.tracestate).toBe("vendor=abc");
      expect(innerSeen.map((t) => t.traceparent)).toEqual([`00-${incoming.traceId}-${handleInner.spanId}-01`]);

      // Attributes: capability, task, agents; never the payload.
      expect(handlePlan.attributes).toMatchObject({ "agentbus.capability": "plan", "agentbus.task.id": task.id, "agentbus.agent.id": plannerBus.id, "agentbus.caller.id": bridgeBus.id });
      expect(a2aIn.attributes).toMatchObject({ "rpc.method": "SendMessage", "agentbus.capability": "plan", "agentbus.task.id": task.id });
      expect(submitPlan.attributes).toMatchObject({ "agentbus.capability": "plan", "agentbus.task.id": task.id, "messaging.system": "nats", "messaging.destination.name": "mesh.trace-otel.work.plan" });
      expect(callFetch.attributes).toMatchObject({ "agentbus.capability": "fetch.rows", "messaging.destination.name": "mesh.trace-otel.cap.fetch.rows" });
      expect(handleFetch.attributes).toMatchObject({ "agentbus.agent.id": fetchBus.id, "agentbus.caller.id": plannerBus.id });
      expect(post.attributes).toMatchObject({ "http.request.method": "POST", "url.full": `${api.url}/rows`, "http.response.status_code": 200 });
      expect(JSON.stringify(spans)).not.toContain(SECRET);
      expect(spans.every((s) => s.status.code !== SpanStatusCode.ERROR)).toBe(true);

      // The task's events carry the handler's trace (its WORKING status too: it is sent once the handler runs).
      const consumer = await jetstream(plannerBus.nc).consumers.get(plannerBus.subjects.stream("EVENTS"), { filter_subjects: plannerBus.subjects.taskEventLogOfAny(task.id) });
      const carried: string[] = [];
      const messages = await consumer.consume();
      for await (const m of messages) {
        carried.push(m.headers?.get("traceparent") ?? "");
        if (m.info.pending === 0) break;
      }
      messages.stop();
      expect(carried.length).toBeGreaterThanOrEqual(3);
      for (const tp of carried) expect(tp).toBe(`00-${incoming.traceId}-${handlePlan.spanId}-01`);

      // A failing call ends its spans as errors, with the code and not the message.
      const failing = await agentBus(tenant);
      await failing.agent({ name: "broken", skills: [{ id: "broken" }] }, { broken: () => Promise.reject(new Error(`boom ${SECRET}`)) });
      await eventually(() => plannerBus.discover({ capability: "broken", online: true }).length === 1);
      const before = spans.length;
      await expect(plannerBus.call("broken", "x")).rejects.toMatchObject({ code: "HANDLER_FAILED" });
      const failed = spans.slice(before);
      expect(failed.map((s) => [s.name, s.status.code])).toEqual([
        ["call broken", SpanStatusCode.ERROR],
        ["handle broken", SpanStatusCode.ERROR],
      ]);
      expect(failed[0]!.attributes["agentbus.error.code"]).toBe("HANDLER_FAILED");
      expect(failed[0]!.parentSpanId).toBeUndefined(); // no trace given, none active: a new trace
      expect(failed[1]!.traceId).toBe(failed[0]!.traceId);
      expect(JSON.stringify(failed)).not.toContain(SECRET);

      // A task that fails without throwing (ctx.fail) ends its handler's span as an error too.
      await (await agentBus(tenant)).agent({ name: "refuser", skills: [{ id: "refuse" }] }, { refuse: (ctx) => ctx.fail(`no ${SECRET}`) });
      await eventually(() => plannerBus.discover({ capability: "refuse", online: true }).length === 1);
      const beforeTask = spans.length;
      expect((await (await plannerBus.submit("refuse", "x")).result()).status.state).toBe("TASK_STATE_FAILED");
      // The task's result can arrive before the worker ends the handler's span.
      await eventually(() => spans.slice(beforeTask).some((s) => s.name === "handle refuse" && s.ends > 0));
      const handled = spans.slice(beforeTask).find((s) => s.name === "handle refuse");
      expect([handled?.status.code, handled?.status.message, handled?.attributes["agentbus.task.state"]]).toEqual([SpanStatusCode.ERROR, "TASK_STATE_FAILED", "TASK_STATE_FAILED"]);
      expect(JSON.stringify(handled)).not.toContain(SECRET);
    });
  }, 60_000);

  it("MCP: the bridge continues `_meta.traceparent` or the HTTP header; the gateway sends both on a tool call", async () => {
    await withTracing(async (tracer) => {
      const tenant = "trace-mcp";
      // An MCP server over Streamable HTTP that records, per tool call, `_meta` and the request's headers.
      const calls: Array<{ meta: Record<string, unknown> | undefined; headers: Record<string, unknown> }> = [];
      const sessions = new Map<string, StreamableHTTPServerTransport>();
      const mcpUrl = await listen(async (req, res) => {
        const chunks: Buffer[] = [];
        for await (const c of req) chunks.push(c as Buffer);
        const parsed = chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined;
        const id = req.headers["mcp-session-id"];
        let transport = typeof id === "string" ? sessions.get(id) : undefined;
        if (!transport) {
          const server = new McpServer({ name: "recorder", version: "1.0.0" }, { capabilities: { tools: {} } });
          server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: [{ name: "shout", inputSchema: { type: "object", required: ["text"], properties: { text: { type: "string" } } } }] }));
          server.setRequestHandler(CallToolRequestSchema, async (r, extra) => {
            calls.push({ meta: r.params._meta, headers: { ...extra.requestInfo?.headers } });
            return { content: [{ type: "text", text: String(r.params.arguments?.text).toUpperCase() }] };
          });
          const created: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({ sessionIdGenerator: () => hex(8), onsessioninitialized: (sid) => void sessions.set(sid, created) });
          await server.connect(created);
          transport = created;
        }
        await transport.handleRequest(req, res, parsed);
      });
      const gateway = await startMcpGateway({ bus: await agentBus(tenant), servers: { rec: { url: `${mcpUrl}/mcp` } } });
      gateways.push(gateway);
      const caller = await open({ tenant });
      await eventually(() => caller.discover({ capability: "mcp.rec.shout", online: true }).length === 1);

      const given = newTrace();
      const reply = await caller.call("mcp.rec.shout", { text: "hi" }, { trace: { traceparent: given.traceparent, tracestate: "vendor=mcp" } });
      expect(textOf(reply)).toBe("HI");
      expect(calls).toHaveLength(1);
      const out = tracer.spans.find((s) => s.name === "MCP tools/call shout")!;
      expect(out).toMatchObject({ kind: SpanKind.CLIENT, traceId: given.traceId, attributes: { "gen_ai.tool.name": "shout", "agentbus.mcp.server": "rec", "agentbus.capability": "mcp.rec.shout" } });
      expect(out.parentSpanId).toBe(tracer.spans.find((s) => s.name === "handle mcp.rec.shout")!.spanId);
      const sent = `00-${given.traceId}-${out.spanId}-01`;
      expect(calls[0]!.meta).toMatchObject({ traceparent: sent, tracestate: "vendor=mcp" });
      expect(calls[0]!.headers).toMatchObject({ traceparent: sent, tracestate: "vendor=mcp" });

      // The MCP bridge at /mcp: `_meta.traceparent` first, else the request's header.
      const seen: TraceContext[] = [];
      await (await agentBus(tenant)).agent({ name: "echo", skills: [{ id: "echo" }] }, {
        echo: (ctx) => {
          seen.push(ctx.trace);
          return `echo: ${ctx.text}`;
        },
      });
      const app = Fastify({ forceCloseConnections: true });
      apps.push(app);
      const bridgeBus = await open({ tenant });
      await app.register(mcpHttp, { bus: bridgeBus, open: true });
      const bridgeUrl = await app.listen({ port: 0, host: "127.0.0.1" });
      await eventually(() => bridgeBus.discover({ capability: "echo", online: true }).length === 1);
      const viaHeader = newTrace();
      const client = new Client({ name: "trace-test", version: "1.0.0" });
      await client.connect(new StreamableHTTPClientTransport(new URL(`${bridgeUrl}/mcp`), { requestInit: { headers: { traceparent: viaHeader.traceparent } } }));
      try {
        const viaMeta = newTrace();
        const r1 = (await client.callTool({ name: "echo", arguments: { text: "a" }, _meta: { traceparent: viaMeta.traceparent } })) as CallToolResult;
        expect(r1.content).toEqual([{ type: "text", text: "echo: a" }]);
        const r2 = (await client.callTool({ name: "echo", arguments: { text: "b" } })) as CallToolResult;
        expect(r2.content).toEqual([{ type: "text", text: "echo: b" }]);
        expect(seen.map((t) => traceIdOf(t.traceparent))).toEqual([viaMeta.traceId, viaHeader.traceId]);
        const bridged = tracer.spans.filter((s) => s.name === "MCP tools/call" && s.kind === SpanKind.SERVER);
        expect(bridged.map((s) => [s.traceId, s.parentSpanId])).toEqual([
          [viaMeta.traceId, viaMeta.spanId],
          [viaHeader.traceId, viaHeader.spanId],
        ]);
        expect(bridged.every((s) => typeof s.attributes["agentbus.task.id"] === "string" && s.attributes["agentbus.task.state"] === "TASK_STATE_COMPLETED")).toBe(true);
      } finally {
        await client.close();
      }
    });
  }, 60_000);
});
