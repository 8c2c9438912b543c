import { A2A_VERSION_HEADER, AgentCard as AgentCardCodec, type AgentCard as SdkAgentCard } from "@a2a-js/sdk";
import type { FastifyReply, FastifyRequest } from "fastify";
import { TASK_STATES, type AgentCard, type Traced } from "../../core/internal.js";
import type { BusRequestHandler } from "./handler.js";

/** The bindings of A2A v1.0 the bridge serves over HTTP, by their `protocolBinding` names. */
export type HttpBinding = "JSONRPC" | "HTTP+JSON";

/** One A2A request as the bridge opened it, whatever the binding: the route's card, the request's span, the handler. */
export interface A2ARoute {
  handler: BusRequestHandler;
  card: AgentCard;
  op: Traced;
  /** Aborted when a stream's client goes away. */
  gone: AbortController;
}

/**
 * Opens a request to `agent` (the gateway's route without one) for
 * `method`: undefined when there is no such agent. The caller ends `op`.
 */
export type OpenRequest = (req: FastifyRequest, reply: FastifyReply, agent: string | undefined, method: string, binding: HttpBinding) => A2ARoute | undefined;

/** What ListTasks takes as `status`: a task state, or none (unspecified, or UNRECOGNIZED as the SDK's client sends for none). */
export const LIST_STATUSES: ReadonlySet<string> = new Set([...TASK_STATES, "TASK_STATE_UNSPECIFIED", "UNRECOGNIZED"]);

/** How deep a request's JSON may nest (arrays and objects): A2A requests need a handful of levels, metadata a few more. */
export const MAX_DEPTH = 64;

/** Whether `value` nests arrays and objects deeper than `max` levels (walked without recursion). */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: Array<[unknown, number]> = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== "object" || v === null) continue;
    if (depth > max) return true;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}

/** Method names of A2A v1.0 and v0.3: span names (`A2A <method>`) come only from these. */
export const A2A_METHODS: ReadonlySet<string> = new Set([
  "SendMessage", "SendStreamingMessage", "GetTask", "ListTasks", "CancelTask", "SubscribeToTask", "GetExtendedAgentCard",
  "CreateTaskPushNotificationConfig", "GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs", "DeleteTaskPushNotificationConfig",
  "message/send", "message/stream", "tasks/get", "tasks/cancel", "tasks/resubscribe", "agent/getAuthenticatedExtendedCard",
  "tasks/pushNotificationConfig/set", "tasks/pushNotificationConfig/get", "tasks/pushNotificationConfig/list", "tasks/pushNotificationConfig/delete",
]);

/**
 * The A2A version a request asks for: its `A2A-Version` header, else its
 * `A2A-Version` query parameter (which the specification allows instead),
 * else none (a v0.3 request).
 */
export function requestedVersion(req: FastifyRequest): string | undefined {
  const header = req.headers[A2A_VERSION_HEADER.toLowerCase()];
  if (typeof header === "string" && header !== "") return header;
  const param = (req.query as Record<string, unknown> | undefined)?.[A2A_VERSION_HEADER];
  return typeof param === "string" && param !== "" ? param : undefined;
}

/** A card in the SDK's form (what its version check reads), decoded once per served card. */
const sdkCards = new WeakMap<AgentCard, SdkAgentCard>();
export function sdkCard(card: AgentCard): SdkAgentCard {
  let sdk = sdkCards.get(card);
  if (!sdk) sdkCards.set(card, (sdk = AgentCardCodec.fromJSON(card)));
  return sdk;
}
