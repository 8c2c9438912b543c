/**
 * The monitor for a test file: an open-mode fastify app on a bus of its own
 * in `tenant`, whose identity the operator granted every task of the tenant
 * (as an operator does for an open monitor). Started in `beforeAll`, closed
 * in `afterAll`.
 *
 * @example
 * const monitored = useMonitor(() => nats.server.url, "mon");
 * it("lists agents", async () => {
 *   const res = await fetch(`${monitored().baseUrl}/v1/agents`);
 * });
 */
import Fastify, { type FastifyInstance } from "fastify";
import { afterAll, beforeAll } from "vitest";
import { connect, Identity, type Bus } from "../../core/index.js";
import { monitor } from "../../bridges/monitor/index.js";
import { grant, quietLogger, testAdmin } from "./bus.js";

/** What {@link useMonitor} runs. */
export interface Monitored {
  app: FastifyInstance;
  baseUrl: string;
  /** The monitor's own connection. */
  bus: Bus;
}

/** Runs an open-mode monitor on `url()`'s server, in `tenant`, for this test file. */
export function useMonitor(url: () => string, tenant: string): () => Monitored {
  let monitored: Monitored | undefined;
  beforeAll(async () => {
    const bus = await connect({ servers: url(), tenant, identity: Identity.generate(), presenceMaxAgeMs: 3000, logger: quietLogger, trustRoot: [testAdmin.id] });
    // Open mode acts as the monitor's identity: the operator grants it every task of the tenant.
    await grant(bus, "monitor-sees-all", { source: bus.id, target: "*", capabilities: ["task.>"] });
    const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, forceCloseConnections: true });
    await app.register(monitor, { bus, open: true, keepAliveMs: 150 });
    monitored = { app, bus, baseUrl: await app.listen({ port: 0, host: "127.0.0.1" }) };
  });
  afterAll(async () => {
    await monitored?.app.close();
    await monitored?.bus.close();
  });
  return () => {
    if (!monitored) throw new Error("the monitor is not running: use it inside a test or hook");
    return monitored;
  };
}
