/**
 * The MCP bridge: every capability of the tenant as an MCP tool.
 *
 * @example
 * ```ts
 * import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
 * await createMcpServer(bus).connect(new StdioServerTransport());
 * ```
 */
export { createMcpServer, toolsOf, DEFAULT_INPUT_SCHEMA } from "./server.js";
export { mcpHttp, type McpHttpOptions } from "./http.js";
