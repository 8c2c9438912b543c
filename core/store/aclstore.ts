import type { KV } from "@nats-io/kv";
import { isAllowed, isNamed, parseGroup, parseRule, type AclGroup, type AclPolicy, type AclRule } from "../security/acl.js";
import { AgentBusError } from "../wire/errors.js";
import type { Identity } from "../security/identity.js";
import {
  followTrust,
  isAdminAt,
  pinnedTrust,
  signEntry,
  signTrustLink,
  verifyEntry,
  checkAdmins,
  watchPolicy,
  TRUST_ROOT_KEY,
  type BadPolicy,
  type PolicyChange,
  type SignedEntry,
  type TrustLink,
  type TrustState,
} from "./policy.js";
import type { KvWatch } from "../infra/kvmirror.js";
import { rotationKey, verifyRotation, type RotationProof } from "./rotation.js";
import { checkId } from "../wire/subjects.js";

type Entry =
  | { kind: "rule"; rule: AclRule }
  | { kind: "group"; group: AclGroup }
  | { kind: "rotation"; proof: RotationProof }
  | { kind: "deleted" };

interface Candidate {
  entry: Entry;
  signed: SignedEntry;
  revision: number;
}

/** What the store knows of one key: the applied entry, a signed one waiting for its signer to be an admin, a removal. */
interface KeyState {
  applied?: Candidate;
  pending?: Candidate;
  /** Deleted or purged without a signed tombstone. */
  removed?: boolean;
  /** Holds a value no admin signed (and nothing signed was applied). */
  unverified?: boolean;
}

/** Options of {@link AclStore.start}. */
export interface AclStoreOptions {
  /** The identity that signs this store's writes. */
  identity: Identity;
  /** The tenant (part of every signature). */
  tenant: string;
  /** Pinned trust root: admin ids; absent: the first `trust.root` record is taken on first use. */
  trustRoot?: readonly string[];
  /** Called for every entry the store does not apply. */
  onBadPolicy?: BadPolicy;
}

function parse(tenant: string, key: string, payload: Record<string, unknown>): Entry {
  const fields = Object.keys(payload);
  const only = (field: string) => fields.length === 1 && fields[0] === field;
  if (only("deleted") && payload.deleted === true) {
    if (key.startsWith("rotation.")) throw new Error("a rotation cannot be deleted");
    return { kind: "deleted" };
  }
  if (key.startsWith("rule.") && only("rule")) return { kind: "rule", rule: parseRule(payload.rule) };
  if (key.startsWith("group.") && only("group")) return { kind: "group", group: parseGroup(payload.group) };
  if (key.startsWith("rotation.") && only("rotation")) {
    const proof = verifyRotation(tenant, payload.rotation);
    if (rotationKey(proof.from) !== key) throw new Error(`rotation of ${proof.from} stored under ${key}`);
    return { kind: "rotation", proof };
  }
  throw new Error(`unexpected ACL entry ${key} (${fields.join(", ")})`);
}

/**
 * The tenant's ACL policy, mirrored from `mesh_<t>_acl` by a watch: an edit
 * applies to every receiver within milliseconds, without a restart. Reads
 * are local.
 *
 * Every entry is signed by a tenant admin (see docs/ARCHITECTURE.md,
 * "Authorization"): rules `rule.<name>` → `{rule, by, at, sig}`, groups
 * `group.<name>` → `{group, …}`, removals `{deleted: true, …}`, key
 * rotations `rotation.<old id>` → `{rotation, …}`, and the trust root
 * `trust.root` → `{links}`, a chain in which each root is signed by an
 * admin of the one before. Entries that are unsigned, signed by someone
 * else, older than the applied one, or removed by a plain delete or purge
 * are not applied and are reported (`onBadPolicy`); a removal without a
 * signed tombstone removes the grant (fails closed) and keeps a rotated key
 * refused.
 */
export class AclStore {
  readonly #kv: KV;
  readonly #identity: Identity;
  readonly #tenant: string;
  readonly #bad: BadPolicy;
  readonly #keys = new Map<string, KeyState>();
  readonly #trustListeners = new Set<() => void>();
  #watch!: KvWatch;
  #loading = true;
  #trust?: TrustState;
  #links: TrustLink[] = [];
  #policy: AclPolicy = { rules: new Map(), groups: new Map() };
  /** Old ids of applied (or removed) rotations: refused as senders. */
  #rotated = new Map<string, string | undefined>();

  private constructor(kv: KV, o: AclStoreOptions) {
    this.#kv = kv;
    this.#identity = o.identity;
    this.#tenant = o.tenant;
    this.#bad = o.onBadPolicy ?? (() => {});
    if (o.trustRoot) this.#trust = pinnedTrust(checkAdmins(o.trustRoot));
  }

  /** Starts mirroring `kv`; resolves once the existing policy is loaded and verified. */
  static async start(kv: KV, options: AclStoreOptions): Promise<AclStore> {
    const store = new AclStore(kv, options);
    store.#watch = await watchPolicy(kv, (c) => store.#onChange(c));
    store.#loading = false;
    // Entries loaded before the trust root get their verdict now, and are reported once.
    store.#recheck(true);
    store.#rebuild();
    return store;
  }

  /** Whether `source` may invoke `cap` on agent `target`. */
  allows(source: string, target: string, cap: string): boolean {
    return isAllowed(this.#policy, source, target, cap);
  }

  /** Whether the policy names `id` at all (as a source or group member, also through a rotation). */
  names(id: string): boolean {
    return isNamed(this.#policy, id);
  }

  /** The ids `id` rotated from (oldest last), whose grants it keeps; empty when none. */
  formerIds(id: string): readonly string[] {
    return this.#policy.aliases?.get(id) ?? [];
  }

  /** The applied policy (a snapshot), with the aliases of rotated identities. */
  policy(): AclPolicy {
    return { rules: new Map(this.#policy.rules), groups: new Map(this.#policy.groups), aliases: new Map(this.#policy.aliases) };
  }

  /** The tenant's current admins (empty while no trust root is known: then no entry applies). */
  admins(): string[] {
    return [...(this.#trust?.admins ?? [])];
  }

  /** True when `id` was rotated away (`rotation.<id>`): receivers refuse it as `REVOKED`, reason "rotated". */
  isRotated(id: string): boolean {
    return this.#rotated.has(id);
  }

  /**
   * Resolves once this store has applied every write up to `revision` (the
   * number a write returned); false when it has not within `timeoutMs`.
   * Lets one process wait until another's policy edit is in force here.
   */
  applied(revision: number, timeoutMs = 5000): Promise<boolean> {
    return this.#watch.caughtUp(revision, timeoutMs);
  }

  /**
   * Sets the tenant's trust root, or rotates it: the new admins, signed by
   * this bus's identity. The first root may be set by anyone (receivers
   * without a pinned root take the first one they see; pin it with
   * `connect({ trustRoot })` in production); a later one only by an admin of
   * the current root. Resolves with the record's revision once applied here;
   * `DENIED` when this identity may not set it. Setting the current admins
   * again writes nothing.
   */
  async setTrustRoot(admins: string[]): Promise<number> {
    const next = checkAdmins(admins);
    const me = this.#identity;
    const current = this.#trust;
    const latest = await this.#kv.get(TRUST_ROOT_KEY);
    if (current && current.head !== undefined && sameSet(current.admins, next) && latest?.operation === "PUT") {
      return latest.revision;
    }
    if (current && !current.admins.has(me.id)) throw this.#denied("set the trust root");
    let links = [...this.#links];
    if (links.length === 0 && !next.includes(me.id)) {
      // Receivers without a pin take a first root only when one of its own admins signed it.
      links.push(signTrustLink(me, this.#tenant, [me.id], undefined));
    }
    links.push(signTrustLink(me, this.#tenant, next, links[links.length - 1]));
    const value = JSON.stringify({ links });
    const revision = latest ? await this.#kv.update(TRUST_ROOT_KEY, value, latest.revision) : await this.#kv.create(TRUST_ROOT_KEY, value);
    await this.applied(revision);
    if (!sameSet(this.#trust?.admins ?? new Set(), next)) throw new AgentBusError("DENIED", "the trust root was not accepted (a concurrent change?)");
    return revision;
  }

  /** Adds or replaces the rule `name`, signed; resolves with its revision once applied here. `DENIED` unless this identity is an admin. */
  async putRule(name: string, rule: AclRule): Promise<number> {
    return this.#write(`rule.${checkId(name, "rule name")}`, { rule: parseRule(rule) });
  }

  /** Adds or replaces the group `name`, signed; resolves with its revision once applied here. `DENIED` unless this identity is an admin. */
  async putGroup(name: string, members: string[]): Promise<number> {
    return this.#write(`group.${checkId(name, "group name")}`, { group: parseGroup({ members }) });
  }

  /** Removes the rule `name` with a signed tombstone; resolves with its revision once applied here. */
  async deleteRule(name: string): Promise<number> {
    return this.#write(`rule.${checkId(name, "rule name")}`, { deleted: true });
  }

  /** Removes the group `name` with a signed tombstone; resolves with its revision once applied here. */
  async deleteGroup(name: string): Promise<number> {
    return this.#write(`group.${checkId(name, "group name")}`, { deleted: true });
  }

  /**
   * Applies a key rotation (see `proveRotation`): stores `rotation.<from>`
   * signed by this admin. Afterwards `to` holds `from`'s grants and group
   * memberships and `from` is refused. Resolves with the revision once
   * applied here.
   */
  async rotate(proof: RotationProof): Promise<number> {
    const checked = verifyRotation(this.#tenant, proof);
    if (this.isRotated(checked.to)) throw new AgentBusError("INVALID_INPUT", `${checked.to} was itself rotated away`);
    return this.#write(rotationKey(checked.from), { rotation: checked });
  }

  /** Calls `listener` whenever the trust root changes; returns the unsubscribe function. */
  onTrustChange(listener: () => void): () => void {
    this.#trustListeners.add(listener);
    return () => this.#trustListeners.delete(listener);
  }

  /** The current trust state (for the revocation list, which the same admins sign). */
  trust(): TrustState | undefined {
    return this.#trust;
  }

  /** Stops the watch. */
  stop(): void {
    this.#watch?.stop();
  }

  #denied(what: string): AgentBusError {
    const admins = this.admins();
    return new AgentBusError(
      "DENIED",
      admins.length === 0
        ? `cannot ${what}: tenant ${this.#tenant} has no trust root yet (set one with setTrustRoot, or pin one with connect({ trustRoot }))`
        : `cannot ${what}: ${this.#identity.id} is not an admin of tenant ${this.#tenant} (admins: ${admins.join(", ")})`,
    );
  }

  async #write(key: string, payload: Record<string, unknown>): Promise<number> {
    if (!isAdminAt(this.#trust, this.#identity.id, Date.now())) throw this.#denied(`write ${key}`);
    const previous = this.#keys.get(key)?.applied?.signed.at ?? 0;
    const value = signEntry(this.#identity, this.#tenant, "acl", key, payload, Math.max(Date.now(), previous + 1));
    const revision = await this.#kv.put(key, JSON.stringify(value));
    if (!(await this.applied(revision))) throw new AgentBusError("TIMEOUT", `${key} was written (revision ${revision}) but not seen back within 5 s`);
    return revision;
  }

  #onChange(c: PolicyChange): void {
    if (c.key === TRUST_ROOT_KEY) return this.#onTrust(c);
    const state = this.#keys.get(c.key) ?? {};
    this.#keys.set(c.key, state);
    if (c.operation !== "PUT") {
      state.removed = true;
      state.pending = undefined;
      this.#bad("acl", c.key, c.revision, `${c.operation === "DEL" ? "deleted" : "purged"} without a signed tombstone: the entry no longer grants anything${c.key.startsWith("rotation.") ? ", and the rotated key stays refused" : ""}`);
      return this.#changed();
    }
    let candidate: Candidate;
    try {
      const signed = verifyEntry(this.#tenant, "acl", c.key, c.value);
      candidate = { entry: parse(this.#tenant, c.key, signed.payload), signed, revision: c.revision };
    } catch (err) {
      this.#bad("acl", c.key, c.revision, (err as Error).message);
      state.pending = undefined;
      state.unverified = true;
      return this.#changed();
    }
    state.pending = candidate;
    this.#settle(c.key, state, !this.#loading);
    this.#changed();
  }

  /** Applies a key's pending entry when its signer is an admin and it is newer than the applied one. */
  #settle(key: string, state: KeyState, report: boolean): void {
    const c = state.pending;
    if (!c) return;
    if (!isAdminAt(this.#trust, c.signed.by, c.signed.at)) {
      if (report) this.#bad("acl", key, c.revision, `signed by ${c.signed.by}, not an admin of the trust root`);
      state.unverified = true;
      return;
    }
    state.pending = undefined;
    if (state.applied && c.signed.at <= state.applied.signed.at && c.signed.sig !== state.applied.signed.sig) {
      this.#bad("acl", key, c.revision, "older than the entry in force (a replayed value)");
      return;
    }
    state.applied = c;
    state.removed = false;
    state.unverified = false;
  }

  #recheck(report: boolean): void {
    for (const [key, state] of this.#keys) this.#settle(key, state, report);
  }

  #onTrust(c: PolicyChange): void {
    if (c.operation !== "PUT") {
      this.#bad("acl", c.key, c.revision, `trust root ${c.operation === "DEL" ? "deleted" : "purged"}: the current root stays in force`);
      return;
    }
    let next: TrustState;
    try {
      next = followTrust(this.#tenant, c.value, this.#trust);
    } catch (err) {
      this.#bad("acl", c.key, c.revision, `trust root not accepted: ${(err as Error).message}`);
      return;
    }
    if (next === this.#trust) return;
    this.#trust = next;
    this.#links = (c.value as { links: TrustLink[] }).links;
    this.#recheck(!this.#loading);
    this.#changed();
    for (const l of this.#trustListeners) l();
  }

  #changed(): void {
    if (!this.#loading) this.#rebuild();
  }

  #rebuild(): void {
    const aliases = new Map<string, string[]>();
    const policy: AclPolicy = { rules: new Map(), groups: new Map(), aliases };
    const rotated = new Map<string, string | undefined>();
    const next = new Map<string, string>();
    for (const [key, state] of this.#keys) {
      const entry = state.applied?.entry;
      // A rotation record that vanished or was replaced by something unsigned keeps the old key refused.
      if (key.startsWith("rotation.") && (entry || state.removed || state.unverified)) {
        const from = key.slice("rotation.".length);
        const to = state.removed || entry?.kind !== "rotation" ? undefined : entry.proof.to;
        rotated.set(from, to);
        if (to) next.set(from, to);
      }
      if (!entry || state.removed) continue;
      if (entry.kind === "rule") policy.rules.set(key.slice(5), entry.rule);
      else if (entry.kind === "group") policy.groups.set(key.slice(6), entry.group);
    }
    // new id → every id it replaced: a chain a → b → c gives c: [b, a] and b: [a].
    for (const from of next.keys()) {
      let id = next.get(from);
      const seen = new Set<string>([from]);
      while (id !== undefined && !seen.has(id)) {
        seen.add(id);
        aliases.set(id, [...(aliases.get(id) ?? []), from]);
        id = next.get(id);
      }
    }
    this.#policy = policy;
    this.#rotated = rotated;
  }
}

function sameSet(a: ReadonlySet<string>, b: readonly string[]): boolean {
  return a.size === new Set(b).size && b.every((x) => a.has(x));
}
