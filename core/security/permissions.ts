/**
 * Server-side permissions per role: what a connection of one identity may
 * publish and subscribe to inside its tenant's NATS account. nats-server
 * enforces them (through the auth callout on 2.10+, or a static config
 * generated from the same function on older servers), so they hold against
 * a client that ignores the library.
 *
 * Pure functions: the same input always gives the same permissions, which
 * the tests read as the contract.
 */
import { capabilityMatches, principalMatches, type AclPolicy } from "./acl.js";
import { Subjects } from "../wire/subjects.js";

/** What a connection is for (DESIGN §6). */
export type IdentityRole = "agent" | "caller" | "bridge" | "admin";

/** The roles, for validation and help texts. */
export const IdentityRoles: readonly IdentityRole[] = ["agent", "caller", "bridge", "admin"];

/** Publish and subscribe lists plus reply rights, in nats-server's terms. */
export interface NatsPermissions {
  pub: { allow: string[]; deny: string[] };
  sub: { allow: string[]; deny: string[] };
  /** Replies to requests received (the reply subject lies in another client's inbox). */
  resp?: { max: number; ttl: number };
}

/** A capability of another tenant that this tenant imports (a service import). */
export interface ImportedCapability {
  /** The exporting tenant. */
  tenant: string;
  /** The capability id (no wildcards). */
  capability: string;
}

/** Inputs of {@link rolePermissions}. */
export interface PermissionInput {
  /** Subject root (default `mesh`). */
  root?: string;
  tenant: string;
  /** The identity's id (`U…`). */
  id: string;
  role: IdentityRole;
  /**
   * Agents: the capability patterns the identity may serve (NATS
   * wildcards). Absent: none (an agent identity is issued for its skills).
   */
  serves?: readonly string[];
  /**
   * Capability patterns the identity may invoke: from the tenant's ACL
   * ({@link grantedCapabilities}). Bridges and admins may invoke all.
   */
  invokes?: readonly string[];
  /** Capabilities of other tenants imported into this one; callers may call those they are granted. */
  imports?: readonly ImportedCapability[];
  /**
   * The regions of a federated tenant (its buses connect with
   * `regions`): the registry buckets, task planes and stored subjects of
   * each region are named instead of the tenant's single ones.
   */
  regions?: readonly string[];
  /**
   * An identity connecting at an edge site (its buses connect with
   * `hub`): the tenant's single plane and registry in the edge's own
   * JetStream domain, its own outbox entries, and the same rights in the
   * plane of the hub's `region`, whose JetStream API and KV writes go
   * through the hub's API prefix (`$JS.<domain>.API.…`). Not with `regions`.
   */
  hub?: { domain: string; region: string };
}

/** The inbox prefix of an identity: replies and JetStream deliveries to it go under `_INBOX.<id>.`. */
export const inboxPrefixOf = (id: string): string => `_INBOX.${id}`;

/**
 * Capability patterns that some rule of `policy` grants to `id` (directly,
 * through a group, through `*`, or as the identity it rotated from),
 * whatever the target. The receiving
 * agent still checks the target; this only bounds what may be published.
 */
export function grantedCapabilities(policy: AclPolicy, id: string): string[] {
  const caps = new Set<string>();
  for (const rule of policy.rules.values()) if (principalMatches(policy, rule.source, id)) for (const c of rule.capabilities) caps.add(c);
  return [...caps].sort();
}

/** True when one of `patterns` covers every capability `pattern` matches (a cheap containment test for the common shapes). */
function covered(patterns: readonly string[], pattern: string): boolean {
  return patterns.some((p) => p === ">" || p === pattern || (!pattern.includes("*") && !pattern.includes(">") && capabilityMatches(p, pattern)));
}

/**
 * The permissions of one connection. Every role may: use its own reply
 * inbox (`_INBOX.<id>.>`, so nobody reads another's replies), read the
 * tenant's streams and buckets it needs through the JetStream API, write
 * audit records, and read and write its own tasks: their snapshots
 * (`$KV.mesh_<t>_tasks.<own id>.*`) and events
 * (`<root>.<t>.events.<own id>.*`). The tasks of others are readable only
 * to agents, bridges and identities the ACL grants a task right. The blob
 * store (`mesh_<t>_blobs`) is open to every role: its subjects cannot name
 * a submitter, and what it holds is ciphertext whose keys are in the
 * confined task records. Beyond that:
 *
 * - **agent**: serve its capabilities (`cap.<c>`, its `agent.<id>.call`,
 *   the work queue consumers of those capabilities, its own inbox), write
 *   only its own registry and presence entries, publish task events, and
 *   invoke what the ACL grants it;
 * - **caller**: invoke (fast calls and durable submissions) what the ACL
 *   grants it, send direct messages, follow its own tasks; it
 *   cannot read another identity's tasks, nor subscribe to any capability, work queue or other identity's
 *   inbox, and cannot write the registry or policy buckets;
 * - **bridge**: a caller for every capability (it acts for many callers,
 *   whose rights it checks itself), plus reading its own direct messages,
 *   the audit stream, and the dead letters (listed, read and removed);
 * - **admin**: everything in the tenant's account (policy, provisioning).
 */
export function rolePermissions(input: PermissionInput): NatsPermissions {
  const tenant = new Subjects(input.root, input.tenant);
  if (input.role === "admin") {
    return { pub: { allow: [">"], deny: [] }, sub: { allow: [">"], deny: [] }, resp: { max: 1, ttl: 0 } };
  }
  const pub = new Set<string>();
  const sub = new Set<string>();
  // A federated tenant: the same rights in each region's plane (the tenant-wide ones come out the same each time).
  const planes = input.regions && input.regions.length > 0 ? input.regions.map((r) => tenant.inRegion(r)) : [tenant];
  for (const s of planes) planePermissions(input, s, pub, sub);
  if (input.hub) edgePermissions(input, input.hub, tenant, pub, sub);
  return {
    pub: { allow: [...pub].sort(), deny: [] },
    sub: { allow: [...sub].sort(), deny: [] },
    // Agents answer calls into the caller's inbox; JetStream answers everyone itself.
    resp: input.role === "agent" || input.role === "bridge" ? { max: 1, ttl: 0 } : undefined,
  };
}

/**
 * {@link rolePermissions} for one task plane: the tenant's, or one
 * region's (`s.region`), whose work, events and dead letters are under
 * `s.storePrefix`, whose task buckets and streams are the region's, and
 * whose registry is written to the region's origin buckets and read from
 * its views.
 */
function planePermissions(input: PermissionInput, s: Subjects, pub: Set<string>, sub: Set<string>): void {
  const p = s.prefix;
  const q = s.storePrefix;
  // Registry buckets: the region's origin (written) and view (read), or the tenant's one.
  const origin = (kind: "agents" | "presence") => (s.region === undefined ? s.bucket(kind) : `${s.bucket(kind)}_${s.region}`);
  const view = (kind: "agents" | "presence") => (s.region === undefined ? s.bucket(kind) : `${origin(kind)}_view`);
  const bucket = (kind: Parameters<Subjects["bucket"]>[0]) => (kind === "agents" || kind === "presence" ? view(kind) : s.bucket(kind));
  const kv = (kind: Parameters<Subjects["bucket"]>[0]) => `$KV.${bucket(kind)}`;
  const kvStream = (kind: Parameters<Subjects["bucket"]>[0]) => `KV_${bucket(kind)}`;
  const inbox = inboxPrefixOf(input.id);
  const invokes = input.role === "bridge" ? [">"] : [...(input.invokes ?? [])];
  const direct = (stream: string, subject: string) => `$JS.API.DIRECT.GET.${stream}.${subject}`;
  const blobs = `$O.${s.bucket("blobs")}`;
  const blobStream = `OBJ_${s.bucket("blobs")}`;
  for (const allowed of [
    "$JS.API.INFO",
    "$JS.API.STREAM.INFO.*",
    "$JS.API.CONSUMER.INFO.*.*",
    // KV reads by key (the key is in the API subject, so the permission names it) and the watches the library keeps.
    ...(["agents", "presence", "acl", "revoked", "sessions", "replay"] as const).map((b) => direct(kvStream(b), `${kv(b)}.>`)),
    ...(["agents", "presence", "acl", "revoked"] as const).flatMap((b) => [
      `$JS.API.CONSUMER.CREATE.${kvStream(b)}.>`,
      `$JS.API.CONSUMER.DELETE.${kvStream(b)}.*`,
    ]),
    // Its own tasks: snapshots keyed `<submitter>.<task>` and events stored
    // under `events.<submitter>.<task>`, so these name this identity.
    direct(kvStream("tasks"), `${kv("tasks")}.${input.id}.>`),
    `${kv("tasks")}.${input.id}.*`,
    direct(s.stream("EVENTS"), `${q}.events.${input.id}.>`),
    `$JS.API.CONSUMER.CREATE.${s.stream("EVENTS")}.*.${q}.events.${input.id}.*`,
    `$JS.API.CONSUMER.DELETE.${s.stream("EVENTS")}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${s.stream("EVENTS")}.*`,
    // A submitter that cancels its queued task records the CANCELED event.
    `${q}.events.${input.id}.*`,
    `${p}.audit.>`,
    `${kv("sessions")}.>`,
    // Its own entries of the owner index (per caller, and federated: where its tasks in other regions are kept).
    `${kv("owners")}.${input.id}.>`,
    // Listing its own tasks: a pass over its own snapshots, or (behind a bridge, per caller) its own keys of the owner index.
    `$JS.API.CONSUMER.CREATE.${kvStream("tasks")}.*.${kv("tasks")}.${input.id}.>`,
    `$JS.API.CONSUMER.DELETE.${kvStream("tasks")}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${kvStream("tasks")}.*`,
    direct(kvStream("owners"), `${kv("owners")}.${input.id}.>`),
    `$JS.API.CONSUMER.CREATE.${kvStream("owners")}.*.${kv("owners")}.${input.id}.>`,
    `$JS.API.CONSUMER.DELETE.${kvStream("owners")}.*`,
    `$JS.API.CONSUMER.MSG.NEXT.${kvStream("owners")}.*`,
    `${p}.task.*.cancel`,
    `${p}.inbox.*`,
    `${p}.agent.*.call`,
    `${p}.agent.*.call.*`,
    // Large task content (claim checks) in the object store `mesh_<t>_blobs`:
    // chunks `$O.<bucket>.C.<nuid>` and records `$O.<bucket>.M.<base64 name>`
    // carry no token a permission could match to a submitter, so every role
    // may write objects and read them; each object is encrypted under a key
    // that only its reference holds, and references travel in the task's
    // work item, snapshot and events, which are confined above.
    `${blobs}.C.*`,
    `${blobs}.M.*`,
    // The client reads an object's record by subject in the request body.
    `$JS.API.STREAM.MSG.GET.${blobStream}`,
    `$JS.API.CONSUMER.CREATE.${blobStream}.*.${blobs}.C.*`,
    `$JS.API.CONSUMER.DELETE.${blobStream}.*`,
    // Flow control of the object store's push consumer.
    `$JS.FC.${blobStream}.>`,
  ]) pub.add(allowed);
  // Work items of each priority: normal on `work.<cap>`, high and low on `work.<cap>.HIGH` / `.LOW`.
  const levels = (c: string) => (c.endsWith(">") ? [`${q}.work.${c}`] : [`${q}.work.${c}`, `${q}.work.${c}.HIGH`, `${q}.work.${c}.LOW`]);
  for (const c of invokes) {
    pub.add(`${p}.cap.${c}`);
    for (const w of levels(c)) pub.add(w);
  }
  // Its own delayed work items (nats-server 2.12+ message schedules), one
  // subject per task under its own id. A schedule's target is a header
  // nats-server does not confine: the work item is sealed for the target,
  // so it counts as this identity's submission to that capability, which
  // the serving agent authorizes as it does every work item.
  if (invokes.length > 0) pub.add(`${q}.delayed.${input.id}.*`);
  // Its own recurring schedules (nats-server 2.14+): the signed records
  // under its own id, and the schedule messages on its own subjects. A
  // schedule's target is again a header the server does not confine: a
  // worker runs a tick only for the schedule the server says produced it
  // (`Nats-Scheduler`), from that schedule's record, signed by its creator.
  if (invokes.length > 0) {
    pub.add(`${p}.schedule.${input.id}.*`);
    pub.add(`${kv("schedules")}.${input.id}.*`);
    pub.add(direct(kvStream("schedules"), `${kv("schedules")}.${input.id}.>`));
    pub.add(`$JS.API.CONSUMER.CREATE.${kvStream("schedules")}.*.${kv("schedules")}.${input.id}.>`);
    pub.add(`$JS.API.CONSUMER.DELETE.${kvStream("schedules")}.*`);
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${kvStream("schedules")}.*`);
  }
  for (const imp of input.imports ?? []) {
    if (input.role === "bridge" || covered(invokes, imp.capability)) pub.add(`${new Subjects(input.root, imp.tenant).prefix}.cap.${imp.capability}`);
  }
  // The events of its own tasks, live (the handle's watch).
  sub.add(`${inbox}.>`);
  sub.add(`${q}.events.${input.id}.*`);
  // Agents, bridges and identities granted a task right may see tasks they
  // did not submit: every task of the tenant as far as nats-server is
  // concerned (the library narrows it to the tasks they serve or were
  // granted); a plain caller sees its own only.
  if (input.role !== "caller" || invokes.some((c) => ["task", "*", ">"].includes(c.split(".", 1)[0]!))) {
    pub.add(direct(kvStream("tasks"), ">"));
    pub.add(`${kv("tasks")}.*.*`);
    pub.add(`$JS.API.CONSUMER.CREATE.${kvStream("tasks")}.>`);
    pub.add(`$JS.API.CONSUMER.DELETE.${kvStream("tasks")}.*`);
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${kvStream("tasks")}.*`);
    pub.add(direct(s.stream("EVENTS"), ">"));
    pub.add(`$JS.API.CONSUMER.CREATE.${s.stream("EVENTS")}.>`);
    pub.add(`${q}.events.*.*`);
    sub.add(`${q}.events.*.*`);
    // The live copy on the task's own subject (nats-server 2.10+).
    sub.add(`${p}.task.*.events`);
  }
  if (input.role === "agent") {
    const serves = input.serves ?? [];
    for (const c of serves) {
      sub.add(`${p}.cap.${c}`);
      // One consumer per priority level; a plain subscription to the high and low subjects tells the worker such work exists.
      for (const w of levels(c)) {
        pub.add(`$JS.API.CONSUMER.CREATE.${s.stream("WORK")}.*.${w}`);
        if (w !== `${q}.work.${c}`) sub.add(w);
      }
      pub.add(`$JS.API.CONSUMER.DURABLE.CREATE.${s.stream("WORK")}.*`);
      // The capability's limits across replicas (one record per capability).
      pub.add(`${kv("limits")}.${c}`);
      pub.add(direct(kvStream("limits"), `${kv("limits")}.${c}`));
      // The ticks of its capabilities' schedules (one consumer per capability,
      // `<root>.<t>.tick.<cap>.*`), each queued as a work item of the capability.
      for (const w of levels(c)) pub.add(w);
      pub.add(`$JS.API.CONSUMER.CREATE.${s.stream("SCHEDULES")}.*.${p}.tick.${c.endsWith(">") ? c : `${c}.*`}`);
    }
    // The schedule a tick names: its record, to verify and run it.
    pub.add(direct(kvStream("schedules"), `${kv("schedules")}.>`));
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${s.stream("SCHEDULES")}.*`);
    sub.add(`${p}.agent.${input.id}.call`);
    sub.add(`${p}.agent.${input.id}.call.*`);
    sub.add(`${p}.task.*.cancel`);
    // Micro service discovery (`nats micro ls`).
    sub.add("$SRV.>");
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${s.stream("WORK")}.*`);
    pub.add(`$JS.API.CONSUMER.INFO.${s.stream("WORK")}.*`);
    pub.add(`${q}.dlq.>`);
    pub.add(`${p}.presence.${input.id}`);
    // Its own registry entries: in the region's origin buckets when federated.
    pub.add(`$KV.${origin("agents")}.${input.id}`);
    pub.add(`$KV.${origin("presence")}.${input.id}.>`);
    pub.add(`${kv("replay")}.>`);
  }
  if (input.role === "agent" || input.role === "bridge") {
    // Its own direct messages, read in order through its own consumer.
    pub.add(`$JS.API.CONSUMER.CREATE.${s.stream("INBOX")}.inbox_${input.id}.${p}.inbox.${input.id}`);
    pub.add(`$JS.API.CONSUMER.DURABLE.CREATE.${s.stream("INBOX")}.inbox_${input.id}`);
    pub.add(`$JS.API.CONSUMER.MSG.NEXT.${s.stream("INBOX")}.inbox_${input.id}`);
    // Acknowledgements of what it consumed (any form of the ack subject, 2.15's v2 included).
    pub.add("$JS.ACK.>");
  }
  if (input.role === "bridge") {
    // Push notifications and the monitor follow every task of the tenant.
    pub.add(`$JS.API.CONSUMER.DURABLE.CREATE.${s.stream("EVENTS")}.*`);
    pub.add(`${kv("push")}.>`);
    pub.add(direct(kvStream("push"), `${kv("push")}.>`));
    // Metrics and the console: submissions as they are queued, and the audit stream.
    sub.add(`${q}.work.>`);
    sub.add(`${q}.delayed.>`);
    for (const api of ["CREATE", "DELETE", "MSG.NEXT"]) pub.add(`$JS.API.CONSUMER.${api}.${s.stream("AUDIT")}.${api === "CREATE" ? ">" : "*"}`);
    // The console's dead letters: listed (ordered consumers), read by sequence, and removed once requeued or discarded.
    for (const api of ["CREATE", "DELETE", "MSG.NEXT"]) pub.add(`$JS.API.CONSUMER.${api}.${s.stream("DLQ")}.${api === "CREATE" ? ">" : "*"}`);
    pub.add(`$JS.API.STREAM.MSG.GET.${s.stream("DLQ")}`);
    pub.add(`$JS.API.STREAM.MSG.DELETE.${s.stream("DLQ")}`);
    pub.add(`$JS.API.CONSUMER.CREATE.${kvStream("push")}.>`);
    // The console's workers per capability: the work stream's consumers, listed at once.
    pub.add(`$JS.API.CONSUMER.LIST.${s.stream("WORK")}`);
  }
}

/**
 * An edge site's extra rights (see {@link PermissionInput.hub}): its own
 * outbox entries and their consumer, and the rights of the hub region's
 * plane with JetStream API requests and KV writes addressed to the hub's
 * domain. Work items, events and calls are plain subjects the leaf link
 * carries; reads and consumers of the hub's streams are API requests.
 */
function edgePermissions(input: PermissionInput, hub: { domain: string; region: string }, tenant: Subjects, pub: Set<string>, sub: Set<string>): void {
  const hubPub = new Set<string>();
  planePermissions(input, tenant.inRegion(hub.region), hubPub, sub);
  const api = `$JS.${hub.domain}.API.`;
  for (const subject of hubPub) {
    if (subject.startsWith("$JS.API.")) pub.add(`${api}${subject.slice("$JS.API.".length)}`);
    else if (subject.startsWith("$KV.")) pub.add(`${api}${subject}`);
    else if (!subject.startsWith("$O.")) pub.add(subject); // the edge's blobs stay at the edge
  }
  const outbox = tenant.stream("OUTBOX");
  const consumer = `outbox_${input.id}`;
  pub.add(`${tenant.prefix}.outbox.${input.id}.*`);
  pub.add(`$JS.API.CONSUMER.CREATE.${outbox}.${consumer}.${tenant.prefix}.outbox.${input.id}.*`);
  pub.add(`$JS.API.CONSUMER.DURABLE.CREATE.${outbox}.${consumer}`);
  pub.add(`$JS.API.CONSUMER.MSG.NEXT.${outbox}.${consumer}`);
  // Acknowledgements of its entries (any form of the ack subject).
  pub.add("$JS.ACK.>");
}
