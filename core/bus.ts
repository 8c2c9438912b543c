import "./infra/natsfix.js"; // before any request: see the file
import { connect as natsConnect } from "@nats-io/transport-node";
import {
  errors as natsErrors,
  nkeyAuthenticator,
  credsAuthenticator,
  type ConnectionOptions,
  type NatsConnection,
} from "@nats-io/nats-core";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { readFileSync } from "node:fs";
import type { AgentExecutor } from "@a2a-js/sdk/server";
import { Agent, type AgentOptions, type AgentSpec } from "./agent/agent.js";
import type { Handler } from "./agent/context.js";
import { call } from "./client/call.js";
import { Schedules } from "./client/schedules.js";
import { DeadLetters } from "./client/dead-letters.js";
import { readWorkload, type Workload, type WorkloadOptions } from "./store/workload.js";
import { readTopology, type Topology } from "./store/topology.js";
import { Forwarder } from "./client/outbox.js";
import { INBOX_CAPABILITY, receiveDirect, sendDirect, type InboxMessage, type SendReceipt } from "./client/inbox.js";
import { TaskHandle, listTasks, submit, submitTask, submitterOf, type SubmitOptions, type TaskAccessOptions } from "./client/task-handle.js";
import { ensureLimitsBucket, ensurePushBucket, ensureCoreInfra, ensureRegionalRegistry, ensureReplayBucket, joinHubRegistry, type CoreBuckets } from "./infra/jetstream.js";
import { federationOf, hubOf, resolveOptions, type AttachOptions, type BusObserver, type CallOptions, type ConnectOptions, type NatsAuth, type SendOptions } from "./options.js";
import { Runtime } from "./runtime.js";
import { Envelopes, type Envelope } from "./security/envelope.js";
import { Identity } from "./security/identity.js";
import { inboxPrefixOf } from "./security/permissions.js";
import { SharedReplay } from "./security/replay.js";
import { AclStore } from "./store/aclstore.js";
import { AUDIT_DEFAULTS, Auditor } from "./store/audit.js";
import type { BadPolicy } from "./store/policy.js";
import { Registry, type AgentEvent, type AgentInfo, type DiscoverQuery } from "./store/registry.js";
import { Revocations, type Revocation } from "./store/revocations.js";
import { proveRotation, type RotationProof } from "./store/rotation.js";
import type { Session } from "./store/session.js";
import type { TaskPage, TaskQuery } from "./store/task-snapshots.js";
import { AgentBusError } from "./wire/errors.js";
import { featuresOf, type ServerFeatures } from "./wire/features.js";
import { createLogger, type Logger } from "./wire/log.js";
import type { Input } from "./wire/message.js";
import type { Message } from "./wire/protocol.js";
import { Subjects } from "./wire/subjects.js";
import type { Task } from "./wire/task.js";
import { SpanAttr, SpanKind, traced } from "./wire/trace.js";

export type { AttachOptions, BusObserver, CallOptions, ConnectOptions, NatsAuth, SendOptions };

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
  // A federated bus keeps its tasks in its region's plane; a bad region or regions are refused before connecting.
  const subjects = new Subjects(options.root, options.tenant, federationOf(options)?.region);
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

/**
 * A bus on a NATS connection the caller made and keeps owning: the same as
 * {@link connect} without connecting. `close()` stops the bus (its agents,
 * caches and watches) and leaves the connection open for the caller to
 * close. Under server permissions the connection must be authenticated as
 * `options.identity` with `inboxPrefix` `_INBOX.<id>`, as `connect` makes it.
 */
export async function attach(nc: NatsConnection, options: AttachOptions = {}): Promise<Bus> {
  const identity = resolveIdentity(options);
  const subjects = new Subjects(options.root, options.tenant, federationOf(options)?.region);
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
  /**
   * Recurring tasks of this identity: create, list, pause, resume and
   * delete schedules (cron with a time zone, or an interval) whose runs are
   * ordinary tasks. nats-server 2.14+; `SERVER_TOO_OLD` before.
   */
  readonly schedules: Schedules;
  /**
   * The tenant's dead letters (work items that failed for good, and direct
   * messages an inbox handler could not take): list them, submit one again
   * as a new task (`metadata.retryOf` = the dead task), remove one. Under
   * the role permissions bridges and admins may; others get `DENIED`. On a
   * federated bus, this region's unless a call names another.
   */
  readonly deadLetters: DeadLetters;
  /** What this bus shares with its agents, workers and task handles. */
  readonly #rt: Runtime;
  readonly #revokedListeners = new Set<(id: string, revocation: Revocation) => void>();
  readonly #agents = new Set<Agent>();
  #closing?: Promise<void>;
  /** At an edge site: forwards this identity's stored tasks to the hub. */
  #forwarder?: Forwarder;
  #ownsConnection = true;
  /** Disconnected and not (yet) reconnected. */
  #away = false;
  /** The connection's status feed this bus reads (nats.js hands out a stoppable iterator). */
  #status?: ReturnType<NatsConnection["status"]> & { stop?: () => void };

  private constructor(init: {
    nc: NatsConnection; identity: Identity; subjects: Subjects; log: Logger; options: ConnectOptions; presenceMaxAgeMs: number;
    buckets: CoreBuckets; registry: Registry; acl: AclStore; revoked: Revocations;
  }) {
    this.nc = init.nc;
    this.identity = init.identity;
    this.subjects = init.subjects;
    this.log = init.log;
    this.buckets = init.buckets;
    this.registry = init.registry;
    this.acl = init.acl;
    this.server = featuresOf(init.nc.info?.version ?? "0.0.0");
    this.envelopes = new Envelopes(init.identity, {
      windowMs: init.options.windowMs,
      maxPayload: init.options.maxPayload,
      isRevoked: (id) => this.isRevoked(id),
      sharedReplay: new SharedReplay(init.buckets.replay),
    });
    this.#rt = new Runtime({
      nc: init.nc,
      identity: init.identity,
      subjects: init.subjects,
      log: init.log,
      options: resolveOptions(init.options, init.presenceMaxAgeMs),
      server: this.server,
      envelopes: this.envelopes,
      buckets: init.buckets,
      registry: init.registry,
      acl: init.acl,
      revocations: init.revoked,
      auditor: new Auditor(init.nc, init.subjects, this.envelopes, init.log, init.options.auditRate),
    });
    this.schedules = new Schedules(this.#rt);
    this.deadLetters = new DeadLetters(this.#rt);
  }

  /** @internal used by {@link connect}. */
  static async open(nc: NatsConnection, identity: Identity, subjects: Subjects, log: Logger, given: ConnectOptions, ownsConnection = true): Promise<Bus> {
    const federation = federationOf(given);
    // At an edge site, a connection that names no region is in the edge's own (its JetStream domain): the hub's regions see its agents there.
    const options = hubOf(given) && given.region === undefined && !process.env.AGENTBUS_REGION ? { ...given, region: await edgeDomain(nc) } : given;
    // Views source every region's buckets with a subject transform (nats-server 2.10+).
    if (federation && !featuresOf(nc.info?.version ?? "0.0.0").republish) {
      throw new AgentBusError("SERVER_TOO_OLD", `a registry per region needs nats-server 2.10 or later (stream sources with subject transforms); this server is ${nc.info?.version}`);
    }
    const buckets = await ensureCoreInfra(await jetstreamManager(nc), new Kvm(nc), subjects, {
      federation,
      hub: hubOf(options)?.domain,
      replicas: options.replicas,
      presenceMaxAgeMs: options.presenceMaxAgeMs,
      auditMaxAgeMs: options.auditMaxAgeMs ?? AUDIT_DEFAULTS.maxAgeMs,
      auditMaxBytes: options.auditMaxBytes ?? AUDIT_DEFAULTS.maxBytes,
      auditMaxMsgs: options.auditMaxMsgs ?? AUDIT_DEFAULTS.maxMsgs,
      windowMs: options.windowMs ?? 60_000,
    });
    // The bucket's own max age rules (it may predate this connection's options).
    // Read from the region's views when the registry is kept per region.
    const readAgents = buckets.agentsView ?? buckets.agents;
    const readPresence = buckets.presenceView ?? buckets.presence;
    const [presenceStatus, agentsStatus] = await Promise.all([readPresence.status(), readAgents.status()]);
    const presenceMaxAgeMs = presenceStatus.ttl;
    // Buses of this process on the same buckets (the same streams: same names, made at the same instant) share one registry view.
    const registryKey = `${agentsStatus.bucket}@${agentsStatus.streamInfo.created}|${presenceStatus.streamInfo.created}`;
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
      Registry.open({ agents: readAgents, presence: readPresence, closed: nc.closed(), status: () => nc.status() }, presenceMaxAgeMs, {
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
    const bus = new Bus({ nc, identity, subjects, log, options, presenceMaxAgeMs, buckets, registry, acl, revoked });
    bus.#ownsConnection = ownsConnection;
    audit = (record) => bus.audit("bad_policy", record);
    revokedListener = (id, r) => bus.#onRevoked(id, r);
    for (const record of unaudited.splice(0)) audit(record);
    if (options.insecureAllowAll) {
      log.warn("INSECURE: ACL DISABLED (insecureAllowAll). Any signed sender may invoke any capability of agents on this connection. Never use this outside local development.");
    }
    void bus.#watchStatus();
    // At an edge site: this identity's stored tasks go to the hub whenever it answers.
    if (bus.#rt.options.hub) {
      const rt = bus.#rt;
      bus.#forwarder = await Forwarder.start(rt, (hub, cap, message, o) => submit({ rt, durable: hub }, cap, message, o as SubmitOptions, rt.id));
    }
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
  get id(): string {
    return this.identity.id;
  }

  /** The region this connection runs in (`ConnectOptions.region`), when it has one. */
  get region(): string | undefined {
    return this.#rt.options.region;
  }

  /**
   * Most bytes of content one durable task may hold on this connection
   * (`ConnectOptions.maxTaskBytes`, default 128 MiB): bridges size their
   * request limits by it.
   */
  get maxTaskBytes(): number {
    return this.#rt.options.maxTaskBytes;
  }

  /**
   * Fast call: request/reply to one running instance of a provider of `cap`
   * (or of `target`), else to any replica serving it. Resolves to the reply
   * message; refusals and handler failures reject with an
   * {@link AgentBusError} carrying the remote code.
   */
  call(cap: string, input: Input, options: CallOptions = {}): Promise<Message> {
    return call(this.#rt, cap, input, options);
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
    const agent = await Agent.start(this.#rt, spec, handlers, options, (stopped) => this.#agents.delete(stopped));
    this.#agents.add(agent);
    // Make before break: the replaced agent stops only once the new one serves.
    await options?.replaces?.stop(this.#rt.options.drainTimeoutMs);
    return agent;
  }

  /**
   * Durable task: writes the SUBMITTED snapshot, enqueues the message on
   * `<root>.<t>.work.<cap>` and returns at once. Resubmitting a task id does
   * not enqueue it twice; a message for a task in INPUT_REQUIRED resumes it.
   */
  submit(cap: string, input: Input, options: SubmitOptions = {}): Promise<TaskHandle> {
    return submitTask(this.#rt, cap, input, options);
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
    return op.run(async () => sendDirect(await this.#rt.tasks(), to, input, { context: options.context, task: options.task, trace: op.trace }, options.encrypt ?? false));
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
    await this.#rt.tasks();
  }

  /**
   * Creates every stream and bucket of the tenant (the core ones, the task
   * streams and buckets, sessions, push configs, capability limits, and on nats-server 2.14+
   * the schedules; on a federated bus, every region's task plane and
   * registry). Under server permissions
   * only an admin may create them: a tenant's set-up does this once, so
   * agents, callers and bridges find them.
   */
  async provision(): Promise<void> {
    const o = this.#rt.options;
    const regions = o.regions;
    await Promise.all([
      this.ensureTasks(),
      // Federated: every region's task plane and registry (origin and view), each placed in its region's cluster.
      ...(regions === undefined ? [] : regions).flatMap((region) => [
        this.#rt.tasks(region).then(() => undefined),
        ensureReplayBucket(new Kvm(this.nc), this.subjects.inRegion(region), o.replicas, this.envelopes.windowMs).then(() => undefined),
        ensureRegionalRegistry(new Kvm(this.nc), this.subjects, { region, regions: regions! }, { replicas: o.replicas ?? 1, history: 1 }, o.presenceMaxAgeMs).then(() => undefined),
      ]),
      this.session("provision").then(() => undefined),
      ensurePushBucket(new Kvm(this.nc), this.subjects, { replicas: this.#rt.options.replicas }),
      // At an edge site: the hub's regions source its registry.
      ...(o.hub ? [edgeDomain(this.nc).then(async (edge) => {
        const domain = { domain: o.hub!.domain };
        await joinHubRegistry(await jetstreamManager(this.nc, domain), new Kvm(jetstream(this.nc, domain)), this.subjects, o.hub!.region, edge);
      })] : []),
      ensureLimitsBucket(new Kvm(this.nc), this.subjects, { replicas: this.#rt.options.replicas }),
      ...(this.server.cron ? [this.#rt.schedules().then(() => undefined)] : []),
    ]);
  }

  /**
   * The tenant's queued work: per capability, work items waiting by
   * priority and held by workers, and how many delayed tasks wait for their
   * time, read from the work stream and its consumers; with
   * `options.workers`, also the workers pulling each capability's work
   * (see `CapabilityWork.workers`).
   */
  async workload(options: WorkloadOptions = {}): Promise<Workload> {
    return readWorkload(await jetstreamManager(this.nc), this.subjects, options);
  }

  /**
   * The topology as this connection sees it: the regions of its bus with
   * the agents and instances live in each, and on a federated bus whether
   * this region hears from each other one (its registry view's sources).
   */
  async topology(): Promise<Topology> {
    const o = this.#rt.options;
    // No API check: the topology is read (from heartbeats) when JetStream has no meta leader too.
    return readTopology(await jetstreamManager(this.nc, { checkAPI: false }), {
      registry: this.registry,
      region: o.region,
      regions: o.regions,
      presenceView: o.regions && o.region !== undefined ? `KV_${this.subjects.bucket("presence")}_${o.region}_view` : undefined,
      presenceMaxAgeMs: o.presenceMaxAgeMs,
      ...(o.hub && {
        hub: {
          ...o.hub,
          reachable: () => this.nc.request(`$JS.${o.hub!.domain}.API.INFO`, "", { timeout: 1_000 }).then(() => true, () => false),
          waiting: async () => {
            const info = await (await jetstreamManager(this.nc, { checkAPI: false })).streams.info(this.subjects.stream("OUTBOX"), { subjects_filter: `${this.subjects.prefix}.outbox.${this.id}.*` });
            return Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0);
          },
        },
      }),
    });
  }

  /**
   * A handle on an existing task, to follow its events, await or cancel it:
   * each of those is `TASK_NOT_FOUND` for a task this identity (with
   * `caller`: that caller) may not see, as for {@link Bus.task}.
   */
  async taskHandle(id: string, options: TaskAccessOptions = {}): Promise<TaskHandle> {
    // Federated: the handle reads the plane of the region that holds the task.
    const { durable } = await this.#rt.locate(id);
    return new TaskHandle(id, { rt: this.#rt, durable }, { caller: options.caller });
  }

  /**
   * The names under which task `id` is stored: on a federated bus its
   * region's (found as {@link taskHandle} finds it; this region's when no
   * region has it), otherwise the tenant's ({@link subjects}).
   */
  async taskSubjects(id: string): Promise<Subjects> {
    return (await this.#rt.locate(id)).durable.subjects;
  }

  /**
   * The task snapshots this identity may see, newest first, filtered by
   * context and state, paged: its own (with `query.caller`: only that
   * caller's), read through the owner index; for an identity that serves
   * an agent or holds a `task.<cap>` grant, also the tasks that allows.
   */
  async tasks(query: TaskQuery = {}): Promise<TaskPage> {
    return listTasks(await submitterOf(this.#rt), query);
  }

  /** Shared state of an A2A context (`mesh_<t>_sessions`), compare-and-set updates. */
  session<T extends Record<string, unknown> = Record<string, unknown>>(contextId: string): Promise<Session<T>> {
    return this.#rt.session<T>(contextId);
  }

  /**
   * Runs an unchanged `@a2a-js/sdk` `AgentExecutor` as a bus agent: every
   * skill of `spec` is served by it, as fast calls and durable tasks. The
   * A2A adapter is loaded on the first call, not with the library.
   *
   * @deprecated Use `serveExecutor(bus, executor, spec, options)` from
   * `agentbus-nats/adapters/a2a`; this method will be removed in a later release.
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
    this.#rt.authorize(env, cap);
  }

  /**
   * Takes up to `max` pending direct messages sent to this identity (oldest
   * first; waits up to `waitMs` for the first), for a client that polls
   * rather than runs an agent with an `inbox` handler. Refused senders are
   * dropped and logged.
   */
  async receive(options: { max?: number; waitMs?: number } = {}): Promise<InboxMessage[]> {
    return receiveDirect(await this.#rt.tasks(), this.id, (env) => this.authorize(env, INBOX_CAPABILITY), this.log, options, (kind, record) => this.audit(kind, record));
  }

  /**
   * Revokes an identity tenant-wide: every receiver refuses it from now on.
   * Signed by this bus's identity, which must be a tenant admin (else
   * `DENIED`). Resolves with the entry's revision once in force here (other
   * receivers: `bus.revocationApplied(revision)`).
   */
  async revoke(id: string, reason = "revoked"): Promise<number> {
    const revision = await this.#rt.revocations.revoke(id, reason);
    this.audit("revoked", { revoked: id, reason });
    return revision;
  }

  /**
   * Lifts a revocation with a signed lift (never a delete: a revocation
   * deleted or purged without one stays in force). Admins only (`DENIED`).
   */
  async unrevoke(id: string): Promise<number> {
    const revision = await this.#rt.revocations.lift(id);
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
    return this.#rt.isRevoked(id);
  }

  /** Why `id` is refused (`reason` "rotated" for a key rotated away), if it is. */
  revocation(id: string): Revocation | undefined {
    return this.#rt.revocation(id);
  }

  /** Resolves once this bus applies the revocation list up to `revision` (from `revoke`/`unrevoke` elsewhere); false after `timeoutMs`. */
  revocationApplied(revision: number, timeoutMs = 5000): Promise<boolean> {
    return this.#rt.revocations.applied(revision, timeoutMs);
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
    this.#rt.audit(kind, record);
  }

  /**
   * Drains: stops every agent (in-flight handlers finish within the drain
   * timeout), stops the caches, then drains the NATS connection (closes it
   * when it is away from every server, or does not drain within the drain
   * timeout).
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const timeout = this.#rt.options.drainTimeoutMs;
      await Promise.all([...this.#agents].map((a) => a.stop(timeout)));
      await this.#forwarder?.stop();
      this.registry.stop();
      this.acl.stop();
      this.#rt.revocations.stop();
      this.#rt.auditor.flush();
      if (this.#ownsConnection) await this.#drain(timeout);
      else {
        // The caller's connection stays: stop what this bus listens to on it, and send what it queued.
        this.#status?.stop?.();
        await this.nc.flush().catch(() => {});
      }
      this.log.info("closed");
    })();
    return this.#closing;
  }

  /**
   * Drains the connection, or closes it when it cannot drain: while it is
   * away from every server (refused after a revocation, servers down), or
   * when draining outlasts `timeoutMs`.
   */
  async #drain(timeoutMs: number): Promise<void> {
    if (this.#away) return this.nc.close().catch(() => {});
    let timer: NodeJS.Timeout | undefined;
    const drained = await Promise.race([
      this.nc.drain().then(() => true, () => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!drained) await this.nc.close().catch(() => {});
  }

  async #watchStatus(): Promise<void> {
    this.#status = this.nc.status();
    for await (const s of this.#status) {
      if (s.type === "disconnect" || s.type === "reconnecting") this.#away = true;
      else if (s.type === "reconnect") this.#away = false;
      if (s.type === "disconnect" || s.type === "reconnecting") this.log.warn({ status: s.type }, "NATS connection lost, reconnecting");
      else if (s.type === "reconnect") this.log.info({ status: s.type }, "NATS reconnected");
      else if (s.type === "error") this.log.error({ status: s.type, err: String(s.error) }, "NATS error");
    }
  }
}

/** The JetStream domain of the server `nc` is connected to (an edge site's own); `MISUSE` when it has none. */
async function edgeDomain(nc: NatsConnection): Promise<string> {
  const { domain } = await (await jetstreamManager(nc)).getAccountInfo();
  if (!domain) throw new AgentBusError("MISUSE", "a connection at an edge site (hub) needs a server with its own JetStream domain (jetstream { domain: <edge> })");
  return domain;
}
