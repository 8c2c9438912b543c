import { AsyncLocalStorage } from "node:async_hooks";
import { Client, SdkHttpError, StreamableHTTPClientTransport, type CallToolResult, type FetchLike, type Progress, type Tool } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
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
 * Longest wait for a stdio server's answer to the `server/discover` probe
 * (on a sibling process the SDK spawns for it) before taking it for a
 * 2025-era server that ignores requests before `initialize`: such a server
 * would otherwise hold up every (re)start for the whole request timeout.
 */
const STDIO_PROBE_MS = 10_000;

/**
 * The gateway's connection to one MCP server, in whichever revision it
 * speaks: the client negotiates (`server/discover` first; a server that
 * does not answer it as a 2026-07-28 server gets the 2025-11-25
 * `initialize` handshake), so a modern-only server is joined statelessly
 * (the per-request `_meta` envelope, tool list changes heard on a
 * `subscriptions/listen` stream) and a 2025-era one with its session as
 * before. Connects lazily (a call on a
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
  #protocolVersion?: string;
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

  /** The protocol revision negotiated on the current connection, or on the last one while the server is down; undefined before the first. */
  get protocolVersion(): string | undefined {
    return this.#protocolVersion;
  }

  /** First connection; a failure is logged and retried in the background, not thrown (other servers can still be served). */
  async start(): Promise<void> {
    await this.#ensure().catch((err) => {
      this.#log.warn({ err: describe(err) }, "MCP server unavailable at start; retrying in the background");
      this.#scheduleReconnect();
    });
  }

  /**
   * Calls a tool, connecting first if needed. A 2025-era server whose
   * session expired (HTTP 404) gets a new session and the call one retry. Progress
   * the server reports goes to `onProgress` and restarts the timeout: a long
   * operation that says how it is doing is not cut off.
   */
  async call(tool: string, args: Record<string, unknown>, signal: AbortSignal, onProgress?: (p: Progress) => void): Promise<CallToolResult> {
    const trace = callTrace.getStore();
    for (let attempt = 0; ; attempt++) {
      // Connecting is not part of the call: its requests (and the session's event stream) carry no trace.
      const client = await callTrace.exit(() => this.#ensure());
      try {
        // On 2026-07-28 the client adds the revision's `_meta` envelope; the trace keys are ours (MCP's reserved `traceparent` / `tracestate`).
        return await client.callTool(
          { name: tool, arguments: args, ...(trace && { _meta: traceHeaders(trace) }) },
          { timeout: this.timeoutMs, signal, ...(onProgress && { onprogress: onProgress, resetTimeoutOnProgress: true }) },
        );
      } catch (err) {
        if (signal.aborted) throw new AgentBusError("CANCELLED", `call of ${tool} canceled`, { cause: err });
        // A timeout says the server is slow, not that its connection is gone.
        if (countsAgainstServer(err) && failureKind(err) !== "timeout") this.#lost(client, err);
        // A 2025-era session the server no longer knows (it restarted, or expired it): a new session, and the call once more.
        if (attempt === 0 && err instanceof SdkHttpError && err.status === 404) continue;
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
    // An HTTP server keeps a 2025-era session until told (or until it expires it): end ours, without waiting long for a server that is gone.
    if (client && this.#transport instanceof StreamableHTTPClientTransport && this.#transport.sessionId) {
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
    const client = new Client(
      { name: "agentbus-mcp-gateway", version: "0.1.0" },
      {
        capabilities: {},
        // Probe with `server/discover`: 2026-07-28 when the server offers it, else the 2025-era `initialize` handshake.
        versionNegotiation: { mode: "auto", probe: { timeoutMs: this.kind === "stdio" ? Math.min(this.timeoutMs, STDIO_PROBE_MS) : this.timeoutMs } },
        // The gateway has no user to ask: a 2026-07-28 tool that answers `input_required` fails the call (an `mcp_error`) rather than waiting.
        inputRequired: { autoFulfill: false },
      },
    );
    // Unsolicited on a 2025-era connection; on 2026-07-28 delivered on the `subscriptions/listen` stream opened below.
    client.setNotificationHandler("notifications/tools/list_changed", () => this.#scheduleRefresh(client));
    client.onclose = () => this.#lost(client, new Error("connection closed"));
    client.onerror = (err) => this.#log.debug({ err: describe(err) }, "MCP transport error");
    try {
      await client.connect(transport, { timeout: this.timeoutMs });
      const tools = await this.#listAll(client);
      if (this.#closed) throw new AgentBusError("CLOSED", "closed while connecting");
      this.#client = client;
      this.#transport = transport;
      this.#protocolVersion = client.getNegotiatedProtocolVersion();
      this.#connectedAt = Date.now();
      this.tools = tools;
      this.#log.info({ transport: this.kind, protocolVersion: this.#protocolVersion, pid: this.pid, tools: tools.length }, "MCP server connected");
      this.#events.up();
      this.#events.tools(tools);
      this.#listen(client);
      return client;
    } catch (err) {
      await client.close().catch(() => {});
      throw err;
    }
  }

  /**
   * On a 2026-07-28 connection, opens the `subscriptions/listen` stream that
   * carries the server's tool list changes (when it announces them). A
   * stream that ends while the connection is in use is opened again, and
   * the tools listed again (a change may have gone unheard meanwhile); one
   * that cannot be reopened says the server is gone: the connection is
   * dropped, and the next call (or, for stdio, the restart) connects anew.
   */
  #listen(client: Client, again = false): void {
    if (this.#client !== client || this.#closed) return;
    if (client.getProtocolEra() !== "modern" || !client.getServerCapabilities()?.tools?.listChanged) return;
    client.listen({ toolsListChanged: true }, { timeout: this.timeoutMs }).then(
      (subscription) => {
        if (this.#client !== client) return void subscription.close().catch(() => {});
        if (again) this.#scheduleRefresh(client);
        void subscription.closed.then((how) => {
          if (how === "local" || this.#client !== client || this.#closed) return;
          this.#log.debug({ how }, "MCP tool list subscription ended; listening again");
          // Not at once: a server that keeps ending the stream is not asked in a tight loop.
          setTimeout(() => this.#listen(client, true), this.#restart.minDelayMs).unref();
        });
      },
      (err) => {
        if (this.#client !== client || this.#closed) return;
        if (again) this.#lost(client, err);
        // At connect, a server that announces list changes but will not stream them: its tools are still served, only changes go unheard until a reconnect.
        else this.#log.warn({ err: describe(err) }, "MCP server refused to stream tool list changes");
      },
    );
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

  /** Every page of the server's tool list, read afresh (not from the client's response cache, whatever lifetime the server allowed). */
  async #listAll(client: Client): Promise<Tool[]> {
    return (await client.listTools(undefined, { timeout: this.timeoutMs, cacheMode: "refresh" })).tools;
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