/**
 * MCP bridge process for bench/mcp: fastify + `mcpHttp` (open mode) on its
 * own bus connection, in its own process: what `createMcpServer(bus)` serves
 * over Streamable HTTP.
 *
 *   node --import tsx bench/mcp/bridge.ts <nats-url> <tenant>
 *
 * Waits until the `echo` agent is online in discovery (so the first
 * `tools/list` already shows it), then listens on a free loopback port and
 * writes `READY <base-url>` on stdout (MCP endpoint `<base-url>/mcp`); exits
 * on stdin close or SIGTERM. With BENCH_A2A_PROF_DIR set, SIGUSR2 starts/stops
 * a CPU profile (bench/a2a/prof.ts; bench/mcp/revisions.ts drives it).
 */
import Fastify from "fastify";
import { connect, createLogger } from "../../core/index.js";
import { mcpHttp } from "../../bridges/mcp/index.js";
import { exitWithParent } from "../lib.js";
import { profileOnSignal } from "../a2a/prof.js";

const [url, tenant = "bench"] = process.argv.slice(2);
if (!url) {
  process.stderr.write("usage: bridge.ts <nats-url> [tenant]\n");
  process.exit(2);
}

profileOnSignal("bridge");
const bus = await connect({ servers: url, tenant, name: "bench-mcp-bridge", logger: createLogger({ level: "error" }) });
const app = Fastify({ logger: false });
exitWithParent(async () => {
  await app.close().catch(() => {});
  await bus.close();
});

const deadline = Date.now() + 15_000;
while (bus.discover({ capability: "echo", online: true }).length === 0) {
  if (Date.now() > deadline) throw new Error("bridge: echo agent never appeared in discovery");
  await new Promise((r) => setTimeout(r, 20));
}
await app.register(mcpHttp, { bus, open: true });
const address = await app.listen({ port: 0, host: "127.0.0.1" });
process.stdout.write(`READY ${address}\n`);
