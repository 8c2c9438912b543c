import { randomUUID } from "node:crypto";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { classifyInboundRequest, isInitializeRequest } from "@modelcontextprotocol/server";
import { NodeStreamableHTTPServerTransport, toNodeHandler } from "@modelcontextprotocol/node";
import type { Bus } from "../../core/index.js";
import { callerOf, edgeFor, type BridgeEdgeOptions } from "../http/index.js";
import { authInfoOf, mcpServer, modernHandler, requestStates } from "./modern.js";

/**
 * Options of {@link mcpHttp}. As for the A2A bridge: behind the app's HTTP
 * edge (the gateway's) none of `open`, `apiKeys`, `oidc`; without one,
 * exactly one of `open` and (`apiKeys`, `oidc`), and the bridge runs behind
 * its own edge.
 */
export interface McpHttpOptions extends BridgeEdgeOptions {
  bus: Bus;
  /**
   * Largest request body, bytes; larger is HTTP 413 before it is read.
   * Default: room for a task of the bus's `maxTaskBytes` as base64 (4/3 of
   * it) plus 1 MiB, as the A2A bridge (a tool's large arguments reach the
   * bus, which carries them as claim checks).
   */
  maxBodyBytes?: number;
}

/**
 * MCP over Streamable HTTP at `/mcp` (a fastify plugin): one MCP session per
 * client (`Mcp-Session-Id`), each an MCP server on the bus connection of
 * the caller the HTTP edge authenticated (API key as bearer token or
 * `X-API-Key`, or a bearer JWT), or on the bridge's in open mode. The edge
 * checks `Host` and `Origin` first (403 for a foreign `Origin`, as MCP
 * requires). POST carries requests, GET the server-to-client SSE stream,
 * DELETE ends the session.
 */
export async function mcpHttp(app: FastifyInstance, options: McpHttpOptions): Promise<void> {
  const edge = await edgeFor(app, options, "mcpHttp");
  const bodyLimit = options.maxBodyBytes ?? Math.ceil((options.bus.maxTaskBytes * 4) / 3) + 1024 * 1024;
  const sessions = new Map<string, { transport: NodeStreamableHTTPServerTransport; caller?: string }>();
  // 2025-11-25 sessions: the same v2 server, in that era, one per session.
  const states = requestStates(options.bus);
  // 2026-07-28 requests: stateless, answered by the SDK v2 handler.
  const modern = modernHandler(options.bus, bodyLimit);
  const serveModern = toNodeHandler(modern, { maxRequestBodySize: bodyLimit });
  // Agents coming, going or changing change the tool list: 2026-07-28 clients listening (`subscriptions/listen`) are told.
  const offs = edge.auth.buses().map((b) =>
    b.onAgent(() => {
      modern.notify.toolsChanged();
      modern.notify.resourcesChanged();
    }),
  );
  app.addHook("onClose", async () => {
    for (const off of offs) off();
    await Promise.all([...sessions.values()].map((s) => s.transport.close()));
    await modern.close();
  });

  const unauthorized = (reply: FastifyReply) =>
    reply.code(401).header("WWW-Authenticate", "Bearer").send({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "this MCP session belongs to another caller" } });

  const handle = async (req: FastifyRequest, reply: FastifyReply) => {
    const caller = callerOf(req);
    // A request of the 2026-07-28 revision (its `_meta` envelope says so) is stateless: the v2 handler answers it, acting as the caller.
    // Classified by the SDK from the parsed body and the headers, without building a web Request for it (the v2 handler builds its own).
    const header = (name: string) => (typeof req.headers[name] === "string" ? (req.headers[name] as string) : undefined);
    const route = classifyInboundRequest({ httpMethod: req.method, protocolVersionHeader: header("mcp-protocol-version"), mcpMethodHeader: header("mcp-method"), mcpNameHeader: header("mcp-name"), body: req.body });
    if (route.kind !== "legacy") {
      (req.raw as { auth?: unknown }).auth = authInfoOf(caller);
      reply.hijack();
      await serveModern(req.raw, reply.raw, req.body);
      return;
    }
    const id = req.headers["mcp-session-id"];
    let session = typeof id === "string" ? sessions.get(id) : undefined;
    // A session belongs to the caller that opened it.
    if (session && session.caller !== caller.name) return unauthorized(reply);
    if (!session) {
      // A session id this server does not know (ended, expired, another replica's before a restart): 404, so the client starts a new session, as MCP requires.
      // The request's id when it has one (JSON-RPC: null only when it cannot be read).
      const requestId = (req.body as { id?: unknown } | undefined)?.id;
      const rid = typeof requestId === "string" || typeof requestId === "number" ? requestId : null;
      if (typeof id === "string") {
        return reply.code(404).send({ jsonrpc: "2.0", id: rid, error: { code: -32001, message: "MCP session not found: initialize a new one" } });
      }
      if (req.method !== "POST" || !isInitializeRequest(req.body)) {
        return reply.code(400).send({ jsonrpc: "2.0", id: rid, error: { code: -32000, message: "no MCP session: initialize first" } });
      }
      const transport: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
        sessionIdGenerator: () => randomUUID(),
        onsessioninitialized: (sid) => void sessions.set(sid, { transport, caller: caller.name }),
      });
      transport.onclose = () => {
        if (transport.sessionId) sessions.delete(transport.sessionId);
      };
      await mcpServer(caller, states, "legacy").connect(transport);
      session = { transport, caller: caller.name };
    }
    reply.hijack();
    await session.transport.handleRequest(req.raw, reply.raw, req.body);
  };
  const route = { bodyLimit, config: { edge: { errors: "jsonrpc" as const, challenge: "Bearer" as const } } };
  app.post("/mcp", route, handle);
  app.get("/mcp", route, handle);
  app.delete("/mcp", route, handle);
}
