import type { Command } from "commander";
import { connect, Identity, createLogger, type Bus } from "../core/index.js";

/** Options every command takes. */
export interface CommonOptions {
  nats?: string;
  tenant?: string;
  seed?: string;
  json?: boolean;
  logLevel?: string;
}

/** Adds `--nats`, `--tenant`, `--seed`, `--json`, `--log-level` to a command. */
export function withCommon(cmd: Command): Command {
  return cmd
    .option("--nats <url>", "NATS server URL (env NATS_URL)", process.env.NATS_URL ?? "nats://127.0.0.1:4222")
    .option("--tenant <tenant>", "tenant (env AGENTBUS_TENANT)", process.env.AGENTBUS_TENANT ?? "default")
    .option("--seed <file>", "nkey seed file of the identity to act as (env AGENTBUS_SEED holds a seed)")
    .option("--json", "machine-readable JSON output")
    .option("--log-level <level>", "log level", "warn");
}

/** Exit codes shared by every command. */
export const Exit = { ok: 0, taskFailed: 1, usage: 2, connection: 3 } as const;

/** Connects with the common options; exits 3 with a clear message when NATS is unreachable. */
export async function busFrom(o: CommonOptions): Promise<Bus> {
  try {
    return await connect({
      servers: o.nats,
      tenant: o.tenant,
      identity: o.seed ? Identity.fromFile(o.seed) : undefined,
      name: "agentbus-cli",
      logger: createLogger({ level: o.logLevel ?? "warn" }, process.stderr as never),
    });
  } catch (err) {
    process.stderr.write(`agentbus: ${(err as Error).message}\n`);
    process.exit(Exit.connection);
  }
}

/** Runs `work` on a bus connected with the common options, and always closes it. */
export async function withBus<T>(o: CommonOptions, work: (bus: Bus) => Promise<T>): Promise<T> {
  const bus = await busFrom(o);
  try {
    return await work(bus);
  } finally {
    await bus.close();
  }
}

/** Resolves on the first SIGINT or SIGTERM: long-running commands stop cleanly then. */
export function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => resolve());
  });
}

/** Parses CLI input: JSON when it parses as a JSON object or array, plain text otherwise. */
export function parseInput(text: string): string | Record<string, unknown> | unknown[] {
  const t = text.trim();
  if (t.startsWith("{") || t.startsWith("[")) {
    try {
      return JSON.parse(t) as Record<string, unknown> | unknown[];
    } catch {
      /* plain text that happens to start with a brace */
    }
  }
  return text;
}
