import type { FastifyInstance } from "fastify";
import { Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { Bus, ConnectOptions } from "../../core/index.js";
import { observeRequests } from "./http.js";
import { BoundedLabel } from "./labels.js";
import { TenantMetrics } from "./tenant.js";

/** Options of {@link metrics}. */
export interface MetricsOptions {
  /** The gateway's connection: its tenant is the one measured. */
  bus: Bus;
  /** Where the metrics live (default: a new registry); pass the one given to {@link callObserver}. */
  registry?: Registry;
  /** Path of the Prometheus endpoint (default `/metrics`). */
  path?: string;
  /** Also prom-client's default process and Node.js metrics (default true; skipped when the registry has them already). */
  defaultMetrics?: boolean;
  /** Count and time every HTTP request of the app (default true); see {@link observeRequests}. */
  requests?: boolean;
  /** Distinct capability label values before the rest become `other` (default 500). */
  maxCapabilities?: number;
}

/** Buckets of the fast call histogram, seconds. */
export const CALL_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

const CALL_METRIC = "agentbus_call_duration_seconds";

/** The fast call histogram of `registry`, created on first use. */
function callHistogram(registry: Registry): Histogram<"tenant" | "capability" | "outcome"> {
  const existing = registry.getSingleMetric(CALL_METRIC);
  if (existing instanceof Histogram) return existing as Histogram<"tenant" | "capability" | "outcome">;
  return new Histogram({
    name: CALL_METRIC,
    help: "Fast calls (bus.call) made by the connections given callObserver, caller side: until the reply or the error; outcome ok or the error code.",
    labelNames: ["tenant", "capability", "outcome"],
    buckets: CALL_BUCKETS,
    registers: [registry],
  });
}

/**
 * A bus observer that times the fast calls of a connection into
 * `agentbus_call_duration_seconds{tenant,capability,outcome}` of `registry`.
 * Pass it to `connect({ observer })` (it must be there at connect time),
 * then the same registry to the {@link metrics} plugin.
 *
 * @example
 * ```ts
 * const registry = new Registry();
 * const bus = await connect({ tenant: "acme", observer: callObserver(registry, { tenant: "acme" }) });
 * await app.register(metrics, { bus, registry });
 * ```
 */
export function callObserver(registry: Registry, options: { tenant: string; maxCapabilities?: number }): NonNullable<ConnectOptions["observer"]> {
  const histogram = callHistogram(registry);
  const caps = new BoundedLabel(options.maxCapabilities ?? 500);
  return {
    call(capability, ms, outcome) {
      histogram.observe({ tenant: options.tenant, capability: caps.of(capability), outcome }, ms / 1000);
    },
  };
}

/**
 * Prometheus metrics of the gateway at `GET /metrics` (prom-client's text
 * format), as a fastify plugin: the tenant's tasks (submitted, finished by
 * state, durations), work queues, agents online, refusals from the audit
 * stream, fast calls (with {@link callObserver}), every HTTP request of
 * the app, and the process's default metrics.
 *
 * Not encapsulated (`skip-override`), so its request hook covers the whole
 * app: register it on the root instance before the other plugins. Its
 * subscription and consumers stop when the app closes.
 *
 * @example
 * ```ts
 * const app = Fastify();
 * await app.register(metrics, { bus });
 * await app.register(a2aBridge, { bus, apiKeys });
 * ```
 */
export async function metrics(app: FastifyInstance, options: MetricsOptions): Promise<void> {
  const registry = options.registry ?? new Registry();
  if (options.defaultMetrics !== false && !registry.getSingleMetric("process_cpu_user_seconds_total")) {
    collectDefaultMetrics({ register: registry });
  }
  if (options.requests !== false) observeRequests(app, { registry });
  callHistogram(registry);
  const tenant = await TenantMetrics.start({ bus: options.bus, registry, maxCapabilities: options.maxCapabilities });
  app.addHook("onClose", () => tenant.stop());
  // Behind an HTTP edge with authentication, a scraper sends a key or token as bearer.
  app.get(options.path ?? "/metrics", { config: { edge: { challenge: "Bearer" } } }, async (_req, reply) => {
    const text = await registry.metrics();
    return reply.type(registry.contentType).send(text);
  });
}
// Hooks and routes land on the instance it is registered on (what fastify-plugin does).
Object.defineProperty(metrics, Symbol.for("skip-override"), { value: true });
Object.defineProperty(metrics, Symbol.for("fastify.display-name"), { value: "agentbus-metrics" });
