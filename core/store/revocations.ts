import type { KV } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";
import type { Identity } from "../security/identity.js";
import { isAdminAt, signEntry, verifyEntry, watchPolicy, type BadPolicy, type PolicyChange, type SignedEntry, type TrustState } from "./policy.js";
import type { KvWatch } from "../infra/kvmirror.js";
import { checkId } from "../wire/subjects.js";

/** Why an identity is refused. */
export interface Revocation {
  reason: string;
  /** When it was revoked (ms since the epoch); for a lost record, when the loss was seen. */
  at: number;
  /** The admin who revoked it; absent for a record removed without a signed lift. */
  by?: string;
}

interface Candidate {
  revoked: boolean;
  reason: string;
  signed: SignedEntry;
  revision: number;
}

interface KeyState {
  applied?: Candidate;
  pending?: Candidate;
  /** Set when the key was deleted or purged without a signed lift: the id stays refused. */
  lost?: number;
  /** Set when the key holds a value no admin signed and nothing signed was applied before: refused. */
  unverified?: number;
}

/** Options of {@link Revocations.start}. */
export interface RevocationsOptions {
  identity: Identity;
  tenant: string;
  /** The trust state (the ACL's): who may sign revocations. */
  trust: () => TrustState | undefined;
  onBadPolicy?: BadPolicy;
  /** Called when an id becomes refused (a signed revocation, or a record removed or forged: fail closed). */
  onRevoked?: (id: string, revocation: Revocation) => void;
}

/**
 * The revocation list, mirrored from `mesh_<t>_revoked`. Key = revoked id;
 * value signed by a tenant admin: `{revoked: true, reason, by, at, sig}`,
 * or a signed lift `{revoked: false, by, at, sig}`. The library never
 * deletes from this bucket: a key deleted or purged by anyone stays (or
 * becomes) revoked and the removal is reported, so a raw client cannot
 * un-revoke itself. Unsigned entries, entries by non-admins and older
 * entries replayed over newer ones are not applied and are reported; the
 * state they would replace stays, and a key that holds only such a value
 * is refused (fails closed).
 */
export class Revocations {
  readonly #kv: KV;
  readonly #o: RevocationsOptions;
  readonly #keys = new Map<string, KeyState>();
  readonly #revoked = new Map<string, Revocation>();
  #watch!: KvWatch;
  #loading = true;

  private constructor(kv: KV, o: RevocationsOptions) {
    this.#kv = kv;
    this.#o = o;
  }

  /** Starts mirroring; resolves once the existing list is loaded and verified. */
  static async start(kv: KV, options: RevocationsOptions): Promise<Revocations> {
    const r = new Revocations(kv, options);
    r.#watch = await watchPolicy(kv, (c) => r.#onChange(c));
    r.#loading = false;
    r.recheck();
    return r;
  }

  /** Whether `id` is refused (local, cheap: on every message's path). */
  has(id: string): boolean {
    return this.#revoked.has(id);
  }

  /** Why `id` is refused, if it is. */
  get(id: string): Revocation | undefined {
    return this.#revoked.get(id);
  }

  /** Resolves once every write up to `revision` is applied here; false after `timeoutMs`. */
  applied(revision: number, timeoutMs = 5000): Promise<boolean> {
    return this.#watch.caughtUp(revision, timeoutMs);
  }

  /** Writes a signed revocation of `id`; resolves with its revision once applied here. `DENIED` unless this identity is an admin. */
  revoke(id: string, reason: string): Promise<number> {
    return this.#write(id, { revoked: true, reason });
  }

  /** Writes a signed lift for `id`; resolves with its revision once applied here. `DENIED` unless this identity is an admin. */
  lift(id: string): Promise<number> {
    return this.#write(id, { revoked: false });
  }

  /** Re-examines entries waiting for their signer to become an admin (after a trust root change). */
  recheck(): void {
    for (const [id, state] of this.#keys) this.#settle(id, state, !this.#loading);
  }

  /** Stops the watch. */
  stop(): void {
    this.#watch?.stop();
  }

  async #write(id: string, payload: Record<string, unknown>): Promise<number> {
    const { identity, tenant } = this.#o;
    checkId(id, "identity id");
    if (!isAdminAt(this.#o.trust(), identity.id, Date.now())) {
      throw new AgentBusError("DENIED", `cannot change the revocation of ${id}: ${identity.id} is not an admin of tenant ${tenant}`);
    }
    const previous = this.#keys.get(id)?.applied?.signed.at ?? 0;
    const value = signEntry(identity, tenant, "revoked", id, payload, Math.max(Date.now(), previous + 1));
    const revision = await this.#kv.put(id, JSON.stringify(value));
    if (!(await this.applied(revision))) throw new AgentBusError("TIMEOUT", `revocation of ${id} was written (revision ${revision}) but not seen back within 5 s`);
    return revision;
  }

  #onChange(c: PolicyChange): void {
    const state = this.#keys.get(c.key) ?? {};
    this.#keys.set(c.key, state);
    if (c.operation !== "PUT") {
      state.lost = Date.now();
      state.pending = undefined;
      this.#bad(c.key, c.revision, `${c.operation === "DEL" ? "deleted" : "purged"} without a signed lift: ${c.key} stays revoked`);
      return this.#update(c.key, state);
    }
    try {
      const signed = verifyEntry(this.#o.tenant, "revoked", c.key, c.value);
      const { revoked, reason, ...rest } = signed.payload as { revoked?: unknown; reason?: unknown };
      if (typeof revoked !== "boolean" || (reason !== undefined && typeof reason !== "string") || Object.keys(rest).length > 0) {
        throw new Error("a revocation is {revoked: boolean, reason?: string} plus its signature");
      }
      state.pending = { revoked, reason: reason ?? "revoked", signed, revision: c.revision };
    } catch (err) {
      this.#bad(c.key, c.revision, (err as Error).message);
      state.pending = undefined;
      state.unverified ??= Date.now();
      return this.#update(c.key, state);
    }
    this.#settle(c.key, state, !this.#loading);
  }

  #settle(id: string, state: KeyState, report: boolean): void {
    const c = state.pending;
    if (!c) return;
    if (!isAdminAt(this.#o.trust(), c.signed.by, c.signed.at)) {
      if (report) this.#bad(id, c.revision, `signed by ${c.signed.by}, not an admin of the trust root`);
      state.unverified ??= Date.now();
      return this.#update(id, state);
    }
    state.pending = undefined;
    if (state.applied && c.signed.at <= state.applied.signed.at && c.signed.sig !== state.applied.signed.sig) {
      this.#bad(id, c.revision, "older than the entry in force (a replayed value)");
      return;
    }
    state.applied = c;
    state.lost = undefined;
    state.unverified = undefined;
    this.#update(id, state);
  }

  #update(id: string, state: KeyState): void {
    const before = this.#revoked.has(id);
    this.#apply(id, state);
    const now = this.#revoked.get(id);
    if (now && !before) this.#o.onRevoked?.(id, now);
  }

  #apply(id: string, state: KeyState): void {
    if (state.lost !== undefined) this.#revoked.set(id, { reason: "revocation record removed without a signed lift", at: state.lost });
    else if (state.applied?.revoked) this.#revoked.set(id, { reason: state.applied.reason, at: state.applied.signed.at, by: state.applied.signed.by });
    else if (!state.applied && state.unverified !== undefined) this.#revoked.set(id, { reason: "revocation record not signed by an admin", at: state.unverified });
    else this.#revoked.delete(id);
  }

  #bad(key: string, revision: number, reason: string): void {
    this.#o.onBadPolicy?.("revoked", key, revision, reason);
  }
}
