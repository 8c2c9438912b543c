import { jetstreamManager } from "@nats-io/jetstream";
import Fastify, { type FastifyInstance } from "fastify";
import type { Bus } from "../../core/index.js";
import { a2aBridge } from "../a2a/index.js";
import { findKey, presentedKey, type ApiKeyEntry } from "../a2a/auth.js";
import { mcpHttp } from "../mcp/index.js";
import { monitor } from "../monitor/index.js";
import { metrics } from "../metrics/index.js";
import type { Registry } from "prom-client";

/** Options of {@link createGateway}. Exactly one of `open` and `apiKeys`. */
export interface GatewayOptions {
  /** The gateway's own connection: cards, the monitor, readiness; every call in open mode. */
  bus: Bus;
  /** Local use only: no authentication, every caller acts as `bus`. */
  open?: boolean;
  /** Accepted API keys (bearer or `X-API-Key`), each acting as its own bus connection. */
  apiKeys?: ApiKeyEntry[];
  /** Public base URL the A2A cards advertise; default: from the request's Host. */
  baseUrl?: string;
  /** A2A requests per key (or address) per window. */
  rateLimit?: { max: number; timeWindowMs: number };
  /** SSE keep-alive interval, ms. */
  keepAliveMs?: number;
  /** Registry of `/metrics` (default: a new one); pass the one the buses' `callObserver` writes to. */
  registry?: Registry;
}

/**
 * The HTTP gateway: one fastify app with the A2A bridge (`/a2a`, cards under
 * `/.well-known` and `/a2a/<agent>/.well-known`), MCP at `/mcp`, the monitor
 * (`/v1/*`, page at `/monitor/`), Prometheus `/metrics` (with API keys: a
 * key as bearer token), `/health` (the process answers) and `/ready` (NATS
 * connected and the tenant's streams reachable). Not
 * listening yet: the caller picks the address.
 */
export async function createGateway(options: GatewayOptions): Promise<FastifyInstance> {
  const { bus } = options;
  const auth = options.open ? { open: true } : { apiKeys: options.apiKeys ?? [] };
  await bus.ensureTasks();
  const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, logger: false });
  // With API keys, /metrics wants one too (a scraper's bearer token): it
  // tells who calls what and how often.
  if (!options.open) {
    const keys = options.apiKeys ?? [];
    app.addHook("onRequest", async (req, reply) => {
      if (req.url.split("?")[0] === "/metrics" && !findKey(keys, presentedKey(req))) await reply.code(401).header("WWW-Authenticate", "Bearer").send({ code: "UNAUTHORIZED", message: "missing or invalid API key" });
    });
  }
  // First: its request hook must cover every route registered after it.
  await app.register(metrics, { bus, registry: options.registry });
  await app.register(a2aBridge, { bus, ...auth, baseUrl: options.baseUrl, rateLimit: options.rateLimit, keepAliveMs: options.keepAliveMs });
  await app.register(mcpHttp, { bus, ...auth });
  await app.register(monitor, { bus, ...auth, keepAliveMs: options.keepAliveMs });

  app.get("/", (_req, reply) => reply.redirect("/monitor/"));
  app.get("/health", async () => ({ status: "ok" }));
  app.get("/ready", async (_req, reply) => {
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
