import type { KV } from "@nats-io/kv";
import { AgentBusError } from "./errors.js";
import { verifySignature, type Identity } from "./identity.js";
import { KvMirror, type Mirrored } from "./kvmirror.js";
import type { AgentCard } from "./protocol.js";
import type { JsonSchema } from "./schema.js";

/** Schemas a capability declares for its input and output. */
export interface CapabilitySchemas {
  input?: JsonSchema;
  output?: JsonSchema;
}

/**
 * An agent's registration as stored in `mesh_<t>_agents` under its id. The
 * record is signed by the agent's own key, so a reader can tell a genuine
 * registration from one written by someone else.
 */
export interface AgentRecord {
  id: string;
  card: AgentCard;
  schemas: Record<string, CapabilitySchemas>;
  registeredAt: number;
  sig: string;
}

/** An agent as discovery reports it. */
export interface AgentInfo {
  id: string;
  name: string;
  card: AgentCard;
  capabilities: string[];
  tags: string[];
  schemas: Record<string, CapabilitySchemas>;
  online: boolean;
  /** Instances (replicas) currently heartbeating. */
  instances: number;
  lastSeen?: Date;
}

/** Filters for {@link Registry.discover}; all given filters must match. */
export interface DiscoverQuery {
  capability?: string;
  tag?: string;
  name?: string;
  /** true: online only; false: offline only; absent: both. */
  online?: boolean;
}

/** A change in the registry: an agent came up, went down, changed or was removed. */
export interface AgentEvent {
  type: "up" | "down" | "update" | "remove";
  agent: AgentInfo;
}

/** What a presence heartbeat stores under `<agent>.<instance>`. */
export interface PresenceBeat {
  agent: string;
  instance: string;
  ts: number;
}

const enc = new TextEncoder();
const unsigned = (r: Omit<AgentRecord, "sig">): Uint8Array =>
  enc.encode(JSON.stringify({ id: r.id, card: r.card, schemas: r.schemas, registeredAt: r.registeredAt }));

/** Builds and signs a registration record. */
export function signRecord(identity: Identity, card: AgentCard, schemas: Record<string, CapabilitySchemas>): AgentRecord {
  const r = { id: identity.id, card, schemas, registeredAt: Date.now() };
  return { ...r, sig: Buffer.from(identity.sign(unsigned(r))).toString("base64url") };
}

/** Parses a stored record and checks its signature against the key it is stored under. */
export function verifyRecord(key: string, value: unknown): AgentRecord {
  const r = value as AgentRecord;
  if (!r || r.id !== key || typeof r.sig !== "string" || !r.card || !Array.isArray(r.card.skills)) {
    throw new AgentBusError("BAD_SIGNATURE", `registry entry ${key} is malformed`);
  }
  if (!verifySignature(key, unsigned(r), Buffer.from(r.sig, "base64url"))) {
    throw new AgentBusError("BAD_SIGNATURE", `registry entry ${key} is not signed by ${key}`);
  }
  return { ...r, schemas: r.schemas ?? {} };
}

/**
 * Discovery from a local cache: the agents bucket and the presence bucket are
 * mirrored by KV watches, so `discover()` costs no round trip. Presence
 * entries expire by the bucket's max age on the server, but an expiry sends
 * no watch event on nats-server 2.9, so the cache applies the same max age
 * itself and a sweep timer reports agents that went quiet.
 */
export class Registry {
  readonly #maxAgeMs: number;
  readonly #listeners = new Set<(e: AgentEvent) => void>();
  readonly #online = new Set<string>();
  /** capability → online provider ids; rebuilt lazily after any change */
  #providers = new Map<string, string[]>();
  /** capability → registered provider ids, online or not; rebuilt lazily after a registration changes */
  #registered = new Map<string, string[]>();
  /** tag → registered agent ids, rebuilt lazily like `#registered` */
  #tagged = new Map<string, string[]>();
  /** agent id → instance → time of its last heartbeat */
  readonly #beats = new Map<string, Map<string, Date>>();
  #agents!: KvMirror<AgentRecord>;
  #agentsKv!: KV;
  #presence!: KvMirror<PresenceBeat>;
  #sweep?: NodeJS.Timeout;

  private constructor(maxAgeMs: number) {
    this.#maxAgeMs = maxAgeMs;
  }

  /** Starts mirroring; resolves when both buckets are loaded. */
  static async start(agents: KV, presence: KV, maxAgeMs: number, onInvalid?: (key: string, err: unknown) => void): Promise<Registry> {
    const r = new Registry(maxAgeMs);
    r.#agentsKv = agents;
    r.#agents = await KvMirror.start(agents, (e) => verifyRecord(e.key, e.json()), (key, v, prev) => r.#onAgent(key, v, prev), onInvalid);
    r.#presence = await KvMirror.start(presence, (e) => e.json<PresenceBeat>(), (key, beat) => r.#onBeat(key, beat));
    for (const id of r.#agents.entries.keys()) r.#refresh(id, true);
    r.#sweep = setInterval(() => {
      for (const id of r.#online) r.#refresh(id);
    }, Math.max(250, Math.floor(maxAgeMs / 4)));
    r.#sweep.unref();
    return r;
  }

  /** Agents matching every given filter. */
  discover(query: DiscoverQuery = {}): AgentInfo[] {
    // Candidates from the capability or tag index (cached), not a pass over every agent.
    const candidates = query.capability ? this.registered(query.capability) : query.tag ? this.#withTag(query.tag) : this.#agents.entries.keys();
    const out: AgentInfo[] = [];
    for (const id of candidates) {
      const rec = this.#agents.entries.get(id)?.value;
      if (!rec) continue;
      if (query.tag && !rec.card.skills.some((s) => s.tags?.includes(query.tag!))) continue;
      if (query.name && rec.card.name !== query.name) continue;
      const a = this.get(id)!;
      if (query.online !== undefined && a.online !== query.online) continue;
      out.push(a);
    }
    return out;
  }

  /** Ids of registered agents with a skill tagged `tag` (cached like {@link registered}). */
  #withTag(tag: string): string[] {
    let ids = this.#tagged.get(tag);
    if (!ids) {
      ids = [];
      for (const [id, rec] of this.#agents.entries) if (rec.value.card.skills.some((s) => s.tags?.includes(tag))) ids.push(id);
      this.#tagged.set(tag, ids);
    }
    return ids;
  }

  /** One agent by id. */
  get(id: string): AgentInfo | undefined {
    const rec = this.#agents.get(id);
    if (!rec) return undefined;
    const { instances, lastSeen } = this.#liveness(id);
    return {
      id,
      name: rec.card.name,
      card: rec.card,
      capabilities: rec.card.skills.map((s) => s.id),
      tags: [...new Set(rec.card.skills.flatMap((s) => s.tags ?? []))],
      schemas: rec.schemas,
      online: instances > 0,
      instances,
      lastSeen,
    };
  }

  /** Ids of online agents offering `cap` (cached: this is on every call's path). */
  providers(cap: string): string[] {
    let ids = this.#providers.get(cap);
    if (!ids) {
      ids = [];
      for (const [id, rec] of this.#agents.entries) {
        if (this.#online.has(id) && rec.value.card.skills.some((s) => s.id === cap)) ids.push(id);
      }
      this.#providers.set(cap, ids);
    }
    return ids;
  }

  /**
   * Ids of every registered agent offering `cap`, online or not (cached):
   * the recipients of end-to-end encrypted work, which a provider may take
   * when it comes back.
   */
  registered(cap: string): string[] {
    let ids = this.#registered.get(cap);
    if (!ids) {
      ids = [];
      for (const [id, rec] of this.#agents.entries) if (rec.value.card.skills.some((s) => s.id === cap)) ids.push(id);
      this.#registered.set(cap, ids);
    }
    return ids;
  }

  /**
   * Whether agent `id` has a valid registration offering `cap`: from the
   * mirror, else (a registration the mirror may not have caught up with
   * yet) from the bucket itself, one read.
   */
  async provides(id: string, cap: string): Promise<boolean> {
    if (this.registered(cap).includes(id)) return true;
    const e = await this.#agentsKv.get(id).catch(() => null);
    if (!e || e.operation !== "PUT") return false;
    try {
      return verifyRecord(id, e.json()).card.skills.some((s) => s.id === cap);
    } catch {
      return false;
    }
  }

  /** True when `id` has a valid registration. */
  isRegistered(id: string): boolean {
    return this.#agents.entries.has(id);
  }

  /** Subscribes to agent events; returns the unsubscribe function. */
  on(listener: (e: AgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  stop(): void {
    clearInterval(this.#sweep);
    this.#agents?.stop();
    this.#presence?.stop();
  }

  #onBeat(key: string, beat: Mirrored<PresenceBeat> | undefined): void {
    const dot = key.indexOf(".");
    const [id, instance] = [key.slice(0, dot), key.slice(dot + 1)];
    let beats = this.#beats.get(id);
    if (beat) {
      if (!beats) this.#beats.set(id, (beats = new Map()));
      beats.set(instance, beat.created);
    } else {
      beats?.delete(instance);
    }
    if (this.#presence) this.#refresh(id);
  }

  #liveness(id: string): { instances: number; lastSeen?: Date } {
    const now = Date.now();
    let instances = 0;
    let lastSeen: Date | undefined;
    for (const created of this.#beats.get(id)?.values() ?? []) {
      if (now - created.getTime() <= this.#maxAgeMs) instances++;
      if (!lastSeen || created > lastSeen) lastSeen = created;
    }
    return { instances, lastSeen };
  }

  #onAgent(id: string, value: Mirrored<AgentRecord> | undefined, previous: Mirrored<AgentRecord> | undefined): void {
    this.#providers.clear();
    this.#registered.clear();
    this.#tagged.clear();
    if (!this.#presence) return; // initial load: reported once presence is known
    if (!value) {
      this.#online.delete(id);
      const agent: AgentInfo = { id, name: previous!.value.card.name, card: previous!.value.card, capabilities: [], tags: [], schemas: {}, online: false, instances: 0 };
      this.#emit({ type: "remove", agent });
      return;
    }
    if (previous) this.#emit({ type: "update", agent: this.get(id)! });
    this.#refresh(id);
  }

  #refresh(id: string, silent = false): void {
    const agent = this.get(id);
    const was = this.#online.has(id);
    const is = agent?.online ?? false;
    if (is === was) return;
    this.#providers.clear();
    if (is) this.#online.add(id);
    else this.#online.delete(id);
    if (agent && !silent) this.#emit({ type: is ? "up" : "down", agent });
  }

  #emit(e: AgentEvent): void {
    for (const l of this.#listeners) l(e);
  }
}
