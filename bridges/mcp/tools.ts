import { isAgentBusError, isFinal, isInterrupted, SpanAttr, SpanKind, textOf, traced, validatorFor, type AgentInfo, type Bus, type JsonSchema, type Logger, type Message, type Part, type Task, type TaskHandle, type TraceContext } from "../../core/internal.js";

/**
 * The MCP tools of a bus, independent of the SDK that serves them (the
 * 2025-11-25 sessions and the 2026-07-28 stateless requests share this):
 * the list, and a call as a durable bus task. Types here are MCP's JSON,
 * which both SDK generations read.
 */

/** An MCP tool as listed. */
export interface McpTool {
  name: string;
  title?: string;
  description?: string;
  inputSchema: JsonSchema;
  outputSchema?: JsonSchema;
}

/** An MCP content block of a tool result. */
export type McpContent =
  | { type: "text"; text: string }
  | { type: "image" | "audio"; data: string; mimeType: string }
  | { type: "resource"; resource: { uri: string; mimeType?: string } & ({ text: string } | { blob: string }) }
  | { type: "resource_link"; uri: string; name: string; mimeType?: string; description?: string };

/** An MCP tool result. */
export interface McpToolResult {
  content: McpContent[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

/** What to ask a client for a task's next turn, and how its answer becomes the task's input. */
export interface ToolQuestion {
  message: string;
  requestedSchema: Record<string, unknown>;
  answerOf(content: Record<string, unknown>): string | Record<string, unknown>;
}

/** A client's answer to a question: MCP's elicitation result. */
export interface ToolAnswer {
  action: "accept" | "decline" | "cancel";
  content?: Record<string, unknown>;
}

/** A request the tools refuse as malformed (unknown tool, invalid arguments, bad cursor): each SDK's InvalidParams. */
export class ToolRequestError extends Error {}

/** How one `tools/call` runs: for whom, its trace, its end, its progress, and how to ask for input. */
export interface ToolCallOptions {
  /** Who the call acts for behind the bus identity (see `SubmitOptions.caller`). */
  caller?: string;
  trace?: TraceContext;
  /** Aborted when the client cancels the call: the task is cancelled. */
  signal: AbortSignal;
  /** The client's progress token: status updates and artifact chunks become progress notifications. */
  progressToken?: string | number;
  notify(notification: { method: "notifications/progress"; params: { progressToken: string | number; progress: number; message: string } }): Promise<void>;
  /** Sends a log message to the client (MCP logging; the caller applies the client's level): each status update of the task, at `info`. */
  log?: (level: "info" | "warning" | "error", data: Record<string, unknown>) => Promise<void>;
  /** Asks the client for a waiting task's input; absent when this client cannot be asked (the task is then cancelled, unless `defer`). */
  ask?: (question: ToolQuestion) => Promise<ToolAnswer>;
  /**
   * A task that waits for input is not asked about here: the call ends with
   * {@link NeedsInput} and the task waits (MCP 2026-07-28's input-required
   * result; the client's retry continues it with `resume`).
   */
  defer?: boolean;
  /**
   * Continue this task, which waits for input, with the client's answer
   * instead of submitting a new one. `sequence`: the event that asked (an
   * answer to an earlier question of the task is refused).
   */
  resume?: { taskId: string; answer: ToolAnswer; sequence?: number };
  /**
   * A task still running after this long is left to run: the call ends with
   * {@link Detached} (MCP's tasks extension: the client polls it). Progress
   * stops then; a cancelled call no longer cancels it.
   */
  detachAfterMs?: number;
  /** Stored with a new task (`SubmitOptions.metadata`). */
  metadata?: Record<string, unknown>;
}

/** A call whose task runs on (with `detachAfterMs`): the task as it is now. */
export interface Detached {
  detached: Task;
}

/** A call whose task waits for input (with `defer`): the task, what to ask, and the sequence of the event that asked. */
export interface NeedsInput {
  needsInput: { taskId: string; question: ToolQuestion; sequence?: number };
}

/** The input schema of a capability that declares none: one text argument. */
export const DEFAULT_INPUT_SCHEMA = { type: "object", properties: { text: { type: "string", description: "the request, in words" } }, required: ["text"] } as const;

const PAGE_SIZE = 100;

/**
 * One tool per capability of the tenant. The tool name is the capability id
 * (MCP allows `[A-Za-z0-9_.-]`): several agents offering the same capability
 * are one tool, served by whichever replica the bus's queue group picks; the
 * first registered agent's description and schema describe it.
 */
export function toolsOf(bus: Bus): McpTool[] {
  const tools = new Map<string, McpTool>();
  const agents = bus.discover({ online: true }).sort((a: AgentInfo, b: AgentInfo) => a.id.localeCompare(b.id));
  for (const agent of agents) {
    for (const skill of agent.card.skills) {
      if (tools.has(skill.id)) continue;
      const schemas = agent.schemas[skill.id];
      tools.set(skill.id, {
        name: skill.id,
        title: skill.name,
        description: skill.description,
        inputSchema: (schemas?.input ?? DEFAULT_INPUT_SCHEMA) as JsonSchema,
        ...(schemas?.output && { outputSchema: schemas.output as JsonSchema }),
      });
    }
  }
  return [...tools.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Tools of the bridge itself: an MCP client as an agent with an inbox. */
function inboxTools(bus: Bus): McpTool[] {
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

async function callInboxTool(bus: Bus, name: string, args: Record<string, unknown>, trace: TraceContext | undefined): Promise<McpToolResult> {
  if (name === "mesh__get_messages") {
    const messages = await bus.receive({ max: typeof args.max === "number" ? args.max : 10, waitMs: 1000 });
    const shown = messages.map((m) => ({ sequence: m.sequence, from: m.from, contextId: m.message.contextId ?? m.envelope.context, text: textOf(m.message), data: m.message.parts.find((p) => "data" in p)?.data }));
    return { content: [{ type: "text", text: JSON.stringify(shown) }], structuredContent: { messages: shown } };
  }
  const receipt = await bus.send(String(args.to), String(args.text), { context: typeof args.contextId === "string" ? args.contextId : undefined, trace });
  return { content: [{ type: "text", text: `sent (sequence ${receipt.sequence})` }] };
}


/**
 * One part of a task's artifact as MCP content, the inverse of what the MCP
 * gateway adapter maps (it keeps `metadata.mcpType` and `metadata.uri`):
 * text → text (an embedded text resource when it was one); `raw` with an
 * image or audio media type → image or audio; other `raw` → an embedded
 * blob resource; `url` → a resource link; `data` → its JSON as text (and
 * the result's `structuredContent`). A resource without a URI of its own
 * gets `agentbus://tasks/<task>/artifacts/<artifact>/<part>`.
 */
function contentOf(part: Part, uri: string): McpContent {
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
export function resultOf(task: Task): McpToolResult {
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

/**
 * What to ask the client for a task that waits for input (MCP elicitation,
 * form mode): the task's question as the message, and as the requested
 * schema the object schema of a data part of its status message when it
 * has one (the answer is then that data), else one string field `answer`
 * (the answer is its text).
 */
export function questionOf(task: Task): ToolQuestion {
  const status = task.status.message;
  const message = (status && textOf(status)) || "The task needs more input.";
  const declared = status?.parts.find((p) => isObjectSchema(p.data))?.data as Record<string, unknown> | undefined;
  const requestedSchema = declared ?? { type: "object", properties: { answer: { type: "string", title: "Answer", description: message } }, required: ["answer"] };
  return { message, requestedSchema, answerOf: (content) => (declared ? content : String(content.answer ?? "")) };
}

/** A flat object schema, as MCP elicitation takes (`{type: "object", properties}`). */
const isObjectSchema = (v: unknown): boolean => typeof v === "object" && v !== null && (v as { type?: unknown }).type === "object" && typeof (v as { properties?: unknown }).properties === "object";

/**
 * Sends one progress notification per status update (its text) and artifact
 * chunk, and a log message per status update, until the task's event log
 * reaches a final state (with `defer`, an interrupted one too).
 * Sent one at a time, in event order; a notification the client no longer
 * takes (it went away) ends the relay, not the call.
 */
async function relayProgress(handle: TaskHandle, progressToken: string | number | undefined, call: ToolCallOptions, log: Logger, fromSequence?: number): Promise<void> {
  let progress = 0;
  try {
    for await (const { event } of handle.events({ fromSequence, signal: call.signal })) {
      if (call.signal.aborted) return;
      // The final state is the result itself; with `defer`, so is a wait for input (the call ends there).
      if ("statusUpdate" in event && (isFinal(event.statusUpdate.status.state) || (call.defer && isInterrupted(event.statusUpdate.status.state)))) break;
      const message = "statusUpdate" in event ? event.statusUpdate.status.message : "artifactUpdate" in event ? { parts: event.artifactUpdate.artifact.parts } : event.message;
      const text = message ? textOf(message as Message) : "";
      const state = "statusUpdate" in event ? event.statusUpdate.status.state.replace("TASK_STATE_", "").toLowerCase() : undefined;
      if (progressToken !== undefined) await call.notify({ method: "notifications/progress", params: { progressToken, progress: ++progress, message: text || state || "working" } });
      if (call.log && "statusUpdate" in event) await call.log("info", { taskId: handle.id, state, ...(text && { message: text }) });
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

const failure = (err: unknown): McpToolResult => ({ content: [{ type: "text", text: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) }], isError: true });

/** The tools of a bus and of the bridge, a page at a time (cursor: an offset). */
export function listTools(bus: Bus, cursor?: string): { tools: McpTool[]; nextCursor?: string } {
  const all = [...inboxTools(bus), ...toolsOf(bus)];
  const offset = cursor ? Number.parseInt(Buffer.from(cursor, "base64url").toString(), 10) : 0;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new ToolRequestError("invalid cursor");
  const next = offset + PAGE_SIZE < all.length ? Buffer.from(String(offset + PAGE_SIZE)).toString("base64url") : undefined;
  return { tools: all.slice(offset, offset + PAGE_SIZE), ...(next && { nextCursor: next }) };
}

/**
 * One `tools/call`: the bridge's own tools at once; a capability as a
 * durable bus task, its input checked against the tool's schema first
 * (ToolRequestError), its result mapped to MCP content. A cancelled call
 * cancels the task; a turn that needs input is asked of the client
 * (`call.ask`) and its answer continues the same task; a client that
 * declines or cannot be asked cancels it. Bus errors are `isError` results.
 */
export async function callTool(bus: Bus, name: string, args: Record<string, unknown>, call: ToolCallOptions & { defer: true }): Promise<McpToolResult | NeedsInput | Detached>;
export async function callTool(bus: Bus, name: string, args: Record<string, unknown>, call: ToolCallOptions): Promise<McpToolResult>;
export async function callTool(bus: Bus, name: string, args: Record<string, unknown>, call: ToolCallOptions): Promise<McpToolResult | NeedsInput | Detached> {
  const own = inboxTools(bus).find((t) => t.name === name);
  const tool = own ?? toolsOf(bus).find((t) => t.name === name);
  if (!tool) throw new ToolRequestError(`unknown tool ${name}`);
  try {
    validatorFor(tool.inputSchema)(args);
  } catch (err) {
    throw new ToolRequestError((err as Error).message);
  }
  if (own) return callInboxTool(bus, own.name, args, call.trace).catch(failure);
  // A capability without a schema takes text; one with a schema takes the arguments as data.
  const input = (tool.inputSchema as unknown) === DEFAULT_INPUT_SCHEMA ? String(args.text) : args;
  const op = traced("MCP tools/call", SpanKind.SERVER, call.trace, {
    "mcp.method.name": "tools/call",
    "gen_ai.tool.name": tool.name,
    [SpanAttr.capability]: tool.name,
    [SpanAttr.tenant]: bus.subjects.tenant,
  });
  let handle: TaskHandle;
  // A continued task's progress is what follows the turn it continues.
  let after: number | undefined;
  try {
    if (call.resume) {
      // A retry with the client's answer: the task it asked for, still waiting, continues (or is cancelled on a refusal).
      const waiting = await bus.taskHandle(call.resume.taskId, { caller: call.caller });
      if (call.resume.sequence !== undefined && (await waiting.lastSequence()) !== call.resume.sequence) {
        throw new ToolRequestError("this answer is for an earlier question of the task: it has moved on");
      }
      if (call.resume.answer.action !== "accept") {
        await waiting.cancel({ trace: op.trace }).catch(() => {});
        op.end();
        return { content: [{ type: "text", text: `INPUT_REQUIRED: the user chose to ${call.resume.answer.action}; the task was cancelled` }], isError: true };
      }
      after = await waiting.lastSequence();
      handle = await bus.submit(tool.name, questionOf(await waiting.get()).answerOf(call.resume.answer.content ?? {}), { taskId: waiting.id, trace: op.trace, caller: call.caller });
    } else {
      handle = await bus.submit(tool.name, input, { trace: op.trace, caller: call.caller, metadata: call.metadata });
    }
  } catch (err) {
    op.end(err);
    return failure(err);
  }
  op.span?.setAttribute(SpanAttr.task, handle.id);
  const onAbort = () => void handle.cancel({ trace: op.trace }).catch(() => {});
  call.signal.addEventListener("abort", onAbort, { once: true });
  // Ends the call's own waiting (the result, the progress relay) when the task is left to run.
  const detach = new AbortController();
  const waiting = AbortSignal.any([call.signal, detach.signal]);
  const progress = call.progressToken === undefined && !call.log ? Promise.resolve() : relayProgress(handle, call.progressToken, { ...call, signal: waiting }, bus.log, after === undefined ? undefined : after + 1);
  try {
    let task: Task;
    if (call.detachAfterMs === undefined) task = await handle.result({ signal: call.signal });
    else {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), call.detachAfterMs)));
      const ended = await Promise.race([handle.result({ signal: waiting }).catch((err: unknown) => (detach.signal.aborted ? undefined : Promise.reject(err))), late]);
      clearTimeout(timer);
      if (ended === undefined) {
        detach.abort();
        call.signal.removeEventListener("abort", onAbort);
        await progress;
        op.end();
        return { detached: await handle.get() };
      }
      task = ended;
    }
    while (task.status.state === "TASK_STATE_INPUT_REQUIRED") {
      const question = questionOf(task);
      if (call.defer) {
        await progress;
        op.span?.setAttribute(SpanAttr.taskState, task.status.state);
        op.end();
        return { needsInput: { taskId: handle.id, question, sequence: await handle.lastSequence() } };
      }
      const answer = call.ask ? await call.ask(question) : undefined;
      if (answer?.action !== "accept") {
        const why = answer ? `the user chose to ${answer.action}` : "the task needs more input and this client cannot be asked (it has no elicitation capability)";
        await handle.cancel({ trace: op.trace }).catch(() => {});
        await progress;
        op.end();
        return { content: [{ type: "text", text: `INPUT_REQUIRED: ${why}; the task was cancelled` }], isError: true };
      }
      const next = await bus.submit(tool.name, question.answerOf(answer.content ?? {}), { taskId: handle.id, trace: op.trace, caller: call.caller });
      task = await next.result({ signal: call.signal });
    }
    // Progress must reach the client before the result: after the result the token is unknown to it.
    await progress;
    op.span?.setAttribute(SpanAttr.taskState, task.status.state);
    op.end();
    return resultOf(task);
  } catch (err) {
    op.end(err);
    return failure(err);
  } finally {
    call.signal.removeEventListener("abort", onAbort);
  }
}
