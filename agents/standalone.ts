/**
 * How an example agent runs as a program of its own (`npx tsx agents/<x>.ts`):
 * connect from the environment, start, and on SIGINT/SIGTERM let running
 * tasks finish (drain), withdraw presence and exit. Imported (by
 * `agentbus up --demo` or `agentbus agent run`), the file only exports its
 * `start…` function and this does nothing.
 *
 * Environment: NATS_URL (default nats://127.0.0.1:4222), AGENTBUS_TENANT,
 * AGENTBUS_SEED_FILE, and AGENTBUS_INSECURE=1 to skip the ACL in local play.
 */
import { pathToFileURL } from "node:url";
import { connect, type Bus } from "../core/index.js";

export async function runStandalone(moduleUrl: string, name: string, start: (bus: Bus) => Promise<unknown>): Promise<void> {
  if (!process.argv[1] || moduleUrl !== pathToFileURL(process.argv[1]).href) return;
  const bus = await connect({
    servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
    tenant: process.env.AGENTBUS_TENANT ?? "default",
    seedFile: process.env.AGENTBUS_SEED_FILE,
    insecureAllowAll: process.env.AGENTBUS_INSECURE === "1",
  });
  await start(bus);
  bus.log.info({ id: bus.id }, `${name} agent ready`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void bus.close().then(() => process.exit(0)));
}
