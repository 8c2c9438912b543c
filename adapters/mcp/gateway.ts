import type { Agent, Bus, Handler, SkillSpec } from "../../core/index.js";
import { circuitState, serverBreaker, type CircuitState } from "./breaker.js";
import { toolHandler, type ServerHandle } from "./calls.js";
import { parseMcpGatewayConfig, type McpGatewayConfig } from "./config.js";
import { ServerLink } from "./link.js";
import { mapTools, type MappedTool, type RejectedTool } from "./names.js";

/** Options of {@link startMcpGateway}: a configuration plus the bus connection the gateway serves on. */
export interface McpGatewayOptions extends McpGatewayConfig {
  /** The gateway's connection; its identity is the agent's (replicas may share a seed or not). */
  bus: Bus;
}

/** How one server is doing. */
export interface McpServerStatus {
  transport: "stdio" | "http";
  connected: boolean;
  /** The stdio server's process id while it runs. */
  pid?: number;
  /**
   * The MCP revision negotiated with the server (`2026-07-28`: stateless,
   * `server/discover`; `2025-11-25` or older: an `initialize`d session), on
   * the current connection or, while it is down, the last one. Absent until
   * the first connection.
   */
  protocolVersion?: string;
  circuit: CircuitState;
  /** Tools on the server's last list. */
  tools: number;
}

/** A running MCP gateway. */
export interface McpGateway {
  /** The bus agent serving the tools; undefined while no server has a tool. Replaced when a tool list changes. */
  readonly agent: Agent | undefined;
  /** The tools offered on the bus, by capability. */
  tools(): MappedTool[];
  /** Tools that could not be offered, with the reason. */
  rejected(): RejectedTool[];
  /** Each server's connection and circuit. */
  servers(): Record<string, McpServerStatus>;
  /** Resolves once the agent matches the servers' current tool lists. */
  settled(): Promise<void>;
  /** Stops serving (in-flight calls drain), then disconnects every server (stdio servers are terminated). */
  close(): Promise<void>;
}

const DEFAULT_NAME = "mcp-gateway";

/**
 * Starts an MCP gateway: connects to each configured MCP server (stdio or
 * Streamable HTTP; of the 2026-07-28 revision or a 2025-era one, whichever
 * it speaks: the client negotiates) and registers one bus agent whose capabilities are the
 * servers' tools, `mcp.<server>.<tool>`, with their input and output
 * schemas. Bus callers reach the tools with `bus.call` / `bus.submit`; the
 * ACL decides per capability, that is per tool. Replicas started with the
 * same configuration share the load through the capabilities' queue groups.
 *
 * Each server has a circuit breaker and a per-request timeout; a crashed
 * stdio server is restarted with backoff; a server's tool list is read
 * again on each reconnect and on `notifications/tools/list_changed`, and the
 * agent is re-registered (the new one serves before the old one stops).
 * Servers that are down at start are retried in the background; the gateway
 * starts anyway. Every call is audited (`mcp_call`) without its arguments.
 */
export async function startMcpGateway(options: McpGatewayOptions): Promise<McpGateway> {
  const { bus, ...rest } = options;
  const config = parseMcpGatewayConfig(rest);
  const log = bus.log.child({ component: "mcp-gateway" });
  const name = config.name ?? DEFAULT_NAME;
  const resetTimeoutMs = config.breaker?.resetTimeoutMs ?? 10_000;
  const servers = new Map<string, ServerHandle>();

  let agent: Agent | undefined;
  let offered: MappedTool[] = [];
  let rejected: RejectedTool[] = [];
  let signature = "";
  let started = false;
  let closing: Promise<void> | undefined;
  let failure: unknown;
  // Re-registrations run one at a time and coalesce: each reads the latest lists.
  let queue: Promise<void> = Promise.resolve();
  let queued = false;
  const resync = (): Promise<void> => {
    if (!started || queued) return queue;
    queued = true;
    queue = queue
      .then(async () => {
        queued = false;
        if (!closing) await sync();
      })
      .catch((err) => {
        failure = err;
        log.error({ err: String(err) }, "registering the gateway's tools failed");
      });
    return queue;
  };

  async function sync(): Promise<void> {
    const mapped: MappedTool[] = [];
    const refused: RejectedTool[] = [];
    for (const [server, { link }] of servers) {
      const m = mapTools(server, link.tools);
      mapped.push(...m.mapped);
      refused.push(...m.rejected);
    }
    for (const r of refused) if (!rejected.some((o) => o.server === r.server && o.tool === r.tool)) log.warn(r, "MCP tool not offered on the bus");
    rejected = refused;
    const skills: SkillSpec[] = mapped.map((t) => ({
      id: t.capability,
      name: t.title ?? t.tool,
      description: t.description ?? `${t.tool} on MCP server ${t.server}`,
      tags: ["mcp", `mcp:${t.server}`],
      inputSchema: t.inputSchema,
      ...(t.outputSchema && { outputSchema: t.outputSchema }),
    }));
    const next = JSON.stringify(skills);
    if (next === signature) return;
    if (skills.length === 0) {
      await agent?.stop();
      agent = undefined;
    } else {
      const handlers: Record<string, Handler> = Object.fromEntries(mapped.map((t) => [t.capability, toolHandler(bus, t, servers.get(t.server)!)]));
      agent = await bus.agent(
        { name, description: `MCP gateway: the tools of ${[...servers.keys()].join(", ")}`, skills },
        handlers,
        { tasks: config.tasks, replaces: agent },
      );
    }
    signature = next;
    offered = mapped;
    log.info({ tools: mapped.length, rejected: refused.length }, "gateway tools registered");
  }

  for (const [server, serverConfig] of Object.entries(config.servers)) {
    // A server that comes back is evidently up: no need to wait for the breaker's probe.
    const link = new ServerLink(server, serverConfig, { tools: () => void resync(), up: () => servers.get(server)?.breaker.close() }, log, config.restart);
    const breaker = serverBreaker(`mcp:${server}`, (tool, args, signal, onProgress) => link.call(tool, args, signal, onProgress), config.breaker);
    servers.set(server, { link, breaker, resetTimeoutMs });
  }

  const close = (): Promise<void> =>
    (closing ??= (async () => {
      await queue;
      await agent?.stop();
      agent = undefined;
      for (const { breaker } of servers.values()) breaker.shutdown();
      await Promise.all([...servers.values()].map((s) => s.link.close()));
    })());

  await Promise.all([...servers.values()].map((s) => s.link.start()));
  started = true;
  await resync();
  if (failure) {
    await close();
    throw failure;
  }

  return {
    get agent() {
      return agent;
    },
    tools: () => [...offered],
    rejected: () => [...rejected],
    servers: () =>
      Object.fromEntries(
        [...servers].map(([server, { link, breaker }]) => [
          server,
          {
            transport: link.kind,
            connected: link.connected,
            ...(link.pid !== undefined && { pid: link.pid }),
            ...(link.protocolVersion !== undefined && { protocolVersion: link.protocolVersion }),
            circuit: circuitState(breaker),
            tools: link.tools.length,
          },
        ]),
      ),
    settled: () => queue,
    close,
  };
}
