import {
  AgentCard as AgentCardCodec,
  type AgentCard as SdkAgentCard,
  type CancelTaskRequest,
  type DeleteTaskPushNotificationConfigRequest,
  type GetExtendedAgentCardRequest,
  type GetTaskPushNotificationConfigRequest,
  type GetTaskRequest,
  type ListTaskPushNotificationConfigsRequest,
  type ListTaskPushNotificationConfigsResponse,
  type ListTasksRequest,
  type ListTasksResponse,
  type SendMessageRequest,
  type StreamResponse,
  type Task as SdkTask,
  type TaskPushNotificationConfig,
} from "@a2a-js/sdk";
import type { RequestOptions, Transport, TransportFactory } from "@a2a-js/sdk/client";
import type { SendMessageResult } from "@a2a-js/sdk";
import { A2A_VERSION, AgentBusError, NATS_BINDING, checkId, natsInterface, preferOnline, type AgentCard, type Bus } from "../../core/internal.js";
import { gatewaySkills, withInterfaces } from "./cards.js";
import { BusRequestHandler } from "./handler.js";

/** Where a NATS interface URL points: its tenant, and its agent (none: the gateway). */
function parseInterfaceUrl(url: string): { tenant: string; agent?: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new AgentBusError("INVALID_INPUT", `not a NATS interface URL: ${JSON.stringify(url)}`);
  }
  const [tenant, agent, ...rest] = parsed.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  if (parsed.protocol !== "nats:" || !tenant || rest.length > 0) throw new AgentBusError("INVALID_INPUT", `not a NATS interface URL (nats:///<tenant>[/<agent>]): ${JSON.stringify(url)}`);
  return { tenant, agent: agent === undefined ? undefined : checkId(agent, "agent name") };
}

/**
 * An agent's A2A card as the bus's registry holds it, with its A2A over
 * NATS interface, signed with the agent's own key (see {@link cardVerifier});
 * without `agent`, the tenant's gateway card (every skill, routed by skill
 * id), which no agent signs. What an A2A client inside the network builds
 * its client from, no HTTP involved.
 *
 * @throws {AgentBusError} `INVALID_INPUT` when no agent of that name is registered.
 */
export function natsAgentCard(bus: Bus, agent?: string): SdkAgentCard {
  const card = cardOf(bus, agent);
  const nats = natsInterface(bus.subjects.tenant, agent);
  // An agent registers its card with this interface and signs it; a gateway card (or an older agent's) gets it here, unsigned.
  if (card.supportedInterfaces.some((i) => i.protocolBinding === NATS_BINDING && i.url === nats.url)) return AgentCardCodec.fromJSON(card);
  const { signatures: _s, ...unsigned } = card;
  return AgentCardCodec.fromJSON(withInterfaces({ ...unsigned, capabilities: { ...card.capabilities, streaming: true, pushNotifications: false } }, [nats]));
}

/** The card of `agent` in the registry (the tenant's gateway card without one). */
function cardOf(bus: Bus, agent: string | undefined): AgentCard {
  if (agent === undefined) return gatewaySkills(bus);
  const info = preferOnline(bus.discover({ name: agent }));
  if (!info) throw new AgentBusError("INVALID_INPUT", `no agent named ${agent} in tenant ${bus.subjects.tenant}`);
  return info.card;
}

/**
 * The A2A client transport over NATS: each operation runs on the client's
 * own bus connection (its identity and tenant), as the HTTP bridge runs it
 * for an HTTP caller — a send is a submit to the capability's work stream,
 * a stream follows the task's events, reads go to the task snapshots — so
 * there is no HTTP hop and no bridge in between. Errors are the SDK's A2A
 * errors (`TaskNotFoundError`, …) as on the other transports.
 *
 * Push notification configs are the HTTP gateway's (it delivers them):
 * over NATS they are `PushNotificationNotSupportedError`.
 */
export class NatsTransport implements Transport {
  constructor(
    private readonly bus: Bus,
    /** The agent (none: the tenant's gateway, routed by skill). */
    private readonly agent?: string,
  ) {}

  get protocolName(): string {
    return NATS_BINDING;
  }

  get protocolVersion(): string {
    return A2A_VERSION;
  }

  /** A handler for one request, on the card as the registry has it now. */
  #handler(options?: RequestOptions): BusRequestHandler {
    const lastEventId = options?.serviceParameters?.["Last-Event-ID"]?.trim();
    const resumeAfter = lastEventId !== undefined && /^\d{1,15}$/.test(lastEventId) ? Number(lastEventId) : undefined;
    return new BusRequestHandler(this.bus, cardOf(this.bus, this.agent), undefined, undefined, undefined, options?.signal, resumeAfter);
  }

  async getExtendedAgentCard(_params: GetExtendedAgentCardRequest, options?: RequestOptions): Promise<SdkAgentCard> {
    return this.#handler(options).getAuthenticatedExtendedAgentCard();
  }
  sendMessage(params: SendMessageRequest, options?: RequestOptions): Promise<SendMessageResult> {
    return this.#handler(options).sendMessage(params) as Promise<SendMessageResult>;
  }
  sendMessageStream(params: SendMessageRequest, options?: RequestOptions): AsyncGenerator<StreamResponse, void, undefined> {
    return this.#handler(options).sendMessageStream(params);
  }
  createTaskPushNotificationConfig(params: TaskPushNotificationConfig, options?: RequestOptions): Promise<TaskPushNotificationConfig> {
    return this.#handler(options).createTaskPushNotificationConfig(params);
  }
  getTaskPushNotificationConfig(params: GetTaskPushNotificationConfigRequest, options?: RequestOptions): Promise<TaskPushNotificationConfig> {
    return this.#handler(options).getTaskPushNotificationConfig(params);
  }
  listTaskPushNotificationConfig(params: ListTaskPushNotificationConfigsRequest, options?: RequestOptions): Promise<ListTaskPushNotificationConfigsResponse> {
    return this.#handler(options).listTaskPushNotificationConfigs(params);
  }
  deleteTaskPushNotificationConfig(params: DeleteTaskPushNotificationConfigRequest, options?: RequestOptions): Promise<void> {
    return this.#handler(options).deleteTaskPushNotificationConfig(params);
  }
  getTask(params: GetTaskRequest, options?: RequestOptions): Promise<SdkTask> {
    return this.#handler(options).getTask(params);
  }
  cancelTask(params: CancelTaskRequest, options?: RequestOptions): Promise<SdkTask> {
    return this.#handler(options).cancelTask(params);
  }
  listTasks(params: ListTasksRequest, options?: RequestOptions): Promise<ListTasksResponse> {
    return this.#handler(options).listTasks(params);
  }
  resubscribeTask(params: SubscribeToTaskRequestLike, options?: RequestOptions): AsyncGenerator<StreamResponse, void, undefined> {
    return this.#handler(options).resubscribe(params);
  }
}

type SubscribeToTaskRequestLike = Parameters<BusRequestHandler["resubscribe"]>[0];

/**
 * Plugs A2A over NATS into `@a2a-js/sdk`'s `ClientFactory`: clients built
 * from a card with a {@link NATS_BINDING} interface talk to the agent on
 * `bus` (the interface URL's tenant must be the connection's).
 *
 * @example
 * ```ts
 * const factory = new ClientFactory({ transports: [new NatsTransportFactory(bus)], preferredTransports: [NATS_BINDING] });
 * const client = await factory.createFromAgentCard(natsAgentCard(bus, "echo"));
 * ```
 */
export class NatsTransportFactory implements TransportFactory {
  constructor(private readonly bus: Bus) {}

  get protocolName(): string {
    return NATS_BINDING;
  }

  async create(url: string): Promise<Transport> {
    const { tenant, agent } = parseInterfaceUrl(url);
    if (tenant !== this.bus.subjects.tenant) {
      throw new AgentBusError("INVALID_INPUT", `the interface ${url} is tenant ${tenant}'s; this connection is tenant ${this.bus.subjects.tenant}'s`);
    }
    return new NatsTransport(this.bus, agent);
  }
}
