/**
 * Reference MCP server for bench/mcp: the official SDK's `McpServer` with one
 * tool `echo {text}` that returns the text, and no agentbus code. One
 * process, either transport:
 *
 *   node --import tsx bench/mcp/sdk-server.ts http    # StreamableHTTPServerTransport on node:http
 *   node --import tsx bench/mcp/sdk-server.ts stdio   # StdioServerTransport (spawned by the MCP client)
 *
 * http: stateful, one `McpServer` + transport per session (`Mcp-Session-Id`),
 * the SDK's defaults otherwise (POST answered as an SSE stream), endpoint
 * `<base>/mcp`, as `mcpHttp` serves it; writes `READY <base-url>` on stdout
 * once listening. stdio: stdout is the MCP stream, nothing else is written
 * to it. Both exit on stdin close or SIGTERM.
 */
import { randomUUID } from "node:crypto";
import { createServer } from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";
import { exitWithParent } from "../lib.js";

/** A server with the echo tool: the same input schema as the bridge's default (`{text: string}`, required). */
function echoServer(): McpServer {
  const server = new McpServer({ name: "sdk-echo", version: "1.0.0" });
  server.registerTool("echo", { description: "echoes its input", inputSchema: { text: z.string().describe("the request, in words") } }, async ({ text }) => ({
    content: [{ type: "text", text }],
  }));
  return server;
}

const mode = process.argv[2] ?? "http";

if (mode === "stdio") {
  const server = echoServer();
  await server.connect(new StdioServerTransport());
  exitWithParent(() => server.close());
} else if (mode === "http") {
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const http = createServer((req, res) => {
    void (async () => {
      if (req.url !== "/mcp") {
        res.writeHead(404).end();
        return;
      }
      const id = req.headers["mcp-session-id"];
      let transport = typeof id === "string" ? sessions.get(id) : undefined;
      if (!transport) {
        if (req.method !== "POST" || id !== undefined) {
          res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ jsonrpc: "2.0", id: null, error: { code: -32000, message: "no valid MCP session: initialize first" } }));
          return;
        }
        // A POST without a session id: the transport accepts only an initialize request.
        const t: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (sid) => void sessions.set(sid, t),
        });
        t.onclose = () => {
          if (t.sessionId) sessions.delete(t.sessionId);
        };
        await echoServer().connect(t);
        transport = t;
      }
      await transport.handleRequest(req, res);
    })().catch((err: unknown) => {
      process.stderr.write(`sdk-server: ${(err as Error)?.stack ?? String(err)}\n`);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  http.listen(0, "127.0.0.1");
  await new Promise((r) => http.once("listening", r));
  process.stdout.write(`READY http://127.0.0.1:${(http.address() as { port: number }).port}\n`);
  exitWithParent(async () => {
    await Promise.all([...sessions.values()].map((t) => t.close().catch(() => {})));
    http.closeAllConnections();
    await new Promise<void>((r) => http.close(() => r()));
  });
} else {
  process.stderr.write("usage: sdk-server.ts http|stdio\n");
  process.exit(2);
}
