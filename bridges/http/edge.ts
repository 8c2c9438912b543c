import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { AgentBusError, type Bus } from "../../core/index.js";
import { API_KEY_HEADER, Authenticator, type AuthOptions, type Caller } from "./auth.js";
import { HostPolicy, isLoopbackAddress, type HostPolicyOptions } from "./hosts.js";

/** How the edge treats one route: set as `config: { edge: {...} }` in the route's options. */
export interface EdgeRouteConfig {
  /** Served without authentication (`Host` and `Origin` are still checked). */
  public?: boolean;
  /** Error bodies: a JSON-RPC error object, or `{code, message}` (default: JSON-RPC under `/a2a` and `/mcp`, JSON elsewhere). */
  errors?: "jsonrpc" | "json";
  /** The `WWW-Authenticate` challenge of a 401 with API keys only (default `ApiKey`). */
  challenge?: "ApiKey" | "Bearer";
}

declare module "fastify" {
  interface FastifyRequest {
    /** Who the request acts as, set by the HTTP edge once it authenticated the request (absent on public routes). */
    caller?: Caller;
  }
  interface FastifyContextConfig {
    /** How the HTTP edge treats this route. */
    edge?: EdgeRouteConfig;
  }
  interface FastifyInstance {
    /** The HTTP edge registered on this instance or an ancestor. */
    agentbusEdge?: Edge;
  }
}

/** Options of {@link httpEdge}: who may call, and from where. */
export interface EdgeOptions extends AuthOptions, HostPolicyOptions {}

/** The HTTP edge of an app, as its bridges see it. */
export interface Edge {
  /** Open mode: no authentication, loopback only. */
  readonly open: boolean;
  readonly auth: Authenticator;
  readonly hosts: HostPolicy;
}

/** Codes of the edge's `{code, message}` error bodies. */
export type EdgeErrorCode = "HOST_NOT_ALLOWED" | "ORIGIN_NOT_ALLOWED" | "LOOPBACK_ONLY" | "UNAUTHORIZED" | "UNAVAILABLE";

/** The body of an edge refusal: a JSON-RPC error object (`id` null, code -32000) or `{code, message}`. */
export function edgeErrorBody(errors: "jsonrpc" | "json", code: EdgeErrorCode, message: string): Record<string, unknown> {
  return errors === "jsonrpc" ? { jsonrpc: "2.0", id: null, error: { code: -32000, message } } : { code, message };
}

const JSON_RPC_PATH = /^\/(a2a|mcp)(?:[/?]|$)/;

/**
 * The HTTP edge as a fastify plugin: one `onRequest` hook, in front of
 * every route registered after it on the same instance, that
 *
 * 1. answers 421 when `Host` is not an allowed name of this server (DNS
 *    rebinding), 403 when `Origin` is present and not allowed;
 * 2. in open mode, answers 403 to a client that is not on loopback;
 * 3. authenticates the caller (API key, else bearer JWT) and attaches it
 *    as `request.caller`; a route not marked `public` answers 401 without
 *    one.
 *
 * Error bodies follow the route's protocol (see {@link EdgeRouteConfig}).
 * Not encapsulated (`skip-override`): register it first, on the instance
 * whose routes it guards. Bridges find it with {@link edgeFor}.
 */
export async function httpEdge(app: FastifyInstance, options: EdgeOptions): Promise<void> {
  const auth = new Authenticator(options);
  const edge: Edge = { open: auth.open, auth, hosts: new HostPolicy(options) };
  app.decorate("agentbusEdge", edge);
  app.decorateRequest("caller", undefined);
  app.addHook("onRequest", async (req, reply) => {
    const config = req.routeOptions.config.edge ?? {};
    const errors = config.errors ?? (JSON_RPC_PATH.test(req.url) ? "jsonrpc" : "json");
    if (!edge.hosts.hostAllowed(req)) {
      return refuse(reply, 421, errors, "HOST_NOT_ALLOWED", `Host ${JSON.stringify(req.headers.host ?? "")} is not a name of this server; add it to the allowed hosts`);
    }
    if (!edge.hosts.originAllowed(req)) {
      return refuse(reply, 403, errors, "ORIGIN_NOT_ALLOWED", `Origin ${JSON.stringify(req.headers.origin)} may not call this server; add it to the allowed origins`);
    }
    if (edge.open && !isLoopbackAddress(req.socket.remoteAddress)) {
      return refuse(reply, 403, errors, "LOOPBACK_ONLY", "this server runs without authentication and answers loopback clients only");
    }
    if (config.public || req.routeOptions.url === undefined) return;
    const result = await auth.authenticate(req);
    if ("caller" in result) {
      req.caller = result.caller;
      return;
    }
    if (result.refused === "unavailable") return refuse(reply, 503, errors, "UNAVAILABLE", result.reason);
    void reply.header("WWW-Authenticate", challenge(auth, config, result.refused === "invalid" && /^bearer /i.test(req.headers.authorization ?? "")));
    return refuse(reply, 401, errors, "UNAUTHORIZED", result.reason);
  });
}
// Hooks and decorators land on the instance it is registered on (what fastify-plugin does).
Object.defineProperty(httpEdge, Symbol.for("skip-override"), { value: true });
Object.defineProperty(httpEdge, Symbol.for("fastify.display-name"), { value: "agentbus-edge" });

function refuse(reply: FastifyReply, status: number, errors: "jsonrpc" | "json", code: EdgeErrorCode, message: string): FastifyReply {
  return reply.code(status).type("application/json").send(edgeErrorBody(errors, code, message));
}

function challenge(auth: Authenticator, config: EdgeRouteConfig, badToken: boolean): string {
  const apiKey = `ApiKey header="${API_KEY_HEADER}"`;
  if (!auth.oidc) return config.challenge === "Bearer" ? "Bearer" : apiKey;
  const bearer = `Bearer realm="agentbus"${badToken ? `, error="invalid_token"` : ""}`;
  return auth.apiKeys.length > 0 && config.challenge !== "Bearer" ? `${bearer}, ${apiKey}` : bearer;
}

/** The authentication and host options a bridge plugin takes when it runs without a gateway's edge. */
export interface BridgeEdgeOptions extends HostPolicyOptions {
  /** The bridge's own connection. */
  bus: Bus;
  open?: boolean;
  apiKeys?: AuthOptions["apiKeys"];
  oidc?: AuthOptions["oidc"];
}

/**
 * The edge a bridge plugin runs behind: the one registered on `app` or an
 * ancestor (the gateway's), else a new one in the bridge's own context
 * from its options.
 *
 * @throws {AgentBusError} `INVALID_INPUT` when the app has an edge and the bridge is given authentication options too, or has none and is given neither or both of `open` and keys/OIDC.
 */
export async function edgeFor(app: FastifyInstance, options: BridgeEdgeOptions, owner: string): Promise<Edge> {
  const existing = app.hasDecorator("agentbusEdge") ? app.agentbusEdge : undefined;
  if (existing) {
    if (options.open !== undefined || options.apiKeys !== undefined || options.oidc !== undefined) {
      throw new AgentBusError("INVALID_INPUT", `${owner}: this app's HTTP edge authenticates its callers: give open, apiKeys and oidc to the edge, not to ${owner}`);
    }
    return existing;
  }
  Authenticator.check(options, owner);
  await app.register(httpEdge, options);
  return app.agentbusEdge!;
}

/** The caller the edge attached to a request on a route that is not public. */
export function callerOf(req: FastifyRequest): Caller {
  if (!req.caller) throw new AgentBusError("INVALID_INPUT", `no authenticated caller on ${req.method} ${req.url}: the route is public or not behind the HTTP edge`);
  return req.caller;
}
