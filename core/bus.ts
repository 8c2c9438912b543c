import "./infra/natsfix.js"; // before any request: see the file
import { connect as natsConnect } from "@nats-io/transport-node";
import {
  errors as natsErrors,
  nkeyAuthenticator,
  credsAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
} from "@nats-io/nats-core";
import { jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { readFileSync } from "node:fs";
import { Agent, type AgentHost, type AgentOptions, type AgentSpec } from "./agent/agent.js";
import { Durable } from "./store/task-log.js";
import { DEFAULT_MAX_TASK_BYTES } from "./store/blobs.js";
import type { AgentExecutor } from "@a2a-js/sdk/server";
import { INBOX_CAPABILITY, receiveDirect, sendDirect, type InboxMessage, type SendReceipt } from "./client/inbox.js";
import { Sessions, type Session } from "./store/session.js";
import { taskIdBinds, taskRight, type Task } from "./wire/task.js";
import { TaskHandle, holdsTaskRights, listTasks, submit, type SubmitOptions, type Submitter, type TaskAccessOptions } from "./client/task-handle.js";
import type { TaskPage, TaskQuery } from "./store/task-snapshots.js";
import type { Handler } from "./agent/context.js";
import { AclStore } from "./store/aclstore.js";
import { AUDIT_DEFAULTS, Auditor, type AuditRate } from "./store/audit.js";
import { AgentBusError, isAgentBusError, type ErrorCode } from "./wire/errors.js";
import { Envelopes, Header, type Envelope, type EnvelopeMeta } from "./security/envelope.js";
import { featuresOf, type ServerFeatures } from "./wire/features.js";
import { Identity } from "./security/identity.js";
import { inboxPrefixOf } from "./security/permissions.js";
import { ensurePushBucket, ensureCoreInfra, type CoreBuckets } from "./infra/jetstream.js";
import type { BadPolicy } from "./store/policy.js";
import { Revocations, type Revocation } from "./store/revocations.js";
import { proveRotation, type RotationProof } from "./store/rotation.js";
import { createLogger, type Logger } from "./wire/log.js";
import { parseMessage, toMessage, type Input } from "./wire/message.js";
import { SharedReplay } from "./security/replay.js";
import type { Message } from "./wire/protocol.js";
import { Registry, type AgentEvent, type AgentInfo, type DiscoverQuery } from "./store/registry.js";
import { Subjects, checkCapability } from "./wire/subjects.js";
import { SpanAttr, SpanKind, activeTracer, busSpan, endSpan, traceOf, traced } from "./wire/trace.js";

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

/** Options of {@link connect}. */
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
   * A fast call ({@link Bus.call}) ended: its capability, its duration in ms
   * (from the call until the reply or the error), and `"ok"`, the error's
   * code, or `"error"` for an error without one.
   */
  call?(capability: string, ms: number, outcome: "ok" | "error" | ErrorCode): void;
}

import { checkDepth, DEFAULT_MAX_DEPTH, type CallOptions, type SendOptions } from "./options.js";

export type { CallOptions, SendOptions };

const enc = new TextEncoder();

function resolveIdentity(o: ConnectOptions): Identity {
  if (o.identity) return o.identity;
  if (o.seedFile) return Identity.fromFile(o.seedFile);
  if (process.env.AGENTBUS_SEED) return Identity.fromEnv();
  return Identity.generate();
}

function natsOptions(o: ConnectOptions, identity: Identity): ConnectionOptions {
  const a = o.auth ?? {};
  const opts: ConnectionOptions = {
    servers: o.servers ?? "nats://127.0.0.1:4222",
    name: o.name ?? "agentbus",
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    // nats.js otherwise captures a stack trace per request (~25 µs); the bus
    // wraps request errors in its own codes anyway.
    noAsyncTraces: true,
    user: a.user,
    pass: a.pass,
    token: a.token,
  };
  // No credentials given: the identity's own key (nkey challenge), which an
  // agentbus-secured server requires and an open server ignores.
  const nkey = a.nkey ?? (a.credsFile || a.user || a.token ? undefined : true);
  if (a.credsFile) opts.authenticator = credsAuthenticator(readFileSync(a.credsFile));
  else if (nkey === true) opts.authenticator = nkeyAuthenticator(enc.encode(identity.exportSeed()));
  else if (nkey) opts.authenticator = nkeyAuthenticator(enc.encode(nkey));
  // Replies and JetStream deliveries under the identity's own prefix: the
  // permissions the authority issues let a connection read only its own.
  if (nkey && !a.credsFile) {
    opts.inboxPrefix = inboxPrefixOf(nkey === true ? identity.id : Identity.fromSeed(nkey).id);
    // The tenant asked for: the authority refuses an identity of another tenant instead of placing it in its own.
    opts.user ??= o.tenant ?? "default";
  }
  return opts;
}

/**
 * What a server that enforces nothing exposes, said once at connect: a
 * server without authentication puts every client in one account, where
 * any of them can read and write every tenant's subjects, streams and
 * buckets whatever the library checks.
 */
function warnIfOpen(nc: NatsConnection, log: Logger, servers: string): void {
  if (nc.info?.auth_required) return;
  log.warn(
    { server: servers },
    "nats-server requires no authentication: every client shares one account, so any of them can read every payload on the bus, read and write task snapshots and sessions, write the registry, the ACL and the revocation list of every tenant, and act as any tenant. Run nats-server with agentbus accounts (agentbus up starts one; see the README, \"Secure deployment\").",
  );
}

/**
 * Connects to NATS as one identity in one tenant, creates the tenant's core
 * buckets and audit stream if missing, and loads the registry, ACL and
 * revocation list into local caches.
 */
export async function connect(options: ConnectOptions = {}): Promise<Bus> {
  const identity = resolveIdentity(options);
  const subjects = new Subjects(options.root, options.tenant);
  const log = (options.logger ?? createLogger()).child({ tenant: subjects.tenant, id: identity.id });
  let nc: NatsConnection;
  const servers = String(options.servers ?? "nats://127.0.0.1:4222");
  try {
    nc = await natsConnect(natsOptions(options, identity));
  } catch (cause) {
    if (cause instanceof natsErrors.AuthorizationError) {
      throw new AgentBusError("DENIED", `nats-server at ${servers} refused identity ${identity.id} in tenant ${subjects.tenant} (not issued, revoked, or another tenant's; the authority's log says which)`, { cause });
    }
    throw new AgentBusError("UNAVAILABLE", `cannot connect to NATS at ${servers}: ${(cause as Error).message}`, { cause });
  }
  warnIfOpen(nc, log, servers);
  try {
    return await Bus.open(nc, identity, subjects, log, options);
  } catch (err) {
    await nc.close().catch(() => {});
    throw err;
  }
}

/** Options of {@link attach}: those of {@link connect} that do not make the NATS connection. */
export type AttachOptions = Omit<ConnectOptions, "servers" | "auth" | "name">;

/**
 * A bus on a NATS connection the caller made and keeps owning: the same as
 * {@link connect} without connecting. `close()` stops the bus (its agents,
 * caches and watches) and leaves the connection open for the caller to
 * close. Under server permissions the connection must be authenticated as
 * `options.identity` with `inboxPrefix` `_INBOX.<id>`, as `connect` makes it.
 */
export async function attach(nc: NatsConnection, options: AttachOptions = {}): Promise<Bus> {
  const identity = resolveIdentity(options);
  const subjects = new Subjects(options.root, options.tenant);
  const log = (options.logger ?? createLogger()).child({ tenant: subjects.tenant, id: identity.id });
  warnIfOpen(nc, log, nc.getServer());
  return Bus.open(nc, identity, subjects, log, options, false);
}

/**
 * A connection to the bus: call capabilities, run agents, discover who is
 * there. Create one with {@link connect} (`close()` drains its connection)
 * or {@link attach} (`close()` leaves the caller's connection open).
 */
export class Bus {
  readonly nc: NatsConnection;
  readonly identity: Identity;
  readonly subjects: Subjects;
  readonly log: Logger;
  readonly server: ServerFeatures;
  readonly envelopes: Envelopes;
  readonly registry: Registry;
  readonly acl: AclStore;
  readonly buckets: CoreBuckets;
  readonly #options: ConnectOptions;
  readonly #maxDepth: number;
  readonly #revoked: Revocations;
  readonly #revokedListeners = new Set<(id: string, revocation: Revocation) => void>();
  readonly #auditor: Auditor;
  readonly #agents = new Set<Agent>();
  /** Instances that did not answer a call (`<agent>.<instance>` → until when they are skipped). */
  readonly #gone = new Map<string, number>();
  readonly #presenceMaxAgeMs: number;
  #durable?: Promise<Durable>;
  #sessions?: Promise<Sessions>;
  #closing?: Promise<void>;
  #ownsConnection = true;
  /** The connection's status feed this bus reads (nats.js hands out a stoppable iterator). */
  #status?: ReturnType<NatsConnection["status"]> & { stop?: () => void };

  private constructor(init: {
    nc: NatsConnection; identity: Identity; subjects: Subjects; log: Logger; options: ConnectOptions;
    buckets: CoreBuckets; registry: Registry; acl: AclStore; revoked: Revocations;
  }) {
    this.nc = init.nc;
    this.identity = init.identity;
    this.subjects = init.subjects;
    this.log = init.log;
    this.#options = init.options;
    this.#maxDepth = init.options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.#presenceMaxAgeMs = init.options.presenceMaxAgeMs ?? 15_000;
    this.buckets = init.buckets;
    this.registry = init.registry;
    this.acl = init.acl;
    this.#revoked = init.revoked;
    this.server = featuresOf(init.nc.info?.version ?? "0.0.0");
    this.envelopes = new Envelopes(init.identity, {
      windowMs: init.options.windowMs,
      maxPayload: init.options.maxPayload,
      isRevoked: (id) => this.isRevoked(id),
      sharedReplay: new SharedReplay(init.buckets.replay),
    });
    this.#auditor = new Auditor(init.nc, init.subjects, this.envelopes, init.log, init.options.auditRate);
  }

  /** @internal used by {@link connect}. */
  static async open(nc: NatsConnection, identity: Identity, subjects: Subjects, log: Logger, options: ConnectOptions, ownsConnection = true): Promise<Bus> {
    const buckets = await ensureCoreInfra(await jetstreamManager(nc), new Kvm(nc), subjects, {
      replicas: options.replicas,
      presenceMaxAgeMs: options.presenceMaxAgeMs,
      auditMaxAgeMs: options.auditMaxAgeMs ?? AUDIT_DEFAULTS.maxAgeMs,
      auditMaxBytes: options.auditMaxBytes ?? AUDIT_DEFAULTS.maxBytes,
      auditMaxMsgs: options.auditMaxMsgs ?? AUDIT_DEFAULTS.maxMsgs,
      windowMs: options.windowMs ?? 60_000,
    });
    // The bucket's own max age rules (it may predate this connection's options).
    const [presenceStatus, agentsStatus] = await Promise.all([buckets.presence.status(), buckets.agents.status()]);
    const presenceMaxAgeMs = presenceStatus.ttl;
    // Buses of this process on the same buckets (the same streams: same names, made at the same instant) share one registry view.
    const registryKey = `${subjects.bucket("agents")}@${agentsStatus.streamInfo.created}|${presenceStatus.streamInfo.created}`;
    const invalid = (bucket: string) => (key: string, err: unknown) => log.warn({ bucket, key, err: String(err) }, "ignoring invalid entry");
    // Policy entries that are not applied: logged, and audited once per key revision (queued until the bus exists).
    const reported = new Set<string>();
    const unaudited: Array<Record<string, unknown>> = [];
    let audit: ((record: Record<string, unknown>) => void) | undefined;
    const onBadPolicy: BadPolicy = (bucket, key, revision, reason) => {
      const id = `${bucket}/${key}/${revision}`;
      if (reported.has(id)) return;
      if (reported.size >= 10_000) reported.clear();
      reported.add(id);
      const record = { bucket: subjects.bucket(bucket), key, revision, reason };
      log.warn(record, "policy entry not applied");
      if (audit) audit(record);
      else unaudited.push(record);
    };
    const policy = { identity, tenant: subjects.tenant, onBadPolicy };
    // Listeners of onRevoked, registered once the bus exists (the list loads first).
    let revokedListener: ((id: string, r: Revocation) => void) | undefined;
    const [registry, { acl, revoked }] = await Promise.all([
      Registry.open({ agents: buckets.agents, presence: buckets.presence, closed: nc.closed() }, presenceMaxAgeMs, {
        share: registryKey,
        onInvalid: invalid("agents"),
        onMoveFailed: (err) => log.warn({ err: String(err) }, "the shared registry view could not move to another connection yet"),
      }),
      (async () => {
        // Revocations are signed by the ACL's admins: the trust root loads first.
        const acl = await AclStore.start(buckets.acl, { ...policy, trustRoot: options.trustRoot });
        const revoked = await Revocations.start(buckets.revoked, { ...policy, trust: () => acl.trust(), onRevoked: (id, r) => revokedListener?.(id, r) });
        acl.onTrustChange(() => revoked.recheck());
        return { acl, revoked };
      })(),
    ]);
    const bus = new Bus({ nc, identity, subjects, log, options: { ...options, presenceMaxAgeMs }, buckets, registry, acl, revoked });
    bus.#ownsConnection = ownsConnection;
    audit = (record) => bus.audit("bad_policy", record);
    revokedListener = (id, r) => bus.#onRevoked(id, r);
    for (const record of unaudited.splice(0)) audit(record);
    if (options.insecureAllowAll) {
      log.warn("INSECURE: ACL DISABLED (insecureAllowAll). Any signed sender may invoke any capability of agents on this connection. Never use this outside local development.");
    }
    void bus.#watchStatus();
    log.info({ server: bus.server.version }, "connected");
    if (!bus.server.replicatedCas && agentsStatus.replicas > 1) {
      log.warn(
        { server: bus.server.version },
        "nats-server before 2.9.21 does not make compare-and-set atomic on replicated buckets (nats-server#4320): concurrent session updates can be lost and a cancel can race a task's completion. Run 2.9.21 or newer in a JetStream cluster.",
      );
    }
    return bus;
  }

  /** This connection's identity id (`U…`). */
/**
   * Most bytes of content one durable task may hold on this connection
   * (`ConnectOptions.maxTaskBytes`, default 128 MiB): bridges size their
   * request limits by it.
   */
  get maxTaskBytes(): number {
    return this.#options.maxTaskBytes ?? DEFAULT_MAX_TASK_BYTES;
  }

    get id(): string {
    return this.identity.id;
  }

  /**
   * Fast call: request/reply to any replica serving `cap` (or to one agent
   * with `target`). Resolves to the reply message; refusals and handler
   * failures reject with an {@link AgentBusError} carrying the remote code.
   */
  async call(cap: string, input: Input, options: CallOptions = {}): Promise<Message> {
    const observer = this.#options.observer;
    if (!observer?.call) return this.#call(cap, input, options);
    const start = performance.now();
    let outcome: "ok" | "error" | ErrorCode = "error";
    try {
      const reply = await this.#call(cap, input, options);
      outcome = "ok";
      return reply;
    } catch (err) {
      if (isAgentBusError(err)) outcome = err.code;
      throw err;
    } finally {
      try {
        observer.call(cap, performance.now() - start, outcome);
      } catch { /* an observer never fails a call */ }
    }
  }

  async #call(cap: string, input: Input, options: CallOptions): Promise<Message> {
    const foreign = options.tenant !== undefined && options.tenant !== this.subjects.tenant;
    if (options.target) checkCapability(cap);
    const depth = options.depth ?? 0;
    checkDepth(depth, this.#maxDepth, "call");
    const message = toMessage(input);
    if (options.context) message.contextId ??= options.context;
    const body = Buffer.from(JSON.stringify(message));
    // One running instance of a provider, when the registry knows one: the
    // call is addressed (and MACed) to it alone, so it needs no shared
    // replay claim on the way in.
    let pick = foreign ? undefined : this.#pickInstance(cap, options.target);
    const shared = options.target ? this.subjects.agentCall(options.target) : foreign ? new Subjects(this.subjects.root, options.tenant).cap(cap) : this.subjects.cap(cap);
    // A CLIENT span only when an OpenTelemetry SDK is registered; the envelope carries its context.
    const tracer = activeTracer();
    // Its destination is the capability's (or the target's) subject, whichever instance answers.
    const span = tracer && busSpan(tracer, "call", cap, shared, this.subjects.tenant, options.trace, options.target, options.task);
    const meta: EnvelopeMeta = {
      task: options.task, context: options.context ?? message.contextId, parent: options.parent, depth,
      capability: options.target || pick ? cap : undefined, trace: traceOf(span, options.trace),
    };
    try {
      let reply: Message | undefined;
      while (pick) {
        try {
          reply = await this.#requestOrSign(cap, this.subjects.instanceCall(pick.agent, pick.instance), body, meta, [pick.agent], options, options.encrypt ? [pick.agent] : undefined);
          break;
        } catch (err) {
          // Gone without withdrawing its presence (killed): skip it until its presence expires, try another.
          if (!isAgentBusError(err, "NO_RESPONDERS")) throw err;
          if (this.#gone.size >= 10_000) this.#gone.clear();
          this.#gone.set(`${pick.agent}.${pick.instance}`, Date.now() + this.#presenceMaxAgeMs);
          pick = this.#pickInstance(cap, options.target);
        }
      }
      if (!reply) {
        // No instance known: the capability's (or the target's) queue group; MACed for the agents we know serve it, signed when we know none.
        meta.capability = options.target ? cap : undefined;
        const recipients = options.target ? [options.target] : foreign ? [] : this.registry.providers(cap);
        const encryptFor = options.encrypt ? this.#callRecipients(cap, options.target, foreign) : undefined;
        reply = await this.#requestOrSign(cap, shared, body, meta, recipients, options, encryptFor);
      }
      if (span) endSpan(span);
      return reply;
    } catch (err) {
      if (span) endSpan(span, err);
      throw err;
    }
  }

  /**
   * A running instance of `target`, else of an online provider of `cap`,
   * chosen at random among all of them (each instance takes an even share),
   * never a revoked one or one that just did not answer.
   */
  #pickInstance(cap: string, target: string | undefined): { agent: string; instance: string } | undefined {
    const agents = target ? [target] : this.registry.providers(cap);
    if (agents.length === 0) return undefined;
    const now = Date.now();
    const live: Array<{ agent: string; instance: string }> = [];
    for (const agent of agents) {
      if (this.isRevoked(agent)) continue;
      for (const instance of this.registry.instances(agent)) {
        const gone = this.#gone.get(`${agent}.${instance}`);
        if (gone !== undefined) {
          if (gone > now) continue;
          this.#gone.delete(`${agent}.${instance}`);
        }
        live.push({ agent, instance });
      }
    }
    return live.length === 0 ? undefined : live[Math.floor(Math.random() * live.length)];
  }

  /**
   * Who an encrypted call is encrypted for: the target, else the online
   * providers the registry knows (every registered one when none is
   * online), never a revoked identity.
   */
  #callRecipients(cap: string, target: string | undefined, foreign: boolean): string[] {
    if (foreign) throw new AgentBusError("MISUSE", "encrypt is not available for another tenant's capability: its providers are not in this tenant's registry");
    if (target) {
      if (this.isRevoked(target)) throw new AgentBusError("REVOKED", `${target} is revoked: nothing is encrypted for it`);
      return [target];
    }
    const online = this.registry.providers(cap).filter((id) => !this.isRevoked(id));
    return online.length > 0 ? online : this.#encryptionRecipients(cap);
  }

  /**
   * Every registered provider of `cap`, online or not, except revoked ones:
   * the recipients of encrypted durable work. `NO_RESPONDERS` when there is
   * none, rather than encrypting for nobody.
   */
  #encryptionRecipients(cap: string): string[] {
    const ids = this.registry.registered(cap).filter((id) => !this.isRevoked(id));
    if (ids.length === 0) throw new AgentBusError("NO_RESPONDERS", `no registered provider of ${cap} to encrypt for`);
    return ids;
  }

  async #requestOrSign(cap: string, subject: string, body: Uint8Array, meta: EnvelopeMeta, recipients: string[], o: CallOptions, encryptFor?: string[]): Promise<Message> {
    try {
      return await this.#request(subject, body, meta, recipients, o, encryptFor);
    } catch (err) {
      // An agent we did not know of (a new replica) cannot check our MACs: sign instead.
      if (isAgentBusError(err, "UNSIGNED") && recipients.length > 0) return this.#request(subject, body, meta, [], o, encryptFor);
      // Nor open what we encrypted: encrypt again for the providers known now (the registry has likely caught up).
      if (encryptFor && isAgentBusError(err, "NOT_RECIPIENT") && !o.target) {
        return this.#request(subject, body, meta, this.registry.providers(cap), o, this.#callRecipients(cap, undefined, false));
      }
      throw err;
    }
  }

  async #request(subject: string, plain: Uint8Array, meta: EnvelopeMeta, recipients: string[], o: CallOptions, encryptFor?: string[]): Promise<Message> {
    let headers;
    let body = plain;
    if (encryptFor) ({ headers, body } = this.envelopes.sealEncrypted(subject, plain, encryptFor, meta, recipients));
    else headers = this.envelopes.seal(subject, body, meta, recipients);
    const pending = this.nc.request(subject, body, { timeout: o.timeout ?? 30_000, headers });
    let reply;
    try {
      reply = await (o.signal ? abortable(pending, o.signal) : pending);
    } catch (err) {
      throw requestError(err, subject);
    }
    return parseMessage(this.envelopes.openReply(reply, headers.get(Header.id), o.target).data);
  }

  /**
   * Runs an agent on this connection: registers its card, serves its
   * capabilities, heartbeats. `handlers` has one entry per skill id. One
   * agent per connection; `options.replaces` swaps a running one for a new
   * spec without a gap.
   */
  async agent(spec: AgentSpec, handlers: Record<string, Handler>, options?: AgentOptions): Promise<Agent> {
    // The registry, the agent's subjects and its inbox are keyed by identity:
    // a second agent on the same connection would overwrite the first.
    if ([...this.#agents].some((a) => a !== options?.replaces)) {
      throw new AgentBusError("MISUSE", "this connection already runs an agent; connect again with another identity for another agent (give it all its skills, or stop the first)");
    }
    const agent = await Agent.start(this.#host(), spec, handlers, options);
    this.#agents.add(agent);
    // Make before break: the replaced agent stops only once the new one serves.
    await options?.replaces?.stop(this.#options.drainTimeoutMs ?? 10_000);
    return agent;
  }

  /**
   * Durable task: writes the SUBMITTED snapshot, enqueues the message on
   * `<root>.<t>.work.<cap>` and returns at once. Resubmitting a task id does
   * not enqueue it twice; a message for a task in INPUT_REQUIRED resumes it.
   */
  async submit(cap: string, input: Input, options: SubmitOptions = {}): Promise<TaskHandle> {
    // A PRODUCER span only when an OpenTelemetry SDK is registered; the work item carries its context.
    const tracer = activeTracer();
    const span = tracer && busSpan(tracer, "submit", cap, this.subjects.work(cap), this.subjects.tenant, options.trace, undefined, options.taskId);
    const traced = { ...options, trace: traceOf(span, options.trace) };
    if (!span) return submit(await this.#submitter(), cap, input, traced, this.id);
    try {
      const handle = await submit(await this.#submitter(), cap, input, traced, this.id);
      span.setAttribute(SpanAttr.task, handle.id);
      endSpan(span);
      return handle;
    } catch (err) {
      endSpan(span, err);
      throw err;
    }
  }

  /**
   * Durable direct message to one agent (`<root>.<t>.inbox.<agent>`): kept
   * until the agent takes it, delivered in order even after it was offline.
   * With `encrypt`, the stream stores it encrypted for that agent only.
   */
  async send(to: string, input: Input, options: SendOptions = {}): Promise<SendReceipt> {
    if (options.encrypt && this.isRevoked(to)) throw new AgentBusError("REVOKED", `${to} is revoked: nothing is encrypted for it`);
    // A PRODUCER span when an SDK is registered; the message carries its trace (else a new hop of the given one).
    const op = traced("send inbox", SpanKind.PRODUCER, options.trace, { [SpanAttr.messagingSystem]: "nats", [SpanAttr.target]: to, [SpanAttr.tenant]: this.subjects.tenant });
    return op.run(async () => sendDirect(await this.#durableOnce(), to, input, { context: options.context, task: options.task, trace: op.trace }, options.encrypt ?? false));
  }

  /**
   * The snapshot of a task: `TASK_NOT_FOUND` when unknown, and when this
   * identity is neither its submitter (with `caller`: through that caller),
   * nor the agent serving it, nor granted `task.<cap>` in the ACL.
   */
  async task(id: string, options: TaskAccessOptions = {}): Promise<Task> {
    return (await this.taskHandle(id, options)).get();
  }

  /**
   * Ensures the tenant's task streams and buckets exist (created on first
   * use otherwise): a gateway calls it at start so readiness means ready.
   */
  async ensureTasks(): Promise<void> {
    await this.#durableOnce();
  }

  /**
   * Creates every stream and bucket of the tenant (the core ones, the task
   * streams and buckets, sessions, push configs). Under server permissions
   * only an admin may create them: a tenant's set-up does this once, so
   * agents, callers and bridges find them.
   */
  async provision(): Promise<void> {
    await Promise.all([
      this.ensureTasks(),
      this.session("provision").then(() => undefined),
      ensurePushBucket(new Kvm(this.nc), this.subjects, { replicas: this.#options.replicas }),
    ]);
  }

  /**
   * A handle on an existing task, to follow its events, await or cancel it:
   * each of those is `TASK_NOT_FOUND` for a task this identity (with
   * `caller`: that caller) may not see, as for {@link Bus.task}.
   */
  async taskHandle(id: string, options: TaskAccessOptions = {}): Promise<TaskHandle> {
    return new TaskHandle(id, await this.#submitter(), { caller: options.caller });
  }

  /**
   * The task snapshots this identity may see, newest first, filtered by
   * context and state, paged: its own (with `query.caller`: only that
   * caller's), read through the owner index; for an identity that serves
   * an agent or holds a `task.<cap>` grant, also the tasks that allows.
   */
  async tasks(query: TaskQuery = {}): Promise<TaskPage> {
    return listTasks(await this.#submitter(), query);
  }

  /** Shared state of an A2A context (`mesh_<t>_sessions`), compare-and-set updates. */
  async session<T extends Record<string, unknown> = Record<string, unknown>>(contextId: string): Promise<Session<T>> {
    this.#sessions ??= Sessions.open(new Kvm(this.nc), this.subjects, { replicas: this.#options.replicas, history: this.#options.sessionHistory });
    return (await this.#sessions).session<T>(contextId);
  }

  /**
   * Runs an unchanged `@a2a-js/sdk` `AgentExecutor` as a bus agent: every
   * skill of `spec` is served by it, as fast calls and durable tasks. The
   * A2A adapter is loaded on the first call, not with the library.
   *
   * @deprecated Use `serveExecutor(bus, executor, spec, options)` from
   * `agentbus/adapters/a2a`; this method will be removed in a later release.
   */
  async serve(executor: AgentExecutor, spec: AgentSpec, options?: AgentOptions): Promise<Agent> {
    const { serveExecutor } = await import("../adapters/a2a/executor.js");
    return serveExecutor(this, executor, spec, options);
  }

  /** Agents matching the query, from the local cache (no round trip). */
  discover(query: DiscoverQuery = {}): AgentInfo[] {
    return this.registry.discover(query);
  }

  /** Subscribes to agents coming, going and changing; returns the unsubscribe function. */
  onAgent(listener: (event: AgentEvent) => void): () => void {
    return this.registry.on(listener);
  }

  /**
   * Whether the sender of a verified envelope may invoke `cap` on this
   * identity: depth limit, known sender, ACL grant (the last two skipped with
   * `insecureAllowAll`). Throws `DEPTH_EXCEEDED`, `UNKNOWN_SENDER` or `DENIED`.
   */
  authorize(env: Envelope, cap: string): void {
    checkDepth(env.depth, this.#maxDepth, "call");
    if (this.#options.insecureAllowAll) return;
    if (!this.registry.isRegistered(env.from) && !this.acl.names(env.from)) {
      throw new AgentBusError("UNKNOWN_SENDER", `sender ${env.from} is neither registered nor named in the ACL`);
    }
    if (!this.acl.allows(env.from, this.id, cap)) throw new AgentBusError("DENIED", `${env.from} may not invoke ${cap} on ${this.id}`);
  }

  /**
   * Takes up to `max` pending direct messages sent to this identity (oldest
   * first; waits up to `waitMs` for the first), for a client that polls
   * rather than runs an agent with an `inbox` handler. Refused senders are
   * dropped and logged.
   */
  async receive(options: { max?: number; waitMs?: number } = {}): Promise<InboxMessage[]> {
    return receiveDirect(await this.#durableOnce(), this.id, (env) => this.authorize(env, INBOX_CAPABILITY), this.log, options, (kind, record) => this.audit(kind, record));
  }

  /**
   * Revokes an identity tenant-wide: every receiver refuses it from now on.
   * Signed by this bus's identity, which must be a tenant admin (else
   * `DENIED`). Resolves with the entry's revision once in force here (other
   * receivers: `bus.revocationApplied(revision)`).
   */
  async revoke(id: string, reason = "revoked"): Promise<number> {
    const revision = await this.#revoked.revoke(id, reason);
    this.audit("revoked", { revoked: id, reason });
    return revision;
  }

  /**
   * Lifts a revocation with a signed lift (never a delete: a revocation
   * deleted or purged without one stays in force). Admins only (`DENIED`).
   */
  async unrevoke(id: string): Promise<number> {
    const revision = await this.#revoked.lift(id);
    this.audit("unrevoked", { revoked: id });
    return revision;
  }

  /**
   * Subscribes to identities becoming revoked in this tenant (a signed
   * revocation, or a revocation record tampered with: fail closed) as the
   * list changes; returns the unsubscribe function. The authority uses it
   * to close a revoked identity's connections.
   */
  onRevoked(listener: (id: string, revocation: Revocation) => void): () => void {
    this.#revokedListeners.add(listener);
    return () => void this.#revokedListeners.delete(listener);
  }

  #onRevoked(id: string, r: Revocation): void {
    for (const l of this.#revokedListeners) {
      try {
        l(id, r);
      } catch (err) {
        this.log.warn({ err: String(err), id }, "an onRevoked listener failed");
      }
    }
  }

  /** True when `id` is refused: revoked, or rotated to a new key (local cache). */
  isRevoked(id: string): boolean {
    return this.#revoked.has(id) || this.acl.isRotated(id);
  }

  /** Why `id` is refused (`reason` "rotated" for a key rotated away), if it is. */
  revocation(id: string): Revocation | undefined {
    return this.#revoked.get(id) ?? (this.acl.isRotated(id) ? { reason: "rotated", at: 0 } : undefined);
  }

  /** Resolves once this bus applies the revocation list up to `revision` (from `revoke`/`unrevoke` elsewhere); false after `timeoutMs`. */
  revocationApplied(revision: number, timeoutMs = 5000): Promise<boolean> {
    return this.#revoked.applied(revision, timeoutMs);
  }

  /**
   * This identity's half of a key rotation: a proof, signed by this bus's
   * key and by `next`, that `next` takes over. A tenant admin applies it
   * with {@link Bus.rotateIdentity}; then connect again as `next` and start
   * the agent again (it registers under the new id).
   */
  proveRotation(next: Identity): RotationProof {
    return proveRotation(this.identity, next, this.subjects.tenant);
  }

  /**
   * Applies a key rotation as a tenant admin (`DENIED` otherwise): stores
   * the signed `rotation.<from>` record, so `to` keeps `from`'s grants and
   * group memberships and every receiver refuses `from` (`REVOKED`, reason
   * "rotated"); removes `from`'s registration. Resolves with the record's
   * revision once in force here (elsewhere: `bus.acl.applied(revision)`).
   */
  async rotateIdentity(proof: RotationProof): Promise<number> {
    const revision = await this.acl.rotate(proof);
    this.audit("rotated", { from: proof.from, to: proof.to });
    await this.buckets.agents.delete(proof.from).catch((err: Error) => this.log.warn({ err: err.message, from: proof.from }, "could not remove the rotated identity's registration"));
    return revision;
  }

  /**
   * Writes a signed audit record to `<root>.<t>.audit.<kind>` (kept by the
   * bounded audit stream). Refusals (records with a `code`) are rate-limited
   * per (kind, sender): see {@link ConnectOptions.auditRate}.
   */
  audit(kind: string, record: Record<string, unknown>): void {
    this.#auditor.write(kind, record);
  }

  /**
   * Drains: stops every agent (in-flight handlers finish within the drain
   * timeout), stops the caches, then drains the NATS connection.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const timeout = this.#options.drainTimeoutMs ?? 10_000;
      await Promise.all([...this.#agents].map((a) => a.stop(timeout)));
      this.registry.stop();
      this.acl.stop();
      this.#revoked.stop();
      this.#auditor.flush();
      if (this.#ownsConnection) await this.nc.drain().catch(() => {});
      else {
        // The caller's connection stays: stop what this bus listens to on it, and send what it queued.
        this.#status?.stop?.();
        await this.nc.flush().catch(() => {});
      }
      this.log.info("closed");
    })();
    return this.#closing;
  }

  #durableOnce(): Promise<Durable> {
    this.#durable ??= Durable.open(this.nc, this.subjects, this.envelopes, {
      replicas: this.#options.replicas,
      eventsMaxAgeMs: this.#options.eventsMaxAgeMs ?? 7 * 24 * 3600_000,
      duplicateWindowMs: this.#options.duplicateWindowMs ?? 10 * 60_000,
      windowMs: this.envelopes.windowMs,
      maxTaskBytes: this.#options.maxTaskBytes,
      inlineBytes: this.#options.inlineBytes,
      republish: this.server.republish,
    }, {
      writers: (task, writer) => this.#mayWrite(task, writer),
      onForged: (taskId, from, reason) => this.audit("forged_snapshot", { code: "BAD_SIGNATURE", task: taskId, from, reason }),
    });
    // A failed set-up (server unreachable, config mismatch) is retried on next use.
    this.#durable.catch(() => (this.#durable = undefined));
    return this.#durable;
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

  async #submitter(): Promise<Submitter> {
    return {
      nc: this.nc,
      durable: await this.#durableOnce(),
      providers: (cap: string) => this.registry.providers(cap),
      recipients: (cap: string) => this.#encryptionRecipients(cap),
      maxDepth: this.#maxDepth,
      id: this.id,
      granted: (cap, agent) => this.acl.allows(this.id, agent ?? "*", taskRight(cap)),
      observes: () => this.registry.isRegistered(this.id) || holdsTaskRights(this.acl.policy(), this.id),
    };
  }

  #host(): AgentHost {
    return {
      nc: this.nc,
      subjects: this.subjects,
      envelopes: this.envelopes,
      registry: this.registry,
      acl: this.acl,
      log: this.log,
      buckets: this.buckets,
      presenceMaxAgeMs: this.#options.presenceMaxAgeMs ?? 15_000,
      maxDepth: this.#maxDepth,
      insecureAllowAll: this.#options.insecureAllowAll ?? false,
      call: (cap, input, options) => this.call(cap, input, options),
      submit: (cap, input, options) => this.submit(cap, input, options),
      session: (contextId) => this.session(contextId),
      durable: () => this.#durableOnce(),
      authorize: (env, cap) => this.authorize(env, cap),
      recipients: (cap) => this.registry.registered(cap).filter((id) => !this.isRevoked(id)),
      stopped: (agent) => this.#agents.delete(agent),
      audit: (kind, record) => this.audit(kind, record),
    };
  }

  async #watchStatus(): Promise<void> {
    this.#status = this.nc.status();
    for await (const s of this.#status) {
      if (s.type === "disconnect" || s.type === "reconnecting") this.log.warn({ status: s.type }, "NATS connection lost, reconnecting");
      else if (s.type === "reconnect") this.log.info({ status: s.type }, "NATS reconnected");
      else if (s.type === "error") this.log.error({ status: s.type, err: String(s.error) }, "NATS error");
    }
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new AgentBusError("CANCELLED", "call aborted", { cause: signal.reason }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AgentBusError("CANCELLED", "call aborted", { cause: signal.reason }));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function requestError(err: unknown, subject: string): unknown {
  if (err instanceof AgentBusError) return err;
  if (err instanceof natsErrors.RequestError && err.isNoResponders()) {
    return new AgentBusError("NO_RESPONDERS", `no agent serves ${subject}`, { cause: err });
  }
  if (err instanceof natsErrors.NoRespondersError) return new AgentBusError("NO_RESPONDERS", `no agent serves ${subject}`, { cause: err });
  if (err instanceof natsErrors.TimeoutError) return new AgentBusError("TIMEOUT", `no reply on ${subject} in time`, { cause: err });
  if (err instanceof natsErrors.ClosedConnectionError || err instanceof natsErrors.DrainingConnectionError) {
    return new AgentBusError("CLOSED", "the bus connection is closed", { cause: err });
  }
  return new AgentBusError("UNAVAILABLE", `request on ${subject} failed: ${(err as Error).message}`, { cause: err });
}
