import CircuitBreaker from "opossum";
import {
  AgentCard as AgentCardCodec,
  type AgentCard as SdkAgentCard,
  Message as MessageCodec,
  StreamResponse as StreamResponseCodec,
} from "@a2a-js/sdk";
import { ClientFactory, ClientFactoryOptions, DefaultAgentCardResolver, JsonRpcTransportFactory, RestTransportFactory, type Client } from "@a2a-js/sdk/client";
import { GrpcTransportFactory } from "@a2a-js/sdk/client/grpc";
import { AgentBusError, SpanAttr, SpanKind, traced, traceHeaders, type Agent, type AgentCard, type AgentContext, type Bus, type Handler, type Message, type Task, type TaskEvent, type WorkerOptions } from "../../core/internal.js";

/** Options of {@link joinRemoteAgent}. */
export interface RemoteA2AOptions {
  /** The connection the remote agent is registered on, under this connection's identity (one agent per connection). */
  bus: Bus;
  /** URL of the remote agent's card (`…/.well-known/agent-card.json`). */
  cardUrl: string;
  /** Local agent name (default: the card's name). */
  name?: string;
  /** Durable-task settings of the local agent (retries of a failing remote: `maxDeliver`, `backoffMs`). */
  tasks?: WorkerOptions;
  /**
   * Checks the card's signatures before joining (e.g. `cardVerifier({
   * trusted })` of `agentbus-nats/bridges/a2a`): a card that is unsigned, changed
   * after signing or signed by an untrusted key is refused.
   */
  verifyCard?: (card: SdkAgentCard) => Promise<void>;
  /** Circuit breaker: stop calling a remote that keeps failing, try again after `resetTimeoutMs`. */
  breaker?: { errorThresholdPercentage?: number; volumeThreshold?: number; resetTimeoutMs?: number };
}

/** A remote A2A agent joined onto the bus. */
export interface RemoteAgent {
  agent: Agent;
  /** The remote's card as fetched. */
  card: AgentCard;
  breaker: CircuitBreaker;
  stop(): Promise<void>;
}

/** One A2A stream event as the bus's task event JSON (the same A2A v1.0 `StreamResponse` JSON form). */
type Streamed = TaskEvent | { task: Task };

/**
 * Fetches a remote agent's card (checks its signatures with `verifyCard`), registers its skills as bus capabilities
 * under a local identity, and forwards every call and task to it with the
 * `@a2a-js/sdk` client (streaming when the card says so), mapping its events
 * onto the task's events. A bus cancel cancels the remote task; follow-up
 * turns go to the same remote task. A remote that is down fails the call
 * (`UNAVAILABLE`), so the bus retries the task with backoff; past the
 * breaker's threshold calls fail at once until the remote may be back.
 */
export async function joinRemoteAgent(options: RemoteA2AOptions): Promise<RemoteAgent> {
  // The SDK's resolver (it says A2A-Version 1.0) and transports, each able to speak to an A2A 0.3 agent too.
  const legacyCompat = { enabled: true };
  const cardResolver = new DefaultAgentCardResolver({ legacyCompat });
  const sdkCard = await cardResolver.resolve(options.cardUrl, "").catch((cause: unknown) => {
    throw new AgentBusError("UNAVAILABLE", `cannot read the agent card at ${options.cardUrl}: ${(cause as Error).message}`, { cause });
  });
  if (options.verifyCard) {
    await options.verifyCard(sdkCard).catch((cause: unknown) => {
      throw new AgentBusError("BAD_SIGNATURE", `the agent card at ${options.cardUrl} is not signed by a trusted key: ${(cause as Error).message}`, { cause });
    });
  }
  const card = AgentCardCodec.toJSON(sdkCard) as AgentCard;
  const client = await new ClientFactory(ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
    cardResolver,
    // Every binding of A2A: the client speaks the first one the card lists (the agent's preferred).
    transports: [new JsonRpcTransportFactory({ legacyCompat }), new RestTransportFactory({ legacyCompat }), new GrpcTransportFactory({ legacyCompat })],
  })).createFromAgentCard(sdkCard);
  const streaming = card.capabilities?.streaming === true;

  const server = new URL(options.cardUrl);
  const breaker = new CircuitBreaker((ctx: AgentContext) => forward(client, ctx, streaming, server), {
    timeout: false, // a task may legitimately run long; the bus's ack wait covers stalls
    errorThresholdPercentage: options.breaker?.errorThresholdPercentage ?? 50,
    volumeThreshold: options.breaker?.volumeThreshold ?? 3,
    resetTimeout: options.breaker?.resetTimeoutMs ?? 10_000,
    // Truthy = not counted: only an unreachable or failing remote counts, not a
    // task that ended badly on the bus side.
    errorFilter: (err: unknown) => err instanceof AgentBusError && err.code !== "UNAVAILABLE",
  });
  const handler: Handler = async (ctx) => {
    try {
      return (await breaker.fire(ctx)) as undefined;
    } catch (err) {
      if (err instanceof AgentBusError) throw err;
      const open = breaker.opened ? " (circuit open: not calling it until it may be back)" : "";
      throw new AgentBusError("UNAVAILABLE", `remote agent ${card.name} at ${options.cardUrl} failed${open}: ${(err as Error).message}`, { cause: err });
    }
  };
  const agent = await options.bus.agent(
    {
      name: options.name ?? card.name,
      description: card.description,
      version: card.version,
      skills: card.skills.map((s) => ({ id: s.id, name: s.name, description: s.description, tags: s.tags, examples: s.examples })),
    },
    Object.fromEntries(card.skills.map((s) => [s.id, handler])),
    { tasks: options.tasks },
  );
  return {
    agent,
    card,
    breaker,
    stop: async () => {
      breaker.shutdown();
      await agent.stop();
    },
  };
}

/** The remote task a bus task continues, kept in the context's session (survives restarts). */
const remoteKey = (taskId: string) => `a2a.remote.${taskId}`;

/**
 * One turn on the remote, in a CLIENT span (`A2A SendStreamingMessage` or
 * `A2A SendMessage`) under the handler's; its `traceparent` and
 * `tracestate` go out as HTTP headers (the SDK's service parameters).
 */
async function forward(client: Client, ctx: AgentContext, streaming: boolean, server: URL): Promise<void> {
  const method = streaming ? "SendStreamingMessage" : "SendMessage";
  const op = traced(`A2A ${method}`, SpanKind.CLIENT, ctx.trace, {
    "rpc.system": "jsonrpc",
    "rpc.method": method,
    "server.address": server.hostname,
    [SpanAttr.capability]: ctx.capability,
    ...(ctx.taskId && { [SpanAttr.task]: ctx.taskId }),
  });
  await op.run(() => forwardTraced(client, ctx, streaming, { serviceParameters: traceHeaders(op.trace) }));
}

async function forwardTraced(client: Client, ctx: AgentContext, streaming: boolean, sent: { serviceParameters: Record<string, string> }): Promise<void> {
  const session = ctx.task ? await ctx.session<Record<string, string>>() : undefined;
  const previous = ctx.task && ctx.history.length > 1 ? (await session?.get())?.value[remoteKey(ctx.task.id)] : undefined;
  const message = MessageCodec.fromJSON({
    ...ctx.userMessage,
    taskId: previous ?? "",
    contextId: "",
    metadata: { ...ctx.userMessage.metadata, skill: ctx.capability },
  });
  let remoteTaskId = previous;
  const onAbort = () => void (remoteTaskId && client.cancelTask({ tenant: "", id: remoteTaskId, metadata: undefined } as never, sent).catch(() => {}));
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const remember = async (id: string) => {
    if (remoteTaskId === id) return;
    remoteTaskId = id;
    if (ctx.signal.aborted) onAbort();
    if (session && ctx.task) await session.update((v) => ({ ...v, [remoteKey(ctx.task!.id)]: id }));
  };
  try {
    const request = { tenant: "", message, configuration: undefined, metadata: undefined };
    if (streaming) {
      for await (const e of client.sendMessageStream(request, sent)) {
        const json = StreamResponseCodec.toJSON(e) as Streamed;
        // A stream opens with the task as it stands (on a follow-up turn: still
        // waiting for input); only its id matters, the updates drive the turn.
        if ("task" in json) await remember(json.task.id);
        else if (await apply(ctx, json, remember)) return;
      }
      return;
    }
    const result = await client.sendMessage(request, sent);
    const json = ("role" in result ? { message: MessageCodec.toJSON(result) } : StreamResponseCodec.toJSON({ payload: { $case: "task", value: result } })) as Streamed;
    await apply(ctx, json, remember);
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
}

/** Applies one remote event to the bus task; true once the turn is over. */
async function apply(ctx: AgentContext, e: Streamed, remember: (id: string) => Promise<void>): Promise<boolean> {
  if ("task" in e) {
    await remember(e.task.id);
    for (const a of e.task.artifacts ?? []) await ctx.artifact(a.parts, { artifactId: a.artifactId, name: a.name });
    return e.task.status ? end(ctx, e.task.status.state, e.task.status.message) : false;
  }
  if ("artifactUpdate" in e) {
    const { artifact, append, lastChunk } = e.artifactUpdate;
    await ctx.artifact(artifact.parts, { artifactId: artifact.artifactId, name: artifact.name, append, lastChunk });
    return false;
  }
  if ("message" in e) {
    await ctx.message(e.message);
    return true;
  }
  await remember(e.statusUpdate.taskId);
  return end(ctx, e.statusUpdate.status.state, e.statusUpdate.status.message);
}

async function end(ctx: AgentContext, state: string, message?: Message): Promise<boolean> {
  const text = message?.parts.map((p) => p.text ?? "").join(" ") || state;
  switch (state) {
    case "TASK_STATE_WORKING":
    case "TASK_STATE_SUBMITTED":
      if (message) await ctx.status(message);
      return false;
    case "TASK_STATE_COMPLETED":
      return true;
    case "TASK_STATE_INPUT_REQUIRED":
    case "TASK_STATE_AUTH_REQUIRED":
      await ctx.inputRequired(message);
      return true;
    case "TASK_STATE_REJECTED":
      await ctx.reject(text);
      return true;
    case "TASK_STATE_CANCELED":
      if (!ctx.signal.aborted) await ctx.fail(`the remote agent canceled the task: ${text}`);
      return true;
    default:
      await ctx.fail(`the remote agent failed the task: ${text}`);
      return true;
  }
}
