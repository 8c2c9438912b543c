import { AgentBusError } from "./errors.js";

const TOKEN = /^[a-z0-9_-]+$/;
const CAPABILITY = /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/;
const ROOT = /^[A-Za-z0-9_-]+$/;
const ID = /^[A-Za-z0-9_-]+$/;
/** A region: a cluster name of a supercluster, one subject token. */
export const REGION = /^[A-Za-z0-9_-]{1,64}$/;

function check(re: RegExp, value: string, what: string): string {
  if (!re.test(value)) {
    throw new AgentBusError("INVALID_INPUT", `invalid ${what} ${JSON.stringify(value)}: must match ${re}`);
  }
  return value;
}

/** Validates a capability id (`[a-z0-9_-]+` tokens joined by dots). */
export const checkCapability = (cap: string): string => check(CAPABILITY, cap, "capability");
/** Validates an agent or task id (one subject token, no dots or wildcards). */
export const checkId = (id: string, what = "id"): string => check(ID, id, what);

/**
 * Subject, stream and bucket names for one root prefix and tenant, as laid
 * down in docs/ARCHITECTURE.md. Every other module asks this one; nothing
 * else concatenates subjects.
 */
export class Subjects {
  readonly root: string;
  readonly tenant: string;
  /** `<root>.<tenant>` */
  readonly prefix: string;
  /**
   * The region whose task plane these names are for (a federated bus, see
   * docs/ARCHITECTURE.md, federation): the work, events and dead-letter
   * streams and the tasks, owners and replay buckets are the region's own
   * (`_<region>` appended to their names, subjects under
   * `<root>.<t>.region.<region>`); every other name is the tenant's.
   */
  readonly region?: string;
  /** Where the region's stored subjects live: `<root>.<t>.region.<region>`, or `prefix` without a region. */
  readonly storePrefix: string;

  constructor(root = "mesh", tenant = "default", region?: string) {
    this.root = check(ROOT, root, "root prefix");
    this.tenant = check(TOKEN, tenant, "tenant");
    this.prefix = `${root}.${tenant}`;
    this.region = region === undefined ? undefined : check(REGION, region, "region");
    this.storePrefix = region === undefined ? this.prefix : `${this.prefix}.region.${region}`;
  }

  /** The names of region `region`'s task plane in the same tenant (the tenant's own without one). */
  inRegion(region: string | undefined): Subjects {
    return region === this.region ? this : new Subjects(this.root, this.tenant, region);
  }

  readonly #caps = new Map<string, string>();

  /** Fast call to any replica serving `cap` (queue group per capability). Cached: it is on every call's path. */
  cap(cap: string): string {
    let subject = this.#caps.get(cap);
    if (!subject) {
      subject = `${this.prefix}.cap.${checkCapability(cap)}`;
      if (this.#caps.size < 10_000) this.#caps.set(cap, subject);
    }
    return subject;
  }
  /** Fast call to one agent identity (any of its instances). */
  agentCall(agent: string): string {
    return `${this.prefix}.agent.${checkId(agent, "agent id")}.call`;
  }
  /**
   * Fast call to one running instance of an agent: the subject is part of
   * what the envelope's MAC or signature covers, so a copy replayed to any
   * other instance (another replica, or the same agent after a restart,
   * which runs under a new instance id) does not verify, and the instance
   * itself remembers what it received.
   */
  instanceCall(agent: string, instance: string): string {
    return `${this.prefix}.agent.${checkId(agent, "agent id")}.call.${checkId(instance, "instance id")}`;
  }
  /** Durable task submission for `cap`: `<root>.<t>.work.<cap>`, with `.HIGH` or `.LOW` appended for those priorities. */
  work(cap: string, priority?: "high" | "normal" | "low"): string {
    const subject = `${this.storePrefix}.work.${checkCapability(cap)}`;
    // Capabilities are lower case: an upper-case last token cannot be part of one.
    return priority === "high" ? `${subject}.HIGH` : priority === "low" ? `${subject}.LOW` : subject;
  }

  /**
   * Where a delayed task's work item waits for its time, in the work
   * stream (a message schedule: nats-server 2.12+, which publishes it to
   * {@link work} then): one subject per task, named by its submitter, so a
   * permission can confine an identity to its own.
   */
  delayedWork(submitter: string, task: string): string {
    return `${this.storePrefix}.delayed.${submitter}.${task}`;
  }

  /** Every delayed work item of the tenant (the work stream's second subject). */
  allDelayedWork(): string {
    return `${this.storePrefix}.delayed.>`;
  }
  /** Durable direct messages to one agent. */
  inbox(agent: string): string {
    return `${this.prefix}.inbox.${checkId(agent, "agent id")}`;
  }
  /**
   * Every event of one task, live: the events stream copies each stored
   * event here (republish, nats-server 2.10+) for operators' `nats sub`.
   * The library reads the stored log ({@link taskEventLog}).
   */
  taskEvents(task: string): string {
    return `${this.prefix}.task.${checkId(task, "task id")}.events`;
  }
  /**
   * Where the events of a task are stored and published: under its
   * submitter's id, so a NATS permission gives a connection the events of
   * its own tasks only (`<root>.<t>.events.<own id>.>`).
   */
  taskEventLog(submitter: string, task: string): string {
    return `${this.storePrefix}.events.${checkId(submitter, "submitter id")}.${checkId(task, "task id")}`;
  }
  /** The stored events of one task whoever submitted it (a filter: for identities that may read every task). */
  taskEventLogOfAny(task: string): string {
    return `${this.storePrefix}.events.*.${checkId(task, "task id")}`;
  }
  /** The stored events of every task of the tenant (a filter). */
  allTaskEventLogs(): string {
    return `${this.storePrefix}.events.>`;
  }
  /** Cancel requests for one task. */
  taskCancel(task: string): string {
    return `${this.prefix}.task.${checkId(task, "task id")}.cancel`;
  }
  /** Heartbeats of one agent. */
  presence(agent: string): string {
    return `${this.prefix}.presence.${checkId(agent, "agent id")}`;
  }
  /** Dead-lettered work items of one capability. */
  dlq(cap: string): string {
    return `${this.storePrefix}.dlq.${checkCapability(cap)}`;
  }
  /**
   * The message that holds recurring schedule `id` of `creator` in the
   * schedules stream (nats-server 2.14+ cron schedules): the last message
   * on it is the schedule in force.
   */
  schedule(creator: string, id: string): string {
    return `${this.prefix}.schedule.${checkId(creator, "creator id")}.${checkId(id, "schedule id")}`;
  }
  /** Where the server publishes the ticks of schedule `id` for capability `cap`. */
  tick(cap: string, id: string): string {
    return `${this.prefix}.tick.${checkCapability(cap)}.${checkId(id, "schedule id")}`;
  }
  /** The ticks of every schedule of `cap` (what its workers consume). */
  ticks(cap: string): string {
    return `${this.prefix}.tick.${checkCapability(cap)}.*`;
  }
  /**
   * At an edge site: a task stored in the edge's outbox until its
   * submitter's connection forwards it to the hub (see
   * `ConnectOptions.hub`), under the submitter's id.
   */
  outbox(submitter: string, task: string): string {
    return `${this.prefix}.outbox.${checkId(submitter, "submitter id")}.${checkId(task, "task id")}`;
  }
  /** Audit records of one kind (`denied`, `bad_signature`, ...). */
  audit(kind: string): string {
    return `${this.prefix}.audit.${check(TOKEN, kind, "audit kind")}`;
  }

  /** Stream name: `MESH_<T>_<KIND>`, with `_<REGION>` for a region's work, events and dead letters. */
  stream(kind: "WORK" | "INBOX" | "EVENTS" | "DLQ" | "AUDIT" | "SCHEDULES" | "OUTBOX"): string {
    const name = `${this.root}_${this.tenant}_${kind}`;
    return (this.region !== undefined && REGIONAL_STREAMS.has(kind) ? `${name}_${this.region}` : name).toUpperCase();
  }
  /** KV (or, for `blobs`, object store) bucket name: `mesh_<t>_<kind>`, with `_<region>` for a region's tasks, owners and replay memory. */
  bucket(kind: "agents" | "presence" | "tasks" | "sessions" | "acl" | "revoked" | "push" | "replay" | "owners" | "blobs" | "schedules" | "limits"): string {
    const name = `${this.root.toLowerCase()}_${this.tenant}_${kind}`;
    return this.region !== undefined && REGIONAL_BUCKETS.has(kind) ? `${name}_${this.region}` : name;
  }
}

/** The streams each region of a federated bus has its own of. */
const REGIONAL_STREAMS: ReadonlySet<string> = new Set(["WORK", "EVENTS", "DLQ"]);
/** The buckets each region of a federated bus has its own of. */
const REGIONAL_BUCKETS: ReadonlySet<string> = new Set(["tasks", "owners", "replay", "blobs"]);
