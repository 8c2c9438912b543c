/**
 * Options of the caller-side calls, in a module of their own so that
 * agents and handler contexts (which call other agents) and the bus share
 * them without importing one another.
 */
import type { EnvelopeMeta } from "./security/envelope.js";
import { AgentBusError } from "./wire/errors.js";
import type { TraceContext } from "./wire/trace.js";

/** Options of `Bus.call`. */
export interface CallOptions extends Pick<EnvelopeMeta, "task" | "context" | "parent" | "depth"> {
  /** Reply deadline, ms (default 30 000). */
  timeout?: number;
  signal?: AbortSignal;
  /** Call this agent id rather than any replica of the capability. */
  target?: string;
  /** Trace to continue (otherwise a new trace starts). */
  trace?: TraceContext;
  /**
   * Call a capability that another tenant exports to this one
   * (`<root>.<tenant>.cap.<cap>`; the providing tenant's ACL must grant this
   * identity). The call is signed, not MACed: this tenant's registry does
   * not know the other's agents.
   */
  tenant?: string;
  /**
   * Encrypt the input end to end (`Mesh-Enc`): for `target`, else for every
   * online provider of `cap` this identity's registry knows (every
   * registered one when it knows none online), never a revoked one; the
   * reply comes back encrypted for this identity. `NO_RESPONDERS` when no
   * provider is registered; not available with `tenant`.
   */
  encrypt?: boolean;
}

/** Options of `Bus.send`. */
export interface SendOptions {
  context?: string;
  task?: string;
  trace?: TraceContext;
  /** Encrypt the message end to end for the receiving agent (`Mesh-Enc`): the stream stores ciphertext. */
  encrypt?: boolean;
}

/** How deep agent-to-agent calls and tasks may nest unless `connect({ maxDepth })` says otherwise. */
export const DEFAULT_MAX_DEPTH = 8;

/**
 * The one depth check, for calls and submissions made and for messages
 * received: `DEPTH_EXCEEDED` when `depth` is past `maxDepth`.
 */
export function checkDepth(depth: number, maxDepth: number, what: "call" | "task"): void {
  if (depth > maxDepth) throw new AgentBusError("DEPTH_EXCEEDED", `${what} depth ${depth} exceeds ${maxDepth}`);
}
