/**
 * The MCP bridge: every capability of the tenant as an MCP tool.
 *
 * @example
 * ```ts
 * import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
 * await createMcpServer(bus).connect(new StdioServerTransport());
 * ```
 */
export { createMcpServer } from "./server.js";
export { toolsOf, DEFAULT_INPUT_SCHEMA } from "./tools.js";
export { mcpHttp, type McpHttpOptions } from "./http.js";
