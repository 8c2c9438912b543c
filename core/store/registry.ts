import type { KV } from "@nats-io/kv";
import { AgentBusError } from "../wire/errors.js";
import { verifySignature, type Identity } from "../security/identity.js";
import { KvMirror, type Mirrored } from "../infra/kvmirror.js";
import type { AgentCard } from "../wire/protocol.js";
import type { JsonSchema } from "../wire/schema.js";

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
  /** The regions its heartbeating instances run in (`ConnectOptions.region`), sorted; empty when none says. */
  regions: string[];
  /**
   * Handlers running now (durable task runs and fast calls), summed over
   * its heartbeating instances as of each one's last beat
   * ({@link PresenceBeat.inFlight}); 0 when offline.
   */
  inFlight: number;
  lastSeen?: Date;
}

/** Filters for {@link Registry.discover}; all given filters must match. */
export interface DiscoverQuery {
  capability?: string;
  tag?: string;
  name?: string;
  /** true: online only; false: offline only; absent: both. */
  online?: boolean;
  /** Only agents with an instance heartbeating in this region. */
  region?: string;
}

/** A change in the registry: an agent came up, went down, changed or was removed. */
export interface AgentEvent {
  type: "up" | "down" | "update" | "remove";
  agent: AgentInfo;
}

/** What a presence heartbeat stores under `<agent>.<instance>`. */
export interface PresenceBeat {
  agent: string;
  /** The region the instance runs in, when its connection has one. */
  region?: string;
  instance: string;
  ts: number;
  /**
   * Handlers the instance was running at the time of the beat (durable
   * task runs and fast calls being handled). Absent from the beats of
   * earlier versions: counted as 0.
   */
  inFlight?: number;
}

const enc = new TextEncoder();
const unsigned = (r: Omit<AgentRecord, "sig">): Uint8Array =>
  enc.encode(JSON.stringify({ id: r.id, card: r.card, schemas: r.schemas, registeredAt: r.registeredAt }));

/** The one to show of the agents a name query found: an online one before an offline copy. */
export function preferOnline(agents: readonly AgentInfo[]): AgentInfo | undefined {
  return agents.find((a) => a.online) ?? agents[0];
}

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

/** Where a registry view reads from: the two buckets on one connection, and when that connection ends. */
export interface RegistrySource {
  agents: KV;
  presence: KV;
  /** Resolves when the connection the buckets live on is closed for good. */
  closed?: Promise<unknown>;
  /**
   * The connection's status feed (`nc.status()`): a shared view moves off a
   * connection that stays away from every server longer than
   * {@link AWAY_MS} (refused after a revocation, cut off), as it does off a
   * closed one.
   */
  status?: () => AsyncIterable<{ type: string }> & { stop?: () => void };
}

/** How long a shared view stays on a connection that lost its server before it moves to another member's. */
export const AWAY_MS = 2_000;

/** Options of {@link Registry.start}. */
export interface RegistryOptions {
  /** Called for every entry that does not verify (once per process for a shared view). */
  onInvalid?: (key: string, err: unknown) => void;
  /**
   * Share one view with every other bus of this process that gives the same
   * key (the same buckets on the same deployment): one watch and one copy of
   * the registry per process instead of one per connection. When the
   * connection the shared watch runs on goes, the view moves to another
   * member's connection. Absent: this view is private.
   */
  share?: string;
  /** Logs moves of a shared view that fail. */
  onMoveFailed?: (err: unknown) => void;
}

/** Shared views by key: one per deployment, tenant and bucket in this process. */
const shared = new Map<string, Promise<RegistryMirror>>();

/**
 * Discovery from a local cache: the agents bucket and the presence bucket are
 * mirrored by KV watches, so `discover()` costs no round trip. Presence
 * entries expire by the bucket's max age on the server, but an expiry sends
 * no watch event on nats-server 2.9, so the cache applies the same max age
 * itself and a sweep timer reports agents that went quiet.
 *
 * Buses of one process that read the same buckets share one mirror (see
 * {@link RegistryOptions.share}): every registration and heartbeat is
 * verified and held once per process, not once per connection, so a
 * process running a thousand agents keeps one copy of the registry.
 */
export class Registry {
  readonly #mirror: RegistryMirror;
  readonly #source: RegistrySource;
  readonly #unsubscribe = new Set<() => void>();
  #stopped = false;

  private constructor(mirror: RegistryMirror, source: RegistrySource) {
    this.#mirror = mirror;
    this.#source = source;
  }

  /** Starts mirroring (or joins this process's shared mirror); resolves when both buckets are loaded. */
  static async start(agents: KV, presence: KV, maxAgeMs: number, options: RegistryOptions = {}): Promise<Registry> {
    const source: RegistrySource = { agents, presence };
    return Registry.open(source, maxAgeMs, options);
  }

  /** {@link Registry.start} with the source's connection end known, so a shared view can move off it in time. */
  static async open(source: RegistrySource, maxAgeMs: number, options: RegistryOptions = {}): Promise<Registry> {
    const key = options.share;
    if (key === undefined) return new Registry(await RegistryMirror.start(source, maxAgeMs, options), source);
    for (;;) {
      let pending = shared.get(key);
      if (!pending) {
        const started: Promise<RegistryMirror> = RegistryMirror.start(source, maxAgeMs, { ...options, release: () => shared.get(key) === started && shared.delete(key) });
        shared.set(key, (pending = started));
        started.catch(() => shared.get(key) === started && shared.delete(key));
      }
      const mirror = await pending;
      // Its last member may have left while this one waited: then start another.
      if (mirror.join(source)) return new Registry(mirror, source);
    }
  }

  /** Agents matching every given filter. */
  discover(query: DiscoverQuery = {}): AgentInfo[] {
    return this.#mirror.discover(query);
  }

  /** One agent by id. */
  get(id: string): AgentInfo | undefined {
    return this.#mirror.get(id);
  }

  /** Ids of online agents offering `cap` (cached: this is on every call's path). */
  providers(cap: string): string[] {
    return this.#mirror.providers(cap);
  }

  /**
   * Ids of every registered agent offering `cap`, online or not (cached):
   * the recipients of end-to-end encrypted work, which a provider may take
   * when it comes back.
   */
  registered(cap: string): string[] {
    return this.#mirror.registered(cap);
  }

  /**
   * Whether agent `id` has a valid registration offering `cap`: from the
   * mirror, else (a registration the mirror may not have caught up with
   * yet) from the bucket itself, one read on this view's own connection.
   */
  async provides(id: string, cap: string): Promise<boolean> {
    if (this.registered(cap).includes(id)) return true;
    const e = await this.#source.agents.get(id).catch(() => null);
    if (!e || e.operation !== "PUT") return false;
    try {
      return verifyRecord(id, e.json()).card.skills.some((s) => s.id === cap);
    } catch {
      return false;
    }
  }

  /** True when `id` has a valid registration. */
  isRegistered(id: string): boolean {
    return this.#mirror.isRegistered(id);
  }

  /** The instance ids of agent `id` heartbeating now (each a running copy of it); with `region`, those running there. */
  instances(id: string, region?: string): string[] {
    return this.#mirror.instances(id, region);
  }

  /** Subscribes to agent events; returns the unsubscribe function. Stopping this view unsubscribes it. */
  on(listener: (e: AgentEvent) => void): () => void {
    const off = this.#mirror.on(listener);
    const unsubscribe = () => {
      off();
      this.#unsubscribe.delete(unsubscribe);
    };
    this.#unsubscribe.add(unsubscribe);
    return unsubscribe;
  }

  /** Stops this view: its listeners go; a shared mirror stops with its last member. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    for (const off of [...this.#unsubscribe]) off();
    this.#mirror.leave(this.#source);
  }
}

interface MirrorOptions extends RegistryOptions {
  /** Called once when the last member leaves a shared mirror. */
  release?: () => void;
}

/** The registry's state, mirrored from one source at a time, for one or more {@link Registry} views. */
class RegistryMirror {
  readonly #maxAgeMs: number;
  readonly #options: MirrorOptions;
  readonly #listeners = new Set<(e: AgentEvent) => void>();
  readonly #online = new Set<string>();
  /** capability → online provider ids; rebuilt lazily after any change */
  #providers = new Map<string, string[]>();
  /** capability → registered provider ids, online or not; rebuilt lazily after a registration changes */
  #registered = new Map<string, string[]>();
  /** tag → registered agent ids, rebuilt lazily like `#registered` */
  #tagged = new Map<string, string[]>();
  /** agent id → instance → its last beat's time, region and handlers in flight. */
  #beats = new Map<string, Map<string, { created: Date; region?: string; inFlight: number }>>();
  #agents!: KvMirror<AgentRecord>;
  #presence!: KvMirror<PresenceBeat>;
  #sweep?: NodeJS.Timeout;
  /** The views reading this mirror; the first is where it runs (its home). */
  readonly #members = new Set<RegistrySource>();
  #home!: RegistrySource;
  #moving?: Promise<void>;
  /** The home left or its connection closed: the mirror is to move. */
  #homeGone = false;
  /** The status feed of the home's connection (stopped when the mirror moves or stops). */
  #homeFeed?: { stop?: () => void };
  /** Members whose connection has closed: no home for the mirror. */
  readonly #dead = new WeakSet<RegistrySource>();
  #stopped = false;

  private constructor(maxAgeMs: number, options: MirrorOptions) {
    this.#maxAgeMs = maxAgeMs;
    this.#options = options;
  }

  static async start(source: RegistrySource, maxAgeMs: number, options: MirrorOptions): Promise<RegistryMirror> {
    const m = new RegistryMirror(maxAgeMs, options);
    const { agents, presence } = await m.#load(source);
    m.#agents = agents;
    m.#presence = presence;
    m.#home = source;
    m.#watchHome(source);
    m.join(source);
    for (const { key, value } of [...presence.entries].map(([key, value]) => ({ key, value }))) m.#onBeat(key, value);
    for (const id of agents.entries.keys()) m.#refresh(id, true);
    m.#sweep = setInterval(() => {
      for (const id of m.#online) m.#refresh(id);
    }, Math.max(250, Math.floor(maxAgeMs / 4)));
    m.#sweep.unref();
    return m;
  }

  /** Watches of both buckets of `source`; their changes apply once they are this mirror's own. */
  async #load(source: RegistrySource): Promise<{ agents: KvMirror<AgentRecord>; presence: KvMirror<PresenceBeat> }> {
    // Changes apply only from the mirrors in use: a new pair loads quietly until it takes over.
    let agents: KvMirror<AgentRecord> | undefined;
    let presence: KvMirror<PresenceBeat> | undefined;
    agents = await KvMirror.start(
      source.agents,
      (e) => verifyRecord(e.key, e.json()),
      (key, v, prev) => this.#agents === agents && this.#onAgent(key, v, prev),
      this.#options.onInvalid,
    );
    try {
      presence = await KvMirror.start(source.presence, (e) => e.json<PresenceBeat>(), (key, beat) => this.#presence === presence && this.#onBeat(key, beat));
    } catch (err) {
      agents.stop();
      throw err;
    }
    return { agents, presence };
  }

  /** Moves the mirror when its home's connection closes while others still read it. */
  #watchHome(source: RegistrySource): void {
    // Away from every server for a while: its watches deliver nothing; move while others can.
    const feed = source.status?.();
    if (!feed) return;
    this.#homeFeed?.stop?.();
    this.#homeFeed = feed;
    void (async () => {
      let away: NodeJS.Timeout | undefined;
      try {
        for await (const s of feed) {
          if (this.#home !== source || this.#stopped) break;
          if (s.type === "disconnect" || s.type === "reconnecting") {
            away ??= setTimeout(() => this.#home === source && this.#members.size > 1 && this.#leaveHome(), AWAY_MS);
            away.unref();
          } else if (s.type === "reconnect") {
            clearTimeout(away);
            away = undefined;
          }
        }
      } finally {
        clearTimeout(away);
      }
    })().catch(() => {});
  }

  /** Adds a member; false when the mirror already stopped. A mirror whose home is gone moves to it. */
  join(source: RegistrySource): boolean {
    if (this.#stopped) return false;
    if (!this.#members.has(source)) {
      this.#members.add(source);
      // A closed connection is no home: move off it if it is the home now.
      const gone = () => {
        this.#dead.add(source);
        if (this.#home === source) this.#leaveHome();
      };
      void source.closed?.then(gone, gone);
    }
    if (this.#homeGone) this.#leaveHome();
    return true;
  }

  leave(source: RegistrySource): void {
    this.#members.delete(source);
    if (this.#members.size === 0) {
      this.#stop();
      return;
    }
    if (this.#home === source) this.#leaveHome();
  }

  #leaveHome(): void {
    this.#homeGone = true;
    if (this.#stopped || this.#moving) return;
    this.#moving = this.#move().finally(() => (this.#moving = undefined));
  }

  /**
   * Reloads both buckets through another member's connection and takes
   * over from the old watches: what changed meanwhile is reported as
   * events, so listeners miss nothing. Tries each member whose connection
   * is still open in turn, then again after a pause; with none left, the
   * next member to join takes it over.
   */
  async #move(): Promise<void> {
    for (let attempt = 0; !this.#stopped && this.#homeGone; attempt++) {
      const candidates = [...this.#members].filter((m) => m !== this.#home && !this.#dead.has(m));
      for (const next of candidates) {
        if (this.#stopped || !this.#members.has(next)) continue;
        let loaded;
        try {
          loaded = await this.#load(next);
        } catch (err) {
          this.#options.onMoveFailed?.(err);
          continue;
        }
        if (this.#stopped || !this.#members.has(next)) {
          loaded.agents.stop();
          loaded.presence.stop();
          continue;
        }
        this.#takeOver(next, loaded.agents, loaded.presence);
        return;
      }
      if (candidates.length === 0) return;
      await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** attempt)).unref());
    }
  }

  #takeOver(home: RegistrySource, agents: KvMirror<AgentRecord>, presence: KvMirror<PresenceBeat>): void {
    const [oldAgents, oldPresence] = [this.#agents, this.#presence];
    this.#agents = agents;
    this.#presence = presence;
    this.#home = home;
    this.#homeGone = false;
    oldAgents.stop();
    oldPresence.stop();
    this.#watchHome(home);
    // What changed while the mirror moved.
    for (const [id, was] of oldAgents.entries) {
      const now = agents.entries.get(id);
      if (!now) this.#onAgent(id, undefined, was);
      else if (now.revision !== was.revision) this.#onAgent(id, now, was);
    }
    for (const [id, now] of agents.entries) if (!oldAgents.entries.has(id)) this.#onAgent(id, now, undefined);
    this.#beats = new Map();
    for (const [key, beat] of presence.entries) this.#onBeat(key, beat);
    for (const id of [...this.#online]) this.#refresh(id);
  }

  #stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#homeFeed?.stop?.();
    clearInterval(this.#sweep);
    this.#agents.stop();
    this.#presence.stop();
    this.#options.release?.();
  }

  discover(query: DiscoverQuery): AgentInfo[] {
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
      if (query.region !== undefined && !a.regions.includes(query.region)) continue;
      out.push(a);
    }
    return out;
  }

  #withTag(tag: string): string[] {
    let ids = this.#tagged.get(tag);
    if (!ids) {
      ids = [];
      for (const [id, rec] of this.#agents.entries) if (rec.value.card.skills.some((s) => s.tags?.includes(tag))) ids.push(id);
      this.#tagged.set(tag, ids);
    }
    return ids;
  }

  get(id: string): AgentInfo | undefined {
    const rec = this.#agents.get(id);
    if (!rec) return undefined;
    const { instances, regions, inFlight, lastSeen } = this.#liveness(id);
    return {
      id,
      name: rec.card.name,
      card: rec.card,
      capabilities: rec.card.skills.map((s) => s.id),
      tags: [...new Set(rec.card.skills.flatMap((s) => s.tags ?? []))],
      schemas: rec.schemas,
      online: instances > 0,
      instances,
      regions,
      inFlight,
      lastSeen,
    };
  }

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

  registered(cap: string): string[] {
    let ids = this.#registered.get(cap);
    if (!ids) {
      ids = [];
      for (const [id, rec] of this.#agents.entries) if (rec.value.card.skills.some((s) => s.id === cap)) ids.push(id);
      this.#registered.set(cap, ids);
    }
    return ids;
  }

  isRegistered(id: string): boolean {
    return this.#agents.entries.has(id);
  }

  on(listener: (e: AgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  #onBeat(key: string, beat: Mirrored<PresenceBeat> | undefined): void {
    const dot = key.indexOf(".");
    const [id, instance] = [key.slice(0, dot), key.slice(dot + 1)];
    let beats = this.#beats.get(id);
    if (beat) {
      if (!beats) this.#beats.set(id, (beats = new Map()));
      const { region, inFlight } = beat.value;
      beats.set(instance, {
        created: beat.created,
        region: typeof region === "string" ? region : undefined,
        inFlight: typeof inFlight === "number" && Number.isSafeInteger(inFlight) && inFlight > 0 ? inFlight : 0,
      });
    } else {
      beats?.delete(instance);
    }
    if (this.#presence) this.#refresh(id);
  }

  instances(id: string, region?: string): string[] {
    const now = Date.now();
    const live: string[] = [];
    for (const [instance, b] of this.#beats.get(id) ?? []) if (now - b.created.getTime() <= this.#maxAgeMs && (region === undefined || b.region === region)) live.push(instance);
    return live;
  }

  #liveness(id: string): { instances: number; regions: string[]; inFlight: number; lastSeen?: Date } {
    const now = Date.now();
    let instances = 0;
    let inFlight = 0;
    const regions = new Set<string>();
    let lastSeen: Date | undefined;
    for (const { created, region, inFlight: running } of this.#beats.get(id)?.values() ?? []) {
      if (now - created.getTime() <= this.#maxAgeMs) {
        instances++;
        inFlight += running;
        if (region !== undefined) regions.add(region);
      }
      if (!lastSeen || created > lastSeen) lastSeen = created;
    }
    return { instances, regions: [...regions].sort(), inFlight, lastSeen };
  }

  #onAgent(id: string, value: Mirrored<AgentRecord> | undefined, previous: Mirrored<AgentRecord> | undefined): void {
    this.#providers.clear();
    this.#registered.clear();
    this.#tagged.clear();
    if (!this.#presence) return; // initial load: reported once presence is known
    if (!value) {
      if (!previous) return;
      this.#online.delete(id);
      const agent: AgentInfo = { id, name: previous.value.card.name, card: previous.value.card, capabilities: [], tags: [], schemas: {}, online: false, instances: 0, regions: [], inFlight: 0 };
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
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        /* one listener's failure is not another's */
      }
    }
  }
}
