import {
  ProtocolError,
  ProtocolErrorCode,
  Server,
  createMcpHandler,
  createRequestStateCodec,
  inputRequired,
  LOG_LEVEL_META_KEY,
  type AuthInfo,
  type CallToolResult,
  type ListToolsResult,
  type McpHttpHandler,
  type ReadResourceResult,
  ResourceNotFoundError,
  type RequestStateCodec,
} from "@modelcontextprotocol/server";
import { traceFromHeaders, type Bus } from "../../core/internal.js";
import type { Caller } from "../http/index.js";
import { ToolRequestError, callTool, listTools, questionOf, type NeedsInput, type ToolAnswer, type ToolCallOptions } from "./tools.js";
import { RESOURCE_TEMPLATES, ResourceNotFound, listResources, readResource } from "./resources.js";
import { CREATED_AT_KEY, DETACH_AFTER_MS, TASKS_EXTENSION, createTaskResult, declaresTasks, elicitationOf, serveTasks } from "./tasks.js";

/**
 * What an input-required result's `requestState` carries (signed, bound to
 * the caller): the task that waits, its tool, and the event that asked (so
 * each round's state is its own, and an old one cannot answer a new question).
 */
interface PendingInput {
  task: string;
  tool: string;
  seq?: number;
}

/** MCP's log levels, least severe first. */
const LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

/** The key of the input-required `requestState` in `inputRequests` / `inputResponses`. */
const ANSWER = "answer";

/** Server info of the bridge on every revision. */
export const SERVER_INFO = { name: "agentbus", version: "0.1.0" };

/** How long a 2026-07-28 client may cache the tool list: agents come and go, and list changes are announced. */
const TOOLS_TTL_MS = 5_000;

/** The caller a request acts as, carried to the per-request server through the SDK's pass-through auth info. */
export function authInfoOf(caller: Caller): AuthInfo {
  return { token: "", clientId: caller.name ?? "", scopes: [], extra: { caller } };
}

const invalidParams = (err: unknown): unknown => (err instanceof ToolRequestError ? new ProtocolError(ProtocolErrorCode.InvalidParams, err.message) : err);

/**
 * The bridge's MCP server (SDK v2) for `caller`: the bus's tools and
 * resources. `era` is what it serves: `modern` (2026-07-28) one request,
 * statelessly (input-required results, the tasks extension, cache hints);
 * `legacy` (2025-11-25) a connection or session (logging, elicitation on
 * the call, list-change notifications until it closes). Every state is the
 * bus's, so any replica serves any request.
 */
export function mcpServer(caller: Caller, states: RequestStateCodec<PendingInput>, era: "legacy" | "modern" = "modern"): Server {
  const { bus } = caller;
  const legacy = era === "legacy";
  const server = new Server(SERVER_INFO, {
    capabilities: {
      tools: { listChanged: true },
      resources: { listChanged: true },
      // Logging is the 2025 era's (deprecated on 2026-07-28, where a request's `_meta` asks for it); the tasks extension is 2026-07-28's.
      ...(legacy ? { logging: {} } : { extensions: { [TASKS_EXTENSION]: {} } }),
    } as never,
    // Cacheable for a few seconds, by this client only (the list depends on the caller's tenant).
    cacheHints: {
      "tools/list": { ttlMs: TOOLS_TTL_MS, cacheScope: "private" },
      "resources/list": { ttlMs: TOOLS_TTL_MS, cacheScope: "private" },
      "resources/templates/list": { ttlMs: 3_600_000, cacheScope: "public" },
      // A task's content changes as it runs: read afresh.
      "resources/read": { ttlMs: 0, cacheScope: "private" },
    },
    // An echoed requestState is checked (HMAC, expiry, the same caller) before the handler runs.
    requestState: { verify: states.verify },
  });
  // A 2025-era connection's log level (`logging/setLevel`): once set, its calls' task status updates are logged at info.
  let logLevel: string | undefined;
  if (legacy) {
    server.setRequestHandler("logging/setLevel", async (request) => {
      logLevel = request.params.level;
      return {};
    });
    // Agents coming, going or changing change the lists: a 2025-era connection is told (2026-07-28 listeners hear it through the handler's event bus).
    const off = bus.onAgent(() => {
      void server.sendToolListChanged().catch(() => {});
      void server.sendResourceListChanged().catch(() => {});
    });
    server.onclose = off;
  }
  server.setRequestHandler("tools/list", async (request) => {
    try {
      return listTools(bus, request.params?.cursor) as ListToolsResult;
    } catch (err) {
      throw invalidParams(err);
    }
  });
  server.setRequestHandler("tools/call", async (request, ctx) => {
    const params = request.params;
    // A retry of a call whose task asked for input: its (verified) state names the task, its input responses carry the answer.
    const pending = ctx.mcpReq.requestState<PendingInput>();
    if (pending && (typeof pending !== "object" || pending.tool !== params.name)) throw new ProtocolError(ProtocolErrorCode.InvalidParams, "requestState belongs to another call");
    const answer = ctx.mcpReq.inputResponses?.[ANSWER] as ToolAnswer | undefined;
    // The input-required result for a task that waits: its question, and the state that names it and this round.
    const inputRequiredFor = async ({ taskId, question, sequence }: NeedsInput["needsInput"]) =>
      inputRequired({
        inputRequests: { [ANSWER]: elicitationOf(question) },
        requestState: await states.mint({ task: taskId, tool: params.name, seq: sequence }, ctx),
      }) as never;
    // A retry with the task's state but without the answer: the same question again, for the same task (no new task).
    if (pending && !answer) {
      const waiting = await bus.taskHandle(pending.task, { caller: caller.name }).catch(() => undefined);
      const task = await waiting?.get().catch(() => undefined);
      if (waiting && task?.status.state === "TASK_STATE_INPUT_REQUIRED") return inputRequiredFor({ taskId: task.id, question: questionOf(task), sequence: await waiting.lastSequence() });
    }
    try {
      const outcome = await callTool(bus, params.name, (params.arguments ?? {}) as Record<string, unknown>, {
        caller: caller.name,
        // The caller's trace: `_meta.traceparent` (MCP's convention), else the HTTP request's header.
        trace: traceFromHeaders(params._meta as Record<string, unknown> | undefined) ?? traceFromHeaders(headersOf(ctx.http)),
        signal: ctx.mcpReq.signal,
        progressToken: params._meta?.progressToken as string | number | undefined,
        notify: (n) => ctx.mcpReq.notify(n),
        ...(legacy
          ? {
              // Logs once the connection set a level, at or above it; a task that needs input is asked on the call (elicitation), when the client can be.
              ...(logLevel && {
                log: async (level: "info" | "warning" | "error", data: Record<string, unknown>) => {
                  if (LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(logLevel!)) await ctx.mcpReq.notify({ method: "notifications/message", params: { level, logger: "agentbus", data } });
                },
              }),
              ...(server.getClientCapabilities()?.elicitation && {
                ask: ({ message, requestedSchema }: { message: string; requestedSchema: Record<string, unknown> }) => ctx.mcpReq.elicitInput({ mode: "form", message, requestedSchema: requestedSchema as never }) as Promise<ToolAnswer>,
              }),
            }
          : {
              // Only for a request that asks for logs (a log level in its `_meta`); the SDK applies the level.
              ...(params._meta?.[LOG_LEVEL_META_KEY] !== undefined && { log: (level: "info" | "warning" | "error", data: Record<string, unknown>) => ctx.mcpReq.log(level, data, "agentbus") }),
              // A task that needs input ends this request with an input-required result; the task waits for the retry.
              defer: true as const,
            }),
        ...(pending && answer && { resume: { taskId: pending.task, answer, sequence: pending.seq } }),
        // A client of the tasks extension gets the task itself when it does not end quickly, and polls it.
        ...(declaresTasks(server) && { detachAfterMs: DETACH_AFTER_MS, metadata: { [CREATED_AT_KEY]: new Date().toISOString() } }),
        // (Typed as deferring: a 2025-era call simply never gets that answer.)
      } as ToolCallOptions & { defer: true });
      if ("detached" in outcome) return createTaskResult(outcome.detached) as never;
      if (!("needsInput" in outcome)) return outcome as CallToolResult;
      if (legacy) throw new Error("a 2025-era call never defers its input");
      return inputRequiredFor(outcome.needsInput);
    } catch (err) {
      throw invalidParams(err);
    }
  });
  server.setRequestHandler("resources/list", async () => ({ resources: listResources(bus) }));
  server.setRequestHandler("resources/templates/list", async () => ({ resourceTemplates: [...RESOURCE_TEMPLATES] }));
  server.setRequestHandler("resources/read", async (request) => {
    try {
      return { contents: await readResource(bus, request.params.uri, caller.name) } as ReadResourceResult;
    } catch (err) {
      // -32602 with the URI (SEP-2164), as the SDK answers it on both revisions.
      throw err instanceof ResourceNotFound ? new ResourceNotFoundError(err.uri) : err;
    }
  });
  serveTasks(server, bus, caller.name);
  return server;
}

/** The HTTP request's headers as a record (for trace context), when the request is HTTP. */
function headersOf(http: { req?: Request } | undefined): Record<string, string> | undefined {
  const headers = http?.req?.headers;
  return headers ? Object.fromEntries(headers.entries()) : undefined;
}

/**
 * The 2026-07-28 face of `/mcp` (the SDK's `createMcpHandler`): stateless
 * requests, each answered by a fresh server for the request's caller, which
 * the route passes as auth info ({@link authInfoOf}). 2025-era requests are
 * not its: the route sends them to the sessionful server.
 */
/**
 * The codec of input-required `requestState`s: HMAC with a key only this
 * bridge identity (and its replicas) can derive (a deterministic Ed25519
 * signature is a secret of the key), bound to the method and the caller
 * (the API key's name, or none in open mode), valid an hour.
 */
export function requestStates(bus: Bus): RequestStateCodec<PendingInput> {
  const key = bus.identity.derive("mcp request state").sign(new TextEncoder().encode("agentbus mcp requestState key v1"));
  return createRequestStateCodec<PendingInput>({ key, ttlSeconds: 3_600, bind: (ctx) => `${ctx.mcpReq.method}\0${ctx.http?.authInfo?.clientId ?? ""}` });
}

export function modernHandler(bus: Bus, maxRequestBodySize: number): McpHttpHandler {
  const states = requestStates(bus);
  return createMcpHandler(
    (ctx) => {
      const caller = (ctx.authInfo?.extra as { caller?: Caller } | undefined)?.caller;
      // The route authenticates every request first: a request without its caller never gets a server.
      if (!caller) throw new Error("MCP request without an authenticated caller");
      return mcpServer(caller, states);
    },
    { legacy: "reject", maxRequestBodySize, onerror: (err) => bus.log.warn({ err: err.message }, "MCP request failed") },
  );
}
