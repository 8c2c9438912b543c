import type { Server } from "@modelcontextprotocol/server";
import type { Bus } from "../../core/internal.js";
import { mcpServer, requestStates } from "./modern.js";

/** Options of {@link createMcpServer}. */
export interface McpServerOptions {
  /**
   * Who the server acts for behind the bus identity (the API key's name,
   * `oidc:<sub>`): its tasks are submitted with it, so the other bridges
   * show them to that caller only, and it follows and cancels only those.
   */
  caller?: string;
  /**
   * The MCP era it serves: `legacy` (2025-11-25: one connection, logging,
   * elicitation on the call, list-change notifications; the default) or
   * `modern` (2026-07-28: per-request, input-required results, the tasks
   * extension).
   */
  era?: "legacy" | "modern";
}

/**
 * An MCP server (SDK v2) whose tools are the bus's capabilities and whose
 * resources are its agents' cards and tasks. `tools/call` is a durable bus
 * task: an MCP cancellation cancels it, its artifacts become the result, a
 * turn that needs input is asked of the client, and status updates are
 * progress notifications (and log messages once the client set a level).
 * Serve it with an SDK v2 transport, or let `serveStdio` /
 * `createMcpHandler` pick the era per connection or request (as `agentbus
 * mcp` and `/mcp` do).
 */
export function createMcpServer(bus: Bus, options: McpServerOptions = {}): Server {
  return mcpServer({ bus, name: options.caller }, requestStates(bus), options.era ?? "legacy");
}
