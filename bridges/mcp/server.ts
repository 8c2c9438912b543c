import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { CallToolRequestSchema, ErrorCode, ListToolsRequestSchema, McpError, type CallToolResult, type Tool } from "@modelcontextprotocol/sdk/types.js";
import { isAgentBusError, textOf, type AgentInfo, type Bus, type JsonSchema, type Task } from "../../core/index.js";
import { validatorFor } from "../../core/schema.js";

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

async function callInboxTool(bus: Bus, name: string, args: Record<string, unknown>): Promise<CallToolResult> {
  if (name === "mesh__get_messages") {
    const messages = await bus.receive({ max: typeof args.max === "number" ? args.max : 10, waitMs: 1000 });
    const shown = messages.map((m) => ({ sequence: m.sequence, from: m.from, contextId: m.message.contextId ?? m.envelope.context, text: textOf(m.message), data: m.message.parts.find((p) => "data" in p)?.data }));
    return { content: [{ type: "text", text: JSON.stringify(shown) }], structuredContent: { messages: shown } };
  }
  const receipt = await bus.send(String(args.to), String(args.text), { context: typeof args.contextId === "string" ? args.contextId : undefined });
  return { content: [{ type: "text", text: `sent (sequence ${receipt.sequence})` }] };
}

/** The tool result of a finished task: artifacts as text, data parts as structured content; failures flagged. */
function resultOf(task: Task): CallToolResult {
  const parts = task.artifacts.flatMap((a) => a.parts);
  const content = parts.map((p) => ({ type: "text" as const, text: p.text ?? JSON.stringify(p.data ?? p.url ?? p.raw) }));
  const data = parts.find((p) => "data" in p)?.data;
  const state = task.status.state;
  if (state === "TASK_STATE_COMPLETED") {
    return { content, ...(data !== null && typeof data === "object" && !Array.isArray(data) && { structuredContent: data as Record<string, unknown> }) };
  }
  const why = task.status.message ? textOf(task.status.message) : "";
  return { content: [{ type: "text", text: `${state.replace("TASK_STATE_", "")}: ${why}` }, ...content], isError: state !== "TASK_STATE_INPUT_REQUIRED" };
}

/**
 * An MCP server whose tools are the bus's capabilities. `tools/call` is a
 * durable bus task: an MCP cancellation cancels the task, its artifacts
 * become the result (progress notifications are not sent yet); bus errors become `isError` results with
 * the code, protocol misuse becomes JSON-RPC errors. Tells clients when
 * agents come and go (`notifications/tools/list_changed`).
 */
export function createMcpServer(bus: Bus, info = { name: "agentbus", version: "0.1.0" }): Server {
  const server = new Server(info, { capabilities: { tools: { listChanged: true } } });

  server.setRequestHandler(ListToolsRequestSchema, async (req) => {
    const all = [...inboxTools(bus), ...toolsOf(bus)];
    const offset = req.params?.cursor ? Number.parseInt(Buffer.from(req.params.cursor, "base64url").toString(), 10) : 0;
    if (!Number.isSafeInteger(offset) || offset < 0) throw new McpError(ErrorCode.InvalidParams, "invalid cursor");
    const next = offset + PAGE_SIZE < all.length ? Buffer.from(String(offset + PAGE_SIZE)).toString("base64url") : undefined;
    return { tools: all.slice(offset, offset + PAGE_SIZE), ...(next && { nextCursor: next }) };
  });

  server.setRequestHandler(CallToolRequestSchema, async (req, extra) => {
    const own = inboxTools(bus).find((t) => t.name === req.params.name);
    if (own) {
      const args = req.params.arguments ?? {};
      try {
        validatorFor(own.inputSchema as JsonSchema)(args);
      } catch (err) {
        throw new McpError(ErrorCode.InvalidParams, (err as Error).message);
      }
      try {
        return await callInboxTool(bus, own.name, args);
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
    let handle;
    try {
      handle = await bus.submit(tool.name, input);
    } catch (err) {
      return { content: [{ type: "text", text: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) }], isError: true };
    }
    const onAbort = () => void handle.cancel().catch(() => {});
    extra.signal.addEventListener("abort", onAbort, { once: true });
    try {
      return resultOf(await handle.result({ signal: extra.signal }));
    } catch (err) {
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
