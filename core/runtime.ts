/**
 * The state one bus shares with everything it runs: built once by
 * `connect()` or `attach()`, read by agents, workers, submitters, task
 * handles and fast calls. Not public API (`Bus` is): it replaces the
 * interfaces each of those used to be handed, assembled from closures.
 */
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import type { CoreBuckets } from "./infra/jetstream.js";
import type { ResolvedOptions } from "./options.js";
import { holdsTaskRights } from "./security/acl.js";
import type { Envelope, Envelopes } from "./security/envelope.js";
import type { Identity } from "./security/identity.js";
import type { AclStore } from "./store/aclstore.js";
import type { Auditor } from "./store/audit.js";
import { verifyRecord, type AgentRecord, type Registry } from "./store/registry.js";
import type { Revocation, Revocations } from "./store/revocations.js";
import { DEFAULT_INLINE_BYTES, blobRefOf, partsBytes, type BlobOwner } from "./store/blobs.js";
import { Sessions, type Session } from "./store/session.js";
import { Durable } from "./store/task-log.js";
import type { Snapshot } from "./store/task-snapshots.js";
import { ScheduleStore } from "./store/schedules.js";
import { ensureLimitsBucket, ensureScheduleInfra, withinMs } from "./infra/jetstream.js";
import { CapabilityLimiter, checkLimits, type CapabilityLimits } from "./store/limits.js";
import type { KV } from "@nats-io/kv";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { AgentBusError } from "./wire/errors.js";
import type { ServerFeatures } from "./wire/features.js";
import type { Logger } from "./wire/log.js";
import type { Message } from "./wire/protocol.js";
import type { Subjects } from "./wire/subjects.js";
import { taskIdBinds, taskRight, type Task } from "./wire/task.js";
import { checkDepth } from "./options.js";

/** What a {@link Runtime} is built from. */
export interface RuntimeParts {
  nc: NatsConnection;
  identity: Identity;
  subjects: Subjects;
  log: Logger;
  options: ResolvedOptions;
  server: ServerFeatures;
  envelopes: Envelopes;
  buckets: CoreBuckets;
  registry: Registry;
  acl: AclStore;
  revocations: Revocations;
  auditor: Auditor;
}

/** One bus's connection, identity, resolved options, caches and lazily opened stores. */
export class Runtime {
  readonly nc: NatsConnection;
  readonly identity: Identity;
  readonly subjects: Subjects;
  readonly log: Logger;
  readonly options: ResolvedOptions;
  readonly server: ServerFeatures;
  readonly envelopes: Envelopes;
  readonly buckets: CoreBuckets;
  readonly registry: Registry;
  readonly acl: AclStore;
  readonly revocations: Revocations;
  readonly auditor: Auditor;
  /** Agent instances that did not answer a call: `<agent>.<instance>` → until when calls skip them. */
  readonly silent = new Map<string, number>();
  /** The task planes opened: the tenant's (or this region's) under `""`, other regions' under their names. */
  readonly #planes = new Map<string, Promise<Durable>>();
  #sessions?: Promise<Sessions>;
  #schedules?: Promise<ScheduleStore>;
  #limits?: Promise<KV>;

  constructor(parts: RuntimeParts) {
    this.nc = parts.nc;
    this.identity = parts.identity;
    this.subjects = parts.subjects;
    this.log = parts.log;
    this.options = parts.options;
    this.server = parts.server;
    this.envelopes = parts.envelopes;
    this.buckets = parts.buckets;
    this.registry = parts.registry;
    this.acl = parts.acl;
    this.revocations = parts.revocations;
    this.auditor = parts.auditor;
  }

  /** This bus's identity id. */
  get id(): string {
    return this.identity.id;
  }

  /**
   * The tenant's task streams and buckets, opened (and created if missing)
   * on first use; a failed set-up is retried on the next. On a federated
   * bus, this region's, or with `region` that region's (placed in its
   * cluster).
   */
  tasks(region?: string): Promise<Durable> {
    const key = region === undefined || region === this.subjects.region ? "" : region;
    let plane = this.#planes.get(key);
    if (plane) return plane;
    if (key !== "" && !this.options.regions?.includes(key)) return Promise.reject(new AgentBusError("INVALID_INPUT", `region ${JSON.stringify(region)} is not one of this bus's regions (${this.options.regions?.join(", ") ?? "none: the bus is not federated"})`));
    plane = this.#open(this.subjects.inRegion(key === "" ? this.subjects.region : key));
    this.#planes.set(key, plane);
    plane.catch(() => this.#planes.delete(key));
    return plane;
  }

  /**
   * At an edge site (`ConnectOptions.hub`): the hub's task plane, in the
   * hub's JetStream domain through the leaf link (the plane of the hub's
   * region when it names one), opened on first use; rejected while the
   * link is down, and tried again on the next call.
   */
  hubTasks(): Promise<Durable> {
    const hub = this.options.hub;
    if (!hub) return Promise.reject(new AgentBusError("MISUSE", "this connection is not at an edge site (ConnectOptions.hub)"));
    let plane = this.#planes.get("@hub");
    if (plane) return plane;
    plane = this.#open(this.subjects.inRegion(hub.region), hub.domain);
    this.#planes.set("@hub", plane);
    plane.catch(() => this.#planes.delete("@hub"));
    return plane;
  }

  /** Opens the task plane named by `subjects` (in JetStream domain `domain`, else the connection's own). */
  #open(subjects: Subjects, domain?: string): Promise<Durable> {
    return Durable.open(this.nc, subjects, this.envelopes, {
      domain,
      replicas: this.options.replicas,
      eventsMaxAgeMs: this.options.eventsMaxAgeMs,
      duplicateWindowMs: this.options.duplicateWindowMs,
      windowMs: this.envelopes.windowMs,
      republish: this.server.republish,
      schedules: this.server.schedules,
      maxTaskBytes: this.options.maxTaskBytes,
      inlineBytes: this.options.inlineBytes,
    }, {
      // The hub's plane: its agents are in the hub's registry, not in this edge's.
      writers: domain === undefined
        ? (task, writer) => this.#mayWrite(task, writer)
        : async (task, writer) => (await this.#mayWrite(task, writer)) || (typeof task.metadata.capability === "string" && this.#providesAtHub(subjects, domain, writer, task.metadata.capability)),
      onForged: (taskId, from, reason) => this.audit("forged_snapshot", { code: "BAD_SIGNATURE", task: taskId, from, reason }),
    });
  }

  /** Registrations read from the hub's registry, by agent id (a minute each). */
  readonly #hubAgents = new Map<string, { until: number; record: Promise<AgentRecord | undefined> }>();

  /**
   * At an edge site: whether `agent` is registered in the hub's registry
   * (its region's view when the hub is federated) as serving `cap`, its
   * registration signed by its own key. Read once a minute per agent.
   */
  async #providesAtHub(s: Subjects, domain: string, agent: string, cap: string): Promise<boolean> {
    let cached = this.#hubAgents.get(agent);
    if (!cached || cached.until < Date.now()) {
      const bucket = s.region === undefined ? s.bucket("agents") : `${s.bucket("agents")}_${s.region}_view`;
      const record = (async () => {
        // A direct read (which a permission can name by key), not a stream message read.
        const kv = await new Kvm(jetstream(this.nc, { domain })).open(bucket, { allow_direct: true });
        const entry = await kv.get(agent);
        return entry && entry.operation === "PUT" ? verifyRecord(agent, entry.json()) : undefined;
      })().catch(() => undefined);
      cached = { until: Date.now() + 60_000, record };
      if (this.#hubAgents.size > 1_000) this.#hubAgents.clear();
      this.#hubAgents.set(agent, cached);
    }
    const record = await cached.record;
    return record !== undefined && record.card.skills.some((skill) => skill.id === cap);
  }

  /**
   * The task plane holding task `id`, with its snapshot; this region's
   * plane and no snapshot when none has it. Not federated: the tenant's
   * plane, nothing read. Federated: this region's, else the region this
   * identity recorded when it submitted the task there (see
   * {@link TaskStore.place}), else, with `probe` (default), the others at
   * once, each given `waitMs` (3 s) to answer, so a region that is down
   * does not hold the answer up.
   */
  async locate(id: string, options: { probe?: boolean; waitMs?: number } = {}): Promise<{ durable: Durable; snapshot?: Snapshot }> {
    const local = await this.tasks();
    const others = (this.options.regions ?? []).filter((r) => r !== this.subjects.region);
    if (others.length === 0) return { durable: local };
    // This identity's own tasks elsewhere are recorded here when submitted.
    const [here, placed] = await Promise.all([local.store.get(id, this.id), local.store.placed(this.id, id)]);
    if (here) return { durable: local, snapshot: here };
    if (placed !== undefined && others.includes(placed)) {
      const durable = await this.tasks(placed);
      const snapshot = await durable.store.get(id, this.id);
      if (snapshot) return { durable, snapshot };
    }
    if (options.probe === false) return { durable: local };
    const waitMs = options.waitMs ?? 3_000;
    const probe = async (region: string) => {
      const durable = await this.tasks(region);
      const snapshot = await durable.store.get(id, this.id);
      if (!snapshot) throw new Error("not there");
      return { durable, snapshot };
    };
    return Promise.any(others.map((region) => withinMs(probe(region), waitMs))).catch(() => ({ durable: local }));
  }

  /**
   * The tenant's recurring schedules (`mesh_<t>_schedules` and
   * `MESH_<T>_SCHEDULES`), opened on first use; `SERVER_TOO_OLD` before
   * nats-server 2.14 (cron schedules).
   */
  schedules(): Promise<ScheduleStore> {
    if (!this.server.cron) return Promise.reject(new AgentBusError("SERVER_TOO_OLD", `recurring tasks need nats-server 2.14 or later (cron message schedules); this server is ${this.server.version}`));
    this.#schedules ??= (async () => {
      const infra = await ensureScheduleInfra(await jetstreamManager(this.nc), new Kvm(this.nc), this.subjects, { replicas: this.options.replicas });
      return new ScheduleStore(infra.records, jetstream(this.nc), this.subjects, this.identity);
    })();
    this.#schedules.catch(() => (this.#schedules = undefined));
    return this.#schedules;
  }

  /**
   * The limits of `cap` as this process applies them, on the tenant's
   * `mesh_<t>_limits` (opened on first use). `INVALID_INPUT` for bad limits.
   */
  async limiter(cap: string, limits: CapabilityLimits, leaseMs = 30_000): Promise<CapabilityLimiter> {
    checkLimits(cap, limits);
    this.#limits ??= ensureLimitsBucket(new Kvm(this.nc), this.subjects, { replicas: this.options.replicas });
    this.#limits.catch(() => (this.#limits = undefined));
    return new CapabilityLimiter(await this.#limits, cap, limits, leaseMs);
  }

  /** Shared state of an A2A context (`mesh_<t>_sessions`, opened on first use). */
  async session<T extends Record<string, unknown> = Record<string, unknown>>(contextId: string): Promise<Session<T>> {
    this.#sessions ??= Sessions.open(new Kvm(this.nc), this.subjects, { replicas: this.options.replicas, history: this.options.sessionHistory });
    this.#sessions.catch(() => (this.#sessions = undefined));
    return (await this.#sessions).session<T>(contextId);
  }

  /**
   * A fast call's input or reply, ready to send: parts over the inline
   * threshold (all of them when the message would not fit one NATS
   * message) stored as blobs in `mesh_<t>_blobs` (federated: this region's)
   * and carried as references,
   * as a durable task's are; `PAYLOAD_TOO_LARGE` past `maxTaskBytes`. A
   * small message is returned as it is, without opening the store.
   */
  async carry(message: Message, owner: BlobOwner, what: string): Promise<Message> {
    const bytes = partsBytes(message.parts);
    if (bytes <= Math.min(this.options.inlineBytes ?? DEFAULT_INLINE_BYTES, DEFAULT_INLINE_BYTES)) return message;
    const tasks = await this.tasks();
    tasks.blobs.checkTaskBytes(bytes, what);
    const fits = tasks.maxEventBytes === undefined || Buffer.byteLength(JSON.stringify(message)) <= tasks.maxEventBytes;
    return tasks.blobs.externalizeMessage(message, owner, !fits);
  }

  /**
   * A received fast-call message with its blob references read back
   * (checked against their digests); on a federated bus from the store of
   * the sender's region, which its references name.
   */
  async uncarry(message: Message): Promise<Message> {
    const ref = message.parts.map(blobRefOf).find((r) => r !== undefined);
    if (!ref) return message;
    const home = this.subjects.bucket("blobs");
    const region = ref.bucket === home ? undefined : this.options.regions?.find((r) => this.subjects.inRegion(r).bucket("blobs") === ref.bucket);
    return (await this.tasks(region)).blobs.resolveMessage(message);
  }

  /**
   * Whether the sender of a verified envelope may invoke `cap` on this
   * identity: depth limit, known sender, ACL grant (the last two skipped with
   * `insecureAllowAll`). Throws `DEPTH_EXCEEDED`, `UNKNOWN_SENDER` or `DENIED`.
   */
  authorize(env: Envelope, cap: string): void {
    checkDepth(env.depth, this.options.maxDepth, "call");
    if (this.options.insecureAllowAll) return;
    if (!this.registry.isRegistered(env.from) && !this.acl.names(env.from)) {
      throw new AgentBusError("UNKNOWN_SENDER", `sender ${env.from} is neither registered nor named in the ACL`);
    }
    if (!this.acl.allows(env.from, this.id, cap)) throw new AgentBusError("DENIED", `${env.from} may not invoke ${cap} on ${this.id}`);
  }

  /** True when `id` is refused: revoked, or rotated to a new key (local cache). */
  isRevoked(id: string): boolean {
    return this.revocations.has(id) || this.acl.isRotated(id);
  }

  /** Why `id` is refused (`reason` "rotated" for a key rotated away), if it is. */
  revocation(id: string): Revocation | undefined {
    return this.revocations.get(id) ?? (this.acl.isRotated(id) ? { reason: "rotated", at: 0 } : undefined);
  }

  /** Writes a signed audit record (refusals rate-limited per kind and sender). */
  audit(kind: string, record: Record<string, unknown>): void {
    this.auditor.write(kind, record);
  }

  /** Whether a provider of `cap` that is not revoked has an instance heartbeating now (with `region`, there). */
  serves(cap: string, region?: string): boolean {
    return this.providers(cap).some((agent) => !this.isRevoked(agent) && this.registry.instances(agent, region).length > 0);
  }

  /** Online agents offering `cap` (from the registry cache). */
  providers(cap: string): string[] {
    return this.registry.providers(cap);
  }

  /** Registered providers of `cap`, online or not, none revoked: who an encrypted task's content is for, beside its submitter. */
  recipients(cap: string): string[] {
    return this.registry.registered(cap).filter((id) => !this.isRevoked(id));
  }

  /** {@link recipients}, or `NO_RESPONDERS` when there is none, rather than encrypting for nobody. */
  encryptionRecipients(cap: string): string[] {
    const ids = this.recipients(cap);
    if (ids.length === 0) throw new AgentBusError("NO_RESPONDERS", `no registered provider of ${cap} to encrypt for`);
    return ids;
  }

  /**
   * Whether this identity holds the task right (`task.<cap>` in the ACL)
   * for tasks of `cap` served by `agent` (undefined: not taken by a worker
   * yet, so only grants on any agent count).
   */
  granted(cap: string, agent: string | undefined): boolean {
    return this.acl.allows(this.id, agent ?? "*", taskRight(cap));
  }

  /** Whether this identity may see tasks it did not submit: it serves an agent, or the ACL grants it some task right. */
  observes(): boolean {
    return this.registry.isRegistered(this.id) || holdsTaskRights(this.acl.policy(), this.id);
  }

  /**
   * Whether `writer` may have written a snapshot of `task`: its submitter
   * (the one its id names, when the id was generated), an identity the ACL
   * grants the task right on its capability, or a registered provider of
   * that capability. A rotated identity writes as the ids it replaced.
   */
  async #mayWrite(task: Task, writer: string): Promise<boolean> {
    const m = task.metadata;
    if (typeof m.submitter !== "string" || typeof m.capability !== "string") return false;
    if (taskIdBinds(task.id, m.submitter) === false) return false;
    const ids = [writer, ...this.acl.formerIds(writer)];
    if (ids.includes(m.submitter)) return true;
    const agent = typeof m.agent === "string" ? m.agent : "*";
    if (ids.some((id) => this.acl.allows(id, agent, taskRight(m.capability as string)))) return true;
    return this.registry.provides(writer, m.capability);
  }
}
