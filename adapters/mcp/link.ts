import { AsyncLocalStorage } from "node:async_hooks";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport, StreamableHTTPError } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ToolListChangedNotificationSchema, type CallToolResult, type Progress, type Tool } from "@modelcontextprotocol/sdk/types.js";
import type { FetchLike } from "@modelcontextprotocol/sdk/shared/transport.js";
import { AgentBusError, traceHeaders, type Logger, type TraceContext } from "../../core/internal.js";
import { isStdio, type McpRestartOptions, type McpServerConfig } from "./config.js";
import { countsAgainstServer, describe, failureKind } from "./failures.js";

/** What a {@link ServerLink} tells the gateway. */
export interface LinkEvents {
  /** The tool list as last read: after each (re)connect and each `notifications/tools/list_changed`. */
  tools(tools: Tool[]): void;
  /** A (re)connect succeeded: the server is evidently up. */
  up(): void;
}

/** The trace of the tool call under way (see {@link withCallTrace}). */
const callTrace = new AsyncLocalStorage<TraceContext>();

/**
 * Runs `fn` with `trace` as the trace of the tool calls it makes through a
 * {@link ServerLink}: each carries it as `_meta.traceparent` /
 * `_meta.tracestate` (MCP's convention, any transport) and, over Streamable
 * HTTP, as the `traceparent` / `tracestate` headers of its request.
 */
export function withCallTrace<T>(trace: TraceContext, fn: () => T): T {
  return callTrace.run(trace, fn);
}

/** fetch for the Streamable HTTP transport: a tool call's request gets its trace headers. */
const tracedFetch: FetchLike = (url, init) => {
  const trace = callTrace.getStore();
  if (!trace) return fetch(url, init);
  const headers = new Headers(init?.headers);
  for (const [name, value] of Object.entries(traceHeaders(trace))) if (value) headers.set(name, value);
  return fetch(url, { ...init, headers });
};

/** A connection that lasted this long was healthy: the next restart starts from the shortest delay again. */
const STABLE_MS = 30_000;
/** Tool list notifications often come in bursts (a server registering several tools). */
const REFRESH_DEBOUNCE_MS = 50;

/**
 * The gateway's connection to one MCP server. Connects lazily (a call on a
 * link that is down connects first) and reconnects in the background with
 * backoff where waiting for a call would not do: a stdio server that
 * crashed is restarted (its process is the gateway's to run), and a server
 * that was down at start is retried until its tools can be registered. An
 * HTTP server that stops answering is not polled: the circuit breaker's
 * probe call reconnects it.
 */
export class ServerLink {
  readonly name: string;
  readonly config: McpServerConfig;
  readonly timeoutMs: number;
  /** The last tool list read (kept while the server is down: its capabilities stay registered). */
  tools: Tool[] = [];
  readonly #events: LinkEvents;
  readonly #log: Logger;
  readonly #restart: Required<McpRestartOptions>;
  #client?: Client;
  #transport?: StdioClientTransport | StreamableHTTPClientTransport;
  #connecting?: Promise<Client>;
  #connectedAt = 0;
  #attempt = 0;
  #retry?: NodeJS.Timeout;
  #refresh?: NodeJS.Timeout;
  #closed = false;

  constructor(name: string, config: McpServerConfig, events: LinkEvents, log: Logger, restart: McpRestartOptions = {}) {
    this.name = name;
    this.config = config;
    this.timeoutMs = config.timeoutMs ?? 30_000;
    this.#events = events;
    this.#log = log.child({ mcpServer: name });
    this.#restart = { minDelayMs: restart.minDelayMs ?? 250, maxDelayMs: restart.maxDelayMs ?? 30_000 };
  }

  get kind(): "stdio" | "http" {
    return isStdio(this.config) ? "stdio" : "http";
  }

  get connected(): boolean {
    return this.#client !== undefined;
  }

  /** The stdio server's process id while it runs. */
  get pid(): number | undefined {
    return this.#client && this.#transport instanceof StdioClientTransport ? (this.#transport.pid ?? undefined) : undefined;
  }

  /** First connection; a failure is logged and retried in the background, not thrown (other servers can still be served). */
  async start(): Promise<void> {
    await this.#ensure().catch((err) => {
      this.#log.warn({ err: describe(err) }, "MCP server unavailable at start; retrying in the background");
      this.#scheduleReconnect();
    });
  }

  /**
   * Calls a tool, connecting first if needed. A server whose session
   * expired (HTTP 404) gets a new session and the call one retry. Progress
   * the server reports goes to `onProgress` and restarts the timeout: a long
   * operation that says how it is doing is not cut off.
   */
  async call(tool: string, args: Record<string, unknown>, signal: AbortSignal, onProgress?: (p: Progress) => void): Promise<CallToolResult> {
    // The SDK never removes the abort listener it adds, and a fast call's signal lives as long as the
    // agent: give it a signal of its own per call, linked to the caller's for as long as the call runs.
    const own = new AbortController();
    const abort = () => own.abort(signal.reason);
    if (signal.aborted) abort();
    signal.addEventListener("abort", abort, { once: true });
    try {
      return await this.#call(tool, args, own.signal, onProgress);
    } finally {
      signal.removeEventListener("abort", abort);
    }
  }

  async #call(tool: string, args: Record<string, unknown>, signal: AbortSignal, onProgress?: (p: Progress) => void): Promise<CallToolResult> {
    const trace = callTrace.getStore();
    for (let attempt = 0; ; attempt++) {
      // Connecting is not part of the call: its requests (and the session's event stream) carry no trace.
      const client = await callTrace.exit(() => this.#ensure());
      try {
        return (await client.callTool({ name: tool, arguments: args, ...(trace && { _meta: traceHeaders(trace) }) }, undefined, { timeout: this.timeoutMs, signal, ...(onProgress && { onprogress: onProgress, resetTimeoutOnProgress: true }) })) as CallToolResult;
      } catch (err) {
        if (signal.aborted) throw new AgentBusError("CANCELLED", `call of ${tool} canceled`, { cause: err });
        // A timeout says the server is slow, not that its connection is gone.
        if (countsAgainstServer(err) && failureKind(err) !== "timeout") this.#lost(client, err);
        if (attempt === 0 && err instanceof StreamableHTTPError && err.code === 404) continue;
        throw err;
      }
    }
  }

  /** Stops reconnecting and closes the connection (a stdio server is terminated). */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#retry);
    clearTimeout(this.#refresh);
    const client = this.#client;
    this.#client = undefined;
    // A connect under way sees `#closed` and closes its own client.
    await this.#connecting?.catch(() => {});
    // An HTTP server keeps a session until told (or until it expires it): end ours, without waiting long for a server that is gone.
    if (client && this.#transport instanceof StreamableHTTPClientTransport) {
      await Promise.race([this.#transport.terminateSession().catch(() => {}), new Promise((r) => setTimeout(r, 1000).unref())]);
    }
    await client?.close().catch(() => {});
  }

  #ensure(): Promise<Client> {
    if (this.#closed) return Promise.reject(new AgentBusError("CLOSED", `the gateway's link to MCP server ${this.name} is closed`));
    if (this.#client) return Promise.resolve(this.#client);
    this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined));
    return this.#connecting;
  }

  async #connect(): Promise<Client> {
    const transport = this.#newTransport();
    const client = new Client({ name: "agentbus-mcp-gateway", version: "0.1.0" }, { capabilities: {} });
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.#scheduleRefresh(client));
    client.onclose = () => this.#lost(client, new Error("connection closed"));
    client.onerror = (err) => this.#log.debug({ err: describe(err) }, "MCP transport error");
    try {
      await client.connect(transport, { timeout: this.timeoutMs });
      const tools = await this.#listAll(client);
      if (this.#closed) throw new AgentBusError("CLOSED", "closed while connecting");
      this.#client = client;
      this.#transport = transport;
      this.#connectedAt = Date.now();
      this.tools = tools;
      this.#log.info({ transport: this.kind, pid: this.pid, tools: tools.length }, "MCP server connected");
      this.#events.up();
      this.#events.tools(tools);
      return client;
    } catch (err) {
      await client.close().catch(() => {});
      throw err;
    }
  }

  #newTransport(): StdioClientTransport | StreamableHTTPClientTransport {
    const c = this.config;
    if (isStdio(c)) {
      const transport = new StdioClientTransport({ command: c.command, args: c.args, env: c.env, cwd: c.cwd, stderr: "pipe" });
      // Piped (not inherited) so a chatty server cannot garble the gateway's own output; read so it cannot block on a full pipe.
      transport.stderr?.on("data", (d: Buffer) => this.#log.debug({ stderr: String(d).slice(0, 2000) }, "MCP server stderr"));
      return transport;
    }
    return new StreamableHTTPClientTransport(new URL(c.url), { requestInit: { headers: c.headers }, fetch: tracedFetch });
  }

  async #listAll(client: Client): Promise<Tool[]> {
    const tools: Tool[] = [];
    let cursor: string | undefined;
    do {
      const page = await client.listTools(cursor ? { cursor } : undefined, { timeout: this.timeoutMs });
      tools.push(...page.tools);
      cursor = page.nextCursor;
    } while (cursor);
    return tools;
  }

  /** The connection is gone (process exited, transport failed): drop it; restart a stdio server. */
  #lost(client: Client, err: unknown): void {
    if (this.#client !== client) return;
    this.#client = undefined;
    void client.close().catch(() => {});
    if (this.#closed) return;
    this.#log.warn({ err: describe(err), transport: this.kind }, "MCP server connection lost");
    if (Date.now() - this.#connectedAt > STABLE_MS) this.#attempt = 0;
    if (this.kind === "stdio") this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retry) return;
    const delay = Math.min(this.#restart.maxDelayMs, this.#restart.minDelayMs * 2 ** this.#attempt++);
    this.#retry = setTimeout(() => {
      this.#retry = undefined;
      this.#ensure().then(
        () => this.#log.info({ attempt: this.#attempt }, "MCP server reconnected"),
        (err) => {
          this.#log.warn({ err: describe(err), attempt: this.#attempt }, "MCP server reconnect failed");
          this.#scheduleReconnect();
        },
      );
    }, delay);
    this.#retry.unref();
  }

  #scheduleRefresh(client: Client): void {
    clearTimeout(this.#refresh);
    this.#refresh = setTimeout(async () => {
      // A server may announce tools while the handshake that will list them is still under way.
      await this.#connecting?.catch(() => {});
      if (this.#client !== client) return; // gone: a reconnect lists the tools anyway
      try {
        const tools = await this.#listAll(client);
        if (this.#client !== client) return;
        this.tools = tools;
        this.#log.info({ tools: tools.length }, "MCP server tool list changed");
        this.#events.tools(tools);
      } catch (err) {
        this.#log.warn({ err: describe(err) }, "re-listing tools failed");
      }
    }, REFRESH_DEBOUNCE_MS);
    this.#refresh.unref();
  }
}