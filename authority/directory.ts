/**
 * The identity directory: which tenant and role each identity belongs to.
 * It lives in a KV bucket of the `AUTH` account, which no tenant's
 * connection can reach; only the authority (and operators holding its
 * service key) read and write it.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { Kvm, type KV } from "@nats-io/kv";
import { AgentBusError, KvMirror, IdentityRoles, checkCapability, ensureBucket, isIdentityId, type IdentityRole } from "../core/internal.js";

/** The directory bucket's name (in the `AUTH` account). */
export const DIRECTORY_BUCKET = "agentbus_directory";

/** One issued identity. */
export interface IdentityRecord {
  /** The identity's id (`U…`), its public key. */
  id: string;
  tenant: string;
  role: IdentityRole;
  /** A label for operators. */
  name?: string;
  /** Agents: the capability patterns it may serve. */
  serves?: string[];
  issuedAt: number;
  /** Set when revoked: connections are refused and open ones closed. */
  revokedAt?: number;
  reason?: string;
  /** Set when the identity rotated to a new key: the id it rotated to. */
  rotatedTo?: string;
}

const TENANT = /^[a-z0-9_-]+$/;

/** Validates a record before it is written. */
export function checkRecord(r: IdentityRecord): IdentityRecord {
  if (!isIdentityId(r.id)) throw new AgentBusError("INVALID_INPUT", `not an identity id: ${r.id}`);
  if (!TENANT.test(r.tenant)) throw new AgentBusError("INVALID_INPUT", `invalid tenant ${JSON.stringify(r.tenant)}`);
  if (!IdentityRoles.includes(r.role)) throw new AgentBusError("INVALID_INPUT", `role must be one of ${IdentityRoles.join(", ")}, not ${JSON.stringify(r.role)}`);
  for (const c of r.serves ?? []) checkCapability(c.replace(/(^|\.)[*>](?=\.|$)/g, "$1x"));
  return r;
}

/** The directory, mirrored locally (lookups on every connect are local). */
export class Directory {
  readonly #kv: KV;
  readonly #mirror: KvMirror<IdentityRecord>;

  private constructor(kv: KV, mirror: KvMirror<IdentityRecord>) {
    this.#kv = kv;
    this.#mirror = mirror;
  }

  /**
   * Opens (creating when missing) the directory over a connection in the
   * `AUTH` account; with `hub` (an edge site's authority: the hub's
   * JetStream domain), a mirror of the hub's directory. `onChange` hears
   * every change (revocations included).
   */
  static async open(nc: NatsConnection, options: { replicas?: number; hub?: string; onChange?: (id: string, now: IdentityRecord | undefined, before: IdentityRecord | undefined) => void } = {}): Promise<Directory> {
    // At an edge site: a mirror of the hub's, so the edge authenticates its clients while its link is down (and writes go to the hub).
    const ofHub = options.hub === undefined ? {} : { mirror: { name: DIRECTORY_BUCKET, domain: options.hub } };
    const kv = await ensureBucket(new Kvm(nc), DIRECTORY_BUCKET, { history: 1, replicas: options.replicas ?? 1, ...ofHub }, ["history"]);
    const mirror = await KvMirror.start<IdentityRecord>(
      kv,
      (e) => checkRecord(e.json<IdentityRecord>()),
      options.onChange ? (key, now, before) => options.onChange!(key, now?.value, before?.value) : undefined,
    );
    return new Directory(kv, mirror);
  }

  /** The record of `id`, if issued. */
  get(id: string): IdentityRecord | undefined {
    return this.#mirror.get(id);
  }

  /**
   * The record of `id`: from the local mirror, else read from the bucket
   * (a record another process wrote a moment ago, which the mirror has not
   * seen yet).
   */
  async lookup(id: string): Promise<IdentityRecord | undefined> {
    const known = this.get(id);
    if (known || !isIdentityId(id)) return known;
    const entry = await this.#kv.get(id);
    return entry?.operation === "PUT" ? checkRecord(entry.json<IdentityRecord>()) : undefined;
  }

  /** Every record, optionally of one tenant. */
  list(tenant?: string): IdentityRecord[] {
    return [...this.#mirror.entries.values()].map((e) => e.value).filter((r) => !tenant || r.tenant === tenant);
  }

  /** Writes a record (issue or change); resolves once the local mirror has it. */
  async put(record: IdentityRecord): Promise<void> {
    const revision = await this.#kv.put(record.id, JSON.stringify(checkRecord(record)));
    await this.#mirror.caughtUp(revision);
  }

  /** Marks `id` revoked (kept, so it cannot be issued again unnoticed). */
  async revoke(id: string, reason = "revoked"): Promise<IdentityRecord> {
    const record = this.get(id);
    if (!record) throw new AgentBusError("INVALID_INPUT", `identity ${id} was never issued`);
    const revoked = { ...record, revokedAt: Date.now(), reason };
    await this.put(revoked);
    return revoked;
  }

  /** Stops the mirror. */
  stop(): void {
    this.#mirror.stop();
  }

}
