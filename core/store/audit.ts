import { DeliverPolicy, jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { Envelopes, type Received } from "../security/envelope.js";
import { isAgentBusError } from "../wire/errors.js";
import { retryJs } from "../infra/jetstream.js";
import type { Logger } from "../wire/log.js";
import type { Subjects } from "../wire/subjects.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Defaults of the audit stream's bounds and of the refusal rate limit. */
export const AUDIT_DEFAULTS = {
  /** Records older than this are removed: 7 days. */
  maxAgeMs: 7 * 24 * 3600_000,
  /** The stream keeps at most this many bytes, oldest removed first: 256 MiB. */
  maxBytes: 256 * 1024 * 1024,
  /** The stream keeps at most this many records, oldest removed first: 1 000 000. */
  maxMsgs: 1_000_000,
  /** Refusal records written per (kind, sender) per interval before the rest are counted: 20. */
  burst: 20,
  /** Length of a rate-limit interval, ms: 10 s. */
  intervalMs: 10_000,
  /** Distinct (kind, sender) pairs tracked per interval; further senders share one `*` entry per kind: 1 000. */
  maxKeys: 1000,
} as const;

/** The per-process rate limit of refusal records (see {@link AUDIT_DEFAULTS}). */
export interface AuditRate {
  burst?: number;
  intervalMs?: number;
  maxKeys?: number;
}

interface Tally {
  kind: string;
  from: string;
  code?: unknown;
  written: number;
  suppressed: number;
  since?: number;
  until?: number;
}

/**
 * Writes signed audit records to `<root>.<t>.audit.<kind>`. Refusal records
 * (those with a `code`) are rate-limited per (kind, claimed sender) in this
 * process: the first `burst` per interval are written, the rest only
 * counted, and at the end of the interval one summary record
 * (`summary: true`, `suppressed`: the count, `since`/`until`: the first and
 * last suppressed time) stands for them. Administrative records (`revoked`,
 * `unrevoked`, …) are always written.
 */
export class Auditor {
  readonly #nc: NatsConnection;
  readonly #subjects: Subjects;
  readonly #envelopes: Envelopes;
  readonly #log: Logger;
  readonly #burst: number;
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  #tallies = new Map<string, Tally>();
  #timer?: NodeJS.Timeout;

  constructor(nc: NatsConnection, subjects: Subjects, envelopes: Envelopes, log: Logger, rate: AuditRate = {}) {
    this.#nc = nc;
    this.#subjects = subjects;
    this.#envelopes = envelopes;
    this.#log = log;
    this.#burst = rate.burst ?? AUDIT_DEFAULTS.burst;
    this.#intervalMs = rate.intervalMs ?? AUDIT_DEFAULTS.intervalMs;
    this.#maxKeys = rate.maxKeys ?? AUDIT_DEFAULTS.maxKeys;
  }

  /** Records one decision of `kind`; a refusal (a record with `code`) may be counted instead of written. */
  write(kind: string, record: Record<string, unknown>): void {
    if (record.code === undefined) return this.#publish(kind, record);
    const from = typeof record.from === "string" ? record.from : "";
    let key = `${kind}\n${from}`;
    let tally = this.#tallies.get(key);
    if (!tally && this.#tallies.size >= this.#maxKeys) {
      // Many claimed senders at once (forged Mesh-From values): they share one entry per kind.
      key = `${kind}\n*`;
      tally = this.#tallies.get(key);
    }
    if (!tally) {
      tally = { kind, from: key.endsWith("\n*") ? "*" : from, code: record.code, written: 0, suppressed: 0 };
      this.#tallies.set(key, tally);
      this.#timer ??= setTimeout(() => this.flush(), this.#intervalMs).unref();
    }
    if (tally.written < this.#burst) {
      tally.written++;
      return this.#publish(kind, tally.from === "*" && from ? { ...record, pooled: true } : record);
    }
    const now = Date.now();
    tally.suppressed++;
    tally.since ??= now;
    tally.until = now;
  }

  /** Ends the current interval: writes a summary for every pair that had refusals counted, not written. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const tallies = this.#tallies;
    this.#tallies = new Map();
    for (const t of tallies.values()) {
      if (t.suppressed === 0) continue;
      this.#publish(t.kind, { code: t.code, from: t.from, summary: true, suppressed: t.suppressed, since: t.since, until: t.until, intervalMs: this.#intervalMs });
    }
  }

  #publish(kind: string, record: Record<string, unknown>): void {
    try {
      const subject = this.#subjects.audit(kind);
      const body = enc.encode(JSON.stringify({ kind, at: Date.now(), by: this.#envelopes.identity.id, ...record }));
      this.#nc.publish(subject, body, { headers: this.#envelopes.seal(subject, body) });
    } catch (err) {
      this.#log.warn({ err: String(err), kind }, "audit publish failed");
    }
  }
}

/** One audit record as read back, with the outcome of its verification. */
export interface AuditEntry {
  /** Position in `MESH_<T>_AUDIT`, when read from the stream. */
  sequence?: number;
  subject: string;
  /** The subject's kind token (`denied`, `replayed`, …). */
  kind: string;
  /** The record's JSON body (`{}` when it is not a JSON object). */
  record: Record<string, unknown>;
  /**
   * True only when the envelope verifies (signature, or a MAC for the
   * reader), its signer is the record's `by`, and the body's `kind` is the
   * subject's. A false entry is not evidence of anything: show it as
   * unverified or drop it.
   */
  verified: boolean;
  /** The verified signer. */
  signer?: string;
  /** Why it did not verify. */
  problem?: string;
}

/**
 * Verifies one audit record read from the audit stream or its subjects. It
 * never throws: a forged, unsigned or malformed record comes back with
 * `verified: false` and the `problem`.
 */
export function verifyAuditRecord(envelopes: Envelopes, msg: Received & { seq?: number }): AuditEntry {
  const kind = msg.subject.slice(msg.subject.lastIndexOf(".") + 1);
  const entry: AuditEntry = { sequence: msg.seq, subject: msg.subject, kind, record: {}, verified: false };
  try {
    const parsed: unknown = JSON.parse(dec.decode(msg.data));
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) entry.record = parsed as Record<string, unknown>;
    else return { ...entry, problem: "body is not a JSON object" };
  } catch {
    return { ...entry, problem: "body is not JSON" };
  }
  let signer: string;
  try {
    signer = envelopes.open(msg, { durable: true }).from;
  } catch (err) {
    return { ...entry, problem: isAgentBusError(err) ? `${err.code}: ${err.message}` : String(err) };
  }
  if (entry.record.by !== signer) return { ...entry, signer, problem: `signed by ${signer}, but the record names ${String(entry.record.by)}` };
  if (entry.record.kind !== kind) return { ...entry, signer, problem: `record kind ${String(entry.record.kind)} on subject of kind ${kind}` };
  return { ...entry, signer, verified: true };
}

/** What {@link readAudit} needs from a bus. */
export interface AuditSource {
  nc: NatsConnection;
  subjects: Subjects;
  envelopes: Envelopes;
}

/** Options of {@link readAudit}. */
export interface ReadAuditOptions {
  /** First stream sequence to read (1: everything kept); absent: only records from now on. */
  from?: number;
  /** Only these kinds. */
  kinds?: string[];
  /** Leave out records that do not verify (default: return them with `verified: false`). */
  dropUnverified?: boolean;
  /** Ends the reading (the iterator finishes). */
  signal?: AbortSignal;
}

/**
 * Reads `MESH_<T>_AUDIT` in order (an ordered consumer), verifying every
 * record with {@link verifyAuditRecord}. Runs until the iterator is returned,
 * `signal` aborts or the connection closes.
 */
export async function* readAudit(bus: AuditSource, options: ReadAuditOptions = {}): AsyncGenerator<AuditEntry> {
  // One filter subject (servers before 2.10 take no more); several kinds are filtered here.
  const kinds = options.kinds?.length ? new Set(options.kinds.map((k) => bus.subjects.audit(k))) : undefined;
  const filter = kinds?.size === 1 ? [...kinds][0]! : `${bus.subjects.prefix}.audit.>`;
  const js = jetstream(bus.nc);
  const consumer = await retryJs(() =>
    js.consumers.get(bus.subjects.stream("AUDIT"), {
      filter_subjects: filter,
      ...(options.from ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: options.from } : { deliver_policy: DeliverPolicy.New }),
    }),
  );
  const messages = await consumer.consume();
  const stop = () => messages.stop();
  if (options.signal?.aborted) stop();
  options.signal?.addEventListener("abort", stop, { once: true });
  try {
    for await (const m of messages) {
      if (kinds && !kinds.has(m.subject)) continue;
      const entry = verifyAuditRecord(bus.envelopes, m);
      if (entry.verified || !options.dropUnverified) yield entry;
    }
  } finally {
    options.signal?.removeEventListener("abort", stop);
    messages.stop();
  }
}
