import { randomUUID } from "node:crypto";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import type { Bus } from "../../core/index.js";
import { findKey, presentedKey, type ApiKeyEntry } from "../a2a/auth.js";
import { createMcpServer } from "./server.js";

/** Options of {@link mcpHttp}. Exactly one of `open` and `apiKeys`, as for the A2A bridge. */
export interface McpHttpOptions {
  bus: Bus;
  open?: boolean;
  apiKeys?: ApiKeyEntry[];
}

/**
 * MCP over Streamable HTTP at `/mcp` (a fastify plugin): one MCP session per
 * client (`Mcp-Session-Id`), each an MCP server on the bus connection of
 * the caller's API key (bearer token, or `X-API-Key`), or on the bridge's in
 * open mode. POST carries requests, GET the server-to-client SSE stream,
 * DELETE ends the session.
 */
export async function mcpHttp(app: FastifyInstance, options: McpHttpOptions): Promise<void> {
  const keys = options.apiKeys ?? [];
  if (Boolean(options.open) === keys.length > 0) throw new Error("mcpHttp: give either apiKeys or open: true, not both or neither");
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; key?: string }>();
  app.addHook("onClose", async () => {
    await Promise.all([...sessions.values()].map((s) => s.transport.close()));
  });

  const unauthorized = (reply: FastifyReply) =>
    reply.code(401).header("WWW-Authenticate", "Bearer").send({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "missing or invalid API key" } });

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const entry = options.open ? undefined : findKey(keys, presentedKey(req));
    if (!options.open && !entry) return unauthorized(reply);
    const id = req.headers["mcp-session-id"];
    let session = typeof id === "string" ? sessions.get(id) : undefined;
    // A session belongs to the key that opened it.
    if (session && session.key !== entry?.name) return unauthorized(reply);
    if (!session) {
      if (req.method !== "POST" || !isInitializeRequest(req.body)) {
        return reply.code(400).send({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "no valid MCP session: initialize first" } });
      }
      const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sid) => void sessions.set(sid, { transport, key: entry?.name }),
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await createMcpServer(entry?.bus ?? options.bus).connect(transport);
      session = { transport, key: entry?.name };
    }
    reply.hijack();
    await session.transport.handleRequest(req.raw, reply.raw, req.body);
  };
  app.post("/mcp", handle);
  app.get("/mcp", handle);
  app.delete("/mcp", handle);
}
