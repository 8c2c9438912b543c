import { AgentCard as AgentCardCodec, A2A_CONTENT_TYPE, A2A_VERSION_HEADER } from "@a2a-js/sdk";
import { ContentTypeNotSupportedError, RequestMalformedError, toRestErrorBody } from "@a2a-js/sdk/errors";
import { JsonRpcTransportHandler, ServerCallContext, validateVersion } from "@a2a-js/sdk/server";
import { LegacyJsonRpcTransportHandler } from "@a2a-js/sdk/compat/v0_3/server";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { SpanKind, cardKey, preferOnline, traced, traceFromHeaders, type AgentCard, type Bus } from "../../core/internal.js";
import { LEGACY_PROTOCOL_VERSION, agentCard, etagOf, gatewayCard, legacyCard } from "./cards.js";
import { BusRequestHandler } from "./handler.js";
import { A2A_METHODS, LIST_STATUSES, MAX_DEPTH, nestedDeeperThan, requestedVersion, sdkCard, type A2ARoute, type OpenRequest } from "./routes.js";
import { restRoutes } from "./rest.js";
import { streamSse, type SseFormat } from "./sse.js";
import { securityOf } from "./auth.js";
import { callerOf, edgeFor, type BridgeEdgeOptions } from "../http/index.js";
import rateLimit from "@fastify/rate-limit";
import { PushNotifications, type PushOptions } from "./push.js";
import { startA2AGrpc, type A2AGrpcOptions } from "./grpc.js";
import { CardSigner } from "./signing.js";

/** Where the bridge serves its JWK set: the keys its cards are signed with. */
const JWKS_PATH = "/.well-known/jwks.json";

/**
 * Options of {@link a2aBridge}. Without an HTTP edge on the app (the
 * gateway's), the bridge runs behind its own: then exactly one of `open`
 * and (`apiKeys`, `oidc`), and the `Host`/`Origin` allow-lists apply to its
 * routes. Behind the gateway's edge, give none of `open`, `apiKeys`, `oidc`.
 */
export interface A2ABridgeOptions extends BridgeEdgeOptions {
  /** The bridge's own connection: cards, and every call in open mode. */
  bus: Bus;
  /** Requests per key (or per address in open mode) per window (default 600 a minute); gRPC calls have a budget of their own, as large. */
  rateLimit?: { max: number; timeWindowMs: number };
  /** Public base URL the cards advertise (e.g. `https://agents.example.com`); default: from the request's Host. */
  baseUrl?: string;
  /** Interval of SSE keep-alive comments, ms (default 15 000). */
  keepAliveMs?: number;
  /** The gRPC binding on a port of its own (default: none), listed in every card. */
  grpc?: A2AGrpcOptions;
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
  const limit = { max: options.rateLimit?.max ?? 600, timeWindowMs: options.rateLimit?.timeWindowMs ?? 60_000 };
  await app.register(rateLimit, {
    global: false,
    max: limit.max,
    timeWindow: limit.timeWindowMs,
    // Per caller; per address in open mode. Runs after the edge's hook: the caller is known.
    keyGenerator: (req) => req.caller?.name ?? req.ip,
    errorResponseBuilder: (_req, ctx) => ({ statusCode: 429, jsonrpc: "2.0", id: null, error: { code: -32000, message: `rate limit exceeded: ${ctx.max} requests per ${ctx.after}` } }),
  });
  const base = (req: FastifyRequest) => options.baseUrl ?? `${req.protocol}://${req.host}`;
  const push = options.push === false ? undefined : await PushNotifications.start(bus, edge.auth.buses().filter((b) => b !== bus), options.push);
  app.addHook("onClose", async () => push?.stop());
  const security = securityOf(edge);
  const signer = new CardSigner(bus.identity);
  const secured = (card: AgentCard): AgentCard => ({ ...card, capabilities: { ...card.capabilities, pushNotifications: push !== undefined }, ...security });
  // The gRPC binding first: every card lists its address.
  const grpc = options.grpc ? await startA2AGrpc(options.grpc, edge.auth, { bus, push, cardFor: (agent, on) => cardAt(options.baseUrl ?? "", agent, on) }, limit) : undefined;
  app.addHook("onClose", async () => grpc?.close());
  const bindings = { grpc: grpc?.address };
  // An agent's served card, per registration (the registry replaces the card object when it changes) and base URL.
  const agentCards = new WeakMap<AgentCard, Map<string, AgentCard>>();
  const cardAt = (url: string, agent?: string, on: Bus = bus): AgentCard | undefined => {
    if (agent === undefined) return secured(gatewayCard(on, url, bindings));
    const info = preferOnline(on.discover({ name: agent }));
    if (!info) return undefined;
    let byUrl = agentCards.get(info.card);
    if (!byUrl) agentCards.set(info.card, (byUrl = new Map()));
    let card = byUrl.get(url);
    if (!card) {
      if (byUrl.size >= 16) byUrl.clear(); // base URLs come from allowed Host headers: a few
      byUrl.set(url, (card = secured(agentCard(info, url, bindings, on.subjects.tenant))));
    }
    return card;
  };
  const cardFor = (req: FastifyRequest, agent?: string, on: Bus = bus): AgentCard | undefined => cardAt(base(req), agent, on);

  // Request bodies are parsed here, not by fastify, to answer malformed JSON as each binding says (-32700, 400).
  app.addContentTypeParser(["application/json", A2A_CONTENT_TYPE], { parseAs: "string" }, (_req, body, done) => done(null, body));

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
    const version = requestedVersion(req);
    const v0 = legacy || version === undefined || Number.parseFloat(version) < 1;
    // v1.0 cards are signed by the bridge's identity, its key in the JWK set.
    const json = JSON.stringify(v0 ? legacyCard(card) : AgentCardCodec.toJSON(AgentCardCodec.fromJSON(signer.sign(card, `${base(req)}${JWKS_PATH}`))));
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
  // The keys of the bridge (its cards' signer) and of every agent (their registered cards' signers), as a JWK set.
  app.get(JWKS_PATH, { config: { edge: { public: true } } }, (_req, reply) =>
    reply.header("Cache-Control", "public, max-age=300").send({ keys: [...new Set([bus.id, ...bus.discover().map((a) => a.id)])].map(cardKey) }),
  );
  // Cards are public; their refusals (Host, Origin) are JSON-RPC errors under /a2a.
  const card = { config: { edge: { public: true } } };
  const agentCardRoute = { config: { edge: { public: true, errors: "jsonrpc" as const } } };
  app.get("/.well-known/agent-card.json", card, (req, reply) => sendCard(req, reply, cardFor(req)));
  app.get<{ Params: { agent: string } }>("/a2a/:agent/.well-known/agent-card.json", agentCardRoute, (req, reply) => sendCard(req, reply, cardFor(req, req.params.agent)));
  // v0.3-shaped cards at paths of their own too, whatever the request says.
  app.get("/v0.3/.well-known/agent-card.json", card, (req, reply) => sendCard(req, reply, cardFor(req), true));
  app.get<{ Params: { agent: string } }>("/a2a/:agent/v0.3/.well-known/agent-card.json", agentCardRoute, (req, reply) => sendCard(req, reply, cardFor(req, req.params.agent), true));

  /**
   * Opens one request on any HTTP binding: the caller's connection, the
   * route's card (resolved once for the whole request), a SERVER span
   * continuing the caller's `traceparent` (the task, its work item and the
   * agent continue it in turn), and the handler.
   */
  const open: OpenRequest = (req, reply, agent, method, binding) => {
    const caller = callerOf(req);
    const card = cardFor(req, agent, caller.bus);
    if (!card) return undefined;
    const name = A2A_METHODS.has(method) ? method : "unknown";
    const op = traced(`A2A ${name}`, SpanKind.SERVER, traceFromHeaders(req.headers), {
      ...(binding === "JSONRPC" ? { "rpc.system": "jsonrpc", "rpc.method": name } : { "rpc.method": name }),
      "a2a.protocol_binding": binding,
      "http.request.method": req.method,
      "http.route": req.routeOptions.url ?? "",
      "agentbus.tenant": caller.bus.subjects.tenant,
      ...(agent !== undefined && { "agentbus.agent.name": agent }),
    });
    void reply.header("traceresponse", op.trace.traceparent);
    // A stream's client going away ends the relay's event consumer at once (not at the task's next event).
    const gone = new AbortController();
    // A reconnecting SSE client's cursor (SubscribeToTask resumes after it).
    const lastEventId = req.headers["last-event-id"];
    const resumeAfter = typeof lastEventId === "string" && /^\d{1,15}$/.test(lastEventId.trim()) ? Number(lastEventId.trim()) : undefined;
    const handler = new BusRequestHandler(caller.bus, card, push, op, req.caller?.name, gone.signal, resumeAfter);
    return { handler, card, op, gone };
  };

  const rpc = async (req: FastifyRequest, reply: FastifyReply, agent?: string) => {
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
    // An id that is not a string, a number or null makes the request invalid, and is not echoed (JSON-RPC 2.0 §4, §5).
    if (id !== undefined && id !== null && typeof id !== "string" && typeof id !== "number") {
      return reply.send(rpcError(null, JSON_RPC_ERRORS.invalidRequest, "the request's id must be a string, a number or null"));
    }
    if (typeof request !== "object" || request === null || Array.isArray(request) || request.jsonrpc !== "2.0" || typeof request.method !== "string") {
      return reply.send(rpcError(id, JSON_RPC_ERRORS.invalidRequest, "not a JSON-RPC 2.0 request"));
    }
    if (nestedDeeperThan(body, MAX_DEPTH)) return reply.send(rpcError(id, JSON_RPC_ERRORS.invalidRequest, `the request is nested deeper than ${MAX_DEPTH} levels`));
    const route = open(req, reply, agent, request.method, "JSONRPC");
    if (!route) return reply.code(404).send(rpcError(null, JSON_RPC_ERRORS.invalidRequest, `no agent named ${agent}`));
    try {
      const streamed = await answer(req, reply, body, id, route);
      route.op.end();
      return streamed;
    } catch (err) {
      route.op.end(err);
      throw err;
    }
  };

  const answer = async (req: FastifyRequest, reply: FastifyReply, body: unknown, id: unknown, { handler, card, op, gone }: A2ARoute) => {
    // As the SDK does: a request without A2A-Version is a v0.3 request.
    const version = requestedVersion(req) ?? LEGACY_PROTOCOL_VERSION;
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
    const format: SseFormat = {
      event: (value) => value,
      refuse: (r, err) => r.send({ jsonrpc: "2.0", id: id ?? null, error: mapError(err) }),
      error: (err) => ({ jsonrpc: "2.0", id: id ?? null, error: mapError(err) }),
    };
    return streamSse(reply, result as AsyncGenerator<unknown>, format, options.keepAliveMs ?? 15_000, { traceresponse: op.trace.traceparent }, gone);
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

  // The HTTP+JSON binding: fastify's refusals (size, media type) as its error bodies.
  const restErrorHandler = (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => {
    const status = err.statusCode ?? 500;
    if (status === 415) return reply.code(415).type(A2A_CONTENT_TYPE).send(toRestErrorBody(new ContentTypeNotSupportedError(`unsupported Content-Type; expected ${A2A_CONTENT_TYPE} or application/json`), 415));
    if (status === 413) return reply.code(413).type(A2A_CONTENT_TYPE).send(toRestErrorBody(new RequestMalformedError(`the request body is larger than ${bodyLimit} bytes`), 413));
    if (err.code?.startsWith("FST_ERR_CTP_")) return reply.code(status).type(A2A_CONTENT_TYPE).send(toRestErrorBody(new RequestMalformedError(err.message), status));
    if (!(err instanceof Error)) return reply.code(status).send(err);
    throw err;
  };
  restRoutes(app, open, { bodyLimit, errorHandler: restErrorHandler, config: { rateLimit: {}, edge: { errors: "json" as const } } }, options.keepAliveMs ?? 15_000);
}
