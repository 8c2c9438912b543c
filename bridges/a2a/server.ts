import { AgentCard as AgentCardCodec, type AgentCard as SdkAgentCard, A2A_VERSION_HEADER, SSE_HEADERS, formatSSEErrorEvent, formatSSEEvent } from "@a2a-js/sdk";
import { ContentTypeNotSupportedError, RequestMalformedError } from "@a2a-js/sdk/errors";
import { JsonRpcTransportHandler, ServerCallContext, validateVersion } from "@a2a-js/sdk/server";
import { LegacyJsonRpcTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { SpanKind, TASK_STATES, traced, traceFromHeaders, type AgentCard, type Bus, type Traced } from "../../core/internal.js";
import { LEGACY_PROTOCOL_VERSION, agentCard, etagOf, gatewayCard, legacyCard } from "./cards.js";
import { BusRequestHandler, CURSOR_KEY } from "./handler.js";
import { securityOf } from "./auth.js";
import { callerOf, edgeFor, type BridgeEdgeOptions } from "../http/index.js";
import rateLimit from "@fastify/rate-limit";
import { PushNotifications, type PushOptions } from "./push.js";

/**
 * Options of {@link a2aBridge}. Without an HTTP edge on the app (the
 * gateway's), the bridge runs behind its own: then exactly one of `open`
 * and (`apiKeys`, `oidc`), and the `Host`/`Origin` allow-lists apply to its
 * routes. Behind the gateway's edge, give none of `open`, `apiKeys`, `oidc`.
 */
export interface A2ABridgeOptions extends BridgeEdgeOptions {
  /** The bridge's own connection: cards, and every call in open mode. */
  bus: Bus;
  /** Requests per key (or per address in open mode) per window (default 600 a minute). */
  rateLimit?: { max: number; timeWindowMs: number };
  /** Public base URL the cards advertise (e.g. `https://agents.example.com`); default: from the request's Host. */
  baseUrl?: string;
  /** Interval of SSE keep-alive comments, ms (default 15 000). */
  keepAliveMs?: number;
  /** Push notification delivery (default on); `false` turns the push methods off. */
  push?: PushOptions | false;
  /**
   * Largest JSON-RPC request body, bytes; larger is HTTP 413 before it is
   * read. Default: room for a task of the bus's `maxTaskBytes` as base64
   * (4/3 of it) plus 1 MiB.
   */
  maxBodyBytes?: number;
}

const JSON_RPC_ERRORS = { parse: -32700, invalidRequest: -32600, methodNotFound: -32601 } as const;

/** What ListTasks takes as `status`: a task state, or none (unspecified, or UNRECOGNIZED as the SDK's client sends for none). */
const LIST_STATUSES: ReadonlySet<string> = new Set([...TASK_STATES, "TASK_STATE_UNSPECIFIED", "UNRECOGNIZED"]);

/** How deep a request's JSON may nest (arrays and objects): A2A requests need a handful of levels, metadata a few more. */
const MAX_DEPTH = 64;

/** Whether `value` nests arrays and objects deeper than `max` levels (walked without recursion). */
function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

/** JSON-RPC methods of A2A v1.0 and v0.3: span names (`A2A <method>`) come only from these. */
const A2A_METHODS = new Set([
  "SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask", "GetExtendedAgentCard",
  "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig",
  "message/send", "message/stream", "tasks/get", "tasks/cancel", "tasks/resubscribe", "agent/getAuthenticatedExtendedCard",
  "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get", "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete",
]);

/** A card in the SDK's form (what its version check reads), decoded once per served card. */
const sdkCards = new WeakMap<AgentCard, SdkAgentCard>();
function sdkCard(card: AgentCard): SdkAgentCard {
  let sdk = sdkCards.get(card);
  if (!sdk) sdkCards.set(card, (sdk = AgentCardCodec.fromJSON(card)));
  return sdk;
}

function rpcError(id: unknown, code: number, message: string) {
  return { jsonrpc: "2.0", id: id ?? null, error: { code, message } };
}

/**
 * The A2A bridge as a fastify plugin: every agent in the registry is an A2A
 * agent (card at `/a2a/<agent>/.well-known/agent-card.json`, JSON-RPC at
 * `/a2a/<agent>`), plus a gateway (`/.well-known/agent-card.json`, JSON-RPC
 * at `/a2a`) whose skills are every capability of the tenant. Cards follow
 * the registry live. The bridge keeps no task state.
 */
export async function a2aBridge(app: FastifyInstance, options: A2ABridgeOptions): Promise<void> {
  const { bus } = options;
  // Authentication, Host and Origin: the app's HTTP edge, which attaches `request.caller`.
  const edge = await edgeFor(app, options, "a2aBridge");
  if (edge.open) bus.log.warn("INSECURE: A2A bridge in open mode: no authentication, every caller acts as this bridge's identity. Local use only.");
  await app.register(rateLimit, {
    global: false,
    max: options.rateLimit?.max ?? 600,
    timeWindow: options.rateLimit?.timeWindowMs ?? 60_000,
    // Per caller; per address in open mode. Runs after the edge's hook: the caller is known.
    keyGenerator: (req) => req.caller?.name ?? req.ip,
    errorResponseBuilder: (_req, ctx) => ({ statusCode: 429, jsonrpc: "2.0", id: null, error: { code: -32000, message: `rate limit exceeded: ${ctx.max} requests per ${ctx.after}` } }),
  });
  const base = (req: FastifyRequest) => options.baseUrl ?? `${req.protocol}://${req.host}`;
  const push = options.push === false ? undefined : await PushNotifications.start(bus, edge.auth.buses().filter((b) => b !== bus), options.push);
  app.addHook("onClose", async () => push?.stop());
  const security = securityOf(edge);
  const secured = (card: AgentCard): AgentCard => ({ ...card, capabilities: { ...card.capabilities, pushNotifications: push !== undefined }, ...security });
  // An agent's served card, per registration (the registry replaces the card object when it changes) and base URL.
  const agentCards = new WeakMap<AgentCard, Map<string, AgentCard>>();
  const cardFor = (req: FastifyRequest, agent?: string, on: Bus = bus): AgentCard | undefined => {
    if (agent === undefined) return secured(gatewayCard(on, base(req)));
    const info = on.discover({ name: agent }).sort((a, b) => Number(b.online) - Number(a.online))[0];
    if (!info) return undefined;
    const url = base(req);
    let byUrl = agentCards.get(info.card);
    if (!byUrl) agentCards.set(info.card, (byUrl = new Map()));
    let card = byUrl.get(url);
    if (!card) {
      if (byUrl.size >= 16) byUrl.clear(); // base URLs come from allowed Host headers: a few
      byUrl.set(url, (card = secured(agentCard(info, url))));
    }
    return card;
  };

  // JSON-RPC bodies are parsed here, not by fastify, to answer -32700 ourselves.
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => done(null, body));

  // When this process first served each route's current card (its Last-Modified), by route and shape.
  const firstServed = new Map<string, { etag: string; since: Date }>();
  /**
   * A card in the shape the client speaks: v1.0 for a request saying
   * `A2A-Version` 1.0 or later (the SDK's resolver does), else v0.3 (a
   * client that predates the header), as the SDK's own card handler
   * decides; `legacy` forces v0.3 (the `/v0.3/` paths).
   */
  const sendCard = (req: FastifyRequest, reply: FastifyReply, card: AgentCard | undefined, legacy = false) => {
    if (!card) return reply.code(404).send({ error: "no such agent" });
    const header = req.headers[A2A_VERSION_HEADER.toLowerCase()];
    const v0 = legacy || typeof header !== "string" || header === "" || Number.parseFloat(header) < 1;
    const json = JSON.stringify(v0 ? legacyCard(card) : AgentCardCodec.toJSON(AgentCardCodec.fromJSON(card)));
    const etag = etagOf(json);
    const key = `${req.url.split("?", 1)[0]}|${v0 ? "0.3" : "1.0"}`;
    let served = firstServed.get(key);
    if (served?.etag !== etag) {
      if (firstServed.size >= 10_000) firstServed.clear();
      firstServed.set(key, (served = { etag, since: new Date(Math.floor(Date.now() / 1000) * 1000) }));
    }
    reply.header("ETag", etag).header("Last-Modified", served.since.toUTCString()).header("Vary", A2A_VERSION_HEADER).header("Cache-Control", "public, max-age=30");
    const since = req.headers["if-modified-since"];
    const unchanged = req.headers["if-none-match"] !== undefined ? req.headers["if-none-match"] === etag : since !== undefined && Date.parse(since) >= served.since.getTime();
    if (unchanged) return reply.code(304).send();
    return reply.type("application/json").send(json);
  };
  // Cards are public; their refusals (Host, Origin) are JSON-RPC errors under /a2a.
  const card = { config: { edge: { public: true } } };
  const agentCardRoute = { config: { edge: { public: true, errors: "jsonrpc" as const } } };
  app.get("/.well-known/agent-card.json", card, (req, reply) => sendCard(req, reply, cardFor(req)));
  app.get<{ Params: { agent: string } }>("/a2a/:agent/.well-known/agent-card.json", agentCardRoute, (req, reply) => sendCard(req, reply, cardFor(req, req.params.agent)));
  // v0.3-shaped cards at paths of their own too, whatever the request says.
  app.get("/v0.3/.well-known/agent-card.json", card, (req, reply) => sendCard(req, reply, cardFor(req), true));
  app.get<{ Params: { agent: string } }>("/a2a/:agent/v0.3/.well-known/agent-card.json", agentCardRoute, (req, reply) => sendCard(req, reply, cardFor(req, req.params.agent), true));

  const rpc = async (req: FastifyRequest, reply: FastifyReply, agent?: string) => {
    const caller = callerOf(req);
    // The route's card, resolved once for the whole request.
    const card = cardFor(req, agent, caller.bus);
    if (!card) return reply.code(404).send(rpcError(null, JSON_RPC_ERRORS.invalidRequest, `no agent named ${agent}`));
    const contentType = (req.headers["content-type"] ?? "").split(";", 1)[0]!.trim().toLowerCase();
    if (contentType !== "application/json") {
      const err = JsonRpcTransportHandler.mapToJSONRPCError(new ContentTypeNotSupportedError(`unsupported Content-Type "${contentType}"; expected application/json`));
      return reply.send({ jsonrpc: "2.0", id: null, error: err });
    }
    let body: unknown;
    try {
      body = JSON.parse(req.body as string);
    } catch {
      return reply.send(rpcError(null, JSON_RPC_ERRORS.parse, "malformed JSON"));
    }
    const request = body as { jsonrpc?: unknown; method?: unknown; id?: unknown } | null;
    const id = request?.id;
    if (typeof request !== "object" || request === null || Array.isArray(request) || request.jsonrpc !== "2.0" || typeof request.method !== "string") {
      return reply.send(rpcError(id, JSON_RPC_ERRORS.invalidRequest, "not a JSON-RPC 2.0 request"));
    }
    if (nestedDeeperThan(body, MAX_DEPTH)) return reply.send(rpcError(id, JSON_RPC_ERRORS.invalidRequest, `the request is nested deeper than ${MAX_DEPTH} levels`));
    // A SERVER span continuing the caller's `traceparent`; the task, its work item and the agent continue it in turn.
    const method = A2A_METHODS.has(request.method) ? request.method : "unknown";
    const op = traced(`A2A ${method}`, SpanKind.SERVER, traceFromHeaders(req.headers), {
      "rpc.system": "jsonrpc",
      "rpc.method": method,
      "http.request.method": "POST",
      "http.route": agent === undefined ? "/a2a" : "/a2a/:agent",
      "agentbus.tenant": caller.bus.subjects.tenant,
      ...(agent !== undefined && { "agentbus.agent.name": agent }),
    });
    void reply.header("traceresponse", op.trace.traceparent);
    try {
      const streamed = await answer(req, reply, body, id, caller.bus, card, op);
      op.end();
      return streamed;
    } catch (err) {
      op.end(err);
      throw err;
    }
  };

  const answer = async (req: FastifyRequest, reply: FastifyReply, body: unknown, id: unknown, on: Bus, card: AgentCard, op: Traced) => {
    // A stream's client going away ends the relay's event consumer at once (not at the task's next event).
    const gone = new AbortController();
    // A reconnecting SSE client's cursor (SubscribeToTask resumes after it).
    const lastEventId = req.headers["last-event-id"];
    const resumeAfter = typeof lastEventId === "string" && /^\d{1,15}$/.test(lastEventId.trim()) ? Number(lastEventId.trim()) : undefined;
    const handler = new BusRequestHandler(on, card, push, op, req.caller?.name, gone.signal, resumeAfter);
    const header = req.headers[A2A_VERSION_HEADER.toLowerCase()];
    // As the SDK does: a request without A2A-Version is a v0.3 request.
    const version = typeof header === "string" && header !== "" ? header : LEGACY_PROTOCOL_VERSION;
    const legacy = version === LEGACY_PROTOCOL_VERSION;
    const mapError = legacy ? LegacyJsonRpcTransportHandler.mapToLegacyJSONRPCError : JsonRpcTransportHandler.mapToJSONRPCError;
    const method = (body as { method: string }).method;
    // A v1.0 method without the header that says so: v0.3 has no such method, and the caller is told why.
    if (legacy && A2A_METHODS.has(method) && !method.includes("/")) {
      return reply.send(rpcError(id, JSON_RPC_ERRORS.methodNotFound, `${method} is an A2A 1.0 method: send the header ${A2A_VERSION_HEADER}: 1.0 (a request without it is A2A 0.3)`));
    }
    // A status filter that names no state (the SDK's parser would make it UNRECOGNIZED, which its own client sends for none).
    const status = (body as { params?: { status?: unknown } }).params?.status;
    if (method === "ListTasks" && typeof status === "string" && !LIST_STATUSES.has(status)) {
      return reply.send({ jsonrpc: "2.0", id: id ?? null, error: mapError(new RequestMalformedError(`status ${JSON.stringify(status)} is not a task state`)) });
    }
    const context = new ServerCallContext({ requestedVersion: version });
    let result;
    try {
      validateVersion(context.requestedVersion, sdkCard(card), "JSONRPC");
      const transport = legacy ? new LegacyJsonRpcTransportHandler(handler) : new JsonRpcTransportHandler(handler);
      result = await transport.handle(body as Record<string, unknown>, context);
    } catch (err) {
      const error = mapError(err);
      op.span?.setAttribute("rpc.jsonrpc.error_code", (error as { code: number }).code);
      return reply.send({ jsonrpc: "2.0", id: id ?? null, error });
    }
    if (!(result && typeof (result as AsyncGenerator)[Symbol.asyncIterator] === "function")) {
      const code = (result as { error?: { code?: unknown } }).error?.code;
      if (typeof code === "number") op.span?.setAttribute("rpc.jsonrpc.error_code", code);
      return reply.send(result);
    }
    return streamSse(reply, result as AsyncGenerator<unknown>, id, options.keepAliveMs ?? 15_000, mapError, { traceresponse: op.trace.traceparent }, gone);
  };
  // Large inputs (files, data) arrive base64-encoded in the JSON body; the bus stores them as blobs.
  const bodyLimit = options.maxBodyBytes ?? Math.ceil((bus.maxTaskBytes * 4) / 3) + 1024 * 1024;
  // What fastify refuses before the handler (a body over the limit, a media type it has no parser for) is a JSON-RPC error too.
  const errorHandler = (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
    const status = err.statusCode ?? 500;
    if (status === 415) {
      return reply.code(415).send({ jsonrpc: "2.0", id: null, error: JsonRpcTransportHandler.mapToJSONRPCError(new ContentTypeNotSupportedError(`unsupported Content-Type; expected application/json`)) });
    }
    if (status === 413) return reply.code(413).send(rpcError(null, JSON_RPC_ERRORS.invalidRequest, `the request body is larger than ${bodyLimit} bytes`));
    if (err.code?.startsWith("FST_ERR_CTP_")) return reply.code(status).send(rpcError(null, JSON_RPC_ERRORS.invalidRequest, err.message));
    // The rate limit's refusal is a JSON-RPC body already (its builder's): sent as it is.
    if (!(err instanceof Error)) return reply.code(status).send(err);
    throw err;
  };
  const limited = { bodyLimit, errorHandler, config: { rateLimit: {}, edge: { errors: "jsonrpc" as const } } };
  app.post("/a2a", limited, (req, reply) => rpc(req, reply));
  app.post<{ Params: { agent: string } }>("/a2a/:agent", limited, (req, reply) => rpc(req, reply, req.params.agent));
}

/**
 * Relays a JSON-RPC stream as SSE on the raw socket, with keep-alive
 * comments. A client that goes away (the response closes) stops the relay:
 * `gone` is aborted, which stops the event consumer at once, and the
 * iterator is closed; the task itself runs on.
 */
async function streamSse(
  reply: FastifyReply,
  stream: AsyncGenerator<unknown>,
  id: unknown,
  keepAliveMs: number,
  mapError: (err: unknown) => unknown,
  headers: Record<string, string>,
  gone: AbortController,
): Promise<void> {
  const iterator = stream[Symbol.asyncIterator]();
  let first: IteratorResult<unknown>;
  try {
    first = await iterator.next();
  } catch (err) {
    return reply.send({ jsonrpc: "2.0", id: id ?? null, error: mapError(err) });
  }
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { ...SSE_HEADERS, ...headers });
  let closed = false;
  const keepAlive = setInterval(() => res.write(": keep-alive\n\n"), keepAliveMs);
  // The response's close: the client went away (the request's fires once its body has been read).
  res.on("close", () => {
    closed = true;
    clearInterval(keepAlive);
    gone.abort();
    void iterator.return?.(undefined);
  });
  // Each event's cursor as its SSE id, so a client reconnecting with Last-Event-ID resumes after it.
  const write = (value: unknown) => {
    const cursor = cursorOf(value);
    res.write(`${cursor === undefined ? "" : `id: ${cursor}\n`}${formatSSEEvent(value)}`);
  };
  try {
    if (!first.done) write(first.value);
    while (!closed) {
      const next = await iterator.next();
      if (next.done) break;
      write(next.value);
    }
  } catch (err) {
    if (!closed) res.write(formatSSEErrorEvent({ jsonrpc: "2.0", id: id ?? null, error: mapError(err) }));
  } finally {
    clearInterval(keepAlive);
    if (!res.writableEnded) res.end();
  }
}

/** The cursor a streamed JSON-RPC response carries in its payload's metadata (v1.0: `result.<kind>.metadata`; v0.3: `result.metadata`). */
function cursorOf(value: unknown): string | undefined {
  const result = (value as { result?: Record<string, unknown> } | undefined)?.result;
  if (!result) return undefined;
  const direct = (result.metadata as Record<string, unknown> | undefined)?.[CURSOR_KEY];
  if (typeof direct === "string") return direct;
  for (const payload of Object.values(result)) {
    const cursor = ((payload as { metadata?: Record<string, unknown> } | null)?.metadata)?.[CURSOR_KEY];
    if (typeof cursor === "string") return cursor;
  }
  return undefined;
}
