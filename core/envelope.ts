import { createHash, timingSafeEqual } from "node:crypto";
import { headers as natsHeaders, nuid, type MsgHdrs } from "@nats-io/nats-core";
import { AgentBusError, type ErrorCode } from "./errors.js";
import { verifySignature, type Identity } from "./identity.js";
import { PeerKeys } from "./peerkeys.js";
import { ReplayGuard } from "./replay.js";
import type { TraceContext } from "./trace.js";

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
  error: "Mesh-Error-Code",
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
}

/** A verified message's envelope. */
export interface Envelope extends EnvelopeMeta {
  from: string;
  ts: number;
  id: string;
  depth: number;
  /** `signature` (Ed25519, anyone can verify) or `mac` (peer key, for this recipient only). */
  auth: "signature" | "mac";
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
}

/** Minimal view of a received NATS message. */
export interface Received {
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
}

const enc = new TextEncoder();
const MAX_MAC_RECIPIENTS = 8;
const HINT = 12;

/** A recipient's short tag in `Mesh-Mac` (`<hint>:<mac>,…`). */
const hintOf = (id: string): string => id.slice(1, 1 + HINT);

function canonical(subject: string, from: string, ts: string, id: string, m: EnvelopeMeta): Uint8Array {
  // Everything a forger would want to change is covered: routing (subject),
  // who, when, which message, the task it belongs to, its depth, and on an
  // error reply the error code.
  return enc.encode(
    `${subject}\n${from}\n${ts}\n${id}\n${m.task ?? ""}\n${m.context ?? ""}\n${m.parent ?? ""}\n${m.depth ?? 0}\n${m.capability ?? ""}\n${m.errorCode ?? ""}\n`,
  );
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
  readonly #isRevoked: (id: string) => boolean;
  readonly #clock: () => number;

  constructor(identity: Identity, options: EnvelopeOptions = {}) {
    this.identity = identity;
    this.windowMs = options.windowMs ?? 60_000;
    this.maxPayload = options.maxPayload ?? 1024 * 1024;
    this.#isRevoked = options.isRevoked ?? (() => false);
    this.#clock = options.clock ?? Date.now;
    this.#peers = new PeerKeys(identity);
    this.#replay = new ReplayGuard(this.windowMs);
  }

  /**
   * Headers for a message to `subject`. `recipients`: identities that may
   * receive it; when 1..8 are given the message is MACed for each of them,
   * otherwise signed.
   */
  seal(subject: string, body: Uint8Array, meta: EnvelopeMeta = {}, recipients?: readonly string[]): MsgHdrs {
    const h = natsHeaders();
    const from = this.identity.id;
    const ts = String(this.#clock());
    const id = nuid.next();
    h.set(Header.from, from);
    h.set(Header.ts, ts);
    h.set(Header.id, id);
    if (meta.task) h.set(Header.task, meta.task);
    if (meta.context) h.set(Header.context, meta.context);
    if (meta.parent) h.set(Header.parent, meta.parent);
    if (meta.depth) h.set(Header.depth, String(meta.depth));
    if (meta.capability) h.set(Header.cap, meta.capability);
    if (meta.errorCode) h.set(Header.error, meta.errorCode);
    if (meta.trace) {
      h.set(Header.traceparent, meta.trace.traceparent);
      if (meta.trace.tracestate) h.set(Header.tracestate, meta.trace.tracestate);
    }
    const head = canonical(subject, from, ts, id, meta);
    if (recipients && recipients.length > 0 && recipients.length <= MAX_MAC_RECIPIENTS) {
      h.set(
        Header.mac,
        recipients.map((r) => `${hintOf(r)}:${this.#peers.mac(r, head, body).toString("base64url")}`).join(","),
      );
    } else {
      const signed = Buffer.concat([head, sha256(body)]);
      h.set(Header.sig, Buffer.from(this.identity.sign(signed)).toString("base64url"));
    }
    return h;
  }

  /** Verifies a received message; throws {@link AgentBusError} on refusal. */
  open(msg: Received): Envelope {
    const now = this.#clock();
    if (msg.data.length > this.maxPayload) {
      throw new AgentBusError("PAYLOAD_TOO_LARGE", `payload of ${msg.data.length} bytes exceeds ${this.maxPayload}`);
    }
    const h = msg.headers;
    const from = h?.get(Header.from);
    const tsText = h?.get(Header.ts);
    const id = h?.get(Header.id);
    if (!h || !from || !tsText || !id) throw new AgentBusError("UNSIGNED", "message lacks Mesh-From, Mesh-Ts or Nats-Msg-Id");
    const ts = Number(tsText);
    if (!Number.isSafeInteger(ts) || Math.abs(now - ts) > this.windowMs) {
      throw new AgentBusError("EXPIRED", `message time ${tsText} is outside the ±${this.windowMs} ms window`);
    }
    if (this.#isRevoked(from)) throw new AgentBusError("REVOKED", `sender ${from} is revoked`);
    const depthText = h.get(Header.depth);
    const depth = depthText ? Number(depthText) : 0;
    if (!Number.isSafeInteger(depth) || depth < 0) throw new AgentBusError("BAD_SIGNATURE", "malformed Mesh-Depth");
    const meta: EnvelopeMeta = {
      task: h.get(Header.task) || undefined,
      context: h.get(Header.context) || undefined,
      parent: h.get(Header.parent) || undefined,
      depth,
      capability: h.get(Header.cap) || undefined,
      errorCode: (h.get(Header.error) || undefined) as ErrorCode | undefined,
    };
    const head = canonical(msg.subject, from, tsText, id, meta);
    const auth = this.#authenticate(h, from, head, msg.data);
    if (!this.#replay.firstSeen(`${from}/${id}`, now)) {
      throw new AgentBusError("REPLAYED", `message ${id} was already received`);
    }
    const traceparent = h.get(Header.traceparent);
    if (traceparent) meta.trace = { traceparent, tracestate: h.get(Header.tracestate) || undefined };
    return { ...meta, from, ts, id, depth, auth };
  }

  #authenticate(h: MsgHdrs, from: string, head: Uint8Array, body: Uint8Array): Envelope["auth"] {
    const macs = h.get(Header.mac);
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
    const sig = h.get(Header.sig);
    if (!sig) throw new AgentBusError("UNSIGNED", "message is neither signed nor MACed for this recipient");
    const signed = Buffer.concat([head, sha256(body)]);
    if (!verifySignature(from, signed, Buffer.from(sig, "base64url"))) {
      throw new AgentBusError("BAD_SIGNATURE", `signature check failed for sender ${from}`);
    }
    return "signature";
  }
}
