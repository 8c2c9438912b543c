/**
 * Prometheus metrics of the HTTP gateway (prom-client), as a fastify
 * plugin serving `GET /metrics`: tasks, work queues, agents online,
 * refusals, fast calls, HTTP requests, process.
 *
 * @example
 * ```ts
 * import Fastify from "fastify";
 * import { Registry } from "prom-client";
 * const registry = new Registry();
 * const bus = await connect({ tenant: "acme", observer: callObserver(registry, { tenant: "acme" }) });
 * const app = Fastify();
 * await app.register(metrics, { bus, registry }); // first: its request hook covers the plugins after it
 * await app.register(a2aBridge, { bus, apiKeys });
 * await app.listen({ port: 8080 });              // curl localhost:8080/metrics
 * ```
 */
export { metrics, callObserver, CALL_BUCKETS, type MetricsOptions } from "./server.js";
export { observeRequests, rpcMethodOf, HTTP_BUCKETS, type ObserveRequestsOptions } from "./http.js";
export { TenantMetrics, TASK_BUCKETS, UNKNOWN_CAPABILITY, type TenantMetricsOptions } from "./tenant.js";
export { BoundedLabel, Lru } from "./labels.js";
