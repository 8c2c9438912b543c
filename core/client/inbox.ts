import { AckPolicy, DeliverPolicy, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { Durable } from "../store/task-log.js";
import { AgentBusError, isAgentBusError } from "../wire/errors.js";
import { Header, type Envelope } from "../security/envelope.js";
import { ensureConsumer, retryJs } from "../infra/jetstream.js";
import type { Logger } from "../wire/log.js";
import { parseMessage, toMessage, type Input } from "../wire/message.js";
import type { Message } from "../wire/protocol.js";
import type { TraceContext } from "../wire/trace.js";

/** The capability name the ACL uses for direct messages. */
export const INBOX_CAPABILITY = "inbox";
const MAX_ATTEMPTS = 5;

/** One direct message, as an inbox handler gets it. */
export interface InboxMessage {
  message: Message;
  /** Verified sender. */
  from: string;
  envelope: Envelope;
  /** Position in `MESH_<T>_INBOX`: increases in send order. */
  sequence: number;
}

/** Handles one direct message; throwing redelivers it (order is kept). */
export type InboxHandler = (m: InboxMessage) => void | Promise<void>;

/** Writes an audit record (the bus's `audit`). */
export type AuditWriter = (kind: string, record: Record<string, unknown>) => void;

/**
 * Verifies a stored direct message and checks its sender's grant: its
 * `Mesh-Ts` must be within the envelope window of the time the stream stored
 * it (a copy stored again after the duplicate window is `EXPIRED`). An
 * encrypted message is decrypted after both checks. A refusal is logged and
 * audited once (kind = lower-case code) and rethrown; the caller terminates
 * the message.
 */
function admit(durable: Durable, m: JsMsg, agentId: string, authorize: (env: Envelope) => void, log: Logger, audit: AuditWriter | undefined): { env: Envelope; body: Uint8Array } {
  try {
    const env = durable.envelopes.open(m, { durable: true, storedAt: m.info.timestampNanos / 1_000_000 });
    authorize(env);
    return { env, body: env.enc === undefined ? m.data : durable.envelopes.decrypt(env, m.data) };
  } catch (err) {
    const e = isAgentBusError(err) ? err : new AgentBusError("BAD_SIGNATURE", String(err));
    const from = m.headers?.get(Header.from) || undefined;
    log.warn({ code: e.code, err: e.message, from, sequence: m.seq }, "inbox message refused");
    audit?.(e.code.toLowerCase(), { code: e.code, reason: e.message, from, subject: m.subject, agent: agentId, sequence: m.seq });
    throw e;
  }
}

/** Receipt of {@link sendDirect}. */
export interface SendReceipt {
  messageId: string;
  sequence: number;
}

/**
 * Sends a durable direct message to `<root>.<t>.inbox.<agent>`: JetStream
 * keeps it until the agent takes it, however long it is offline. MACed for
 * the recipient only (nobody else may read it as from us); with `encrypt`,
 * also encrypted for it alone.
 */
export async function sendDirect(durable: Durable, to: string, input: Input, meta: { context?: string; task?: string; trace?: TraceContext } = {}, encrypt = false): Promise<SendReceipt> {
  const subject = durable.subjects.inbox(to);
  const message = toMessage(input);
  let body: Uint8Array = Buffer.from(JSON.stringify(message));
  // The message id doubles as Nats-Msg-Id: a retried send is stored once.
  let headers;
  if (encrypt) ({ headers, body } = durable.envelopes.sealEncrypted(subject, body, [to], meta, [to], { id: message.messageId }));
  else headers = durable.envelopes.seal(subject, body, meta, [to], { id: message.messageId });
  const ack = await retryJs(() => durable.js.publish(subject, body, { headers, msgID: message.messageId }));
  return { messageId: message.messageId, sequence: ack.seq };
}

/** The durable consumer that holds an agent's place in its inbox. */
async function inboxConsumer(durable: Durable, agentId: string) {
  const stream = durable.subjects.stream("INBOX");
  const name = `inbox_${agentId}`;
  await ensureConsumer(await durable.js.jetstreamManager(), stream, {
    durable_name: name,
    filter_subject: durable.subjects.inbox(agentId),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_ack_pending: 1,
    ack_wait: 30_000_000_000,
  });
  return retryJs(() => durable.js.consumers.get(stream, name));
}

/**
 * Takes up to `max` pending direct messages of `agentId`, in order, from the
 * same durable consumer an inbox handler uses; each is acked once read.
 */
export async function receiveDirect(
  durable: Durable,
  agentId: string,
  authorize: (env: Envelope) => void,
  log: Logger,
  options: { max?: number; waitMs?: number } = {},
  audit?: AuditWriter,
): Promise<InboxMessage[]> {
  const consumer = await inboxConsumer(durable, agentId);
  const out: InboxMessage[] = [];
  const max = Math.max(1, Math.min(options.max ?? 10, 100));
  // One at a time: the consumer lets one message be unacknowledged (order).
  while (out.length < max) {
    const m = await consumer.next({ expires: out.length === 0 ? Math.max(options.waitMs ?? 1000, 1000) : 1000 });
    if (!m) break;
    let admitted: { env: Envelope; body: Uint8Array };
    try {
      admitted = admit(durable, m, agentId, authorize, log, audit);
    } catch {
      m.term();
      continue;
    }
    const { env } = admitted;
    try {
      out.push({ message: parseMessage(admitted.body), from: env.from, envelope: env, sequence: m.seq });
      m.ack();
    } catch (err) {
      log.warn({ err: String(err), sequence: m.seq }, "inbox message unreadable");
      m.term();
    }
  }
  return out;
}

/**
 * Delivers an agent's inbox to `handler`, one message at a time in send
 * order (max one unacknowledged), from a durable consumer that remembers
 * what was delivered across restarts.
 */
export class InboxReader {
  #messages?: ConsumerMessages;
  #loop?: Promise<void>;
  #stopping = false;

  private constructor(
    private readonly durable: Durable,
    private readonly handler: InboxHandler,
    private readonly agentId: string,
    private readonly authorize: (env: Envelope) => void,
    private readonly log: Logger,
    private readonly audit?: AuditWriter,
  ) {}

  /** Starts reading `agentId`'s inbox; `audit` records refused messages. */
  static async start(durable: Durable, agentId: string, handler: InboxHandler, authorize: (env: Envelope) => void, log: Logger, audit?: AuditWriter): Promise<InboxReader> {
    const r = new InboxReader(durable, handler, agentId, authorize, log, audit);
    r.#messages = await (await inboxConsumer(durable, agentId)).consume({ max_messages: 256 });
    r.#loop = r.#run();
    return r;
  }

  async #run(): Promise<void> {
    for await (const m of this.#messages!) {
      let admitted: { env: Envelope; body: Uint8Array };
      try {
        admitted = admit(this.durable, m, this.agentId, this.authorize, this.log, this.audit);
      } catch {
        m.term();
        continue;
      }
      const { env } = admitted;
      // Retried here rather than nak'ed: a nak would let the next message
      // overtake this one. After the last attempt it is dead-lettered.
      for (let attempt = 1; ; attempt++) {
        try {
          await this.handler({ message: parseMessage(admitted.body), from: env.from, envelope: env, sequence: m.seq });
          m.ack();
          break;
        } catch (err) {
          if (attempt >= MAX_ATTEMPTS || this.#stopping) {
            this.log.error({ err: String(err), sequence: m.seq }, "inbox message dead-lettered");
            await retryJs(() => this.durable.js.publish(this.durable.subjects.dlq(INBOX_CAPABILITY), m.data, { headers: m.headers })).catch(() => {});
            m.term();
            break;
          }
          this.log.warn({ err: String(err), sequence: m.seq, attempt }, "inbox handler failed; retrying");
          m.working();
          await new Promise((r) => setTimeout(r, Math.min(10_000, 200 * 2 ** (attempt - 1))));
        }
      }
    }
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    this.#messages?.stop();
    await this.#loop;
  }
}
