/**
 * The bus's options: those of `connect()`, resolved once (defaults applied)
 * into the runtime every agent, worker and task handle reads; and those of
 * the caller-side calls, shared by agents and handler contexts (which call
 * other agents) and the bus without importing one another.
 */
import type { EnvelopeMeta } from "./security/envelope.js";
import type { Identity } from "./security/identity.js";
import type { AuditRate } from "./store/audit.js";
import { DEFAULT_MAX_TASK_BYTES } from "./store/blobs.js";
import { AgentBusError, type ErrorCode } from "./wire/errors.js";
import type { Logger } from "./wire/log.js";
import type { TraceContext } from "./wire/trace.js";
import { REGION } from "./wire/subjects.js";

/** Options of `Bus.call`. */
export interface CallOptions extends Pick<EnvelopeMeta, "task" | "context" | "parent" | "depth"> {
  /** Reply deadline, ms (default 30 000). */
  timeout?: number;
  signal?: AbortSignal;
  /** Call this agent id rather than any replica of the capability. */
  target?: string;
  /** Trace to continue (otherwise a new trace starts). */
  trace?: TraceContext;
  /**
   * Call a capability that another tenant exports to this one
   * (`<root>.<tenant>.cap.<cap>`; the providing tenant's ACL must grant this
   * identity). The call is signed, not MACed: this tenant's registry does
   * not know the other's agents.
   */
  tenant?: string;
  /**
   * Encrypt the input end to end (`Mesh-Enc`): for `target`, else for every
   * online provider of `cap` this identity's registry knows (every
   * registered one when it knows none online), never a revoked one; the
   * reply comes back encrypted for this identity. `NO_RESPONDERS` when no
   * provider is registered; not available with `tenant`.
   */
  encrypt?: boolean;
  /**
   * Call only instances running in this region (see
   * {@link ConnectOptions.region}); `NO_RESPONDERS` when the registry knows
   * none there. Without it a call prefers the caller's own region and goes
   * to another when none is there.
   */
  region?: string;
}

/** Options of `Bus.send`. */
export interface SendOptions {
  context?: string;
  task?: string;
  trace?: TraceContext;
  /** Encrypt the message end to end for the receiving agent (`Mesh-Enc`): the stream stores ciphertext. */
  encrypt?: boolean;
}

/** How deep agent-to-agent calls and tasks may nest unless `connect({ maxDepth })` says otherwise. */
export const DEFAULT_MAX_DEPTH = 8;

/**
 * The one depth check, for calls and submissions made and for messages
 * received: `DEPTH_EXCEEDED` when `depth` is past `maxDepth`.
 */
export function checkDepth(depth: number, maxDepth: number, what: "call" | "task"): void {
  if (depth > maxDepth) throw new AgentBusError("DEPTH_EXCEEDED", `${what} depth ${depth} exceeds ${maxDepth}`);
}

/** How the NATS connection authenticates (the bus identity signs envelopes either way). */
export interface NatsAuth {
  /** Path of a `.creds` file (JWT + nkey seed). */
  credsFile?: string;
  /**
   * nkey user seed for nkey challenge auth; `true` uses the bus identity.
   * Default: the bus identity, unless `credsFile`, `user` or `token` is given.
   */
  nkey?: string | true;
  user?: string;
  pass?: string;
  token?: string;
}

/** Options of `connect()`. */
export interface ConnectOptions {
  /** NATS server URL(s). Default `nats://127.0.0.1:4222`. */
  servers?: string | string[];
  /** Tenant (`[a-z0-9_-]+`). Default `default`. */
  tenant?: string;
  /** Subject root prefix. Default `mesh`. */
  root?: string;
  /** Connection name, shown by `nats server report connections`. */
  name?: string;
  /**
   * The tenant's trust root: ids of the admins whose signatures make ACL
   * entries, revocations and rotations valid. Pinned here, it is the
   * anchor: a `trust.root` record in `mesh_<t>_acl` is followed only from a
   * link one of these admins signed. Absent: the first record seen is taken
   * on first use. Pin it in production.
   */
  trustRoot?: string[];
  /** Identity that signs envelopes. Default: `seedFile`, else `AGENTBUS_SEED`, else a fresh one. */
  identity?: Identity;
  /** File holding the identity's nkey seed. */
  seedFile?: string;
  auth?: NatsAuth;
  /**
   * Development only: skip the ACL and the known-sender check. Signatures,
   * time window, replay and revocation are still enforced. Logged loudly.
   */
  insecureAllowAll?: boolean;
  /** Accepted clock difference, ms (default 60 000). */
  windowMs?: number;
  /** Largest accepted payload, bytes (default 1 MiB). */
  maxPayload?: number;
  /** Deepest agent-to-agent call chain (default {@link DEFAULT_MAX_DEPTH}, 8). */
  maxDepth?: number;
  /**
   * The region this connection runs in (letters, digits, `-`, `_`; default
   * `AGENTBUS_REGION`, else none): its agents' instances are announced with
   * it, and its calls prefer providers in the same region. Configuration
   * only: the same agent code runs in any region.
   */
  region?: string;
  /**
   * Every region of a federation, each a cluster of a supercluster named as
   * the region (default `AGENTBUS_REGIONS`, comma-separated), nearest
   * first: with `region` among them the bus is federated. The registry is
   * kept per region, so discovery answers from the local region and keeps
   * answering when another is gone; durable tasks are queued, stored and
   * served in one region each (their work, events and snapshots in the
   * region's own streams and buckets): the submitter's when a provider runs
   * there, else the first region in this list that has one (see
   * {@link SubmitOptions.region}). Without it, the tenant has one registry
   * and one task plane.
   */
  regions?: string[];
  /**
   * This connection runs at an edge site: its server is a leaf node with
   * its own JetStream domain, linked to a hub (a supercluster, or a
   * server) whose JetStream domain is `domain` (default
   * `AGENTBUS_HUB_DOMAIN`). The edge keeps its own registry and task plane,
   * so its agents serve its work whether the link is up or not; a task for
   * a capability with no provider at the edge is stored in the edge's
   * outbox and forwarded to the hub (in order, once) by the submitter's
   * connection while the link is up, into the plane of the hub's `region`
   * (default `AGENTBUS_HUB_REGION`): the hub's tenant is federated (one
   * region or more). The tenant's ACL and revocation list at the edge are
   * mirrors of the hub's (read at the edge while the link is down, written
   * to the hub). Not with `regions`.
   */
  hub?: { domain: string; region: string };
  /** Replicas for streams and buckets (default 1; 3 on a 3-node cluster). */
  replicas?: number;
  /** An agent unheard for this long is offline, ms (default 15 000). */
  presenceMaxAgeMs?: number;
  /** Audit record retention, ms (default 7 days). */
  auditMaxAgeMs?: number;
  /** Most bytes `MESH_<T>_AUDIT` keeps, oldest records removed first (default 256 MiB); applied when the stream is created. */
  auditMaxBytes?: number;
  /** Most records `MESH_<T>_AUDIT` keeps, oldest removed first (default 1 000 000); applied when the stream is created. */
  auditMaxMsgs?: number;
  /**
   * Rate limit of refusal records in this process, per (kind, sender):
   * `burst` written per `intervalMs` (defaults 20 per 10 s), the rest counted
   * in one summary record per interval.
   */
  auditRate?: AuditRate;
  /** How long task events and snapshots are kept, ms (default 7 days). */
  eventsMaxAgeMs?: number;
  /** Window in which a resubmitted task id is not enqueued again, ms (default 10 min). */
  duplicateWindowMs?: number;
  /**
   * Most bytes of content one durable task may hold: its input, history and
   * artifacts together (default 128 MiB). A submit over it is refused with
   * `PAYLOAD_TOO_LARGE` before anything is written; a task that outgrows it
   * while running ends FAILED with that code.
   */
  maxTaskBytes?: number;
  /**
   * A part of a task's message, status or artifact with more bytes of
   * content than this is stored in the tenant's object store
   * (`mesh_<t>_blobs`) and carried as a reference (default 256 KiB; at most
   * half of the server's `max_payload`).
   */
  inlineBytes?: number;
  /** Revisions kept per session (default 16, at most 64). */
  sessionHistory?: number;
  /** How long `close()` waits for in-flight handlers, ms (default 10 000). */
  drainTimeoutMs?: number;
  logger?: Logger;
  /**
   * Hooks for metrics (e.g. `bridges/metrics`' `callObserver`). Each is
   * called synchronously on the caller's path: keep it cheap; what it throws
   * is ignored.
   */
  observer?: BusObserver;
}

/** See {@link ConnectOptions.observer}. */
export interface BusObserver {
  /**
   * A fast call (`bus.call`) ended: its capability, its duration in ms
   * (from the call until the reply or the error), and `"ok"`, the error's
   * code, or `"error"` for an error without one.
   */
  call?(capability: string, ms: number, outcome: "ok" | "error" | ErrorCode): void;
}

/** Options of `attach()`: those of {@link ConnectOptions} that do not make the NATS connection. */
export type AttachOptions = Omit<ConnectOptions, "servers" | "auth" | "name">;

/** {@link ConnectOptions} with every default applied: resolved once, when the bus opens. */
export interface ResolvedOptions {
  readonly maxDepth: number;
  /** The presence bucket's own max age (it may predate this connection's options). */
  readonly presenceMaxAgeMs: number;
  readonly drainTimeoutMs: number;
  readonly windowMs: number;
  readonly eventsMaxAgeMs: number;
  readonly duplicateWindowMs: number;
  readonly maxTaskBytes: number;
  readonly insecureAllowAll: boolean;
  /** Absent: adopt what exists, 1 when creating. */
  readonly replicas?: number;
  readonly inlineBytes?: number;
  readonly sessionHistory?: number;
  readonly observer?: BusObserver;
  /** This connection's region, when it has one. */
  readonly region?: string;
  /** Every region of the federation (`ConnectOptions.regions`), nearest first after this one's; absent when the bus is not federated. */
  readonly regions?: readonly string[];
  /** At an edge site: the hub work is forwarded to (`ConnectOptions.hub`). */
  readonly hub?: { readonly domain: string; readonly region: string };
}

/** Applies the defaults of {@link ConnectOptions}; `presenceMaxAgeMs` is the presence bucket's. */
export function resolveOptions(o: ConnectOptions, presenceMaxAgeMs: number): ResolvedOptions {
  return {
    maxDepth: o.maxDepth ?? DEFAULT_MAX_DEPTH,
    presenceMaxAgeMs,
    drainTimeoutMs: o.drainTimeoutMs ?? 10_000,
    windowMs: o.windowMs ?? 60_000,
    eventsMaxAgeMs: o.eventsMaxAgeMs ?? 7 * 24 * 3600_000,
    duplicateWindowMs: o.duplicateWindowMs ?? 10 * 60_000,
    maxTaskBytes: o.maxTaskBytes ?? DEFAULT_MAX_TASK_BYTES,
    insecureAllowAll: o.insecureAllowAll ?? false,
    replicas: o.replicas,
    inlineBytes: o.inlineBytes,
    sessionHistory: o.sessionHistory,
    observer: o.observer,
    region: regionOf(o.region ?? (process.env.AGENTBUS_REGION || undefined)),
    regions: federationOf(o)?.regions,
    hub: hubOf(o),
  };
}


/**
 * The federation a connection is part of: its region among `regions`
 * (given, or `AGENTBUS_REGIONS`); undefined without both. `INVALID_INPUT`
 * for a bad name, or a region not among the regions.
 */
export function federationOf(o: Pick<ConnectOptions, "region" | "regions">): { region: string; regions: string[] } | undefined {
  const region = regionOf(o.region ?? (process.env.AGENTBUS_REGION || undefined));
  const regions = o.regions ?? process.env.AGENTBUS_REGIONS?.split(",").map((r) => r.trim()).filter(Boolean);
  if (regions === undefined || regions.length === 0) return undefined;
  for (const r of regions) regionOf(r);
  if (region === undefined || !regions.includes(region)) throw new AgentBusError("INVALID_INPUT", `region ${JSON.stringify(region)} is not one of the regions ${regions.join(", ")}`);
  return { region, regions: [...new Set(regions)] };
}

/**
 * The hub of an edge site (`ConnectOptions.hub`, else `AGENTBUS_HUB_DOMAIN`
 * and `AGENTBUS_HUB_REGION`); undefined when the connection is not at an
 * edge. `INVALID_INPUT` for a bad or missing domain or region, or with
 * `regions`.
 */
export function hubOf(o: Pick<ConnectOptions, "hub" | "regions">): { domain: string; region: string } | undefined {
  const hub = o.hub ?? (process.env.AGENTBUS_HUB_DOMAIN ? { domain: process.env.AGENTBUS_HUB_DOMAIN, region: process.env.AGENTBUS_HUB_REGION ?? "" } : undefined);
  if (hub === undefined) return undefined;
  if (typeof hub.domain !== "string" || !REGION.test(hub.domain)) throw new AgentBusError("INVALID_INPUT", `invalid hub domain ${JSON.stringify(hub.domain)}: letters, digits, - and _, at most 64`);
  if (hub.region === undefined || hub.region === "") throw new AgentBusError("INVALID_INPUT", "an edge site's hub names the region its work goes to (hub.region, AGENTBUS_HUB_REGION)");
  regionOf(hub.region);
  if (o.regions !== undefined || process.env.AGENTBUS_REGIONS) throw new AgentBusError("INVALID_INPUT", "an edge site's connection (hub) is not one of the regions: give hub or regions, not both");
  return { domain: hub.domain, region: hub.region };
}

/** A region name as given, checked (`INVALID_INPUT` when it is not a name). */
export function regionOf(region: string | undefined): string | undefined {
  if (region !== undefined && (typeof region !== "string" || !REGION.test(region))) throw new AgentBusError("INVALID_INPUT", `invalid region ${JSON.stringify(region)}: letters, digits, - and _, at most 64`);
  return region;
}
