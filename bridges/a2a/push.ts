import { randomUUID } from "node:crypto";
import { lookup } from "node:dns/promises";
import { BlockList, isIP } from "node:net";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { AgentBusError, ensureConsumer, ensurePushBucket, Header, KvMirror, retryJs, SpanAttr, SpanKind, traced, traceHeaders, type Bus, type TaskEvent, type TraceContext } from "../../core/internal.js";

/** A push notification config as stored in `mesh_<t>_push` under `<task>.<id>` (A2A v1.0 JSON form). */
export interface PushConfig {
  id: string;
  taskId: string;
  url: string;
  token?: string;
  authentication?: { scheme: string; credentials: string };
}

/**
 * What delivery to one webhook of a task has done so far. Tasks read
 * through the bridge show it in `metadata["agentbus.push"]`, by config id.
 */
export interface PushDelivery {
  /** Events the webhook took (a 2xx answer). */
  delivered: number;
  /** Attempts that failed; each is retried with backoff until `maxDeliver` attempts of that event. */
  failedAttempts: number;
  /** Events given up after `maxDeliver` failed attempts, or refused (a private address). */
  dropped: number;
  /** When the last attempt was made (ISO 8601). */
  lastAttemptAt: string;
  /** The webhook's HTTP status on the last attempt, when it answered. */
  lastStatus?: number;
  /** Why the last failed attempt failed (kept after later successes). */
  lastError?: string;
}

/** The metadata key under which tasks read through the bridge show their push deliveries. */
export const PUSH_METADATA_KEY = "agentbus.push";

/** Tunables of delivery. */
export interface PushOptions {
  /** Attempts per event and webhook before it is given up (default 8). */
  maxDeliver?: number;
  /** First retry delay, doubled per attempt, ms (default 500). */
  backoffMs?: number;
  /** Per-POST timeout, ms (default 10 000). */
  timeoutMs?: number;
  /**
   * Deliver to webhooks on loopback, private, link-local and other
   * non-public addresses (default false: such a URL is refused when set,
   * and an address a name resolves to is checked before every POST, so the
   * bridge cannot be made to call into its own network).
   */
  allowPrivateNetworks?: boolean;
}

/** Addresses a webhook may not resolve to unless private networks are allowed. */
const PRIVATE = new BlockList();
for (const [net, bits] of [["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12], ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4]] as const) {
  PRIVATE.addSubnet(net, bits, "ipv4");
}
for (const [net, bits] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96]] as const) PRIVATE.addSubnet(net, bits, "ipv6");

/** Whether an IP address is one a webhook may not have without `allowPrivateNetworks`. */
function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return PRIVATE.check(mapped[1]!, "ipv4");
  const family = isIP(address);
  return family === 0 || PRIVATE.check(address, family === 6 ? "ipv6" : "ipv4");
}

/** An HTTP authentication scheme name (RFC 9110 token) and credentials safe in a header (token68 or visible ASCII). */
const SCHEME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const CREDENTIALS = /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/;

/** Why a push config cannot be used, or undefined when it can (URL, authentication, address when it is a literal). */
function configProblem(config: Pick<PushConfig, "url" | "authentication" | "token">, allowPrivate: boolean): string | undefined {
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    return `${JSON.stringify(config.url)} is not a URL`;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return `a webhook URL is http or https, not ${url.protocol}`;
  if (url.username || url.password) return "a webhook URL carries no credentials: give them as authentication";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (!allowPrivate && (isIP(host) ? isPrivateAddress(host) : host === "localhost" || host.endsWith(".localhost"))) {
    return `webhook address ${host} is not public (the bridge's allowPrivateNetworks is off)`;
  }
  if (config.authentication) {
    const { scheme, credentials } = config.authentication;
    if (!SCHEME.test(scheme ?? "")) return `authentication scheme ${JSON.stringify(scheme)} is not an HTTP authentication scheme (Bearer, Basic, …)`;
    if (!CREDENTIALS.test(credentials ?? "")) return "authentication credentials must be non-empty visible ASCII";
  }
  if (config.token !== undefined && config.token !== "" && !CREDENTIALS.test(config.token)) return "the notification token must be visible ASCII";
  return undefined;
}

/** A task's push configs and delivery records, by config id. */
interface TaskPush {
  configs: Map<string, PushConfig>;
  deliveries: Map<string, PushDelivery>;
}

/** Keeps `byTask` in step with one entry of the push bucket (`value` undefined: deleted). */
function indexEntry(byTask: Map<string, TaskPush>, key: string, value: PushConfig | PushDelivery | undefined): void {
  const delivery = key.startsWith("=delivery.");
  // A task id has no dot; a config id may.
  const rest = delivery ? key.slice("=delivery.".length) : key;
  const taskId = rest.slice(0, rest.indexOf("."));
  const id = rest.slice(taskId.length + 1);
  let entry = byTask.get(taskId);
  if (!entry) byTask.set(taskId, (entry = { configs: new Map(), deliveries: new Map() }));
  const map: Map<string, PushConfig | PushDelivery> = delivery ? entry.deliveries : entry.configs;
  if (value === undefined) map.delete(id);
  else map.set(id, value);
  if (entry.configs.size === 0 && entry.deliveries.size === 0) byTask.delete(taskId);
}

/** The KV key of a webhook's delivery record: `=` is in no task id, so config listings by `<task>.` never see it. */
const deliveryKey = (taskId: string, id: string) => `=delivery.${taskId}.${id}`;

const DELIVERY_CONSUMER = "a2a_push";

/** A webhook whose address is not public: not retried. */
class RefusedAddress extends Error {}

/**
 * Push notifications: configs live in KV (any bridge replica sees them), and
 * one durable consumer on the events stream, shared by the replicas, posts
 * each event of a task with configs to its webhooks. An event is acked once
 * every webhook took it; a failure is retried with backoff (the consumer
 * redelivers), so delivery goes on across a bridge restart.
 */
export class PushNotifications {
  #messages?: ConsumerMessages;
  #loop?: Promise<void>;

  private constructor(
    private readonly bus: Bus,
    private readonly kv: KV,
    /** Configs and delivery records. */
    private readonly entries: KvMirror<PushConfig | PushDelivery>,
    /** The same, by task. */
    private readonly byTask: Map<string, TaskPush>,
    /** Connections whose identity may verify events (the bridge's, and each API key's). */
    private readonly verifiers: Map<string, Bus>,
    private readonly o: Required<PushOptions>,
  ) {}

  static async start(bus: Bus, verifiers: Bus[], options: PushOptions = {}): Promise<PushNotifications> {
    const kv = await ensurePushBucket(new Kvm(bus.nc), bus.subjects);
    // Configs under `<task>.<id>`, delivery records under `=delivery.<task>.<id>`: one watch for both, indexed by task
    // (every event of the tenant asks for its task's configs; every task read through the bridge for its deliveries).
    const byTask = new Map<string, TaskPush>();
    const entries = await KvMirror.start(kv, (e) => e.json<PushConfig | PushDelivery>(), (key, next) => indexEntry(byTask, key, next?.value));
    const o = { maxDeliver: options.maxDeliver ?? 8, backoffMs: options.backoffMs ?? 500, timeoutMs: options.timeoutMs ?? 10_000, allowPrivateNetworks: options.allowPrivateNetworks ?? false };
    const p = new PushNotifications(bus, kv, entries, byTask, new Map([bus, ...verifiers].map((b) => [b.id, b])), o);
    // The events stream exists once any task was submitted; make sure it does.
    await bus.tasks({ pageSize: 1 });
    const stream = bus.subjects.stream("EVENTS");
    const jsm = await jetstreamManager(bus.nc);
    await ensureConsumer(jsm, stream, {
      durable_name: DELIVERY_CONSUMER,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      max_deliver: o.maxDeliver,
      ack_wait: (o.timeoutMs + 5_000) * 1_000_000,
    });
    const consumer = await retryJs(() => jetstream(bus.nc).consumers.get(stream, DELIVERY_CONSUMER));
    p.#messages = await consumer.consume({ max_messages: 64 });
    p.#loop = p.#run();
    return p;
  }

  /**
   * Stores a config (a new id when it has none).
   *
   * @throws {AgentBusError} `INVALID_INPUT` for a URL that is not http(s),
   * carries credentials or names a non-public address (unless allowed), an
   * authentication scheme that is not an HTTP one, or credentials that
   * cannot go in a header.
   */
  async set(config: Omit<PushConfig, "id"> & { id?: string }): Promise<PushConfig> {
    const stored: PushConfig = { ...config, id: config.id || randomUUID() };
    const problem = configProblem(stored, this.o.allowPrivateNetworks);
    if (problem) throw new AgentBusError("INVALID_INPUT", problem);
    // Read-your-writes: a get or list right after this sees the config.
    await this.entries.caughtUp(await this.kv.put(`${stored.taskId}.${stored.id}`, JSON.stringify(stored)));
    return stored;
  }

  get(taskId: string, id: string): PushConfig | undefined {
    return this.byTask.get(taskId)?.configs.get(id);
  }

  list(taskId: string): PushConfig[] {
    return [...(this.byTask.get(taskId)?.configs.values() ?? [])];
  }

  /** What delivery has done for each webhook of a task, by config id (none before its first attempt). */
  deliveriesOf(taskId: string): Record<string, PushDelivery> | undefined {
    const deliveries = this.byTask.get(taskId)?.deliveries;
    return deliveries && deliveries.size > 0 ? Object.fromEntries(deliveries) : undefined;
  }

  async delete(taskId: string, id: string): Promise<void> {
    await this.kv.delete(`${taskId}.${id}`);
    await this.entries.caughtUp((await this.kv.status()).streamInfo.state.last_seq);
  }

  async #run(): Promise<void> {
    for await (const m of this.#messages!) void this.#deliver(m);
  }

  async #deliver(m: JsMsg): Promise<void> {
    const taskId = m.subject.split(".").at(-1)!; // `<root>.<t>.events.<submitter>.<task>`
    const configs = this.list(taskId);
    if (configs.length === 0) return m.ack();
    // Relay only events we can verify: MACed for one of our identities.
    const hints = m.headers?.get(Header.mac) ?? "";
    const verifier = [...this.verifiers.values()].find((b) => hints.includes(b.id.slice(1, 13)));
    let event: TaskEvent;
    let trace: TraceContext | undefined;
    try {
      if (!verifier) throw new Error("no identity here can verify this event");
      trace = verifier.envelopes.open(m, { durable: true }).trace;
      event = m.json<TaskEvent>();
    } catch (err) {
      this.bus.log.warn({ task: taskId, err: String(err) }, "push: event not relayed");
      return m.term();
    }
    const attempt = m.info.deliveryCount;
    const results = await Promise.allSettled(configs.map((c) => this.#post(c, event, taskId, trace)));
    const failed = results.filter((r) => r.status === "rejected");
    // A refused address is not retried: it will not become public.
    const final = attempt >= this.o.maxDeliver || failed.every((r) => (r as PromiseRejectedResult).reason instanceof RefusedAddress);
    await Promise.all(configs.map((c, i) => this.#record(taskId, c.id, results[i]!, final).catch((err: unknown) => this.bus.log.warn({ task: taskId, err: String(err) }, "push: delivery record not written"))));
    if (failed.length === 0) return m.ack();
    const reason = String((failed[0] as PromiseRejectedResult).reason);
    if (final) {
      this.bus.log.warn({ task: taskId, attempt, err: reason }, "push: delivery given up");
      return m.term();
    }
    this.bus.log.warn({ task: taskId, attempt, err: reason }, "push: delivery failed, retrying");
    m.nak(Math.min(60_000, this.o.backoffMs * 2 ** (attempt - 1)));
  }

  /** Updates a webhook's delivery record (compare-and-set: replicas deliver concurrently). */
  async #record(taskId: string, id: string, result: PromiseSettledResult<number>, final: boolean): Promise<void> {
    const key = deliveryKey(taskId, id);
    for (let i = 0; i < 5; i++) {
      const entry = await this.kv.get(key);
      const previous = entry && entry.operation === "PUT" ? entry.json<PushDelivery>() : undefined;
      const next: PushDelivery = {
        delivered: previous?.delivered ?? 0,
        failedAttempts: previous?.failedAttempts ?? 0,
        dropped: previous?.dropped ?? 0,
        lastAttemptAt: new Date().toISOString(),
        ...(previous?.lastError !== undefined && { lastError: previous.lastError }),
      };
      if (result.status === "fulfilled") {
        next.delivered++;
        next.lastStatus = result.value;
      } else {
        next.failedAttempts++;
        if (final) next.dropped++;
        const reason = result.reason as { status?: number; message?: string };
        if (reason.status !== undefined) next.lastStatus = reason.status;
        next.lastError = reason.message ?? String(reason);
      }
      try {
        const revision = entry ? await this.kv.update(key, JSON.stringify(next), entry.revision) : await this.kv.create(key, JSON.stringify(next));
        await this.entries.caughtUp(revision);
        return;
      } catch {
        // Another replica wrote it in between: read again.
      }
    }
  }

  /**
   * POSTs one event; the webhook gets the event's trace (a child of the
   * agent's span) as `traceparent`. Resolves to the HTTP status; a
   * webhook's name that resolves to a non-public address (unless allowed)
   * is refused before any request.
   */
  async #post(config: PushConfig, event: TaskEvent, taskId: string, trace: TraceContext | undefined): Promise<number> {
    if (!this.o.allowPrivateNetworks) {
      const host = new URL(config.url).hostname.replace(/^\[|\]$/g, "");
      const addresses = isIP(host) ? [host] : (await lookup(host, { all: true })).map((a) => a.address);
      const blocked = addresses.find(isPrivateAddress);
      if (blocked !== undefined) throw new RefusedAddress(`webhook ${host} resolves to ${blocked}, which is not public`);
    }
    const op = traced("push notification", SpanKind.CLIENT, trace, { [SpanAttr.task]: taskId, "http.request.method": "POST" });
    const headers: Record<string, string> = { "content-type": "application/json", ...traceHeaders(op.trace) };
    if (config.token) headers["X-A2A-Notification-Token"] = config.token;
    if (config.authentication) headers.authorization = `${config.authentication.scheme} ${config.authentication.credentials}`;
    await op.run(async () => {
      const res = await fetch(config.url, { method: "POST", headers, body: JSON.stringify(event), signal: AbortSignal.timeout(this.o.timeoutMs) });
      op.span?.setAttribute("http.response.status_code", res.status);
      if (!res.ok) throw Object.assign(new Error(`webhook answered ${res.status}`), { status: res.status });
    });
    return 200;
  }

  /**
   * Stops taking events. The pull request this replica left on the server
   * would still be handed events (dropped here, redelivered only after the
   * ack wait) until the server has processed the unsubscribe: a flush waits
   * for that, so an event stored after `stop` resolves goes to another
   * replica (or waits for the next start) at once.
   */
  async stop(): Promise<void> {
    this.#messages?.stop();
    await this.#loop;
    this.entries.stop();
    await this.bus.nc.flush().catch(() => {});
  }
}
