import { ProtocolError, SdkError, SdkErrorCode } from "@modelcontextprotocol/client";
import { isAgentBusError } from "../../core/index.js";

/** How a tool call went wrong, as the audit records it. */
export type FailureKind = "circuit_open" | "timeout" | "unavailable" | "mcp_error" | "canceled" | "closed";

/** Sorts an error from a tool call (through the breaker and the server link). */
export function failureKind(err: unknown): FailureKind {
  if ((err as { code?: unknown })?.code === "EOPENBREAKER") return "circuit_open";
  if (isAgentBusError(err, "CANCELLED")) return "canceled";
  if (isAgentBusError(err, "CLOSED")) return "closed";
  // The server answered with a JSON-RPC error: it is up, the request was wrong.
  if (err instanceof ProtocolError) return "mcp_error";
  if (err instanceof SdkError) {
    if (err.code === SdkErrorCode.RequestTimeout) return "timeout";
    // The server answered, with something this client cannot use: asking again would not help.
    if (ANSWERED.has(err.code)) return "mcp_error";
  }
  // fetch failures, HTTP statuses, a closed connection, a failed version negotiation, a process that will not spawn or died.
  return "unavailable";
}

/** Client-side errors about an answer the server gave (rather than about reaching it). */
const ANSWERED = new Set<SdkErrorCode>([
  SdkErrorCode.InvalidResult,
  SdkErrorCode.UnsupportedResultType,
  SdkErrorCode.InputRequiredRoundsExceeded,
  SdkErrorCode.CapabilityNotSupported,
  SdkErrorCode.MethodNotSupportedByProtocolVersion,
  SdkErrorCode.ListPaginationExceeded,
]);

/** The JSON-RPC error code of an `mcp_error` the server sent, for the audit. */
export const mcpCodeOf = (err: unknown): number | undefined => (err instanceof ProtocolError ? err.code : undefined);

/** Whether an error says the server is failing (counted by its circuit breaker), rather than the request or the caller. */
export const countsAgainstServer = (err: unknown): boolean => {
  const kind = failureKind(err);
  return kind === "timeout" || kind === "unavailable";
};

/**
 * A short description of an error for a task's failure reason: the message
 * plus a system error code (ECONNREFUSED, …) from its causes (fetch's
 * `TypeError: fetch failed` carries it one level down, and the version
 * negotiation wraps that in turn), else its cause's message.
 */
export function describe(err: unknown): string {
  const message = (err as Error | undefined)?.message ?? String(err);
  let detail: string | undefined;
  let cause = (err as { cause?: unknown } | undefined)?.cause;
  for (let depth = 0; cause && typeof cause === "object" && depth < 5; depth++) {
    const c = cause as { code?: unknown; message?: unknown; cause?: unknown };
    // SDK errors have string codes too (SEND_FAILED, …): only a system error's counts.
    if (typeof c.code === "string" && !(cause instanceof SdkError)) {
      detail = c.code;
      break;
    }
    if (typeof c.message === "string") detail ??= c.message;
    cause = c.cause;
  }
  return detail && !message.includes(detail) ? `${message} (${detail})` : message;
}
