/**
 * Echo agent process for bench/a2a: the bus agent behind the A2A bridge, in
 * its own process.
 *
 *   node --import tsx bench/a2a/agent.ts <nats-url> <tenant>
 *
 * `bus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text },
 * { tasks: { concurrency: 64 } })`. Writes `READY <agent-id>` on stdout once
 * serving; exits on stdin close or SIGTERM.
 */
import { connect, createLogger } from "../../core/index.js";
import { exitWithParent } from "../lib.js";
import { profileOnSignal } from "./prof.js";

const [url, tenant = "bench"] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: agent.ts <nats-url> [tenant]\n");
  process.exit(2);
}

profileOnSignal("agent");
const bus = await connect({ servers: url, tenant, name: "bench-a2a-agent", insecureAllowAll: true, logger: createLogger({ level: "error" }) });
await bus.agent({ name: "echo", skills: [{ id: "echo" }] }, { echo: (ctx) => ctx.text }, { tasks: { concurrency: 64 } });
await bus.nc.flush();
process.stdout.write(`READY ${bus.id}\n`);

exitWithParent(() => bus.close());
