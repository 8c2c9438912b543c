import { Svcm, type Service, type ServiceMsg } from "@nats-io/services";
import { randomUUID } from "node:crypto";
import { call } from "../client/call.js";
import { INBOX_CAPABILITY, InboxReader, type InboxHandler } from "../client/inbox.js";
import { submitTask } from "../client/task-handle.js";
import type { CapabilityLimiter, CapabilityLimits } from "../store/limits.js";
import { FlowWatcher } from "./flows.js";
import type { Runtime } from "../runtime.js";
import type { Envelope } from "../security/envelope.js";
import { signRecord, type CapabilitySchemas, type PresenceBeat } from "../store/registry.js";
import { AgentBusError, isAgentBusError } from "../wire/errors.js";
import type { Logger } from "../wire/log.js";
import { parseMessage, structuredInput, toMessage } from "../wire/message.js";
import { natsInterface, type AgentCard, type Message, type Part } from "../wire/protocol.js";
import { signCard } from "../security/cardsig.js";
import { validatorFor, type JsonSchema } from "../wire/schema.js";
import { checkCapability } from "../wire/subjects.js";
import type { Task, TaskState } from "../wire/task.js";
import { traceIdOf } from "../wire/trace.js";
import { reply } from "./reply.js";
import { completeWith, runHandler, type ContextBase, type ContextSink, type Handler } from "./context.js";
import { TaskWorker, type WorkerOptions } from "./worker.js";

/** One capability an agent offers: an A2A skill, plus optional JSON Schemas. */
export interface SkillSpec {
  /** Capability id: `[a-z0-9_-]+` tokens joined by dots. */
  id: string;
  name?: string;
  description?: string;
  tags?: string[];
  examples?: string[];
  inputModes?: string[];
  outputModes?: string[];
  /** Validated (ajv) before the handler runs; also the MCP tool input schema. */
  inputSchema?: JsonSchema;
  outputSchema?: JsonSchema;
}

/** What an agent says about itself; becomes its A2A agent card. */
export interface AgentSpec {
  name: string;
  description?: string;
  version?: string;
  skills: SkillSpec[];
  provider?: AgentCard["provider"];
  documentationUrl?: string;
}

/** Options of `bus.agent()`. */
export type { Handler } from "./worker.js";

export interface AgentOptions {
  /** Serve durable tasks too (a pull consumer per capability); default true. */
  tasks?: boolean | WorkerOptions;
  /** Receive direct messages sent to this agent (`bus.send`), in order, including those buffered while it was offline. */
  inbox?: InboxHandler;
  /**
   * A running agent of the same connection that the new one takes over
   * from: the new agent registers and serves first, then `replaces` is
   * stopped (its in-flight handlers drain), so callers never find the
   * capabilities missing. For agents whose skills change while they run
   * (the MCP gateway, when a server's tool list changes).
   */
  replaces?: Agent;
  /**
   * Limits per capability (keyed by skill id), held across every replica of
   * this agent by the bus (`mesh_<t>_limits`), for durable tasks and fast
   * calls alike: `maxInFlight` runs at once, `rate` starts per window. A
   * task waits for its turn (its deadline still applies); a fast call waits
   * up to 30 s, then is answered `UNAVAILABLE`. Every replica should be
   * given the same limits.
   */
  limits?: Record<string, CapabilityLimits>;
}

const enc = new TextEncoder();
/** How long a fast call waits for a turn under its capability's limits. */
const CALL_LIMIT_WAIT_MS = 30_000;
const SERVICE_NAME = /[^A-Za-z0-9_-]/g;

/** Builds the A2A card for a spec, without interfaces (the agent adds its A2A over NATS one; bridges add HTTP interfaces). */
export function cardOf(spec: AgentSpec): AgentCard {
  return {
    name: spec.name,
    description: spec.description ?? spec.name,
    version: spec.version ?? "1.0.0",
    supportedInterfaces: [],
    capabilities: { streaming: true, pushNotifications: false },
    defaultInputModes: ["text/plain", "application/json"],
    defaultOutputModes: ["text/plain", "application/json"],
    skills: spec.skills.map((s) => ({
      id: s.id,
      name: s.name ?? s.id,
      description: s.description ?? s.name ?? s.id,
      tags: s.tags ?? [],
      ...(s.examples && { examples: s.examples }),
      ...(s.inputModes && { inputModes: s.inputModes }),
      ...(s.outputModes && { outputModes: s.outputModes }),
    })),
    ...(spec.provider && { provider: spec.provider }),
    ...(spec.documentationUrl && { documentationUrl: spec.documentationUrl }),
  };
}

/**
 * A running agent: serves each capability on `<root>.<t>.cap.<cap>` (queue
 * group per capability, so replicas share load) and on its own
 * `<root>.<t>.agent.<id>.call`, registered as a NATS micro service so
 * `nats micro ls/info/stats` show it. Every request is verified, checked
 * against the ACL and validated before its handler runs.
 */
export class Agent {
  readonly id: string;
  /** This run's instance id: new on every start, so calls addressed to an earlier run never reach this one. */
  readonly instance = randomUUID().replaceAll("-", "").slice(0, 16);
  /** The agent's A2A card as registered: its A2A over NATS interface, signed with this identity's key. */
  get card(): AgentCard {
    return this.#card;
  }
  #card: AgentCard;
  readonly #rt: Runtime;
  readonly #onStopped: (agent: Agent) => void;
  readonly #handlers: Map<string, { handler: Handler; validate?: (v: unknown) => void; limiter?: CapabilityLimiter }>;
  /** The agent taking over from this one: from its registration on, this instance serves its capabilities too. */
  #successor: Agent | undefined;
  readonly #inflight = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  readonly #log: Logger;
  readonly #workers: TaskWorker[] = [];
  #inbox?: InboxReader;
  #flows?: FlowWatcher;
  #service?: Service;
  #heartbeat?: NodeJS.Timeout;
  #stopping?: Promise<void>;

  private constructor(rt: Runtime, spec: AgentSpec, handlers: Record<string, Handler>, onStopped: (agent: Agent) => void) {
    this.#rt = rt;
    this.#onStopped = onStopped;
    this.id = rt.id;
    this.#card = { ...cardOf(spec), supportedInterfaces: [natsInterface(rt.subjects.tenant, spec.name)] };
    this.#log = rt.log.child({ agent: this.id, agentName: spec.name });
    this.#handlers = new Map();
    for (const skill of spec.skills) {
      checkCapability(skill.id);
      const handler = handlers[skill.id];
      if (!handler) throw new AgentBusError("MISUSE", `no handler for capability ${skill.id}`);
      this.#handlers.set(skill.id, { handler, validate: skill.inputSchema && validatorFor(skill.inputSchema) });
    }
    for (const cap of Object.keys(handlers)) {
      if (!this.#handlers.has(cap)) throw new AgentBusError("MISUSE", `handler ${cap} has no skill in the card`);
    }
  }

  /** Registers the agent on `rt`'s bus and starts serving; `onStopped` is told once it has stopped. */
  static async start(rt: Runtime, spec: AgentSpec, handlers: Record<string, Handler>, options: AgentOptions = {}, onStopped: (agent: Agent) => void = () => {}): Promise<Agent> {
    const agent = new Agent(rt, spec, handlers, onStopped);
    // Callers read the new card as soon as it is stored and may address an
    // instance of the replaced agent with a capability it never had.
    if (options.replaces) options.replaces.#successor = agent;
    // A lease outlives a dead process's ack timer: its task is taken again meanwhile, and the slot comes free after.
    const leaseMs = 2 * ((typeof options.tasks === "object" ? options.tasks.ackWaitMs : undefined) ?? 30_000);
    for (const [cap, limits] of Object.entries(options.limits ?? {})) {
      const entry = agent.#handlers.get(cap);
      if (!entry) throw new AgentBusError("MISUSE", `limits for ${cap}, which this agent does not offer`);
      entry.limiter = await rt.limiter(cap, limits, leaseMs);
    }
    const schemas: Record<string, CapabilitySchemas> = {};
    for (const s of spec.skills) if (s.inputSchema || s.outputSchema) schemas[s.id] = { input: s.inputSchema, output: s.outputSchema };
    // Signed as A2A cards are (JWS over the SDK's canonical form): a client reading it from the registry checks it came from this key.
    const { AgentCard: Codec, canonicalizeAgentCard } = await import("@a2a-js/sdk");
    agent.#card = signCard(rt.identity, agent.#card, (c) => canonicalizeAgentCard(Codec.fromJSON(c)));
    await rt.buckets.agents.put(agent.id, JSON.stringify(signRecord(rt.identity, agent.#card, schemas)));
    await agent.#serve(spec);
    if (options.tasks !== false) await agent.#startWorkers(options.tasks === true ? {} : (options.tasks ?? {}));
    if (options.inbox) {
      agent.#inbox = await InboxReader.start(await rt.tasks(), agent.id, options.inbox, (env) => rt.authorize(env, INBOX_CAPABILITY), agent.#log, (kind, record) => rt.audit(kind, record));
    }
    await agent.#beat();
    agent.#heartbeat = setInterval(() => void agent.#beat().catch((err) => agent.#log.warn({ err }, "heartbeat failed")), Math.max(200, Math.floor(rt.options.presenceMaxAgeMs / 3)));
    agent.#log.info({ capabilities: [...agent.#handlers.keys()] }, "agent started");
    return agent;
  }

  async #serve(spec: AgentSpec): Promise<void> {
    const { nc, subjects } = this.#rt;
    this.#service = await new Svcm(nc).add({
      name: spec.name.replace(SERVICE_NAME, "_") || "agent",
      version: /^\d+\.\d+\.\d+/.test(spec.version ?? "") ? spec.version! : "1.0.0",
      description: spec.description ?? spec.name,
      metadata: { agent_id: this.id, tenant: subjects.tenant, instance: this.instance },
    });
    for (const cap of this.#handlers.keys()) {
      this.#service.addEndpoint(cap.replaceAll(".", "_"), {
        subject: subjects.cap(cap),
        queue: cap,
        metadata: { capability: cap },
        handler: (err, msg) => err || this.#track(msg, cap),
      });
    }
    this.#service.addEndpoint("call", {
      subject: subjects.agentCall(this.id),
      queue: "agent",
      metadata: { capability: "*" },
      handler: (err, msg) => err || this.#track(msg, undefined),
    });
    // Calls addressed to this instance: bound to it by the subject their
    // MAC covers, so the local replay guard is enough (no shared claim).
    this.#service.addEndpoint("instance", {
      subject: subjects.instanceCall(this.id, this.instance),
      metadata: { capability: "*" },
      handler: (err, msg) => err || this.#track(msg, undefined, true),
    });
  }

  async #beat(): Promise<void> {
    const region = this.#rt.options.region;
    const beat: PresenceBeat = { agent: this.id, instance: this.instance, ts: Date.now(), ...(region !== undefined && { region }), inFlight: this.inFlight };
    const body = JSON.stringify(beat);
    await this.#rt.buckets.presence.put(`${this.id}.${this.instance}`, body);
    // A copy on the presence subject lets operators watch heartbeats with `nats sub`.
    const subject = this.#rt.subjects.presence(this.id);
    const data = enc.encode(body);
    this.#rt.nc.publish(subject, data, { headers: this.#rt.envelopes.seal(subject, data) });
  }

  /**
   * Handlers this instance runs now: durable task runs (see
   * `TaskWorker.running`) plus fast calls being handled. Each presence
   * heartbeat carries it (`PresenceBeat.inFlight`), so discovery shows it as
   * of the last beat (every third of the presence max age).
   */
  get inFlight(): number {
    return this.#inflight.size + this.#workers.reduce((n, w) => n + w.running, 0);
  }

  #track(msg: ServiceMsg, cap: string | undefined, addressed = false): void {
    const p = this.#handle(msg, cap, addressed).finally(() => this.#inflight.delete(p));
    this.#inflight.add(p);
  }

  async #handle(msg: ServiceMsg, subjectCap: string | undefined, addressed: boolean): Promise<void> {
    const { envelopes } = this.#rt;
    let env: Envelope | undefined;
    try {
      // Verified, and first: on this instance's own subject, here (no other
      // instance can verify a copy of it); on a shared subject, anywhere in
      // the tenant (the shared replay memory).
      env = addressed ? envelopes.open(msg) : await envelopes.openCall(msg);
      const cap = subjectCap ?? env.capability;
      if (!cap) throw new AgentBusError("INVALID_INPUT", "a call to an agent must name the capability (Mesh-Cap)");
      this.#rt.authorize(env, cap);
      const entry = this.#handlers.get(cap) ?? (this.#successor && this.#successor.#handlers.get(cap));
      if (!entry) throw new AgentBusError("INVALID_INPUT", `agent does not offer ${cap}`);
      // Verified and authorized first; only then decrypted.
      // Large parts came as claim checks: read back before the handler sees them.
      const message = await this.#rt.uncarry(parseMessage(env.enc === undefined ? msg.data : envelopes.decrypt(env, msg.data)));
      const input = entry.validate ? structuredInput(message) : undefined;
      entry.validate?.(input);
      const sink = new CallSink();
      const base = this.#base(cap, env, message, this.#abort.signal, undefined, input);
      const run = async () => runHandler(entry.handler, base, sink, this.id);
      const result = entry.limiter ? await this.#limited(entry.limiter, cap, run) : await run();
      if (!sink.done) await completeWith(sink, result);
      let answer = toMessage(sink.parts, "ROLE_AGENT");
      answer.contextId ??= env.context ?? message.contextId;
      answer = await this.#rt.carry(answer, { submitter: env.from, task: env.id }, `the reply to a call of ${cap}`);
      reply(this.#rt.envelopes, msg, env, answer);
    } catch (err) {
      this.#refuse(msg, env, err);
    }
  }

  /** A fast call under its capability's limits: it waits for its turn up to {@link CALL_LIMIT_WAIT_MS}. */
  async #limited<T>(limiter: CapabilityLimiter, cap: string, run: () => Promise<T>): Promise<T> {
    const wait = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(CALL_LIMIT_WAIT_MS)]);
    try {
      return await limiter.run(`${this.instance}.${randomUUID()}`, wait, run);
    } catch (err) {
      if (wait.aborted && !this.#abort.signal.aborted && err === wait.reason) {
        throw new AgentBusError("UNAVAILABLE", `${cap} is at its limit (${JSON.stringify(limiter.limits)}): no turn within ${CALL_LIMIT_WAIT_MS} ms`);
      }
      throw err;
    }
  }

  /** Context inputs common to fast calls and durable tasks. */
  #base(cap: string, env: Envelope, userMessage: Message, signal: AbortSignal, task?: Task, input?: unknown): ContextBase {
    const rt = this.#rt;
    const parent = { context: task?.contextId ?? env.context, parent: task?.id ?? env.task ?? env.id, depth: env.depth + 1, trace: env.trace };
    // Work that came encrypted stays encrypted down the chain, unless the handler says `encrypt: false`.
    const encrypted = env.enc !== undefined || task?.metadata.encrypted !== undefined;
    return {
      capability: cap,
      userMessage,
      envelope: env,
      task,
      signal,
      input,
      log: () => this.#log.child({ capability: cap, from: env.from, task: task?.id, traceId: traceIdOf(env.trace?.traceparent) }),
      session: (contextId) => rt.session(contextId),
      call: (c, i, o) => call(rt, c, i, { task: task?.id ?? env.task, ...parent, ...(encrypted && { encrypt: true }), ...o }),
      submit: (c, i, o) => submitTask(rt, c, i, { contextId: parent.context, parent: parent.parent, depth: parent.depth, trace: parent.trace, ...(encrypted && { encrypt: true }), ...o }),
    };
  }

  async #startWorkers(options: WorkerOptions): Promise<void> {
    const durable = await this.#rt.tasks();
    const flows = (this.#flows = new FlowWatcher(this.#rt, durable, this.#log));
    await flows.resumeWatching();
    for (const [cap, { handler, validate, limiter }] of this.#handlers) {
      this.#workers.push(
        await TaskWorker.start(
          {
            rt: this.#rt,
            durable,
            agentId: this.id,
            log: this.#log,
            base: (c, env, m, signal, task, input) => this.#base(c, env, m, signal, task, input),
            limiter,
            flows,
          },
          cap,
          handler,
          validate,
          options,
        ),
      );
    }
  }

  #refuse(msg: ServiceMsg, env: Envelope | undefined, err: unknown): void {
    const e = isAgentBusError(err) ? err : new AgentBusError("HANDLER_FAILED", (err as Error)?.message ?? String(err), { cause: err });
    const security = !env || e.code === "DENIED" || e.code === "UNKNOWN_SENDER" || e.code === "DEPTH_EXCEEDED";
    if (security) {
      const from = msg.headers?.get("Mesh-From");
      this.#rt.audit(e.code.toLowerCase(), { code: e.code, reason: e.message, from, subject: msg.subject, agent: this.id });
      this.#log.warn({ code: e.code, from, subject: msg.subject }, "request refused");
    } else if (reportedFailures.has(e)) {
      // ctx.fail / ctx.reject: the handler's own answer, not a fault.
      this.#log.info({ code: e.code, reason: e.message, traceId: traceIdOf(env?.trace?.traceparent) }, "handler failed the call");
    } else if (e.code === "HANDLER_FAILED") {
      this.#log.error({ err: (err as Error) ?? err, traceId: traceIdOf(env?.trace?.traceparent) }, "handler failed");
    }
    // An unauthenticated sender gets a signed answer: we cannot MAC for an identity we have not verified.
    reply(this.#rt.envelopes, msg, env, e.toJSON(), e.code);
  }

  /**
   * Stops taking requests, lets in-flight handlers finish (up to
   * `timeoutMs`, then aborts their signal), and withdraws presence.
   */
  stop(timeoutMs = 10_000): Promise<void> {
    this.#stopping ??= (async () => {
      clearInterval(this.#heartbeat);
      await this.#service?.stop().catch(() => {});
      await Promise.all([...this.#workers.map((w) => w.stop(timeoutMs)), this.#inbox?.stop()]);
      await this.#flows?.stop();
      const all = Promise.allSettled([...this.#inflight]);
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)))]);
      clearTimeout(timer);
      if (timedOut) {
        this.#log.warn({ inflight: this.#inflight.size }, "drain timeout: aborting handlers");
        this.#abort.abort(new AgentBusError("CLOSED", "agent stopped"));
        // A handler that ignores its signal must not hold the process forever.
        await Promise.race([all, new Promise((r) => setTimeout(r, 1000).unref())]);
      }
      await this.#rt.buckets.presence.delete(`${this.id}.${this.instance}`).catch(() => {});
      this.#onStopped(this);
      this.#log.info("agent stopped");
    })();
    return this.#stopping;
  }
}

/** Failures a handler reported itself (ctx.fail, ctx.reject in a fast call): logged as answers, not faults. */
const reportedFailures = new WeakSet<Error>();

/**
 * Outputs of a handler run as a fast call: artifacts and messages become the
 * reply's parts; a task-only ending (input required) or a failure is an error.
 */
/** A fast call's sink: artifacts and messages collected into the reply; a failure or a request for input is thrown. */
export class CallSink implements ContextSink {
  readonly parts: Part[] = [];
  done = false;

  async status(): Promise<void> {}

  async artifact(parts: Part[]): Promise<void> {
    this.parts.push(...parts);
  }

  async message(message: Message): Promise<void> {
    this.parts.push(...message.parts);
  }

  async end(state: TaskState, message?: Message): Promise<void> {
    const text = message?.parts.map((p) => p.text ?? "").join(" ") ?? "";
    if (state === "TASK_STATE_COMPLETED") {
      if (message) this.parts.push(...message.parts);
      this.done = true;
      return;
    }
    if (state === "TASK_STATE_INPUT_REQUIRED" || state === "TASK_STATE_AUTH_REQUIRED") {
      throw new AgentBusError("INVALID_INPUT", `the agent needs more input (${text}): use a durable task (bus.submit) for multi-turn work`);
    }
    const failed = new AgentBusError("HANDLER_FAILED", state === "TASK_STATE_REJECTED" ? `rejected: ${text}` : text);
    reportedFailures.add(failed);
    throw failed;
  }

  working(): void {}
}
