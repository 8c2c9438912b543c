import { createHash, timingSafeEqual } from "node:crypto";
import { MsgHdrsImpl, nuid, type MsgHdrs } from "@nats-io/nats-core";
import { AgentBusError, type ErrorCode } from "../wire/errors.js";
import { verifySignature, type Identity } from "./identity.js";
import { E2E, E2E_SCHEME, messageBinding, type Sealed } from "./e2e.js";
import { utf8 } from "../wire/message.js";
import { PeerKeys } from "./peerkeys.js";
import { ReplayGuard, type SharedReplay } from "./replay.js";
import type { TraceContext } from "../wire/trace.js";

/** Header names of the envelope (docs/ARCHITECTURE.md §Headers). */
export const Header = {
  from: "Mesh-From",
  ts: "Mesh-Ts",
  id: "Nats-Msg-Id",
  sig: "Mesh-Sig",
  mac: "Mesh-Mac",
  task: "Mesh-Task",
  context: "Mesh-Context",
  parent: "Mesh-Parent",
  depth: "Mesh-Depth",
  cap: "Mesh-Cap",
  to: "Mesh-To",
  enc: "Mesh-Enc",
  runAt: "Mesh-Run-At",
  /** The message id again, on a delayed work item: the server's schedule drops `Nats-Msg-Id` from the copy it publishes. */
  meshId: "Mesh-Id",
  error: "Mesh-Error-Code",
  dlqReason: "Mesh-Dlq-Reason",
  dlqDeliveries: "Mesh-Dlq-Deliveries",
  /** A dead-lettered work item's `Nats-Msg-Id` (the copy leaves that header out, so the stream keeps every copy): part of what its signature covers. */
  dlqMsgId: "Mesh-Dlq-Msg-Id",
  /** A dead-lettered work item's work subject (its priority level): what its signature was sealed for. */
  dlqSubject: "Mesh-Dlq-Subject",
  traceparent: "traceparent",
  tracestate: "tracestate",
} as const;

/** What a sender states about a message besides its body. */
export interface EnvelopeMeta {
  /** Task the message belongs to. */
  task?: string;
  /** A2A context (conversation) id. */
  context?: string;
  /** The calling task or call, for agent-to-agent calls. */
  parent?: string;
  /** Call depth: 0 for a call from outside, +1 per agent-to-agent hop. */
  depth?: number;
  /** Capability invoked, on a call addressed to one agent (its subject does not name it). */
  capability?: string;
  /** Error code, on error replies. */
  errorCode?: ErrorCode;
  trace?: TraceContext;
  /**
   * A delayed work item's time, ms since the epoch: it is stored (published
   * by the server's schedule) at that time or later, so its age is judged
   * from it rather than from `Mesh-Ts`.
   */
  runAt?: number;
}

/** A verified message's envelope. */
export interface Envelope extends EnvelopeMeta {
  from: string;
  ts: number;
  id: string;
  depth: number;
  /** `signature` (Ed25519, anyone can verify) or `mac` (peer key, for this recipient only). */
  auth: "signature" | "mac";
  /** `Mesh-Enc`: the body is end-to-end encrypted with this scheme (open it with {@link Envelopes.decrypt}). */
  enc?: string;
  /** `Mesh-To`, with `enc`: the content key wrapped for each recipient. */
  to?: string;
}

/** Tunables for {@link Envelopes}. */
export interface EnvelopeOptions {
  /** Accepted clock difference in ms, both ways (default 60 000). */
  windowMs?: number;
  /** Largest accepted body in bytes (default 1 MiB). */
  maxPayload?: number;
  /** Revocation check, consulted before the signature is verified. */
  isRevoked?: (id: string) => boolean;
  /** Time source in ms (tests use a skewed clock). */
  clock?: () => number;
  /**
   * The tenant's shared replay memory, consulted by {@link Envelopes.openCall}
   * after the in-process one: replays are refused across restarts and replicas.
   */
  sharedReplay?: SharedReplay;
}

/** Options of {@link Envelopes.seal}. */
export interface SealOptions {
  /** Message id (`Nats-Msg-Id`) to use, e.g. a task id for JetStream de-duplication. */
  id?: string;
  /** Sign even when MACs are added: for durable messages a consumer unknown today may read. */
  sign?: boolean;
  /**
   * The body is this encrypted body's ciphertext: `Mesh-Enc` and `Mesh-To`
   * are set and covered by the MAC or signature. Use {@link Envelopes.sealEncrypted}.
   */
  encrypted?: Sealed;
}

/** Options of {@link Envelopes.open}. */
export interface OpenOptions {
  /**
   * The subject the sender sealed for, when it is not the one the message
   * arrived on: replies are sealed for {@link replySubject} of the request.
   */
  subject?: string;
  /**
   * false for replies: a reply is bound (by its MAC or signature) to the
   * request's one-time inbox, which takes one message, so a replayed copy
   * has nowhere to go.
   */
  replay?: boolean;
  /**
   * For messages read back from a stream (work items, inbox, task events):
   * they are legitimately old and redelivered, so the replay memory does not
   * apply and the time window is checked against `storedAt` (when given)
   * rather than now; the stream's de-duplication and the task state machine
   * stand in for the replay memory.
   */
  durable?: boolean;
  /**
   * With `durable`: when the stream stored the message, ms since the epoch
   * (JetStream's message timestamp). `Mesh-Ts` must be within the window of
   * it: a copy stored again after the stream's duplicate window is `EXPIRED`.
   */
  storedAt?: number;
}

/**
 * The subject a reply is sealed for: the request's `Nats-Msg-Id`, not the
 * inbox it is delivered to. The inbox name is the caller's view; across
 * accounts (a capability another tenant exports) the responder sees a
 * mapped reply subject, so both sides name the request instead. A reply
 * still cannot be moved to another request.
 */
export function replySubject(requestId: string | undefined): string {
  return `_reply.${requestId ?? ""}`;
}

/** Minimal view of a received NATS message. */
export interface Received {
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
}

const MAX_MAC_RECIPIENTS = 8;
const HINT = 12;

/** A recipient's short tag in `Mesh-Mac` (`<hint>:<mac>,…`). */
const hintOf = (id: string): string => id.slice(1, 1 + HINT);

function canonical(subject: string, from: string, ts: string, id: string, m: EnvelopeMeta, enc?: string, to?: string): string {
  const head = canonicalHead(subject, from, ts, id, m, enc, to);
  // A delayed work item adds its time (absent from every other message, whose form is unchanged).
  return m.runAt === undefined ? head : `${head}run-at ${m.runAt}\n`;
}

function canonicalHead(subject: string, from: string, ts: string, id: string, m: EnvelopeMeta, enc?: string, to?: string): string {
  // Everything a forger would want to change is covered: routing (subject),
  // who, when, which message, the task it belongs to, its depth, the
  // capability and, on an error reply, the error code. An encrypted
  // message adds two lines, Mesh-Enc and Mesh-To: stripping or adding
  // encryption, or changing a wrapped key, breaks the MAC or signature.
  const head = `${subject}\n${from}\n${ts}\n${id}\n${m.task ?? ""}\n${m.context ?? ""}\n${m.parent ?? ""}\n${m.depth ?? 0}\n${m.capability ?? ""}\n${m.errorCode ?? ""}\n`;
  return enc === undefined ? head : `${head}${enc}\n${to ?? ""}\n`;
}

// Header values a caller supplies (task, context, trace state) must not be
// able to break the header block: printable ASCII only.
const SAFE_VALUE = /^[\x20-\x7e]*$/;

/**
 * Header access straight on nats-core's map: `MsgHdrs.get`/`set` copy the
 * key list on every call, which shows up on the per-message path.
 */
function read(h: MsgHdrs, key: string): string | undefined {
  if (h instanceof MsgHdrsImpl) return h.headers.get(key)?.[0] || undefined;
  return h.get(key) || undefined;
}

function write(h: MsgHdrsImpl, key: string, value: string | undefined): void {
  if (!value) return;
  if (!SAFE_VALUE.test(value)) throw new AgentBusError("INVALID_INPUT", `${key} must be printable ASCII`);
  h.headers.set(key, [value]);
}

const sha256 = (body: Uint8Array): Buffer => createHash("sha256").update(body).digest();

/**
 * Seals outgoing messages and opens incoming ones for one identity.
 *
 * Sealing: with known recipients (a reply, or a call to agents this side has
 * discovered) the message carries one HMAC per recipient in `Mesh-Mac`;
 * otherwise an Ed25519 signature in `Mesh-Sig`. Opening checks, in order,
 * size, time window, revocation, authenticity and replay, before any handler
 * sees the message; each refusal is an {@link AgentBusError} with its code.
 */
export class Envelopes {
  readonly identity: Identity;
  readonly windowMs: number;
  readonly maxPayload: number;
  readonly #peers: PeerKeys;
  readonly #replay: ReplayGuard;
  readonly #shared?: SharedReplay;
  readonly #isRevoked: (id: string) => boolean;
  readonly #clock: () => number;
  /** End-to-end encryption for this identity (keys from the same peer agreement as the MACs). */
  readonly e2e: E2E;

  constructor(identity: Identity, options: EnvelopeOptions = {}) {
    this.identity = identity;
    this.windowMs = options.windowMs ?? 60_000;
    this.maxPayload = options.maxPayload ?? 1024 * 1024;
    this.#isRevoked = options.isRevoked ?? (() => false);
    this.#clock = options.clock ?? Date.now;
    this.#peers = new PeerKeys(identity);
    this.e2e = new E2E(identity, this.#peers);
    this.#replay = new ReplayGuard(this.windowMs);
    this.#shared = options.sharedReplay;
  }

  /**
   * Headers for a message to `subject`. `recipients`: identities that may
   * receive it; when 1..8 are given the message is MACed for each of them,
   * otherwise signed.
   */
  seal(subject: string, body: Uint8Array, meta: EnvelopeMeta = {}, recipients?: readonly string[], options: SealOptions = {}): MsgHdrs {
    const h = new MsgHdrsImpl();
    const from = this.identity.id;
    const ts = String(this.#clock());
    const id = options.id ?? nuid.next();
    h.headers.set(Header.from, [from]);
    h.headers.set(Header.ts, [ts]);
    h.headers.set(Header.id, [id]);
    write(h, Header.task, meta.task);
    write(h, Header.context, meta.context);
    write(h, Header.parent, meta.parent);
    if (meta.depth) h.headers.set(Header.depth, [String(meta.depth)]);
    if (meta.runAt !== undefined) {
      if (!Number.isSafeInteger(meta.runAt) || meta.runAt < 0) throw new AgentBusError("INVALID_INPUT", "runAt must be a time in ms since the epoch");
      h.headers.set(Header.runAt, [String(meta.runAt)]);
      h.headers.set(Header.meshId, [id]);
    }
    write(h, Header.cap, meta.capability);
    write(h, Header.error, meta.errorCode);
    if (meta.trace) {
      write(h, Header.traceparent, meta.trace.traceparent);
      write(h, Header.tracestate, meta.trace.tracestate);
    }
    const sealed = options.encrypted;
    if (sealed) {
      h.headers.set(Header.enc, [E2E_SCHEME]);
      h.headers.set(Header.to, [sealed.to]);
    }
    const head = sealed ? canonical(subject, from, ts, id, meta, E2E_SCHEME, sealed.to) : canonical(subject, from, ts, id, meta);
    const mac = recipients && recipients.length > 0 && recipients.length <= MAX_MAC_RECIPIENTS;
    if (mac) {
      let macs = "";
      for (const r of recipients) macs += `${macs ? "," : ""}${hintOf(r)}:${this.#peers.mac(r, head, body).toString("base64url")}`;
      h.headers.set(Header.mac, [macs]);
    }
    if (!mac || options.sign) {
      const signed = Buffer.concat([Buffer.from(head), sha256(body)]);
      h.headers.set(Header.sig, [Buffer.from(this.identity.sign(signed)).toString("base64url")]);
    }
    return h;
  }

  /** Verifies a received message; throws {@link AgentBusError} on refusal. */
  open(msg: Received, options: OpenOptions = {}): Envelope {
    const now = this.#clock();
    if (msg.data.length > this.maxPayload) {
      throw new AgentBusError("PAYLOAD_TOO_LARGE", `payload of ${msg.data.length} bytes exceeds ${this.maxPayload}`);
    }
    const h = msg.headers;
    const from = h && read(h, Header.from);
    const tsText = h && read(h, Header.ts);
    const runAtText = h && read(h, Header.runAt);
    // A delayed work item as the server's schedule published it has no Nats-Msg-Id: its sealed copy stands in.
    const id = h && (read(h, Header.id) ?? (runAtText !== undefined ? read(h, Header.meshId) : undefined));
    if (!h || !from || !tsText || !id) throw new AgentBusError("UNSIGNED", "message lacks Mesh-From, Mesh-Ts or Nats-Msg-Id");
    const ts = Number(tsText);
    const runAt = runAtText === undefined ? undefined : Number(runAtText);
    if (runAt !== undefined && (!Number.isSafeInteger(runAt) || !options.durable)) throw new AgentBusError("BAD_SIGNATURE", "malformed or misplaced Mesh-Run-At");
    const ref = options.durable ? options.storedAt : now;
    // A delayed work item is stored at its time or later (later when the server was down then), never before it was sealed or before its time.
    const outside = (r: number) => (runAt === undefined ? Math.abs(r - ts) > this.windowMs : r < ts - this.windowMs || r < runAt - this.windowMs);
    if (!Number.isSafeInteger(ts) || (ref !== undefined && outside(ref))) {
      throw new AgentBusError("EXPIRED", `message time ${tsText} is outside the ±${this.windowMs} ms window${options.durable ? " of the time it was stored" : ""}`);
    }
    if (this.#isRevoked(from)) throw new AgentBusError("REVOKED", `sender ${from} is revoked`);
    const depthText = read(h, Header.depth);
    const depth = depthText ? Number(depthText) : 0;
    if (!Number.isSafeInteger(depth) || depth < 0) throw new AgentBusError("BAD_SIGNATURE", "malformed Mesh-Depth");
    const env: Envelope = {
      from,
      ts,
      id,
      depth,
      auth: "mac",
      task: read(h, Header.task),
      context: read(h, Header.context),
      parent: read(h, Header.parent),
      capability: read(h, Header.cap),
      errorCode: read(h, Header.error) as ErrorCode | undefined,
      ...(runAt !== undefined && { runAt }),
    };
    const enc = read(h, Header.enc);
    if (enc !== undefined) {
      env.enc = enc;
      env.to = read(h, Header.to) ?? "";
    }
    env.auth = this.#authenticate(h, from, canonical(options.subject ?? msg.subject, from, tsText, id, env, env.enc, env.to), msg.data);
    if (options.replay !== false && !options.durable && !this.#replay.firstSeen(`${from}/${id}`, now)) {
      throw new AgentBusError("REPLAYED", `message ${id} was already received`);
    }
    const traceparent = read(h, Header.traceparent);
    if (traceparent) env.trace = { traceparent, tracestate: read(h, Header.tracestate) };
    return env;
  }

  /**
   * {@link seal} with the body encrypted end to end for `encryptFor` (ids;
   * see {@link E2E.seal}): returns the headers and the ciphertext to send
   * as the body. The ciphertext is bound to the message id; `Mesh-Enc` and
   * `Mesh-To` are covered by the MAC (for `macFor`) or signature, so a
   * receiver verifies before it decrypts.
   */
  sealEncrypted(subject: string, plain: Uint8Array, encryptFor: readonly string[], meta: EnvelopeMeta = {}, macFor?: readonly string[], options: SealOptions = {}): { headers: MsgHdrs; body: Buffer } {
    const id = options.id ?? nuid.next();
    const sealed = this.e2e.seal(plain, encryptFor, messageBinding(id));
    return { headers: this.seal(subject, sealed.data, meta, macFor, { ...options, id, encrypted: sealed }), body: sealed.data };
  }

  /**
   * The plain body of a message {@link open} verified: the body itself when
   * it is not encrypted, else decrypted (`NOT_RECIPIENT` when it is not
   * encrypted for this identity, `BAD_SIGNATURE` when it does not
   * authenticate).
   */
  decrypt(env: Envelope, data: Uint8Array): Uint8Array {
    if (env.enc === undefined) return data;
    return this.e2e.open(env.from, env.enc, env.to ?? "", data, messageBinding(env.id));
  }

  /**
   * Opens the reply to a request whose `Nats-Msg-Id` was `requestId`: the
   * one way replies are read. Verifies it (bound to the request, so no
   * replay memory), checks it comes from `from` when given, decrypts it
   * when encrypted, and throws the `AgentBusError` an error reply carries
   * (`Mesh-Error-Code`, and the body's `message` when it has one). Returns
   * the envelope and the plain body.
   */
  openReply(reply: Received, requestId: string | undefined, from?: string): { env: Envelope; data: Uint8Array } {
    const env = this.open(reply, { replay: false, subject: replySubject(requestId) });
    if (from !== undefined && env.from !== from) throw new AgentBusError("BAD_SIGNATURE", `reply from ${env.from}, expected ${from}`);
    const data = this.decrypt(env, reply.data);
    if (env.errorCode) {
      let message: string = env.errorCode;
      try {
        const body = JSON.parse(utf8(data)) as { message?: unknown };
        if (typeof body.message === "string") message = body.message;
      } catch {
        // not JSON: the code stands for the message
      }
      throw new AgentBusError(env.errorCode, message);
    }
    return { env, data };
  }

  /**
   * Opens a fast call: {@link open}, then claims `(Mesh-From, Nats-Msg-Id)`
   * in the tenant's shared replay memory (when configured), so a copy
   * replayed to another replica or after a restart is refused `REPLAYED`.
   * Resolves only once the claim is stored: run the handler after it.
   */
  async openCall(msg: Received): Promise<Envelope> {
    const env = this.open(msg);
    if (this.#shared) await this.#shared.claim(env.from, env.id);
    return env;
  }

  #authenticate(h: MsgHdrs, from: string, head: string, body: Uint8Array): Envelope["auth"] {
    const macs = read(h, Header.mac);
    if (macs) {
      const mine = hintOf(this.identity.id);
      for (const entry of macs.split(",")) {
        if (entry.slice(0, HINT) !== mine || entry[HINT] !== ":") continue;
        const given = Buffer.from(entry.slice(HINT + 1), "base64url");
        const expected = this.#peers.mac(from, head, body);
        if (given.length === expected.length && timingSafeEqual(given, expected)) return "mac";
        throw new AgentBusError("BAD_SIGNATURE", `MAC check failed for sender ${from}`);
      }
    }
    const sig = read(h, Header.sig);
    if (!sig) throw new AgentBusError("UNSIGNED", "message is neither signed nor MACed for this recipient");
    const signed = Buffer.concat([Buffer.from(head), sha256(body)]);
    if (!verifySignature(from, signed, Buffer.from(sig, "base64url"))) {
      throw new AgentBusError("BAD_SIGNATURE", `signature check failed for sender ${from}`);
    }
    return "signature";
  }
}
