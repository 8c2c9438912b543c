import CircuitBreaker from "opossum";
import type { CallToolResult, Progress } from "@modelcontextprotocol/client";
import type { McpBreakerOptions } from "./config.js";
import { countsAgainstServer } from "./failures.js";

/** A tool call on one server, as the breaker wraps it. */
export type CallTool = (tool: string, args: Record<string, unknown>, signal: AbortSignal, onProgress?: (p: Progress) => void) => Promise<CallToolResult>;

/** The circuit breaker of one server. */
export type ServerBreaker = CircuitBreaker<Parameters<CallTool>, CallToolResult>;

/** `closed`, `open` or `halfOpen` (one probe call let through). */
export type CircuitState = "closed" | "open" | "halfOpen";

export const circuitState = (b: ServerBreaker): CircuitState => (b.halfOpen ? "halfOpen" : b.opened ? "open" : "closed");

/**
 * An opossum breaker that opens after `failureThreshold` consecutive
 * failures of the server (unreachable, crashed, timed out; not tool errors
 * nor JSON-RPC errors, which prove it is up). opossum's own rule is a
 * failure percentage over a rolling window, which lets a dead server be
 * called again as long as earlier successes are in the window, so it is
 * switched off (a rate can never exceed 100 %) and the count kept here.
 * Once open, calls fail at once; after `resetTimeoutMs` opossum lets one
 * probe through (half-open): success closes the circuit, failure re-opens it.
 */
export function serverBreaker(name: string, action: CallTool, options: McpBreakerOptions = {}): ServerBreaker {
  const threshold = options.failureThreshold ?? 5;
  const breaker = new CircuitBreaker(action, {
    name,
    timeout: false, // per-request deadlines are the MCP client's, which also tells the server to cancel
    errorThresholdPercentage: 100,
    resetTimeout: options.resetTimeoutMs ?? 10_000,
    // Truthy = not counted (and counted as a success: the server answered).
    errorFilter: (err: unknown) => !countsAgainstServer(err),
  });
  let consecutive = 0;
  breaker.on("success", () => (consecutive = 0));
  breaker.on("close", () => (consecutive = 0));
  breaker.on("failure", () => {
    if (++consecutive >= threshold && breaker.closed) breaker.open();
  });
  return breaker;
}
