import type { Progress } from "@modelcontextprotocol/client";
import { AgentBusError, SpanAttr, SpanKind, traced, type Bus, type Handler } from "../../core/internal.js";
import type { ServerBreaker } from "./breaker.js";
import { describe, failureKind, mcpCodeOf, type FailureKind } from "./failures.js";
import { withCallTrace, type ServerLink } from "./link.js";
import type { MappedTool } from "./names.js";
import { errorTextOf, partsOf } from "./results.js";

/** Audit kind of gateway tool calls: `<root>.<t>.audit.mcp_call`. */
export const AUDIT_KIND = "mcp_call";

/** What a tool call ended as, in its audit record. */
export type CallOutcome = "ok" | "tool_error" | "invalid_input" | FailureKind;

/** The audit record of one tool call. Deliberately without arguments, results, reasons or server addresses: those may carry secrets. */
export interface CallAudit {
  caller: string;
  capability: string;
  server: string;
  tool: string;
  outcome: CallOutcome;
  durationMs: number;
  task?: string;
  /** The JSON-RPC error code, for `mcp_error`. */
  mcpCode?: number;
}

/** One server as the tool handlers use it. */
export interface ServerHandle {
  link: ServerLink;
  breaker: ServerBreaker;
  resetTimeoutMs: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * The bus handler of one tool: the caller's input (already checked by the
 * bus against the tool's input schema, and the caller already authorized
 * by the ACL for this capability) becomes the `tools/call` arguments; the
 * result becomes the task's result artifact, and progress the server
 * reports its status updates. A tool's `isError` result and a JSON-RPC
 * error fail the task at once, with the reason: retrying would not help. A
 * server that is unreachable or too slow throws `UNAVAILABLE` / `TIMEOUT`,
 * so the bus retries the task with backoff; with the circuit open that
 * happens without calling the server. Every call is audited.
 */
export function toolHandler(bus: Bus, mapped: MappedTool, server: ServerHandle): Handler {
  const { capability, tool } = mapped;
  const where = `MCP server ${mapped.server}`;
  return async (ctx) => {
    const started = Date.now();
    const audit = (outcome: CallOutcome, mcpCode?: number) => {
      const record: CallAudit = { caller: ctx.from, capability, server: mapped.server, tool, outcome, durationMs: Date.now() - started, ...(ctx.taskId && { task: ctx.taskId }), ...(mcpCode !== undefined && { mcpCode }) };
      bus.audit(AUDIT_KIND, record as unknown as Record<string, unknown>);
    };
    const args = ctx.input;
    if (!isObject(args)) {
      audit("invalid_input");
      throw new AgentBusError("INVALID_INPUT", `${tool} takes a JSON object of arguments (a data part)`);
    }
    // MCP progress → WORKING status updates of the task (a fast call has no statuses: ignored there).
    const progress = ctx.task
      ? (p: Progress) => void ctx.status(`${p.message ?? tool}: ${p.progress}${p.total !== undefined ? `/${p.total}` : ""}`).catch(() => {})
      : undefined;
    // A CLIENT span under the handler's; the server gets its traceparent (`_meta`, and the HTTP header).
    const op = traced(`MCP tools/call ${tool}`, SpanKind.CLIENT, ctx.trace, {
      "mcp.method.name": "tools/call",
      "gen_ai.tool.name": tool,
      "agentbus.mcp.server": mapped.server,
      [SpanAttr.capability]: capability,
      ...(ctx.taskId && { [SpanAttr.task]: ctx.taskId }),
    });
    let result;
    try {
      result = await withCallTrace(op.trace, () => server.breaker.fire(tool, args, ctx.signal, progress));
    } catch (err) {
      const kind = failureKind(err);
      op.end({ code: kind });
      audit(kind, kind === "mcp_error" ? mcpCodeOf(err) : undefined);
      switch (kind) {
        case "mcp_error":
          return ctx.fail(`${where} refused ${tool}: ${describe(err)}`);
        case "circuit_open":
          throw new AgentBusError("UNAVAILABLE", `${where} is failing: circuit open, not calling it until a probe after ${server.resetTimeoutMs} ms succeeds`, { cause: err });
        case "timeout":
          throw new AgentBusError("TIMEOUT", `${where} did not answer ${tool} within ${server.link.timeoutMs} ms`, { cause: err });
        case "unavailable":
          throw new AgentBusError("UNAVAILABLE", `${where} (${server.link.kind}) is unreachable: ${describe(err)}`, { cause: err });
        default:
          throw err; // canceled, or the gateway is closing: the bus ends the task
      }
    }
    op.end(result.isError ? { code: "tool_error" } : undefined);
    if (result.isError) {
      audit("tool_error");
      return ctx.fail(`${tool} (${where}) failed: ${errorTextOf(result)}`);
    }
    audit("ok");
    const parts = partsOf(result);
    return parts.length > 0 ? parts : undefined;
  };
}
