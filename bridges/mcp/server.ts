import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  ElicitResultSchema,
  ErrorCode,
  ListResourceTemplatesRequestSchema,
  ListResourcesRequestSchema,
  ListToolsRequestSchema,
  McpError,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  type CallToolResult,
  type LoggingLevel,
  type ListToolsResult,
  type ReadResourceResult,
  type ServerRequest,
} from "@modelcontextprotocol/sdk/types.js";
import { RESOURCE_TEMPLATES, ResourceNotFound, listResources, readResource } from "./resources.js";

/** MCP's log levels, least severe first (RFC 5424's, as MCP names them). */
const LOG_LEVELS: readonly LoggingLevel[] = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/** MCP's error code of a resource that does not exist (2025-11-25). */
const RESOURCE_NOT_FOUND = -32002;
import { traceFromHeaders, type Bus } from "../../core/internal.js";
import { ToolRequestError, callTool, listTools, type ToolAnswer } from "./tools.js";

/**
 * An MCP server whose tools are the bus's capabilities. `tools/call` is a
 * durable bus task: an MCP cancellation cancels the task, its artifacts
 * become the result, a turn that needs input is asked of the client
 * (elicitation) and its answer continues the task, and, when the client
 * sent a progress token, each status update and artifact chunk is a
 * progress notification; bus errors become
 * `isError` results with the code, protocol misuse becomes JSON-RPC errors. Tells clients when
 * agents come and go (`notifications/tools/list_changed`). Agent cards,
 * tasks and their artifacts' parts are resources (`agentbus://…`).
 *
 * `options.caller` names who the session acts for behind the bus identity
 * (the API key's name, `oidc:<sub>`): its tasks are submitted with it, so
 * the other bridges show them to that caller only, and the session follows
 * and cancels only those (anything else is `TASK_NOT_FOUND`, an `isError`
 * result).
 */
export function createMcpServer(bus: Bus, info = { name: "agentbus", version: "0.1.0" }, options: { caller?: string } = {}): Server {
  const server = new Server(info, { capabilities: { tools: { listChanged: true }, resources: { listChanged: true }, logging: {} } });
  // The session's log level (`logging/setLevel`): once the client set one, tasks' status updates are logged at info, sent when at or above it.
  let logLevel: LoggingLevel | undefined;
  server.setRequestHandler(SetLevelRequestSchema, async (req) => {
    logLevel = req.params.level;
    return {};
  });

  // Agent cards, tasks and their artifacts' parts as resources.
  server.setRequestHandler(ListResourcesRequestSchema, async () => ({ resources: listResources(bus) }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({ resourceTemplates: [...RESOURCE_TEMPLATES] }));
  server.setRequestHandler(ReadResourceRequestSchema, async (req) => {
    try {
      return { contents: await readResource(bus, req.params.uri, options.caller) } as ReadResourceResult;
    } catch (err) {
      // MCP's "resource not found", with the URI.
      throw err instanceof ResourceNotFound ? new McpError(RESOURCE_NOT_FOUND, err.message, { uri: err.uri }) : err;
    }
  });

  server.setRequestHandler(ListToolsRequestSchema, async (req) => {
    try {
      return listTools(bus, req.params?.cursor) as ListToolsResult;
    } catch (err) {
      throw err instanceof ToolRequestError ? new McpError(ErrorCode.InvalidParams, err.message) : err;
    }
  });

  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    try {
      return (await callTool(bus, req.params.name, req.params.arguments ?? {}, {
        caller: options.caller,
        // The caller's trace: `_meta.traceparent` (MCP's convention, any transport), else the HTTP request's header.
        trace: traceFromHeaders(req.params._meta) ?? traceFromHeaders(extra.requestInfo?.headers),
        signal: extra.signal,
        progressToken: req.params._meta?.progressToken,
        notify: (n) => extra.sendNotification(n),
        // On the call's own stream (Streamable HTTP: the POST's), as its progress; only for a client that asked for logs.
        ...(logLevel && {
          log: async (level: LoggingLevel, data: Record<string, unknown>) => {
            if (LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(logLevel!)) await extra.sendNotification({ method: "notifications/message", params: { level, logger: "agentbus", data } });
          },
        }),
        // Asked on the call (elicitation/create), when the client said it can be.
        ...(server.getClientCapabilities()?.elicitation && {
          ask: ({ message, requestedSchema }) => extra.sendRequest({ method: "elicitation/create", params: { mode: "form", message, requestedSchema } } as ServerRequest, ElicitResultSchema, { signal: extra.signal }) as Promise<ToolAnswer>,
        }),
      })) as CallToolResult;
    } catch (err) {
      throw err instanceof ToolRequestError ? new McpError(ErrorCode.InvalidParams, err.message) : err;
    }
  });

  // Agents coming, going or changing change the tool list (until this session closes).
  const off = bus.onAgent(() => {
    void server.sendToolListChanged().catch(() => {});
    void server.sendResourceListChanged().catch(() => {});
  });
  server.onclose = off;
  return server;
}
