import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { RequestHandlerExtra } from "@modelcontextprotocol/sdk/shared/protocol.js";
import { CallToolRequestSchema, ElicitResultSchema, ErrorCode, ListToolsRequestSchema, McpError, type CallToolResult, type ServerNotification, type ServerRequest, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { isAgentBusError, isFinal, SpanAttr, SpanKind, textOf, traced, traceFromHeaders, validatorFor, type AgentInfo, type Bus, type JsonSchema, type Logger, type Message, type Part, type Task, type TaskHandle, type TraceContext } from "../../core/internal.js";

/** The input schema of a capability that declares none: one text argument. */
export const DEFAULT_INPUT_SCHEMA = { type: "object", properties: { text: { type: "string", description: "the request, in words" } }, required: ["text"] } as const;

const PAGE_SIZE = 100;

/**
 * One tool per capability of the tenant. The tool name is the capability id
 * (MCP allows `[A-Za-z0-9_.-]`): several agents offering the same capability
 * are one tool, served by whichever replica the bus's queue group picks; the
 * first registered agent's description and schema describe it.
 */
export function toolsOf(bus: Bus): Tool[] {
  const tools = new Map<string, Tool>();
  const agents = bus.discover({ online: true }).sort((a: AgentInfo, b: AgentInfo) => a.id.localeCompare(b.id));
  for (const agent of agents) {
    for (const skill of agent.card.skills) {
      if (tools.has(skill.id)) continue;
      const schemas = agent.schemas[skill.id];
      tools.set(skill.id, {
        name: skill.id,
        title: skill.name,
        description: skill.description,
        inputSchema: (schemas?.input ?? DEFAULT_INPUT_SCHEMA) as Tool["inputSchema"],
        ...(schemas?.output && { outputSchema: schemas.output as Tool["outputSchema"] }),
      });
    }
  }
  return [...tools.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Tools of the bridge itself: an MCP client as an agent with an inbox. */
function inboxTools(bus: Bus): Tool[] {
  return [
    {
      name: "mesh__get_messages",
      description: `Take pending direct messages sent to this client's bus identity ${bus.id} (oldest first). Each has from, contextId, sequence and text/data.`,
      inputSchema: { type: "object", properties: { max: { type: "integer", minimum: 1, maximum: 100, description: "at most this many (default 10)" } } },
    },
    {
      name: "mesh__reply_message",
      description: "Answer a message: send text to an agent's inbox (its `from`), in the same context.",
      inputSchema: {
        type: "object",
        required: ["to", "text"],
        properties: { to: { type: "string", description: "the recipient's agent id (a message's `from`)" }, text: { type: "string" }, contextId: { type: "string" } },
      },
    },
  ];
}

async function callInboxTool(bus: Bus, name: string, args: Record<string, unknown>, trace: TraceContext | undefined): Promise<CallToolResult> {
  if (name === "mesh__get_messages") {
    const messages = await bus.receive({ max: typeof args.max === "number" ? args.max : 10, waitMs: 1000 });
    const shown = messages.map((m) => ({ sequence: m.sequence, from: m.from, contextId: m.message.contextId ?? m.envelope.context, text: textOf(m.message), data: m.message.parts.find((p) => "data" in p)?.data }));
    return { content: [{ type: "text", text: JSON.stringify(shown) }], structuredContent: { messages: shown } };
  }
  const receipt = await bus.send(String(args.to), String(args.text), { context: typeof args.contextId === "string" ? args.contextId : undefined, trace });
  return { content: [{ type: "text", text: `sent (sequence ${receipt.sequence})` }] };
}

type ContentBlock = CallToolResult["content"][number];

/**
 * One part of a task's artifact as MCP content, the inverse of what the MCP
 * gateway adapter maps (it keeps `metadata.mcpType` and `metadata.uri`):
 * text → text (an embedded text resource when it was one); `raw` with an
 * image or audio media type → image or audio; other `raw` → an embedded
 * blob resource; `url` → a resource link; `data` → its JSON as text (and
 * the result's `structuredContent`). A resource without a URI of its own
 * gets `agentbus://tasks/<task>/artifacts/<artifact>/<part>`.
 */
function contentOf(part: Part, uri: string): ContentBlock {
  const meta = part.metadata ?? {};
  const own = typeof meta.uri === "string" ? meta.uri : uri;
  const mimeType = part.mediaType;
  if (part.text !== undefined) {
    if (meta.mcpType === "resource") return { type: "resource", resource: { uri: own, text: part.text, ...(mimeType && { mimeType }) } };
    return { type: "text", text: part.text };
  }
  if (part.raw !== undefined) {
    const kind = meta.mcpType === "resource" ? undefined : mimeType?.startsWith("image/") ? "image" : mimeType?.startsWith("audio/") ? "audio" : undefined;
    if (kind && mimeType) return { type: kind, data: part.raw, mimeType };
    return { type: "resource", resource: { uri: own, blob: part.raw, mimeType: mimeType ?? "application/octet-stream" } };
  }
  if (part.url !== undefined) {
    const name = part.filename ?? (new URL(part.url, "agentbus://x/").pathname.split("/").filter(Boolean).at(-1) || part.url);
    return { type: "resource_link", uri: part.url, name, ...(mimeType && { mimeType }), ...(typeof meta.description === "string" && { description: meta.description }) };
  }
  return { type: "text", text: JSON.stringify(part.data ?? null) };
}

/** The tool result of a finished task: its artifacts' parts as MCP content, a data object as structured content; failures flagged. */
function resultOf(task: Task): CallToolResult {
  const content = task.artifacts.flatMap((a) => a.parts.map((p, i) => contentOf(p, `agentbus://tasks/${task.id}/artifacts/${encodeURIComponent(a.artifactId)}/${i}`)));
  const parts = task.artifacts.flatMap((a) => a.parts);
  const data = parts.find((p) => "data" in p)?.data;
  const state = task.status.state;
  if (state === "TASK_STATE_COMPLETED") {
    return { content, ...(data !== null && typeof data === "object" && !Array.isArray(data) && { structuredContent: data as Record<string, unknown> }) };
  }
  const why = task.status.message ? textOf(task.status.message) : "";
  return { content: [{ type: "text", text: `${state.replace("TASK_STATE_", "")}: ${why}` }, ...content], isError: state !== "TASK_STATE_INPUT_REQUIRED" };
}

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/**
 * What the client answers a task that waits for input, through an
 * elicitation request on the call (`elicitation/create`, form mode): the
 * task's question as the message, and as the requested schema the object
 * schema of a data part of its status message when it has one (the answer
 * is then that data), else one string field `answer` (the answer is its
 * text). A client without the elicitation capability, or one that declines
 * or cancels, is a refusal.
 */
async function askClient(server: Server, task: Task, extra: Extra): Promise<{ answer: string | Record<string, unknown> } | { refused: string }> {
  if (!server.getClientCapabilities()?.elicitation) return { refused: "the task needs more input and this client cannot be asked (it has no elicitation capability)" };
  const status = task.status.message;
  const question = (status && textOf(status)) || "The task needs more input.";
  const declared = status?.parts.find((p) => isObjectSchema(p.data))?.data as Record<string, unknown> | undefined;
  const requestedSchema = declared ?? { type: "object", properties: { answer: { type: "string", title: "Answer", description: question } }, required: ["answer"] };
  const result = await extra.sendRequest({ method: "elicitation/create", params: { mode: "form", message: question, requestedSchema } } as ServerRequest, ElicitResultSchema, { signal: extra.signal });
  if (result.action !== "accept") return { refused: `the user chose to ${result.action}` };
  const content = (result.content ?? {}) as Record<string, unknown>;
  return { answer: declared ? content : String(content.answer ?? "") };
}

/** A flat object schema, as MCP elicitation takes (`{type: "object", properties}`). */
const isObjectSchema = (v: unknown): boolean => typeof v === "object" && v !== null && (v as { type?: unknown }).type === "object" && typeof (v as { properties?: unknown }).properties === "object";

/**
 * Sends one progress notification per status update (its text) and artifact
 * chunk until the task's event log reaches a final or interrupted state.
 * Sent one at a time, in event order; a notification the client no longer
 * takes (it went away) ends the relay, not the call.
 */
async function relayProgress(handle: TaskHandle, progressToken: string | number, extra: Extra, log: Logger): Promise<void> {
  let progress = 0;
  try {
    for await (const { event } of handle.events()) {
      if (extra.signal.aborted) return;
      // The final state is the result itself.
      if ("statusUpdate" in event && isFinal(event.statusUpdate.status.state)) break;
      const message = "statusUpdate" in event ? event.statusUpdate.status.message : "artifactUpdate" in event ? { parts: event.artifactUpdate.artifact.parts } : event.message;
      const text = message ? textOf(message as Message) : "";
      const state = "statusUpdate" in event ? event.statusUpdate.status.state.replace("TASK_STATE_", "").toLowerCase() : undefined;
      await extra.sendNotification({ method: "notifications/progress", params: { progressToken, progress: ++progress, message: text || state || "working" } });
    }
    // The SDK client handles notifications a microtask after the read that
    // brought them but responses at once: a notification that arrives in the
    // same read as the response finds its token gone. A short pause puts the
    // response in a later read (unless the client is too busy to read).
    if (progress > 0) await new Promise((resolve) => setTimeout(resolve, 20));
  } catch (err) {
    // The client left or the log is unreadable: the result still answers the call.
    log.warn({ err: (err as Error).message, task: handle.id }, "progress relay stopped");
  }
}

/**
 * An MCP server whose tools are the bus's capabilities. `tools/call` is a
 * durable bus task: an MCP cancellation cancels the task, its artifacts
 * become the result, a turn that needs input is asked of the client
 * (elicitation) and its answer continues the task, and, when the client
 * sent a progress token, each status update and artifact chunk is a
 * progress notification; bus errors become
 * `isError` results with the code, protocol misuse becomes JSON-RPC errors. Tells clients when
 * agents come and go (`notifications/tools/list_changed`).
 *
 * `options.caller` names who the session acts for behind the bus identity
 * (the API key's name, `oidc:<sub>`): its tasks are submitted with it, so
 * the other bridges show them to that caller only, and the session follows
 * and cancels only those (anything else is `TASK_NOT_FOUND`, an `isError`
 * result).
 */
export function createMcpServer(bus: Bus, info = { name: "agentbus", version: "0.1.0" }, options: { caller?: string } = {}): Server {
  const server = new Server(info, { capabilities: { tools: { listChanged: true } } });

  server.setRequestHandler(ListToolsRequestSchema, async (req) => {
    const all = [...inboxTools(bus), ...toolsOf(bus)];
    const offset = req.params?.cursor ? Number.parseInt(Buffer.from(req.params.cursor, "base64url").toString(), 10) : 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new McpError(ErrorCode.InvalidParams, "invalid cursor");
    const next = offset + PAGE_SIZE < all.length ? Buffer.from(String(offset + PAGE_SIZE)).toString("base64url") : undefined;
    return { tools: all.slice(offset, offset + PAGE_SIZE), ...(next && { nextCursor: next }) };
  });

  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    // The caller's trace: `_meta.traceparent` (MCP's convention, any transport), else the HTTP request's header.
    const incoming = traceFromHeaders(req.params._meta) ?? traceFromHeaders(extra.requestInfo?.headers);
    const own = inboxTools(bus).find((t) => t.name === req.params.name);
    if (own) {
      const args = req.params.arguments ?? {};
      try {
        validatorFor(own.inputSchema as JsonSchema)(args);
      } catch (err) {
        throw new McpError(ErrorCode.InvalidParams, (err as Error).message);
      }
      try {
        return await callInboxTool(bus, own.name, args, incoming);
      } catch (err) {
        return { content: [{ type: "text", text: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) }], isError: true };
      }
    }
    const tool = toolsOf(bus).find((t) => t.name === req.params.name);
    if (!tool) throw new McpError(ErrorCode.InvalidParams, `unknown tool ${req.params.name}`);
    const args = req.params.arguments ?? {};
    try {
      validatorFor(tool.inputSchema as JsonSchema)(args);
    } catch (err) {
      throw new McpError(ErrorCode.InvalidParams, (err as Error).message);
    }
    // A capability without a schema takes text; one with a schema takes the arguments as data.
    const input = (tool.inputSchema as unknown) === DEFAULT_INPUT_SCHEMA ? String(args.text) : args;
    const op = traced("MCP tools/call", SpanKind.SERVER, incoming, {
      "mcp.method.name": "tools/call",
      "gen_ai.tool.name": tool.name,
      [SpanAttr.capability]: tool.name,
      [SpanAttr.tenant]: bus.subjects.tenant,
    });
    let handle;
    try {
      handle = await bus.submit(tool.name, input, { trace: op.trace, caller: options.caller });
    } catch (err) {
      op.end(err);
      return { content: [{ type: "text", text: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) }], isError: true };
    }
    op.span?.setAttribute(SpanAttr.task, handle.id);
    const onAbort = () => void handle.cancel({ trace: op.trace }).catch(() => {});
    extra.signal.addEventListener("abort", onAbort, { once: true });
    const token = req.params._meta?.progressToken;
    const progress = token === undefined ? Promise.resolve() : relayProgress(handle, token, extra, bus.log);
    try {
      let task = await handle.result({ signal: extra.signal });
      // A task waiting for input asks the client (elicitation); the answer continues the same task.
      while (task.status.state === "TASK_STATE_INPUT_REQUIRED") {
        const asked = await askClient(server, task, extra);
        if ("refused" in asked) {
          await handle.cancel({ trace: op.trace }).catch(() => {});
          await progress;
          op.end();
          return { content: [{ type: "text", text: `INPUT_REQUIRED: ${asked.refused}; the task was cancelled` }], isError: true };
        }
        const next = await bus.submit(tool.name, asked.answer, { taskId: handle.id, trace: op.trace, caller: options.caller });
        task = await next.result({ signal: extra.signal });
      }
      // Progress must reach the client before the result: after the result the token is unknown to it.
      await progress;
      op.span?.setAttribute(SpanAttr.taskState, task.status.state);
      op.end();
      return resultOf(task);
    } catch (err) {
      op.end(err);
      return { content: [{ type: "text", text: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) }], isError: true };
    } finally {
      extra.signal.removeEventListener("abort", onAbort);
    }
  });

  // Agents coming, going or changing change the tool list (until this session closes).
  const off = bus.onAgent(() => void server.sendToolListChanged().catch(() => {}));
  server.onclose = off;
  return server;
}
