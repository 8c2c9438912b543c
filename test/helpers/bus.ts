import { afterEach } from "vitest";
import { connect, Identity, type Bus, type ConnectOptions } from "../../core/index.js";

/**
 * Opens buses for one test and closes them after it, with quiet logs and a
 * short presence max age so expiry tests run in seconds.
 */
export function useBuses(servers: () => string | string[], defaults: Partial<ConnectOptions> = {}) {
  const open: Bus[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((b) => b.close()));
  });
  return async (options: Partial<ConnectOptions> = {}): Promise<Bus> => {
    const bus = await connect({
      servers: servers(),
      identity: Identity.generate(),
      presenceMaxAgeMs: 3000,
      logger: quietLogger,
      ...defaults,
      ...options,
    });
    open.push(bus);
    return bus;
  };
}

import { createLogger } from "../../core/index.js";
/** Logs only errors unless AGENTBUS_TEST_LOG says otherwise. */
export const quietLogger = createLogger({ level: process.env.AGENTBUS_TEST_LOG ?? "error" });

/** Waits until `check` passes (returns truthy), polling. */
export async function eventually<T>(check: () => T | Promise<T>, timeoutMs = 10_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`condition not met in ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
