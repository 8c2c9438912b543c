/**
 * The MCP bridge: every capability of the tenant as an MCP tool.
 *
 * @example
 * ```ts
 * import { StdioServerTransport } from "@modelcontextprotocol/server/stdio";
 * await createMcpServer(bus).connect(new StdioServerTransport());
 * ```
 */
export { createMcpServer, type McpServerOptions } from "./server.js";
export { toolsOf, DEFAULT_INPUT_SCHEMA } from "./tools.js";
export { mcpHttp, type McpHttpOptions } from "./http.js";
