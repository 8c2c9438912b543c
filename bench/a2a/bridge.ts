/**
 * A2A bridge process for bench/a2a: fastify + `a2aBridge` (open mode, no
 * push) on its own bus connection, in its own process.
 *
 *   node --import tsx bench/a2a/bridge.ts <nats-url> <tenant> [--grpc]
 *
 * Waits until the `echo` agent is online in discovery, then listens on a free
 * loopback port and writes `READY <base-url>` on stdout; exits on stdin close
 * or SIGTERM. JSON-RPC at `<base>/a2a/echo`, HTTP+JSON at
 * `<base>/a2a/echo/rest`; with `--grpc` (bench/a2a/bindings.ts) also the
 * gRPC binding on a free loopback port of its own (`grpc: { port: 0 }`),
 * whose address the served cards list (`supportedInterfaces`, protocolBinding
 * `GRPC`, tenant `echo`) and which it writes as `GRPC <host:port>` before
 * `READY`. The bridge's per-address rate limit (default 600 a minute)
 * is raised out of the way: a load generator on one address would otherwise
 * measure 429s.
 */
import Fastify from "fastify";
import { connect, createLogger } from "../../core/index.js";
import { a2aBridge } from "../../bridges/a2a/index.js";
import { exitWithParent } from "../lib.js";
import { profileOnSignal } from "./prof.js";

const args = process.argv.slice(2);
const withGrpc = args.includes("--grpc");
const [url, tenant = "bench"] = args.filter((a) => a !== "--grpc");
if (!url) {
  process.stderr.write("usage: bridge.ts <nats-url> [tenant] [--grpc]\n");
  process.exit(2);
}

profileOnSignal("bridge");
const bus = await connect({ servers: url, tenant, name: "bench-a2a-bridge", logger: createLogger({ level: "error" }) });
const app = Fastify({ routerOptions: { ignoreTrailingSlash: true }, logger: false });
exitWithParent(async () => {
  await app.close().catch(() => {});
  await bus.close();
});

const deadline = Date.now() + 15_000;
while (bus.discover({ name: "echo", online: true }).length === 0) {
  if (Date.now() > deadline) throw new Error("bridge: echo agent never appeared in discovery");
  await new Promise((r) => setTimeout(r, 20));
}
await app.register(a2aBridge, { bus, open: true, push: false, rateLimit: { max: 1_000_000_000, timeWindowMs: 60_000 }, ...(withGrpc && { grpc: { port: 0 } }) });
const address = await app.listen({ port: 0, host: "127.0.0.1" });
if (withGrpc) {
  // The gRPC address as the agent's served card lists it.
  const card = (await (await fetch(`${address}/a2a/echo/.well-known/agent-card.json`, { headers: { "A2A-Version": "1.0" } })).json()) as { supportedInterfaces: { url: string; protocolBinding: string }[] };
  process.stdout.write(`GRPC ${card.supportedInterfaces.find((i) => i.protocolBinding === "GRPC")?.url}\n`);
}
process.stdout.write(`READY ${address}\n`);
