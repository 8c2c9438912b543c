import * as grpc from "@grpc/grpc-js";
import { RateLimiterMemory, RateLimiterRes } from "rate-limiter-flexible";
import type {
  AgentCard as SdkAgentCard,
  CancelTaskRequest,
  DeleteTaskPushNotificationConfigRequest,
  GetExtendedAgentCardRequest,
  GetTaskPushNotificationConfigRequest,
  GetTaskRequest,
  ListTaskPushNotificationConfigsRequest,
  ListTasksRequest,
  SendMessageRequest,
  SubscribeToTaskRequest,
  TaskPushNotificationConfig,
} from "@a2a-js/sdk";
import { RequestMalformedError } from "@a2a-js/sdk/errors";
import type { A2ARequestHandler, ServerCallContext, User } from "@a2a-js/sdk/server";
import { A2AService, grpcService } from "@a2a-js/sdk/server/grpc";
import { AgentBusError, SpanKind, traced, traceFromHeaders, type AgentCard, type Bus, type Traced } from "../../core/internal.js";
import { isLoopbackAddress, type Authenticator, type Caller } from "../http/index.js";
import { BusRequestHandler } from "./handler.js";
import { A2A_METHODS, sdkCard } from "./routes.js";
import type { PushNotifications } from "./push.js";

/** Options of the bridge's gRPC binding (`A2ABridgeOptions.grpc`). */
export interface A2AGrpcOptions {
  /** Port to listen on; 0 takes a free one. */
  port: number;
  /** Address to bind (default `127.0.0.1`; open mode binds loopback only). */
  host?: string;
  /** TLS credentials (default: plaintext, for loopback or behind a TLS-terminating proxy). */
  credentials?: grpc.ServerCredentials;
  /** `host:port` the cards advertise (default: `host` and the bound port). */
  publicAddress?: string;
}

/** The gRPC service path of A2A v1.0 (span attribute `rpc.service`). */
const SERVICE = "lf.a2a.v1.A2AService";

/** The caller of one gRPC call, as the service's user: who it is, and the call's end. */
class GrpcCaller implements User {
  constructor(
    readonly caller: Caller,
    /** The call's metadata as headers (trace context, Last-Event-ID). */
    readonly headers: Record<string, string>,
    /** Aborted when the client cancels the call (or its stream goes away). */
    readonly gone: AbortController,
  ) {}
  get isAuthenticated(): boolean {
    return this.caller.name !== undefined;
  }
  get userName(): string {
    return this.caller.name ?? "";
  }
}

/** Where the gRPC binding finds what it serves: the bridge's cards and push deliveries. */
export interface GrpcRoutes {
  /** The card of `agent` (the gateway's without one) as `on` sees it; undefined when there is none. */
  cardFor(agent: string | undefined, on: Bus): AgentCard | undefined;
  push?: PushNotifications;
  /** The bridge's own connection (open mode's caller). */
  bus: Bus;
}

/**
 * The request handler the SDK's gRPC service calls: per call, the route
 * (the request's `tenant` names the agent, none is the gateway, as each
 * card's gRPC interface says), a span, and a {@link BusRequestHandler}
 * acting for the call's caller.
 */
class GrpcRequestHandler implements A2ARequestHandler {
  constructor(private readonly routes: GrpcRoutes) {}

  async getAgentCard(): Promise<SdkAgentCard> {
    return sdkCard(this.routes.cardFor(undefined, this.routes.bus)!);
  }

  #open(context: ServerCallContext | undefined, method: string): { handler: BusRequestHandler; op: Traced } {
    const user = context?.user as GrpcCaller;
    const agent = context?.tenant || undefined;
    const card = this.routes.cardFor(agent, user.caller.bus);
    if (!card) throw new RequestMalformedError(`no agent named ${agent}`);
    const name = A2A_METHODS.has(method) ? method : "unknown";
    const op = traced(`A2A ${name}`, SpanKind.SERVER, traceFromHeaders(user.headers), {
      "rpc.system": "grpc",
      "rpc.service": SERVICE,
      "rpc.method": name,
      "a2a.protocol_binding": "GRPC",
      "agentbus.tenant": user.caller.bus.subjects.tenant,
      ...(agent !== undefined && { "agentbus.agent.name": agent }),
    });
    const lastEventId = user.headers["last-event-id"]?.trim();
    const resumeAfter = lastEventId !== undefined && /^\d{1,15}$/.test(lastEventId) ? Number(lastEventId) : undefined;
    return { handler: new BusRequestHandler(user.caller.bus, card, this.routes.push, op, user.caller.name, user.gone.signal, resumeAfter), op };
  }

  async #unary<T>(context: ServerCallContext | undefined, method: string, act: (h: BusRequestHandler) => Promise<T>): Promise<T> {
    const { handler, op } = this.#open(context, method);
    try {
      return await act(handler);
    } finally {
      op.end();
    }
  }

  async *#stream<T>(context: ServerCallContext | undefined, method: string, act: (h: BusRequestHandler) => AsyncGenerator<T>): AsyncGenerator<T> {
    const { handler, op } = this.#open(context, method);
    try {
      yield* act(handler);
    } finally {
      op.end();
    }
  }

  getAuthenticatedExtendedAgentCard(params: GetExtendedAgentCardRequest, context?: ServerCallContext): Promise<SdkAgentCard> {
    return this.#unary(context, "GetExtendedAgentCard", (h) => h.getAuthenticatedExtendedAgentCard());
  }
  sendMessage(params: SendMessageRequest, context?: ServerCallContext) {
    return this.#unary(context, "SendMessage", (h) => h.sendMessage(params));
  }
  sendMessageStream(params: SendMessageRequest, context?: ServerCallContext) {
    return this.#stream(context, "SendStreamingMessage", (h) => h.sendMessageStream(params));
  }
  getTask(params: GetTaskRequest, context?: ServerCallContext) {
    return this.#unary(context, "GetTask", (h) => h.getTask(params));
  }
  listTasks(params: ListTasksRequest, context?: ServerCallContext) {
    return this.#unary(context, "ListTasks", (h) => h.listTasks(params));
  }
  cancelTask(params: CancelTaskRequest, context?: ServerCallContext) {
    return this.#unary(context, "CancelTask", (h) => h.cancelTask(params));
  }
  resubscribe(params: SubscribeToTaskRequest, context?: ServerCallContext) {
    return this.#stream(context, "SubscribeToTask", (h) => h.resubscribe(params));
  }
  createTaskPushNotificationConfig(params: TaskPushNotificationConfig, context?: ServerCallContext) {
    return this.#unary(context, "CreateTaskPushNotificationConfig", (h) => h.createTaskPushNotificationConfig(params));
  }
  getTaskPushNotificationConfig(params: GetTaskPushNotificationConfigRequest, context?: ServerCallContext) {
    return this.#unary(context, "GetTaskPushNotificationConfig", (h) => h.getTaskPushNotificationConfig(params));
  }
  listTaskPushNotificationConfigs(params: ListTaskPushNotificationConfigsRequest, context?: ServerCallContext) {
    return this.#unary(context, "ListTaskPushNotificationConfigs", (h) => h.listTaskPushNotificationConfigs(params));
  }
  deleteTaskPushNotificationConfig(params: DeleteTaskPushNotificationConfigRequest, context?: ServerCallContext) {
    return this.#unary(context, "DeleteTaskPushNotificationConfig", (h) => h.deleteTaskPushNotificationConfig(params));
  }
}

/** A call's metadata as headers: text values, the last of each key. */
function headersOf(metadata: grpc.Metadata): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata.getMap())) if (typeof value === "string") headers[key] = value;
  return headers;
}

/** The gRPC binding as it runs: where clients reach it, and its stop. */
export interface A2AGrpcServer {
  /** `host:port` as the cards advertise it. */
  readonly address: string;
  /** Stops taking calls and ends those in flight. */
  close(): Promise<void>;
}

/**
 * Serves the gRPC binding of A2A v1.0 (the SDK's `A2AService`) on its own
 * port: every call authenticated as the HTTP edge authenticates requests
 * (an API key as `x-api-key` or `authorization: Bearer` metadata, or a
 * bearer JWT; open mode answers loopback peers only), then served by the
 * same request handler as the HTTP bindings. A refused call is
 * `UNAUTHENTICATED` (`UNAVAILABLE` when the token issuer cannot be read,
 * `PERMISSION_DENIED` for a peer off loopback in open mode); past
 * `rateLimit` calls per caller in a window, `RESOURCE_EXHAUSTED`.
 */
export async function startA2AGrpc(options: A2AGrpcOptions, auth: Authenticator, routes: GrpcRoutes, rateLimit: { max: number; timeWindowMs: number }): Promise<A2AGrpcServer> {
  const host = options.host ?? "127.0.0.1";
  if (auth.open && !["127.0.0.1", "::1", "localhost"].includes(host)) {
    throw new AgentBusError("INVALID_INPUT", `gRPC binding: open mode (no authentication) binds loopback only, not ${host}`);
  }
  const callers = new WeakMap<object, GrpcCaller>();
  // Calls per caller (per peer address in open mode) per window, as the HTTP routes count requests (a budget of its own).
  const limiter = new RateLimiterMemory({ points: rateLimit.max, duration: rateLimit.timeWindowMs / 1000 });
  const service = grpcService({
    requestHandler: new GrpcRequestHandler(routes),
    userBuilder: async (call) => callers.get(call)!,
  }) as unknown as Record<string, (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, callback?: grpc.sendUnaryData<unknown>) => void>;
  // Each method: authenticate first, as the HTTP edge does, then the SDK's service.
  const guarded: grpc.UntypedServiceImplementation = {};
  for (const [name, method] of Object.entries(service)) {
    guarded[name] = (async (call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, callback?: grpc.sendUnaryData<unknown>) => {
      const refuse = (code: grpc.status, details: string) => {
        const err = { code, details, metadata: new grpc.Metadata() };
        if (callback) callback(err, null);
        else call.emit("error", err);
      };
      const headers = headersOf(call.metadata);
      if (auth.open && !isLoopbackAddress(peerAddress(call.getPeer()))) return refuse(grpc.status.PERMISSION_DENIED, "this server runs without authentication and answers loopback clients only");
      const result = await auth.authenticate({ headers, log: routes.bus.log });
      if (!("caller" in result)) return refuse(result.refused === "unavailable" ? grpc.status.UNAVAILABLE : grpc.status.UNAUTHENTICATED, result.reason);
      try {
        await limiter.consume(result.caller.name ?? peerAddress(call.getPeer()));
      } catch (err) {
        if (!(err instanceof RateLimiterRes)) throw err;
        return refuse(grpc.status.RESOURCE_EXHAUSTED, `rate limit exceeded: ${rateLimit.max} calls per ${rateLimit.timeWindowMs} ms; retry in ${err.msBeforeNext} ms`);
      }
      const gone = new AbortController();
      // grpc-js says "cancelled" when any call's stream closes, answered or not: only one that closes unanswered is a client gone.
      let answered = false;
      const answer: grpc.sendUnaryData<unknown> | undefined = callback && ((err, value) => ((answered = true), callback(err, value)));
      call.on("finish", () => (answered = true));
      call.on("cancelled", () => answered || gone.abort());
      callers.set(call, new GrpcCaller(result.caller, headers, gone));
      method(call, answer);
    }) as never;
  }
  const server = new grpc.Server();
  server.addService(A2AService, guarded);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(":") ? `[${host}]` : host}:${options.port}`, options.credentials ?? grpc.ServerCredentials.createInsecure(), (err, bound) => (err ? reject(err) : resolve(bound))),
  );
  const address = options.publicAddress ?? `${host.includes(":") ? `[${host}]` : host}:${port}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        // In-flight streams (SubscribeToTask can last) are ended after a second, not waited for.
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1_000);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      }),
  };
}

/** The address of a gRPC peer (`ipv4:127.0.0.1:5000`, `ipv6:[::1]:5000`). */
function peerAddress(peer: string): string {
  const rest = peer.replace(/^ipv[46]:/, "");
  const v6 = /^\[(.*)\]:\d+$/.exec(rest);
  return v6 ? v6[1]! : rest.replace(/:\d+$/, "");
}
