/**
 * The system the MCP conformance suite runs against: the MCP bridge
 * (`mcpHttp`, open mode) at `/mcp` in front of a bus whose only agent is the
 * suite's (test/fixtures/mcp-conformance-agent.ts).
 *
 * Run alone (`npx tsx test/conformance/mcp-sut.ts [port]`) it starts a
 * nats-server too and prints the URL to give the suite (`--url`), for runs
 * by hand.
 */
import Fastify from "fastify";
import { connect, createLogger, Identity, type Bus } from "../../core/index.js";
import { mcpHttp, toolsOf } from "../../bridges/mcp/index.js";
import { startServer } from "../../nats/index.js";
import { startMcpConformanceAgent } from "../fixtures/mcp-conformance-agent.js";

export interface McpSut {
  /** The MCP endpoint: `http://localhost:<port>/mcp`. */
  url: string;
  /** The tools the bridge lists (bus capabilities and its own). */
  tools: string[];
  close(): Promise<void>;
}

/** Starts the agent and the bridge on the NATS server at `servers`; resolves once the bridge lists the agent's tools. */
export async function startMcpSut(servers: string, options: { tenant?: string; port?: number } = {}): Promise<McpSut> {
  const tenant = options.tenant ?? "mcpconf";
  const logger = createLogger({ level: "error" });
  const buses: Bus[] = [];
  const open = async (extra: Record<string, unknown> = {}) => {
    const bus = await connect({ servers, tenant, identity: Identity.generate(), presenceMaxAgeMs: 3000, drainTimeoutMs: 300, logger, ...extra });
    buses.push(bus);
    return bus;
  };
  const agentBus = await open({ insecureAllowAll: true });
  // A second connection for the agent test_trigger_tool_change starts and stops (one connection runs one agent).
  const agent = await startMcpConformanceAgent(agentBus, { changes: await open({ insecureAllowAll: true }) });
  const bridgeBus = await open();
  const expected = agent.card.skills.map((s) => s.id);
  const listed = () => new Set(toolsOf(bridgeBus).map((t) => t.name));
  for (let i = 0; i < 200 && !expected.every((id) => listed().has(id)); i++) await new Promise((r) => setTimeout(r, 50));
  if (!expected.every((id) => listed().has(id))) throw new Error(`the bridge does not list the conformance tools after 10 s: ${[...listed()].join(", ")}`);
  const app = Fastify({ forceCloseConnections: true });
  await app.register(mcpHttp, { bus: bridgeBus, open: true });
  const address = await app.listen({ port: options.port ?? 0, host: "127.0.0.1" });
  // `localhost`, the suite's own default host (its DNS-rebinding scenario sends a foreign Host and Origin and expects them refused).
  const url = `http://localhost:${new URL(address).port}/mcp`;
  return {
    url,
    tools: toolsOf(bridgeBus).map((t) => t.name),
    close: async () => {
      await app.close();
      await Promise.all(buses.map((b) => b.close()));
    },
  };
}

// Alone: a nats-server of its own, then the bridge; stops on SIGINT/SIGTERM.
if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  const nats = await startServer();
  const sut = await startMcpSut(nats.url, { port: process.argv[2] ? Number(process.argv[2]) : undefined });
  process.stdout.write(`${JSON.stringify({ url: sut.url, tools: sut.tools })}\n`);
  const stop = () => void sut.close().then(() => nats.cleanup()).then(() => process.exit(0));
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}
