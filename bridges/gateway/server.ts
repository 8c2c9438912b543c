import { jetstreamManager } from "@nats-io/jetstream";
import Fastify, { type FastifyInstance } from "fastify";
import type { Bus } from "../../core/index.js";
import { a2aBridge, type A2AGrpcOptions } from "../a2a/index.js";
import { httpEdge, type ApiKeyEntry, type OidcAuthOptions } from "../http/index.js";
import { mcpHttp } from "../mcp/index.js";
import { monitor } from "../monitor/index.js";
import { metrics } from "../metrics/index.js";
import type { Registry } from "prom-client";

/** Options of {@link createGateway}. Exactly one of `open` and (`apiKeys`, `oidc`). */
export interface GatewayOptions {
  /** The gateway's own connection: cards, the monitor, readiness; every call in open mode. */
  bus: Bus;
  /** Local use only: no authentication, every caller acts as `bus`; loopback clients only. */
  open?: boolean;
  /** Accepted API keys (bearer or `X-API-Key`), each acting as its own bus connection. */
  apiKeys?: ApiKeyEntry[];
  /** Accepted bearer JWTs of an OpenID Connect issuer, acting as one bus connection, named `oidc:<sub>`. */
  oidc?: OidcAuthOptions;
  /** More `Host` names to serve besides loopback, the request's address and `baseUrl`'s host (`name`, `name:port`, `*.domain`, `*`). */
  allowedHosts?: string[];
  /** More origins whose web pages may call the gateway (`https://app.example.com`, or `*`). */
  allowedOrigins?: string[];
  /** Public base URL the A2A cards advertise; default: from the request's Host. Its host and origin are allowed. */
  baseUrl?: string;
  /** A2A requests per key (or address) per window. */
  rateLimit?: { max: number; timeWindowMs: number };
  /** The A2A gRPC binding on a port of its own (default: none). */
  grpc?: A2AGrpcOptions;
  /** SSE keep-alive interval, ms. */
  keepAliveMs?: number;
  /** Registry of `/metrics` (default: a new one); pass the one the buses' `callObserver` writes to. */
  registry?: Registry;
}

/**
 * The HTTP gateway: one fastify app with the HTTP edge in front of every
 * route (`Host` and `Origin` allow-lists, authentication: see `httpEdge`),
 * the A2A bridge (JSON-RPC at `/a2a`, HTTP+JSON at `/a2a/rest`, gRPC on its
 * own port when `grpc` is given; cards under `/.well-known` and
 * `/a2a/<agent>/.well-known`), MCP at `/mcp`, the monitor (`/v1/*`, page at
 * `/monitor/`), Prometheus `/metrics` (with authentication: a key or token
 * as bearer), `/health` (the process answers) and `/ready` (NATS connected
 * and the tenant's streams reachable). Not listening yet: the caller picks
 * the address (loopback only in open mode).
 */
export async function createGateway(options: GatewayOptions): Promise<FastifyInstance> {
  const { bus } = options;
  await bus.ensureTasks();
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, logger: false });
  // First: its request hook guards every route registered after it.
  await app.register(httpEdge, {
    bus,
    ...(options.open ? { open: true } : { apiKeys: options.apiKeys, oidc: options.oidc }),
    allowedHosts: options.allowedHosts,
    allowedOrigins: options.allowedOrigins,
    baseUrl: options.baseUrl,
  });
  // Next: its request hook must cover every route registered after it.
  await app.register(metrics, { bus, registry: options.registry });
  await app.register(a2aBridge, { bus, baseUrl: options.baseUrl, rateLimit: options.rateLimit, keepAliveMs: options.keepAliveMs, grpc: options.grpc });
  await app.register(mcpHttp, { bus });
  await app.register(monitor, { bus, keepAliveMs: options.keepAliveMs });

  const publicRoute = { config: { edge: { public: true } } };
  app.get("/", publicRoute, (_req, reply) => reply.redirect("/monitor/"));
  app.get("/health", publicRoute, async () => ({ status: "ok" }));
  app.get("/ready", publicRoute, async (_req, reply) => {
    const problems = await readiness(bus);
    return reply.code(problems.length ? 503 : 200).send({ status: problems.length ? "unready" : "ready", problems });
  });
  return app;
}

/** What keeps the gateway from serving: an empty list means ready. */
async function readiness(bus: Bus): Promise<string[]> {
  if (bus.nc.isClosed()) return ["NATS connection closed"];
  const problems: string[] = [];
  try {
    const jsm = await jetstreamManager(bus.nc, { timeout: 2_000 });
    for (const stream of ["WORK", "EVENTS"] as const) {
      const name = bus.subjects.stream(stream);
      await jsm.streams.info(name).catch((err: Error) => problems.push(`stream ${name}: ${err.message}`));
    }
  } catch (err) {
    problems.push(`JetStream: ${(err as Error).message}`);
  }
  return problems;
}
