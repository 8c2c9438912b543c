/**
 * Signed policy: how ACL entries, revocations and the tenant's trust root
 * are signed, verified and watched. An entry is stored as its payload plus
 * `by` (the signer's id), `at` (ms since the epoch) and `sig` (Ed25519,
 * base64url) over a canonical encoding of the tenant, bucket, key, payload,
 * `at` and `by`: a signed value cannot be moved to another key, bucket or
 * tenant. Receivers verify entries as their watch delivers them, never on a
 * message's path.
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";
import { isIdentityId, verifySignature, type Identity } from "../security/identity.js";
import { KvWatch } from "../infra/kvmirror.js";

const enc = new TextEncoder();

/** The buckets whose entries are signed. */
export type PolicyBucket = "acl" | "revoked" | "schedules";

/** JSON with object keys sorted at every level: one byte string per value. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** The bytes a policy signature covers. */
export function policyBytes(tenant: string, bucket: PolicyBucket, key: string, payload: Record<string, unknown>, at: number, by: string): Uint8Array {
  return enc.encode(canonicalJson(["agentbus.policy.v1", tenant, bucket, key, payload, at, by]));
}

/** A verified policy entry: what was signed, by whom, when. */
export interface SignedEntry<P extends Record<string, unknown> = Record<string, unknown>> {
  payload: P;
  by: string;
  at: number;
  sig: string;
}

const RESERVED = ["by", "at", "sig"];

/** Signs `payload` for `key` in `bucket`; returns the value to store. */
export function signEntry(identity: Identity, tenant: string, bucket: PolicyBucket, key: string, payload: Record<string, unknown>, at = Date.now()): Record<string, unknown> {
  for (const k of RESERVED) if (k in payload) throw new AgentBusError("INVALID_INPUT", `a policy payload cannot carry "${k}"`);
  const sig = Buffer.from(identity.sign(policyBytes(tenant, bucket, key, payload, at, identity.id))).toString("base64url");
  return { ...payload, by: identity.id, at, sig };
}

/**
 * Checks a stored value's shape and signature (not whether the signer is an
 * admin: that depends on the trust root). Throws `BAD_SIGNATURE`.
 */
export function verifyEntry(tenant: string, bucket: PolicyBucket, key: string, value: unknown): SignedEntry {
  if (!value || typeof value !== "object" || Array.isArray(value)) throw new AgentBusError("BAD_SIGNATURE", `${bucket} entry ${key} is not a signed object`);
  const { by, at, sig, ...payload } = value as Record<string, unknown>;
  if (typeof by !== "string" || typeof at !== "number" || !Number.isFinite(at) || typeof sig !== "string") {
    throw new AgentBusError("BAD_SIGNATURE", `${bucket} entry ${key} is unsigned (no by, at, sig)`);
  }
  if (!isIdentityId(by)) throw new AgentBusError("BAD_SIGNATURE", `${bucket} entry ${key}: signer ${by} is not an identity id`);
  if (!verifySignature(by, policyBytes(tenant, bucket, key, payload, at, by), Buffer.from(sig, "base64url"))) {
    throw new AgentBusError("BAD_SIGNATURE", `${bucket} entry ${key}: signature by ${by} does not verify`);
  }
  return { payload, by, at, sig };
}

/** The key of the trust root record in `mesh_<t>_acl`. */
export const TRUST_ROOT_KEY = "trust.root";

/**
 * One link of the trust root chain: the admins from then on, signed by an
 * admin of the previous link (the first link by one of its own admins, or
 * by a pinned admin). `prev` is the previous link's `sig` ("" for the first).
 */
export interface TrustLink {
  admins: string[];
  prev: string;
  by: string;
  at: number;
  sig: string;
}

/** The value of `trust.root`: the chain of roots, oldest first. */
export interface TrustRecord {
  links: TrustLink[];
}

/** A receiver's view of who the admins are. */
export interface TrustState {
  /** The current admins. */
  admins: ReadonlySet<string>;
  /** Former admins → when a later link dropped them (entries they signed before that stay valid). */
  retired: ReadonlyMap<string, number>;
  /** `sig` of the newest accepted link; absent while only a pinned root is known. */
  head?: string;
  /** `at` of the newest accepted link (0 for a pinned root). */
  at: number;
}

/** A trust state from pinned admins (no record seen yet). */
export function pinnedTrust(admins: readonly string[]): TrustState {
  return { admins: new Set(admins), retired: new Map(), at: 0 };
}

/** Whether `id` may sign policy dated `at` under `trust`. */
export function isAdminAt(trust: TrustState | undefined, id: string, at: number): boolean {
  if (!trust) return false;
  if (trust.admins.has(id)) return true;
  const until = trust.retired.get(id);
  return until !== undefined && at < until;
}

/** Signs a new link extending `previous` (absent: the first link). */
export function signTrustLink(identity: Identity, tenant: string, admins: string[], previous: TrustLink | undefined, at = Date.now()): TrustLink {
  const payload = { admins: checkAdmins(admins), prev: previous?.sig ?? "" };
  const signed = signEntry(identity, tenant, "acl", TRUST_ROOT_KEY, payload, Math.max(at, (previous?.at ?? 0) + 1));
  return signed as unknown as TrustLink;
}

/** Validates an admin list: one or more identity ids, no duplicates. */
export function checkAdmins(admins: readonly string[]): string[] {
  if (!Array.isArray(admins) || admins.length === 0) throw new AgentBusError("INVALID_INPUT", "a trust root names at least one admin");
  for (const a of admins) if (typeof a !== "string" || !isIdentityId(a)) throw new AgentBusError("INVALID_INPUT", `admin ${String(a)} is not an identity id (U…)`);
  return [...new Set(admins)];
}

function verifyLink(tenant: string, link: unknown): TrustLink {
  const e = verifyEntry(tenant, "acl", TRUST_ROOT_KEY, link);
  const { admins, prev, ...rest } = e.payload as { admins?: unknown; prev?: unknown };
  if (Object.keys(rest).length > 0 || typeof prev !== "string" || !Array.isArray(admins)) throw new AgentBusError("BAD_SIGNATURE", "a trust link is {admins, prev, by, at, sig}");
  return { admins: checkAdmins(admins as string[]), prev, by: e.by, at: e.at, sig: e.sig };
}

/**
 * The trust state a `trust.root` record leads to from `current`:
 *
 * - no current state (nothing pinned, nothing seen): the first link is taken
 *   on first use, when signed by one of its own admins;
 * - a pinned root not yet matched to a link: the chain is followed from the
 *   first link signed by a pinned admin;
 * - otherwise the record must contain the current head and extend it.
 *
 * Every link after the starting one must name the previous link's `sig` and
 * be signed by one of its admins, with a later `at`. Throws `DENIED` (with
 * the reason) when the record does not lead on from `current`; returns
 * `current` unchanged when it adds nothing.
 */
export function followTrust(tenant: string, record: unknown, current: TrustState | undefined): TrustState {
  const raw = (record as TrustRecord | undefined)?.links;
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > 1024) throw new AgentBusError("DENIED", "a trust root record is {links: [...]} with 1 to 1024 links");
  const links = raw.map((l) => verifyLink(tenant, l));
  let start: number;
  if (!current) {
    if (links[0]!.prev !== "" || !links[0]!.admins.includes(links[0]!.by)) throw new AgentBusError("DENIED", "the first trust link is not signed by one of its own admins");
    start = 0;
  } else if (current.head === undefined) {
    start = links.findIndex((l) => current.admins.has(l.by));
    if (start < 0) throw new AgentBusError("DENIED", "no link of the trust root is signed by a pinned admin");
  } else {
    start = links.findIndex((l) => l.sig === current.head);
    if (start < 0) throw new AgentBusError("DENIED", "the trust root record does not contain the current root: it does not extend it");
    if (start === links.length - 1) return current;
    start += 1;
    if (links[start]!.prev !== current.head) throw new AgentBusError("DENIED", "the next trust link does not name the current root");
    if (!current.admins.has(links[start]!.by)) throw new AgentBusError("DENIED", `trust link signed by ${links[start]!.by}, not an admin of the previous root`);
  }
  const retired = new Map(current?.retired ?? []);
  let admins = new Set(current?.admins ?? []);
  let at = current?.at ?? 0;
  for (let i = start; i < links.length; i++) {
    const link = links[i]!;
    if (i > start) {
      const prev = links[i - 1]!;
      if (link.prev !== prev.sig) throw new AgentBusError("DENIED", `trust link ${i} does not follow link ${i - 1}`);
      if (!prev.admins.includes(link.by)) throw new AgentBusError("DENIED", `trust link ${i} signed by ${link.by}, not an admin of the previous root`);
    }
    if (link.at <= at) throw new AgentBusError("DENIED", `trust link ${i} is not newer than the root it replaces`);
    const next = new Set(link.admins);
    for (const a of admins) if (!next.has(a) && !retired.has(a)) retired.set(a, link.at);
    for (const a of next) retired.delete(a);
    admins = next;
    at = link.at;
  }
  return { admins, retired, head: links[links.length - 1]!.sig, at };
}

/** One change seen by a {@link watchPolicy}: a put, or a delete/purge (`value` undefined). */
export interface PolicyChange {
  key: string;
  operation: "PUT" | "DEL" | "PURGE";
  revision: number;
  /** The parsed JSON of a put; `undefined` for a delete, purge, or a value that is not JSON. */
  value?: unknown;
  /** True while the bucket's existing entries are being loaded. */
  initial: boolean;
}

/**
 * Starts a watch over a policy bucket that reports every operation,
 * including deletes and purges of keys it never saw a value for (a delete
 * marker found at start), so a receiver can refuse to treat a removal as a
 * signed act.
 */
export function watchPolicy(kv: KV, onChange: (change: PolicyChange) => void): Promise<KvWatch> {
  return KvWatch.start(kv, (e, initial) =>
    onChange({ key: e.key, operation: e.operation, revision: e.revision, value: e.operation === "PUT" ? jsonOf(e) : undefined, initial }),
  );
}

function jsonOf(e: KvEntry): unknown {
  try {
    return e.json();
  } catch {
    return undefined;
  }
}

/** How a receiver reports a policy entry it does not apply: logged and audited (`bad_policy`). */
export type BadPolicy = (bucket: PolicyBucket, key: string, revision: number, reason: string) => void;
