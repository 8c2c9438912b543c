/**
 * The MCP gateway adapter: tools of external MCP servers (stdio or
 * Streamable HTTP, speaking the 2026-07-28 revision or a 2025-era one) as
 * bus capabilities `mcp.<server>.<tool>`.
 *
 * @example
 * ```ts
 * const gateway = await startMcpGateway({
 *   bus: await connect({ tenant: "acme" }),
 *   servers: {
 *     files: { command: "npx", args: ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"] },
 *     search: { url: "https://search.example.com/mcp", headers: { authorization: `Bearer ${process.env.SEARCH_TOKEN}` } },
 *   },
 * });
 * // any bus client the ACL allows: await bus.call("mcp.files.read_text_file", { path: "/srv/docs/a.md" })
 * await gateway.close();
 * ```
 */
export { startMcpGateway, type McpGateway, type McpGatewayOptions, type McpServerStatus } from "./gateway.js";
export {
  mcpGatewayConfigSchema,
  parseMcpGatewayConfig,
  type McpGatewayConfig,
  type McpServerConfig,
  type StdioServerConfig,
  type HttpServerConfig,
  type McpBreakerOptions,
  type McpRestartOptions,
} from "./config.js";
export { capabilityOf, type MappedTool, type RejectedTool } from "./names.js";
export { partsOf } from "./results.js";
export { AUDIT_KIND, type CallAudit, type CallOutcome } from "./calls.js";
export type { CircuitState } from "./breaker.js";
