import type { FastifyInstance, FastifyRequest } from "fastify";
import { Counter, Histogram, type Registry } from "prom-client";
import { BoundedLabel } from "./labels.js";

/** Buckets of the HTTP duration histogram, seconds (SSE streams land in the last ones). */
export const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const HTTP_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);
const RPC_METHOD = /^[A-Za-z][A-Za-z0-9_/.:-]{0,63}$/;
/** How much of a string body is scanned for the JSON-RPC method. */
const SCAN_LIMIT = 8192;

/** Options of {@link observeRequests}. */
export interface ObserveRequestsOptions {
  registry: Registry;
  /** Distinct `rpc_method` values before the rest become `other` (default 64). */
  maxRpcMethods?: number;
}

/**
 * Counts every HTTP request of `app` and times it, from a root `onResponse`
 * hook: `agentbus_http_requests_total{method,route,rpc_method,status}` and
 * `agentbus_http_request_duration_seconds{method,route,rpc_method}`.
 * `route` is the route pattern (`/a2a/:agent`), `unmatched` for a 404 from
 * no route; `rpc_method` the JSON-RPC method of a POST whose body is a
 * JSON-RPC request (A2A, MCP), empty otherwise. An SSE response counts once
 * it ends.
 *
 * Fastify copies hooks into a plugin's context when the plugin is
 * registered: call this (or register the `metrics` plugin) on the root
 * instance before the plugins whose routes it should see.
 */
export function observeRequests(app: FastifyInstance, options: ObserveRequestsOptions): void {
  const registers = [options.registry];
  const requests = new Counter({
    name: "agentbus_http_requests_total",
    help: "HTTP requests answered by the gateway, by HTTP method, route pattern, JSON-RPC method and status.",
    labelNames: ["method", "route", "rpc_method", "status"],
    registers,
  });
  const duration = new Histogram({
    name: "agentbus_http_request_duration_seconds",
    help: "Time from receiving an HTTP request to the end of its response (the whole stream for SSE).",
    labelNames: ["method", "route", "rpc_method"],
    buckets: HTTP_BUCKETS,
    registers,
  });
  const rpcMethods = new BoundedLabel(options.maxRpcMethods ?? 64);
  app.addHook("onResponse", async (req, reply) => {
    const method = HTTP_METHODS.has(req.method) ? req.method : "other";
    const route = req.routeOptions.url ?? "unmatched";
    const rpc = rpcMethodOf(req);
    const labels = { method, route, rpc_method: rpc === undefined ? "" : rpcMethods.of(rpc) };
    requests.inc({ ...labels, status: String(reply.statusCode) });
    duration.observe(labels, reply.elapsedTime / 1000);
  });
}

/**
 * The JSON-RPC method of a POST, when it is cheap to get: from a parsed
 * body, or from the first 8 KiB of a string body (the A2A bridge parses
 * its own), at the top level of the object only. `batch` for a batch.
 */
export function rpcMethodOf(req: FastifyRequest): string | undefined {
  if (req.method !== "POST") return undefined;
  const body = req.body;
  let method: unknown;
  if (typeof body === "string") method = scanMethod(body);
  else if (Array.isArray(body)) return "batch";
  else if (body && typeof body === "object") method = (body as { method?: unknown }).method;
  return typeof method === "string" && RPC_METHOD.test(method) ? method : undefined;
}

/** The string value of the top-level `"method"` key of a JSON object text, without parsing the rest. */
function scanMethod(text: string): string | undefined {
  const end = Math.min(text.length, SCAN_LIMIT);
  let depth = 0;
  let i = 0;
  while (i < end) {
    const c = text[i];
    if (c === '"') {
      const close = stringEnd(text, i, end);
      if (close < 0) return undefined;
      if (depth === 1 && text.slice(i, close + 1) === '"method"') {
        let j = close + 1;
        while (j < end && /\s/.test(text[j]!)) j++;
        if (text[j] !== ":") {
          i = close + 1; // a value that reads "method"
          continue;
        }
        j++;
        while (j < end && /\s/.test(text[j]!)) j++;
        if (text[j] !== '"') return undefined;
        const valueEnd = stringEnd(text, j, end);
        return valueEnd < 0 ? undefined : text.slice(j + 1, valueEnd);
      }
      i = close + 1;
      continue;
    }
    if (c === "{" || c === "[") depth++;
    else if (c === "}" || c === "]") depth--;
    else if (depth === 0 && !/\s/.test(c!)) return undefined; // not an object
    i++;
  }
  return undefined;
}

/** Index of the quote closing the string opened at `start`, or -1. */
function stringEnd(text: string, start: number, end: number): number {
  for (let i = start + 1; i < end; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i;
  }
  return -1;
}
