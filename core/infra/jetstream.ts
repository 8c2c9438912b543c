import { AckPolicy, DiscardPolicy, JetStreamApiCodes, JetStreamApiError, RetentionPolicy, type ConsumerConfig, type JetStreamManager, type StreamConfig, type StreamInfo } from "@nats-io/jetstream";
import { Kvm, type KV, type KvOptions } from "@nats-io/kv";
import { Objm, type ObjectStore } from "@nats-io/obj";
import { AgentBusError } from "../wire/errors.js";
import { replayMaxAgeMs } from "../security/replay.js";
import type { Subjects } from "../wire/subjects.js";

/** `p`, or `UNAVAILABLE` after `ms` (what `p` does after that is left to it). */
export function withinMs<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new AgentBusError("UNAVAILABLE", `no answer in ${ms} ms`)), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * A JetStream request the server refused under the connection's
 * permissions, as `DENIED` saying `what` was refused; any other error as it
 * is.
 */
export function deniedByServer(err: unknown, what: string): unknown {
  if (err instanceof AgentBusError || !/permission/i.test(String((err as Error)?.message ?? err))) return err;
  return new AgentBusError("DENIED", `${what} (server permissions)`, { cause: err });
}

/** True for errors a JetStream call gives while a leader is being elected or a node is away. */
function isTransient(err: unknown): boolean {
  for (let e = err as { message?: string; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (/timeout|no responders|leader|temporarily unavailable|insufficient resources|no suitable peers|disconnect/i.test(String(e.message ?? e))) return true;
  }
  return false;
}

/**
 * Retries a JetStream call that fails transiently while a cluster elects a
 * meta or stream leader (seconds after a start or a node loss), with
 * backoff up to `budgetMs` in all.
 */
export async function retryJs<T>(fn: () => Promise<T>, budgetMs = 30_000, retryable: (err: unknown) => boolean = isTransient): Promise<T> {
  const deadline = Date.now() + budgetMs;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!retryable(err) || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** i)));
    }
  }
}

/**
 * True for the error JetStream returns when a write's expected last
 * revision of the key does not match: `kv.update` with a stale revision, or
 * `kv.create` on a key that holds a value (the KV client itself treats both
 * codes as "key changed"). Anything else (timeouts, permissions, a missing
 * bucket) is a real failure, not a race, and must not be retried as one.
 */
export function isRevisionConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/** Options of {@link compareAndSet}. */
export interface CasOptions<S> {
  /** What the caller already read (the first attempt skips the read). */
  known?: S;
  /** Attempts before giving up with `UNAVAILABLE` (default 20). */
  maxAttempts?: number;
  /** Names what is written, for the error. */
  what: string;
}

/**
 * The one compare-and-set loop. `attempt(current)` writes expecting
 * `current`'s revision (or decides to write nothing) and throws a revision
 * conflict ({@link isRevisionConflict}) when another writer got there
 * first; the loop then waits a random moment (jittered, doubling from 5 ms
 * up to 500 ms, so contending writers spread out), reads again with
 * `read` and retries. `UNAVAILABLE` after `maxAttempts` lost races; any
 * other error ends it at once.
 */
export async function compareAndSet<S, R>(read: () => Promise<S>, attempt: (current: S) => Promise<R>, options: CasOptions<S>): Promise<R> {
  const maxAttempts = options.maxAttempts ?? 20;
  let lastConflict: unknown;
  for (let n = 1; n <= maxAttempts; n++) {
    if (n > 1) await new Promise((r) => setTimeout(r, Math.random() * Math.min(500, 5 * 2 ** (n - 2))));
    const current = n === 1 && options.known !== undefined ? options.known : await read();
    try {
      return await attempt(current);
    } catch (err) {
      if (!isRevisionConflict(err)) throw err;
      lastConflict = err;
    }
  }
  throw new AgentBusError("UNAVAILABLE", `${options.what}: the write lost the race to other writers ${maxAttempts} times in a row; try again`, { cause: lastConflict });
}

/**
 * For a call on a stream this process has just created or seen created: in
 * a cluster the create can be answered before every node knows the stream,
 * so "stream not found" (an object store's "object store not found") is retried for a few seconds (and transient
 * errors for as long as {@link retryJs} allows).
 */
function justCreated<T>(fn: () => Promise<T>): Promise<T> {
  const until = Date.now() + 5_000;
  return retryJs(fn, undefined, (err) => isTransient(err) || (Date.now() < until && /(stream|object store) not found/i.test(String(err))));
}

/**
 * Creates something two processes may create at the same moment. The server
 * answers the one that loses the race with "subjects overlap" or "already in
 * use" even when both asked for the same settings; asked again it binds to
 * what the winner made. An answer that persists is a real mismatch.
 */
async function createRacing<T>(what: string, create: () => Promise<T>): Promise<T> {
  const clash = (err: unknown) => /already in use|different configuration|subjects overlap/i.test(String(err));
  for (let attempt = 1; ; attempt++) {
    try {
      return await justCreated(create);
    } catch (err) {
      if (!clash(err)) throw err;
      if (attempt >= 3) throw mismatch(what, err);
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

function mismatch(what: string, err: unknown): AgentBusError {
  return new AgentBusError(
    "CONFIG_MISMATCH",
    `${what} exists with a different configuration; it was left as it is. Fix or remove it (nats stream info / nats kv info): ${(err as Error).message}`,
    { cause: err },
  );
}

/**
 * Opens a KV bucket, creating it with `options` when missing. `Kvm.create`
 * binds to an existing bucket without comparing settings, so they are
 * compared here: an existing bucket whose history, max age or replica count
 * differs from what the caller `insists` on is reported, not silently used;
 * settings the caller left to defaults are adopted from the bucket.
 */
export async function ensureBucket(kvm: Kvm, name: string, options: Partial<KvOptions>, insists: Array<"history" | "ttl" | "replicas"> = ["history", "ttl", "replicas"]): Promise<KV> {
  const kv = await createRacing(`KV bucket ${name}`, () => kvm.create(name, options));
  const { config } = (await justCreated(() => kv.status())).streamInfo;
  const differs: string[] = [];
  const want = (k: "history" | "ttl" | "replicas") => insists.includes(k) && options[k] !== undefined;
  if (want("history") && config.max_msgs_per_subject !== options.history) differs.push(`history ${config.max_msgs_per_subject} (wanted ${options.history})`);
  if (want("replicas") && config.num_replicas !== options.replicas) differs.push(`replicas ${config.num_replicas} (wanted ${options.replicas})`);
  if (want("ttl") && config.max_age !== options.ttl! * 1_000_000) differs.push(`max age ${config.max_age / 1_000_000} ms (wanted ${options.ttl})`);
  if (differs.length > 0) throw mismatch(`KV bucket ${name}`, new Error(differs.join(", ")));
  return kv;
}

/**
 * Creates a stream when missing. An existing one is compared on subjects,
 * retention and max age, on replicas when `insistReplicas`, and its
 * duplicate window must be at least `minDuplicateWindowMs` when given; a
 * difference is reported, never overwritten. Returns the stream's info.
 */
export async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }, insistReplicas = true, minDuplicateWindowMs?: number): Promise<StreamInfo> {
  const info = await retryJs(() => jsm.streams.info(config.name)).catch((err: unknown) => {
    if (/not found/i.test(String(err))) return undefined;
    throw err;
  });
  if (!info) return createRacing(`stream ${config.name}`, () => jsm.streams.add(config));
  const c = info.config;
  const differs: string[] = [];
  if (config.subjects && JSON.stringify([...c.subjects].sort()) !== JSON.stringify([...config.subjects].sort())) differs.push(`subjects ${c.subjects.join(" ")}`);
  if (config.retention && c.retention !== config.retention) differs.push(`retention ${c.retention} (wanted ${config.retention})`);
  if (config.max_age !== undefined && c.max_age !== config.max_age) differs.push(`max age ${c.max_age / 1_000_000} ms (wanted ${config.max_age / 1_000_000})`);
  if (insistReplicas && config.num_replicas !== undefined && c.num_replicas !== config.num_replicas) differs.push(`replicas ${c.num_replicas} (wanted ${config.num_replicas})`);
  if (minDuplicateWindowMs !== undefined && c.duplicate_window < minDuplicateWindowMs * 1_000_000) {
    differs.push(`duplicate window ${c.duplicate_window / 1_000_000} ms (at least the envelope window, ${minDuplicateWindowMs} ms, wanted)`);
  }
  if (differs.length > 0) throw mismatch(`stream ${config.name}`, new Error(differs.join(", ")));
  return info;
}

/** Settings for the tenant's buckets and streams. */
export interface InfraOptions {
  /** Replicas of every stream and bucket (1 single server, 3 in a 3-node cluster); absent: adopt what exists, 1 when creating. */
  replicas?: number;
  /** Max age of a presence entry in ms (an agent not heard from for this long is offline); absent: adopt, 15 000 when creating. */
  presenceMaxAgeMs?: number;
  /**
   * Regions, each a cluster of a supercluster with the region's name: the
   * registry is then kept per region (see {@link CoreBuckets.agentsView}).
   */
  federation?: Federation;
  /**
   * At an edge site: the hub's JetStream domain. The tenant's ACL and
   * revocation list are then mirrors of the hub's (made when missing):
   * read at the edge, kept while the link is down, and written through to
   * the hub (the KV client sends a mirror's writes to its origin).
   */
  hub?: string;
  /** How long audit records are kept, ms. */
  auditMaxAgeMs: number;
  /** Most bytes the audit stream keeps (the oldest records go first). */
  auditMaxBytes: number;
  /** Most records the audit stream keeps (the oldest go first). */
  auditMaxMsgs: number;
  /** The envelope window, ms: the shared replay memory keeps a claim for twice this. */
  windowMs: number;
}

/** Settings compared on an existing bucket: replicas only when the caller chose them. */
export const insisted = (replicas: number | undefined): Array<"history" | "ttl" | "replicas"> => (replicas === undefined ? ["history"] : ["history", "replicas"]);

/** The buckets the core library reads and writes. */
export interface CoreBuckets {
  /** Where this connection writes registrations: the tenant's bucket, or with regions its own region's (`mesh_<t>_agents_<region>`). */
  agents: KV;
  /** Where this connection writes heartbeats (as `agents`). */
  presence: KV;
  /**
   * With regions: what this connection reads, its region's view
   * (`mesh_<t>_agents_<region>_view`), which sources every region's
   * registrations, so discovery answers from the local region and keeps
   * answering when another region is gone. Without: `agents` itself.
   */
  agentsView?: KV;
  /** With regions: the region's view of every region's heartbeats (as `agentsView`). */
  presenceView?: KV;
  acl: KV;
  revoked: KV;
  /** The shared replay memory of fast calls (`(sender, Nats-Msg-Id)` claims). */
  replay: KV;
}

/** The regions of a federated bus: this connection's, and all of them. */
export interface Federation {
  region: string;
  regions: readonly string[];
}

/**
 * The registry buckets of one region: its origin buckets (written by its
 * agents, placed in its cluster) and its views (sourcing every region's
 * origin, placed in its cluster too). The other regions' origins are made
 * first when missing (a view whose source is missing picks it up only
 * after the server's retry backoff), a region that is down not waited for
 * beyond 2 s.
 */
export async function ensureRegionalRegistry(kvm: Kvm, s: Subjects, f: Federation, base: { replicas: number; history: number }, presenceTtl: number): Promise<Pick<CoreBuckets, "agents" | "presence" | "agentsView" | "presenceView">> {
  const kinds = ["agents", "presence"] as const;
  const origin = (kind: "agents" | "presence", region: string) => `${s.bucket(kind)}_${region}`;
  const config = (kind: "agents" | "presence", region: string) => ({ ...base, ...(kind === "presence" ? { ttl: presenceTtl } : {}), placement: { cluster: region, tags: [] as string[] } });
  const [agents, presence] = await Promise.all(kinds.map((kind) => ensureBucket(kvm, origin(kind, f.region), config(kind, f.region), [])));
  const others = f.regions.filter((r) => r !== f.region).flatMap((r) => kinds.map((kind) => ensureBucket(kvm, origin(kind, r), config(kind, r), []).catch(() => undefined)));
  await withinMs(Promise.all(others), 2_000).catch(() => undefined);
  const [agentsView, presenceView] = await Promise.all(kinds.map((kind) =>
    ensureBucket(kvm, `${origin(kind, f.region)}_view`, { ...config(kind, f.region), sources: f.regions.map((r) => ({ name: origin(kind, r) })) }, []),
  ));
  return { agents: agents!, presence: presence!, agentsView: agentsView!, presenceView: presenceView! };
}

/**
 * At an edge site: makes the edge's registry (its `mesh_<t>_agents` and
 * `mesh_<t>_presence`, in JetStream domain `edge`) a source of every hub
 * region's registry views, so the hub's regions discover the edge's agents
 * (and call them through the leaf link) and see whether the edge is heard
 * from. `hubJsm` speaks to the hub's domain; the regions are those the
 * views of `hubRegion` source. Idempotent; the view streams are updated,
 * which needs the right to (a tenant admin).
 */
export async function joinHubRegistry(hubJsm: JetStreamManager, hubKvm: Kvm, s: Subjects, hubRegion: string, edge: string): Promise<void> {
  const kinds = ["agents", "presence"] as const;
  const view = (kind: "agents" | "presence", region: string) => `KV_${s.bucket(kind)}_${region}_view`;
  const [own, presence] = await Promise.all([retryJs(() => hubJsm.streams.info(view("agents", hubRegion))), retryJs(() => hubJsm.streams.info(view("presence", hubRegion)))]);
  // The hub's regions: the origins its view sources (the edges' sources name a domain).
  const prefix = `KV_${s.bucket("agents")}_`;
  const regions = (own.config.sources ?? []).filter((src) => !src.external && src.name.startsWith(prefix)).map((src) => src.name.slice(prefix.length));
  // A region none of whose buses has connected yet has no views: made as its buses would make them.
  const base = { replicas: own.config.num_replicas, history: 1 };
  await Promise.all(regions.map((region) => ensureRegionalRegistry(hubKvm, s, { region, regions }, base, presence.config.max_age / 1_000_000)));
  const api = `$JS.${edge}.API`;
  for (const region of regions.length > 0 ? regions : [hubRegion]) {
    for (const kind of kinds) {
      const info = await retryJs(() => hubJsm.streams.info(view(kind, region)));
      if ((info.config.sources ?? []).some((src) => src.external?.api === api)) continue;
      const origin = s.bucket(kind);
      const source = { name: `KV_${origin}`, external: { api, deliver: "" }, subject_transforms: [{ src: `$KV.${origin}.>`, dest: `$KV.${view(kind, region).slice(3)}.>` }] };
      await retryJs(() => hubJsm.streams.update(info.config.name, { ...info.config, sources: [...(info.config.sources ?? []), source] }));
    }
  }
}

/**
 * The shared replay memory of fast calls (`mesh_<t>_replay`, a region's own
 * on a federated bus), created when missing: its max age is at least twice
 * the envelope window `windowMs` (a longer one, another process's larger
 * window, is fine; a shorter one would forget claims too early).
 */
export async function ensureReplayBucket(kvm: Kvm, s: Subjects, replicas: number | undefined, windowMs: number): Promise<KV> {
  const replayAge = replayMaxAgeMs(windowMs);
  const kv = await ensureBucket(kvm, s.bucket("replay"), { replicas: replicas ?? 1, history: 1, ttl: replayAge, ...placedIn(s) }, insisted(replicas));
  const { ttl } = await justCreated(() => kv.status());
  if (ttl < replayAge) throw mismatch(`KV bucket ${s.bucket("replay")}`, new Error(`max age ${ttl} ms (at least ${replayAge} ms, twice the envelope window, wanted)`));
  return kv;
}

/** A policy bucket's options: at an edge site (`hub`, the hub's domain), a mirror of the hub's bucket of the same name. */
function policyBucket(name: string, base: { replicas: number; history: number }, hub: string | undefined): Partial<KvOptions> {
  return hub === undefined ? base : { ...base, mirror: { name, domain: hub } };
}

/**
 * Creates (idempotently) the buckets, the replay memory and the bounded audit
 * stream of one tenant; with regions, the registry buckets of this
 * connection's region.
 */
export async function ensureCoreInfra(jsm: JetStreamManager, kvm: Kvm, s: Subjects, o: InfraOptions): Promise<CoreBuckets> {
  const base = { replicas: o.replicas ?? 1, history: 1 };
  const insist = insisted(o.replicas);
  const [registry, acl, revoked, replay] = await Promise.all([
    o.federation
      ? ensureRegionalRegistry(kvm, s, o.federation, base, o.presenceMaxAgeMs ?? 15_000)
      : Promise.all([
        ensureBucket(kvm, s.bucket("agents"), base, insist),
        ensureBucket(kvm, s.bucket("presence"), { ...base, ttl: o.presenceMaxAgeMs ?? 15_000 }, o.presenceMaxAgeMs === undefined ? insist : [...insist, "ttl"]),
      ]).then(([agents, presence]) => ({ agents, presence })),
    ensureBucket(kvm, s.bucket("acl"), policyBucket(s.bucket("acl"), base, o.hub), insist),
    ensureBucket(kvm, s.bucket("revoked"), policyBucket(s.bucket("revoked"), base, o.hub), insist),
    // A longer max age (another process's larger window) is fine; a shorter one would forget claims too early.
    // On file, though memory-backed claims measured ~1.5× the rate at a ~20% lower median: a memory
    // bucket vanishes with a single server's restart, and then every call is refused until someone
    // allowed to create streams (an admin, under server permissions) makes it again; it would also
    // forget the claims, reopening the window for replays.
    ensureReplayBucket(kvm, s, o.replicas, o.windowMs),
  ]);
  const ms = 1_000_000;
  const limits = { max_age: o.auditMaxAgeMs * ms, max_bytes: o.auditMaxBytes, max_msgs: o.auditMaxMsgs, discard: DiscardPolicy.Old };
  const name = s.stream("AUDIT");
  const info = await ensureStream(jsm, { name, subjects: [`${s.prefix}.audit.>`], num_replicas: o.replicas ?? 1, ...limits }, o.replicas !== undefined);
  // An audit stream made before it was bounded gets the limits; bounded ones are kept as they are.
  if (info.config.max_bytes < 0 && info.config.max_msgs < 0) {
    await retryJs(() => jsm.streams.update(name, { ...info.config, ...limits }));
  }
  return { ...registry, acl, revoked, replay };
}

/** Settings for the durable-task streams and buckets. */
export interface TaskInfraOptions {
  /** Absent: adopt what exists, 1 when creating. */
  replicas?: number;
  /** How long task events stay replayable, ms (default 7 days). */
  eventsMaxAgeMs: number;
  /** Window in which a resubmitted task id is not enqueued again, ms (default 10 min). */
  duplicateWindowMs: number;
  /**
   * The envelope window, ms: the work and inbox streams' duplicate window is
   * at least this, so a stored copy replayed inside the window is dropped as
   * a duplicate and one replayed later is refused as expired.
   */
  windowMs?: number;
  /**
   * Copy every stored task event live to `<root>.<t>.task.<task>.events`
   * (a republish with a subject transform: nats-server 2.10+).
   */
  republish?: boolean;
  /**
   * The work stream takes delayed work items: message schedules on
   * `<root>.<t>.delayed.>` (nats-server 2.12+). A work stream made without
   * them is given them (`allow_msg_schedules` and the subject).
   */
  schedules?: boolean;
}

/** What {@link ensureTaskInfra} made or found. */
export interface TaskInfra {
  /** The tasks bucket. */
  tasks: KV;
  /** Whether the work stream takes delayed work items (see {@link TaskInfraOptions.schedules}). */
  delayable: boolean;
}

/**
 * Where a region's task plane is placed: in the cluster named as the region
 * (nothing for the tenant's single plane, placed where the server chooses).
 */
export function placedIn(s: Subjects): { placement?: { cluster: string; tags: string[] } } {
  return s.region === undefined ? {} : { placement: { cluster: s.region, tags: [] } };
}

/**
 * The durable-task streams and the tasks bucket, created on first use: the
 * tenant's, or with a region (see {@link Subjects.region}) that region's,
 * placed in its cluster.
 */
export async function ensureTaskInfra(jsm: JetStreamManager, kvm: Kvm, s: Subjects, o: TaskInfraOptions): Promise<TaskInfra> {
  const ms = 1_000_000;
  const replicas = o.replicas ?? 1;
  const insist = o.replicas !== undefined;
  const duplicateWindow = Math.max(o.duplicateWindowMs, o.windowMs ?? 0);
  const placement = placedIn(s);
  const workQueue = (kind: "WORK" | "INBOX", subjects: string[], extra: Partial<StreamConfig> = {}) =>
    ensureStream(jsm, { name: s.stream(kind), subjects, retention: RetentionPolicy.Workqueue, duplicate_window: duplicateWindow * ms, num_replicas: replicas, ...extra }, insist, o.windowMs);
  const [work] = await Promise.all([
    o.schedules ? ensureWorkWithSchedules(jsm, s, (subjects) => workQueue("WORK", subjects, { allow_msg_schedules: true, ...placement })) : workQueue("WORK", [`${s.storePrefix}.work.>`], placement),
    // The inbox is the tenant's in every region.
    workQueue("INBOX", [`${s.prefix}.inbox.>`]),
    ensureStream(jsm, {
      ...placement,
      name: s.stream("EVENTS"),
      subjects: [s.allTaskEventLogs()],
      max_age: o.eventsMaxAgeMs * ms,
      num_replicas: replicas,
      // Reads by subject (the last event of one task) go through a permission that names the submitter.
      allow_direct: true,
      ...(o.republish && { republish: { src: `${s.storePrefix}.events.*.*`, dest: `${s.prefix}.task.{{wildcard(2)}}.events` } }),
    }, insist),
    ensureStream(jsm, { name: s.stream("DLQ"), subjects: [`${s.storePrefix}.dlq.>`], max_age: o.eventsMaxAgeMs * ms, num_replicas: replicas, ...placement }, insist),
  ]);
  const tasks = await ensureBucket(kvm, s.bucket("tasks"), { replicas, history: 1, ttl: o.eventsMaxAgeMs, ...placement }, [...insisted(o.replicas), "ttl"]);
  const c = work.config as StreamConfig & { allow_msg_schedules?: boolean };
  return { tasks, delayable: c.allow_msg_schedules === true && c.subjects.includes(s.allDelayedWork()) };
}

/**
 * The work stream with delayed work items: created so, or, when it exists
 * as a stream made before them (its one subject `<root>.<t>.work.>`),
 * updated to take them (when this identity may; else it is used as it is,
 * without them). Schedules cannot be switched off again, and older library
 * versions read the stream as before.
 */
async function ensureWorkWithSchedules(jsm: JetStreamManager, s: Subjects, ensure: (subjects: string[]) => Promise<StreamInfo>): Promise<StreamInfo> {
  const subjects = [`${s.storePrefix}.work.>`, s.allDelayedWork()];
  const existing = await retryJs(() => jsm.streams.info(s.stream("WORK"))).catch(() => undefined);
  const c = existing?.config as (StreamConfig & { allow_msg_schedules?: boolean }) | undefined;
  if (c && c.subjects.length === 1 && c.subjects[0] === subjects[0]) {
    // An identity that may not change streams (under server permissions) works on with the stream as it is: no delayed tasks until a tenant admin's set-up updates it.
    return retryJs(() => jsm.streams.update(c.name, { ...c, subjects, allow_msg_schedules: true } as StreamConfig)).catch(() => existing!);
  }
  return ensure(subjects);
}

/**
 * The owner index of durable tasks (`mesh_<t>_owners`), created on first
 * use beside the tasks bucket, with its max age: an entry goes when its
 * snapshot does.
 */
export async function ensureOwnersBucket(kvm: Kvm, s: Subjects, o: Pick<TaskInfraOptions, "replicas" | "eventsMaxAgeMs">): Promise<KV> {
  return ensureBucket(kvm, s.bucket("owners"), { replicas: o.replicas ?? 1, history: 1, ttl: o.eventsMaxAgeMs, ...placedIn(s) }, [...insisted(o.replicas), "ttl"]);
}

/**
 * The A2A push notification configs (`mesh_<t>_push`), created by the
 * bridge on first use or by a tenant's set-up ({@link Bus.provision}).
 */
export async function ensurePushBucket(kvm: Kvm, s: Subjects, o: Pick<TaskInfraOptions, "replicas"> = {}): Promise<KV> {
  return ensureBucket(kvm, s.bucket("push"), { history: 1, replicas: o.replicas }, insisted(o.replicas));
}

/**
 * The tenant's object store for large task content (`mesh_<t>_blobs`,
 * stream `OBJ_mesh_<t>_blobs`; on a federated bus each region's own,
 * `mesh_<t>_blobs_<region>`, placed in it, so a task's content stays in
 * its region), created on first use beside the tasks
 * bucket with its max age (a blob goes when its task's snapshot and events
 * do) and the tenant's replicas. An existing one with another max age, or
 * other replicas when they were asked for, is `CONFIG_MISMATCH`.
 */
export async function ensureBlobStore(objm: Objm, s: Subjects, o: Pick<TaskInfraOptions, "replicas" | "eventsMaxAgeMs">): Promise<ObjectStore> {
  const name = s.bucket("blobs");
  const store = await createRacing(`object store ${name}`, () => objm.create(name, { replicas: o.replicas ?? 1, ttl: o.eventsMaxAgeMs * 1_000_000, ...placedIn(s) }));
  const { config } = (await justCreated(() => store.status())).streamInfo;
  const differs: string[] = [];
  if (config.max_age !== o.eventsMaxAgeMs * 1_000_000) differs.push(`max age ${config.max_age / 1_000_000} ms (wanted ${o.eventsMaxAgeMs})`);
  if (o.replicas !== undefined && config.num_replicas !== o.replicas) differs.push(`replicas ${config.num_replicas} (wanted ${o.replicas})`);
  if (differs.length > 0) throw mismatch(`object store ${name}`, new Error(differs.join(", ")));
  return store;
}

/** Creates a durable consumer, or checks that the existing one has the same settings. */
export async function ensureConsumer(jsm: JetStreamManager, stream: string, config: Partial<ConsumerConfig> & { durable_name: string }): Promise<void> {
  const existing = await retryJs(() => jsm.consumers.info(stream, config.durable_name)).catch(() => undefined);
  if (existing) {
    const c = existing.config;
    const differs = (["filter_subject", "ack_wait", "max_deliver", "ack_policy"] as const).filter((k) => config[k] !== undefined && c[k] !== config[k]);
    if (differs.length > 0) {
      throw new AgentBusError("CONFIG_MISMATCH", `consumer ${config.durable_name} on ${stream} exists with other ${differs.join(", ")}; it was left as it is (nats consumer info ${stream} ${config.durable_name})`);
    }
    return;
  }
  await justCreated(() => jsm.consumers.add(stream, config));
}

/** What {@link ensureScheduleInfra} made or found. */
export interface ScheduleInfra {
  /** The signed schedule records, `<creator>.<id>`. */
  records: KV;
  /** The stream holding the schedules in force and their ticks. */
  stream: string;
}

/**
 * Recurring schedules (nats-server 2.14+): the records bucket
 * (`mesh_<t>_schedules`) and the work-queue stream `MESH_<T>_SCHEDULES`
 * holding one schedule message per schedule (`<root>.<t>.schedule.<creator>.<id>`,
 * replaced by a roll-up) and the ticks the server publishes from them
 * (`<root>.<t>.tick.<cap>.<id>`), taken once each by the capability's workers.
 */
export async function ensureScheduleInfra(jsm: JetStreamManager, kvm: Kvm, s: Subjects, o: Pick<TaskInfraOptions, "replicas">): Promise<ScheduleInfra> {
  const replicas = o.replicas ?? 1;
  const [records, info] = await Promise.all([
    ensureBucket(kvm, s.bucket("schedules"), { replicas, history: 1 }, insisted(o.replicas)),
    ensureStream(jsm, {
      name: s.stream("SCHEDULES"),
      subjects: [`${s.prefix}.schedule.>`, `${s.prefix}.tick.>`],
      retention: RetentionPolicy.Workqueue,
      num_replicas: replicas,
      allow_msg_schedules: true,
      allow_rollup_hdrs: true,
      allow_msg_ttl: true,
    } as Partial<StreamConfig> & { name: string }, o.replicas !== undefined),
  ]);
  return { records, stream: info.config.name };
}

/**
 * The capabilities' concurrency and rate limits (`mesh_<t>_limits`, one
 * record per capability), created on first use by an agent with limits, or
 * by a tenant's set-up.
 */
export async function ensureLimitsBucket(kvm: Kvm, s: Subjects, o: Pick<TaskInfraOptions, "replicas"> = {}): Promise<KV> {
  return ensureBucket(kvm, s.bucket("limits"), { history: 1, replicas: o.replicas ?? 1 }, insisted(o.replicas));
}

/**
 * An edge site's outbox (`MESH_<T>_OUTBOX`, `<root>.<t>.outbox.>`, a work
 * queue in the edge's own JetStream domain): tasks for capabilities with no
 * provider at the edge, kept until their submitter's connection forwards
 * them to the hub; with its durable consumer for identity `id`
 * (`outbox_<id>`, its own entries, one at a time so they go in order).
 * Returns the consumer's name.
 */
export async function ensureOutbox(jsm: JetStreamManager, s: Subjects, id: string, o: Pick<TaskInfraOptions, "replicas">): Promise<string> {
  const stream = s.stream("OUTBOX");
  await ensureStream(jsm, { name: stream, subjects: [`${s.prefix}.outbox.>`], retention: RetentionPolicy.Workqueue, num_replicas: o.replicas ?? 1, duplicate_window: 10 * 60_000 * 1_000_000 }, o.replicas !== undefined);
  const name = `outbox_${id}`;
  await ensureConsumer(jsm, stream, { durable_name: name, filter_subject: `${s.prefix}.outbox.${id}.*`, ack_policy: AckPolicy.Explicit, max_ack_pending: 1, ack_wait: 60_000_000_000 });
  return name;
}
