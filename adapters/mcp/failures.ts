import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";
import { isAgentBusError } from "../../core/index.js";

/** How a tool call went wrong, as the audit records it. */
export type FailureKind = "circuit_open" | "timeout" | "unavailable" | "mcp_error" | "canceled" | "closed";

/** Sorts an error from a tool call (through the breaker and the server link). */
export function failureKind(err: unknown): FailureKind {
  if ((err as { code?: unknown })?.code === "EOPENBREAKER") return "circuit_open";
  if (isAgentBusError(err, "CANCELLED")) return "canceled";
  if (isAgentBusError(err, "CLOSED")) return "closed";
  if (err instanceof McpError) {
    if (err.code === ErrorCode.RequestTimeout) return "timeout";
    if (err.code === ErrorCode.ConnectionClosed) return "unavailable";
    // The server answered with a JSON-RPC error: it is up, the request was wrong.
    return "mcp_error";
  }
  // fetch failures, HTTP statuses, a process that will not spawn or died.
  return "unavailable";
}

/** Whether an error says the server is failing (counted by its circuit breaker), rather than the request or the caller. */
export const countsAgainstServer = (err: unknown): boolean => {
  const kind = failureKind(err);
  return kind === "timeout" || kind === "unavailable";
};

/** A short description of an error for a task's failure reason: the message plus a system error code (ECONNREFUSED, …) from its cause. */
export function describe(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const cause = e?.cause?.code ?? e?.cause?.message;
  const message = e?.message ?? String(err);
  return cause && !message.includes(cause) ? `${message} (${cause})` : message;
}
