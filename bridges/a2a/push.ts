import { randomUUID } from "node:crypto";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import { ensureConsumer, ensurePushBucket, Header, KvMirror, retryJs, SpanAttr, SpanKind, traced, traceHeaders, type Bus, type TaskEvent, type TraceContext } from "../../core/internal.js";

/** A push notification config as stored in `mesh_<t>_push` under `<task>.<id>` (A2A v1.0 JSON form). */
export interface PushConfig {
  id: string;
  taskId: string;
  url: string;
  token?: string;
  authentication?: { scheme: string; credentials: string };
}

/** Tunables of delivery. */
export interface PushOptions {
  /** Attempts per event and webhook before it is given up (default 8). */
  maxDeliver?: number;
  /** First retry delay, doubled per attempt, ms (default 500). */
  backoffMs?: number;
  /** Per-POST timeout, ms (default 10 000). */
  timeoutMs?: number;
}

const DELIVERY_CONSUMER = "a2a_push";

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
    private readonly configs: KvMirror<PushConfig>,
    /** Connections whose identity may verify events (the bridge's, and each API key's). */
    private readonly verifiers: Map<string, Bus>,
    private readonly o: Required<PushOptions>,
  ) {}

  static async start(bus: Bus, verifiers: Bus[], options: PushOptions = {}): Promise<PushNotifications> {
    const kv = await ensurePushBucket(new Kvm(bus.nc), bus.subjects);
    const configs = await KvMirror.start(kv, (e) => e.json<PushConfig>());
    const o = { maxDeliver: options.maxDeliver ?? 8, backoffMs: options.backoffMs ?? 500, timeoutMs: options.timeoutMs ?? 10_000 };
    const p = new PushNotifications(bus, kv, configs, new Map([bus, ...verifiers].map((b) => [b.id, b])), o);
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

  async set(config: Omit<PushConfig, "id"> & { id?: string }): Promise<PushConfig> {
    const stored: PushConfig = { ...config, id: config.id || randomUUID() };
    new URL(stored.url); // refuse what is not a URL
    // Read-your-writes: a get or list right after this sees the config.
    await this.configs.caughtUp(await this.kv.put(`${stored.taskId}.${stored.id}`, JSON.stringify(stored)));
    return stored;
  }

  get(taskId: string, id: string): PushConfig | undefined {
    return this.configs.get(`${taskId}.${id}`);
  }

  list(taskId: string): PushConfig[] {
    return [...this.configs.entries].filter(([k]) => k.startsWith(`${taskId}.`)).map(([, v]) => v.value);
  }

  async delete(taskId: string, id: string): Promise<void> {
    await this.kv.delete(`${taskId}.${id}`);
    await this.configs.caughtUp((await this.kv.status()).streamInfo.state.last_seq);
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
    const results = await Promise.allSettled(configs.map((c) => this.#post(c, event, taskId, trace)));
    const failed = results.filter((r) => r.status === "rejected");
    if (failed.length === 0) return m.ack();
    const attempt = m.info.deliveryCount;
    this.bus.log.warn({ task: taskId, attempt, err: String((failed[0] as PromiseRejectedResult).reason) }, "push: delivery failed, retrying");
    m.nak(Math.min(60_000, this.o.backoffMs * 2 ** (attempt - 1)));
  }

  /** POSTs one event; the webhook gets the event's trace (a child of the agent's span) as `traceparent`. */
  async #post(config: PushConfig, event: TaskEvent, taskId: string, trace: TraceContext | undefined): Promise<void> {
    const op = traced("push notification", SpanKind.CLIENT, trace, { [SpanAttr.task]: taskId, "http.request.method": "POST" });
    const headers: Record<string, string> = { "content-type": "application/json", ...traceHeaders(op.trace) };
    if (config.token) headers["X-A2A-Notification-Token"] = config.token;
    if (config.authentication) headers.authorization = `${config.authentication.scheme} ${config.authentication.credentials}`;
    await op.run(async () => {
      const res = await fetch(config.url, { method: "POST", headers, body: JSON.stringify(event), signal: AbortSignal.timeout(this.o.timeoutMs) });
      op.span?.setAttribute("http.response.status_code", res.status);
      if (!res.ok) throw new Error(`webhook answered ${res.status}`);
    });
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
    this.configs.stop();
    await this.bus.nc.flush().catch(() => {});
  }
}
