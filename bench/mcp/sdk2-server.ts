/**
 * Reference MCP server for bench/mcp/revisions.ts: the official SDK v2
 * (`@modelcontextprotocol/server` + `@modelcontextprotocol/node`) with one
 * tool `echo {text}` that returns the text, and no agentbus code. Both MCP
 * revisions on one Streamable HTTP endpoint `<base>/mcp` on node:http, as the
 * bridge's `mcpHttp` serves them:
 *
 *   node --import tsx bench/mcp/sdk2-server.ts [sessionful|stateless]
 *
 * - `sessionful` (default; the bridge's layout): the SDK's documented
 *   composition for keeping a sessionful 2025 endpoint next to a strict
 *   modern one. Each POST body is read and parsed once, classified with
 *   `isLegacyRequest(toWebRequest(req, body), body)` (what `mcpHttp` does);
 *   2026-07-28 requests go to `createMcpHandler(factory, { legacy: "reject" })`
 *   through `toNodeHandler` (a fresh server per request, stateless);
 *   2025-11-25 requests to one `McpServer` + `NodeStreamableHTTPServerTransport`
 *   per session (`Mcp-Session-Id`, POST answered as an SSE stream: the SDK's
 *   defaults, as the bridge's v1 transport).
 * - `stateless`: the whole endpoint is `toNodeHandler(createMcpHandler(factory))`
 *   with its default `legacy: "stateless"`: 2025-11-25 requests are answered
 *   by a fresh server per request too (no session), so no user-land routing.
 *
 * Writes `READY <base-url>` on stdout once listening; exits on stdin close or
 * SIGTERM. With BENCH_A2A_PROF_DIR set, SIGUSR2 starts/stops a CPU profile
 * (bench/a2a/prof.ts).
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { McpServer, createMcpHandler, isLegacyRequest } from "@modelcontextprotocol/server";
import { NodeStreamableHTTPServerTransport, toNodeHandler, toWebRequest } from "@modelcontextprotocol/node";
import { z } from "zod";
import { exitWithParent } from "../lib.js";
import { profileOnSignal } from "../a2a/prof.js";

const mode = process.argv[2] ?? "sessionful";
if (mode !== "sessionful" && mode !== "stateless") {
  process.stderr.write("usage: sdk2-server.ts [sessionful|stateless]\n");
  process.exit(2);
}
profileOnSignal("sdk");

/** A server with the echo tool: the same input schema as the bridge's default (`{text: string}`, required). */
function echoServer(): McpServer {
  const server = new McpServer({ name: "sdk2-echo", version: "1.0.0" });
  server.registerTool("echo", { description: "echoes its input", inputSchema: z.object({ text: z.string().describe("the request, in words") }) }, async ({ text }) => ({
    content: [{ type: "text", text }],
  }));
  return server;
}

const onerror = (err: Error): void => void process.stderr.write(`sdk2-server: ${err.stack ?? err.message}\n`);
const handler = createMcpHandler(() => echoServer(), { legacy: mode === "stateless" ? "stateless" : "reject", onerror });
const serveHandler = toNodeHandler(handler, { onerror });
const sessions = new Map<string, NodeStreamableHTTPServerTransport>();

/** The request body parsed as JSON (undefined when empty or not JSON), as a body parser in front of the SDK would. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  if (chunks.length === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return undefined;
  }
}

const jsonError = (res: ServerResponse, status: number, message: string, id: unknown = null): void =>
  void res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id, error: { code: -32000, message } }));

/** `sessionful`: route by revision, 2025 requests to their session's transport. */
async function routed(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const body = req.method === "POST" ? await readJson(req) : undefined;
  if (!(await isLegacyRequest(await toWebRequest(req, body), body))) {
    await serveHandler(req, res, body);
    return;
  }
  const id = req.headers["mcp-session-id"];
  let transport = typeof id === "string" ? sessions.get(id) : undefined;
  if (!transport) {
    const rid = (body as { id?: unknown } | undefined)?.id ?? null;
    if (typeof id === "string") return jsonError(res, 404, "MCP session not found: initialize a new one", rid);
    if (req.method !== "POST") return jsonError(res, 400, "no MCP session: initialize first", rid);
    // A POST without a session id: the transport accepts only an initialize request.
    const t: NodeStreamableHTTPServerTransport = new NodeStreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sid) => void sessions.set(sid, t),
    });
    t.onclose = () => {
      if (t.sessionId) sessions.delete(t.sessionId);
    };
    await echoServer().connect(t);
    transport = t;
  }
  await transport.handleRequest(req, res, body);
}

const http = createServer((req, res) => {
  if (req.url !== "/mcp") {
    res.writeHead(404).end();
    return;
  }
  (mode === "stateless" ? serveHandler(req, res) : routed(req, res)).catch((err: unknown) => {
    onerror(err instanceof Error ? err : new Error(String(err)));
    if (!res.headersSent) res.writeHead(500).end();
  });
});
http.listen(0, "127.0.0.1");
await new Promise((r) => http.once("listening", r));
process.stdout.write(`READY http://127.0.0.1:${(http.address() as { port: number }).port}\n`);
exitWithParent(async () => {
  await Promise.all([...sessions.values()].map((t) => t.close().catch(() => {})));
  await handler.close().catch(() => {});
  http.closeAllConnections();
  await new Promise<void>((r) => http.close(() => r()));
});
