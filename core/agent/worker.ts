import { AckPolicy, DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import { MsgHdrsImpl, type Msg, type Subscription } from "@nats-io/nats-core";
import type { Runtime } from "../runtime.js";
import { reply } from "./reply.js";
import { completeWith, runHandler, type ArtifactOptions, type ContextBase, type ContextSink, type Handler } from "./context.js";
import { deadlineMissed, deadlineOf, finalEventId, markEnded, type Durable } from "../store/task-log.js";
import { AgentBusError, errorInfo, failureReason, isAgentBusError } from "../wire/errors.js";
import { Header, type Envelope } from "../security/envelope.js";
import { ensureConsumer, retryJs } from "../infra/jetstream.js";
import type { Logger } from "../wire/log.js";
import { parseMessage, structuredInput, toMessage } from "../wire/message.js";
import type { Message, Part } from "../wire/protocol.js";
import { TASK_PRIORITIES, applyEvent, artifactEvent, canMove, isFinal, isTerminal, stateOf, statusEvent, statusNow, taskRight, type Task, type TaskEvent, type TaskPriority, type TaskState } from "../wire/task.js";
import type { Snapshot } from "../store/task-snapshots.js";
import { SCHEDULER_HEADER, tickSource, type Schedule } from "../store/schedules.js";
import type { CapabilityLimiter } from "../store/limits.js";
import { workConsumer } from "../store/workload.js";
import type { AgentContext, ChildTask } from "./context.js";
import { childSnapshot, type FlowChild, type FlowLink, type FlowWatcher } from "./flows.js";
import { checkId } from "../wire/subjects.js";
import { randomUUID } from "node:crypto";
import { blobRefOf, eventBytes, partsBytes, taskBytes } from "../store/blobs.js";
import type { TraceContext } from "../wire/trace.js";

export type { Handler } from "./context.js";

/** Tunables of the durable side of an agent. */
export interface WorkerOptions {
  /** Tasks one agent instance runs at once per capability (default 16). */
  concurrency?: number;
  /** How long a taken work item may go without an ack or `working()` before redelivery, ms (default 30 000). */
  ackWaitMs?: number;
  /** Deliveries before a failing task is FAILED and dead-lettered (default 5). */
  maxDeliver?: number;
  /** First retry delay, doubled per attempt up to 30 s, ms (default 500). */
  backoffMs?: number;
}

/** What a worker needs from its agent. */
export interface WorkerHost {
  /** The bus's runtime: its connection, authorization, audit and recipients. */
  rt: Runtime;
  /** Its task streams, open. */
  durable: Durable;
  agentId: string;
  log: Logger;
  /** The capability's limits across replicas, when it has any. */
  limiter?: CapabilityLimiter;
  /** Resumes this agent's parent tasks when their children end (`ctx.fanOut`). */
  flows: FlowWatcher;
  /** Context inputs shared with fast calls (call, submit, session, log). */
  base(cap: string, env: Envelope, userMessage: Message, signal: AbortSignal, task?: Task, input?: unknown): ContextBase;
}

// Failing again will not help: fail the task at once.
/**
 * What a worker does when a handler's run ends with `err` (see
 * `ErrorTable`): a retryable code (or anything not an `AgentBusError`) is
 * retried with backoff and dead-lettered after the last attempt; another
 * code on the wire fails the task at once (bad input, a refusal: no retry
 * can fix it); a local one (a misuse of the library) fails it and
 * dead-letters it at once, so it can be replayed once the agent is fixed.
 */
function outcomeOf(err: unknown): "retry" | "fail" | "dead-letter" {
  if (!isAgentBusError(err)) return "retry";
  const info = errorInfo(err.code);
  if (info.retryable) return "retry";
  return info.wire ? "fail" : "dead-letter";
}

/**
 * How long a running task's snapshot may lag its events. A handler that ends
 * sooner moves the snapshot once; cancel detection waits at most this long.
 */
const SNAPSHOT_LAG_MS = 20;

/** One priority's work: its consumer (`cap_<cap>`, `cap_<cap>_HIGH`, `cap_<cap>_LOW`) and the pull in progress. */
interface Level {
  priority: TaskPriority;
  name: string;
  consumer?: Consumer;
  opening?: Promise<void>;
  batch?: ConsumerMessages;
}

/** Rounds without high or low work after which a worker goes back to pulling normal work alone. */
const QUIET_ROUNDS = 3;

/**
 * The share rule of priorities: while several levels have work waiting, a
 * worker's free slots go along this cycle, skipping levels with none: of
 * every 7 tasks, 4 high, 2 normal and 1 low, so low work is never starved.
 */
const SHARES: readonly TaskPriority[] = ["high", "normal", "high", "low", "high", "normal", "high"];


/**
 * Runs one capability's durable tasks: a durable pull consumer on
 * `<root>.<t>.work.<cap>` shared by every replica (competing consumers),
 * at most `concurrency` tasks at once in this process.
 */
export class TaskWorker {
  readonly #host: WorkerHost;
  readonly #cap: string;
  readonly #handler: Handler;
  readonly #validate?: (v: unknown) => void;
  readonly #o: Required<WorkerOptions>;
  readonly #running = new Set<Promise<void>>();
  readonly #runs = new Set<TaskRun>();
  #stopping = false;
  /** The work of each priority, highest first; high and low get a consumer once such work is seen. */
  readonly #levels: Level[];
  /** A high or low consumer is open: pull in rounds over the levels. */
  #prioritized = false;
  /** Where the next round starts in {@link SHARES}. */
  #share = 0;
  /** When a high or low work item was last seen published. */
  #bell = 0;
  /** Rounds in a row that found no high or low work waiting. */
  #quiet = 0;
  readonly #doorbells: Subscription[] = [];
  #stopped = false;
  /** Waiting for a free slot: the work loop, the tick loop. */
  #waiting: Array<() => void> = [];
  #free: number;
  #tickBatch?: ConsumerMessages;
  #loop?: Promise<void>;
  #tickLoop?: Promise<void>;

  private constructor(host: WorkerHost, cap: string, handler: Handler, validate: ((v: unknown) => void) | undefined, o: WorkerOptions) {
    this.#host = host;
    this.#cap = cap;
    this.#handler = handler;
    this.#validate = validate;
    this.#o = { concurrency: o.concurrency ?? 16, ackWaitMs: o.ackWaitMs ?? 30_000, maxDeliver: o.maxDeliver ?? 5, backoffMs: o.backoffMs ?? 500 };
    this.#free = this.#o.concurrency;
    this.#levels = TASK_PRIORITIES.map((priority) => ({ priority, name: workConsumer(cap, priority) }));
  }

  static async start(host: WorkerHost, cap: string, handler: Handler, validate: ((v: unknown) => void) | undefined, options: WorkerOptions = {}): Promise<TaskWorker> {
    const w = new TaskWorker(host, cap, handler, validate, options);
    await w.#open(w.#levels[1]!);
    await w.#watchPriorities();
    w.#loop = w.#run();
    if (host.rt.server.cron) w.#tickLoop = w.#runTicks();
    return w;
  }

  /** Creates (or finds) the consumer of one priority level's work items. */
  async #open(level: Level): Promise<void> {
    const { durable } = this.#host;
    const stream = durable.subjects.stream("WORK");
    await ensureConsumer(await durable.js.jetstreamManager(), stream, {
      durable_name: level.name,
      filter_subject: durable.subjects.work(this.#cap, level.priority),
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: this.#o.ackWaitMs * 1_000_000,
      max_deliver: this.#o.maxDeliver,
    });
    level.consumer = await retryJs(() => durable.js.consumers.get(stream, level.name));
  }

  /**
   * High and low work items have their own consumers, made when the first
   * such item is seen (a plain subscription to their subjects rings), or at
   * start when some wait already; until then the worker pulls normal work
   * only, at no extra cost.
   */
  async #watchPriorities(): Promise<void> {
    const { durable, rt } = this.#host;
    for (const level of [this.#levels[0]!, this.#levels[2]!]) {
      const subject = durable.subjects.work(this.#cap, level.priority);
      this.#doorbells.push(rt.nc.subscribe(subject, {
        callback: () => {
          this.#bell = Date.now();
          void this.#usePriority(level);
        },
      }));
    }
    const info = await retryJs(async () => (await durable.js.jetstreamManager()).streams.info(durable.subjects.stream("WORK"), { subjects_filter: `${durable.subjects.work(this.#cap)}.*` }));
    const waiting = info.state.subjects ?? {};
    for (const level of [this.#levels[0]!, this.#levels[2]!]) {
      if (waiting[durable.subjects.work(this.#cap, level.priority)]) await this.#usePriority(level);
    }
  }

  /** From now on this worker takes prioritized work: `level`'s consumer opened, the loop told. */
  async #usePriority(level: Level): Promise<void> {
    if (this.#stopped) return;
    if (level.consumer) {
      if (!this.#prioritized) {
        this.#prioritized = true;
        this.#wakeAll();
      }
      return;
    }
    level.opening ??= this.#open(level).then(
      () => {
        this.#prioritized = true;
        this.#wakeAll();
      },
      (err: unknown) => {
        level.opening = undefined;
        this.#host.log.warn({ err: String(err), capability: this.#cap, priority: level.priority }, "opening a priority's consumer failed; retried on its next work item");
      },
    );
    await level.opening;
  }

  /**
   * Pulls exactly as many work items as there are free slots: an item never
   * waits in a local buffer while its ack timer runs (it would be redelivered
   * to another replica and run twice). Normal work only until a high or low
   * item has been seen; then in rounds over the levels (see {@link #round}).
   */
  async #run(): Promise<void> {
    const normal = this.#levels[1]!;
    while (!this.#stopped) {
      await this.#slotFree();
      if (this.#stopped) break;
      try {
        if (this.#prioritized) {
          await this.#round();
          continue;
        }
        normal.batch = await normal.consumer!.fetch({ max_messages: this.#free, expires: 2000 });
        for await (const m of normal.batch) this.#take(this.#process(m));
      } catch (err) {
        if (this.#stopped) break;
        this.#host.log.warn({ err: String(err), capability: this.#cap }, "pulling work failed; retrying");
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  /**
   * One round over the priority levels: how many items wait on each (its
   * consumer's pending count), then the free slots handed out level by
   * level along {@link SHARES} (highest first, and none starves), and
   * exactly that many pulled from each. With nothing waiting, one pull per
   * level (the rest of the slots to normal) waits up to a second.
   */
  async #round(): Promise<void> {
    const started = Date.now();
    // Slots come free one by one under load: gather a few (for a few ms at most) so a round does not cost a look at every level per task.
    for (let waited = 0; this.#free < Math.ceil(this.#o.concurrency / 4) && waited < 5 && !this.#stopped; waited++) await new Promise((r) => setTimeout(r, 1));
    const levels = this.#levels.filter((l) => l.consumer);
    const pending = await Promise.all(levels.map((l) => l.consumer!.info().then((i) => i.num_pending, () => 0)));
    // No high or low work for a few rounds and no bell meanwhile: back to pulling normal work alone, until the next bell.
    const others = levels.reduce((n, l, i) => n + (l.priority === "normal" ? 0 : pending[i]!), 0);
    this.#quiet = others === 0 ? this.#quiet + 1 : 0;
    if (this.#quiet >= QUIET_ROUNDS && this.#bell < started) {
      this.#quiet = 0;
      this.#prioritized = false;
      return;
    }
    const give = new Map<Level, number>(levels.map((l) => [l, 0]));
    let free = this.#free;
    if (pending.every((n) => n === 0)) {
      for (const l of levels) if (free > 0) give.set(l, 1), free--;
      give.set(this.#levels[1]!, give.get(this.#levels[1]!)! + free);
    } else {
      const waiting = new Map(levels.map((l, i) => [l.priority, pending[i]!]));
      for (; free > 0; free--) {
        const p = this.#nextShare(waiting);
        if (!p) break;
        waiting.set(p, waiting.get(p)! - 1);
        const l = levels.find((x) => x.priority === p)!;
        give.set(l, give.get(l)! + 1);
      }
    }
    await Promise.all([...give].filter(([, n]) => n > 0).map(async ([l, n]) => {
      l.batch = await l.consumer!.fetch({ max_messages: n, expires: 1000 });
      for await (const m of l.batch) this.#take(this.#process(m));
    }));
  }

  /** The next level along {@link SHARES} that has work waiting. */
  #nextShare(waiting: Map<TaskPriority, number>): TaskPriority | undefined {
    for (let i = 0; i < SHARES.length; i++) {
      const p = SHARES[(this.#share + i) % SHARES.length]!;
      if ((waiting.get(p) ?? 0) > 0) {
        this.#share = (this.#share + i + 1) % SHARES.length;
        return p;
      }
    }
    return undefined;
  }

  /** Resolves once a slot is free (or the worker stops). */
  async #slotFree(): Promise<void> {
    while (this.#free <= 0 && !this.#stopped) await new Promise<void>((r) => this.#waiting.push(r));
  }

  /** Runs `work` in a slot, freed when it settles. */
  #take(work: Promise<void>): void {
    this.#free--;
    const p = work
      .catch((err) => this.#host.log.error({ err: String(err), capability: this.#cap }, "task processing failed"))
      .finally(() => {
        this.#free++;
        this.#running.delete(p);
        this.#wakeAll();
      });
    this.#running.add(p);
  }

  #wakeAll(): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const r of waiting) r();
  }

  /**
   * The ticks of the recurring schedules of this capability (nats-server
   * 2.14+): a durable consumer on `<root>.<t>.tick.<cap>.*` shared by every
   * replica, so each tick is taken once. Each becomes a task of the
   * schedule's creator, queued as a work item of the capability like any
   * other (so it waits its turn under the capability's limits).
   * The schedules' stream is opened on first use; until it can be (a
   * connection that may not create it before a tenant's set-up has), this
   * tries again now and then.
   */
  async #runTicks(): Promise<void> {
    const { rt, durable } = this.#host;
    let ticks: Consumer | undefined;
    while (!this.#stopped) {
      try {
        if (!ticks) {
          await rt.schedules();
          const stream = durable.subjects.stream("SCHEDULES");
          const name = workConsumer(this.#cap).replace(/^cap_/, "tick_");
          await ensureConsumer(await durable.js.jetstreamManager(), stream, {
            durable_name: name,
            filter_subject: durable.subjects.ticks(this.#cap),
            ack_policy: AckPolicy.Explicit,
            deliver_policy: DeliverPolicy.All,
            ack_wait: this.#o.ackWaitMs * 1_000_000,
            max_deliver: this.#o.maxDeliver,
          });
          ticks = await retryJs(() => durable.js.consumers.get(stream, name));
        }
        this.#tickBatch = await ticks.fetch({ max_messages: 16, expires: 5000 });
        for await (const m of this.#tickBatch) await this.#tick(m);
      } catch (err) {
        if (this.#stopped) break;
        this.#host.log.debug({ err: String(err), capability: this.#cap }, "taking schedule ticks failed; retrying");
        // Cut short when the worker stops.
        await new Promise<void>((r) => {
          setTimeout(r, ticks ? 500 : 10_000).unref();
          this.#waiting.push(r);
        });
      }
    }
  }

  /**
   * One tick of a schedule: verified (the schedule named by the server's
   * `Nats-Scheduler` header, its record signed by its creator, in force,
   * for this capability), then queued as the creator's task
   * `<schedule>-<tick time in ms>`: its SUBMITTED snapshot created on the
   * first delivery and found on a later one, its work item published with
   * the task's key as `Nats-Msg-Id`, so a tick taken twice queues one task.
   */
  async #tick(m: JsMsg): Promise<void> {
    const { rt, durable, log } = this.#host;
    try {
      const source = tickSource(durable.subjects, m.headers?.get(SCHEDULER_HEADER) || undefined);
      if (!source || m.subject !== durable.subjects.tick(this.#cap, source.id)) {
        this.#refused(m, new AgentBusError("BAD_SIGNATURE", `a tick on ${m.subject} names no schedule of this capability`));
        return m.term();
      }
      const schedule = await this.#scheduleOf(source.creator, source.id, m);
      if (!schedule) return;
      if (rt.isRevoked(source.creator)) {
        this.#refused(m, new AgentBusError("REVOKED", `schedule ${source.id}: its creator ${source.creator} is revoked`));
        return m.term();
      }
      const at = Math.floor(m.info.timestampNanos / 1_000_000);
      const taskId = `${source.id}-${at}`;
      let snapshot = await durable.store.get(taskId, source.creator);
      if (!snapshot) {
        const contextId = randomUUID();
        const task: Task = {
          id: taskId,
          contextId,
          status: statusNow("TASK_STATE_SUBMITTED"),
          artifacts: [],
          history: [{ ...schedule.input, messageId: `${taskId}-input`, taskId, contextId }],
          metadata: {
            ...schedule.metadata,
            capability: this.#cap,
            submitter: source.creator,
            depth: 0,
            schedule: source.id,
            scheduledAt: at,
            createdAt: Date.now(),
            ...(schedule.ttlMs !== undefined && { deadline: at + schedule.ttlMs }),
            ...(schedule.priority !== undefined && { priority: schedule.priority }),
          },
        };
        snapshot = (await durable.store.create(task, rt.providers(this.#cap))) ?? (await durable.store.get(taskId, source.creator));
        if (!snapshot) throw new AgentBusError("UNAVAILABLE", `task ${taskId} of schedule ${source.id} could not be created`);
      }
      // Sealed by this agent: a work item from a provider for a scheduled task runs as its creator's (see #principal).
      await durable.requeue(snapshot.task, `${source.creator}.${taskId}`, rt.providers(this.#cap));
      m.ack();
    } catch (err) {
      log.warn({ err: String(err), capability: this.#cap, subject: m.subject }, "queueing a schedule's tick failed; it comes again");
      m.nak(1000);
    }
  }

  /**
   * The schedule `creator`'s record `id`, verified, when it is in force for
   * this capability. Otherwise undefined, with the tick settled: a record
   * that does not verify is refused (audited), one paused, deleted or for
   * another capability runs nothing.
   */
  async #scheduleOf(creator: string, id: string, m: JsMsg): Promise<Schedule | undefined> {
    let schedule: Schedule | undefined;
    try {
      schedule = await (await this.#host.rt.schedules()).get(id, creator);
    } catch (err) {
      if (!isAgentBusError(err, "BAD_SIGNATURE")) throw err;
      this.#refused(m, err);
      m.term();
      return undefined;
    }
    if (schedule && !schedule.paused && schedule.capability === this.#cap) return schedule;
    this.#host.log.debug({ schedule: id, creator, subject: m.subject }, "tick of no schedule in force: dropped");
    m.ack();
    return undefined;
  }

  /**
   * Who a work item runs for: its sender, except for a scheduled task queued
   * by a provider of this capability (from a tick), which runs as the
   * schedule's creator while its record is in force for this capability.
   */
  async #principal(env: Envelope, snapshot: Snapshot): Promise<Envelope> {
    const m = snapshot.task.metadata;
    // A parent queued again by this agent's own identity once its children ended: it runs as before, for its submitter.
    if (env.from === this.#host.agentId && Array.isArray(m.children) && typeof m.submitter === "string") return { ...env, from: m.submitter };
    if (typeof m.schedule !== "string" || env.from === m.submitter || !this.#host.rt.registry.provides(env.from, this.#cap)) return env;
    const schedule = await this.#host.rt.schedules().then((store) => store.get(m.schedule as string, m.submitter as string)).catch(() => undefined);
    if (!schedule || schedule.capability !== this.#cap) return env; // authorized as the provider that queued it (DENIED unless granted)
    return { ...env, from: m.submitter };
  }

  async #process(m: JsMsg): Promise<void> {
    const { durable, log } = this.#host;
    let env: Envelope;
    try {
      // Mesh-Ts within the window of the time the stream stored it: a copy
      // stored again after the duplicate window is EXPIRED.
      env = durable.envelopes.open(m, { durable: true, storedAt: m.info.timestampNanos / 1_000_000 });
    } catch (err) {
      // Unverifiable or replayed: no retry can fix it, and it must not run.
      this.#refused(m, err);
      m.term();
      return;
    }
    const snapshot = env.task ? await this.#snapshotOf(env.task, env.from) : undefined;
    if (!snapshot) {
      // The submitter writes the snapshot while queueing the work; in a
      // leader election that write can take seconds. Come back later; an
      // item whose snapshot never appears (submitter died) is dropped.
      if (m.info.deliveryCount < this.#o.maxDeliver) return m.nak(1000 * m.info.deliveryCount);
      log.warn({ task: env.task, subject: m.subject }, "work item without a task snapshot: dropped");
      m.term();
      return;
    }
    if (isTerminal(snapshot.task.status.state)) {
      // Canceled while queued, or finished by a worker that died before its ack.
      await this.#ensureFinalEvent(snapshot);
      m.ack();
      return;
    }
    if (env.runAt !== undefined && isFinal(snapshot.task.status.state)) {
      // A delayed work item starts a task's first turn; one that finds the task waiting for input is a stale copy.
      m.ack();
      return;
    }
    const deadline = deadlineOf(snapshot.task);
    if (deadline !== undefined && Date.now() >= deadline && snapshot.task.status.state === "TASK_STATE_SUBMITTED") {
      // Not started by its deadline: it ends FAILED, and is not run late.
      await markEnded(durable, snapshot, "TASK_STATE_FAILED", deadlineMissed(deadline), env.trace, (t) => t.status.state !== "TASK_STATE_SUBMITTED").catch((err: unknown) => {
        if (!isAgentBusError(err, "NOT_CANCELABLE")) throw err;
      });
      m.ack();
      return;
    }
    // Who it runs for: the sender, or for a schedule's run or a resumed parent, the task's submitter.
    const principal = await this.#principal(env, snapshot);
    const run = new TaskRun(this, m, snapshot);
    run.trace = env.trace; // the handler's own, once it runs
    const encrypted = env.enc !== undefined || snapshot.task.metadata.encrypted !== undefined;
    // Its events (status messages, artifacts) are encrypted for its submitter and every provider, so whichever serves a later turn reads the history.
    if (encrypted) run.sealFor = [snapshot.task.metadata.submitter, this.#host.agentId, ...this.#host.rt.recipients(this.#cap)];
    const keepAlive = setInterval(() => m.working(), Math.max(100, Math.floor(this.#o.ackWaitMs / 3)));
    // Past its deadline while it runs, the task is canceled as if asked to.
    const expiry = deadline === undefined ? undefined : setTimeout(() => run.expire(deadline), Math.max(0, deadline - Date.now()));
    const cancelSub = this.#host.rt.nc.subscribe(durable.subjects.taskCancel(snapshot.task.id), { callback: (_e, msg) => run.onCancel(msg, env) });
    this.#runs.add(run);
    try {
      try {
        this.#host.rt.authorize(principal, this.#cap);
      } catch (err) {
        this.#refused(m, err); // and the task fails at once (a final code)
        throw err;
      }
      // Verified and authorized first; only then decrypted. Not encrypted for this replica (it registered after the submit): retried, another may be.
      // Parts stored as blobs are fetched back (and checked) before the input is validated.
      const blobs = new Map<string, Promise<Part>>();
      const userMessage = await durable.blobs.resolveMessage(parseMessage(env.enc === undefined ? m.data : durable.envelopes.decrypt(env, m.data)), blobs);
      // The capability's input schema is its first turn's: a later turn answers the agent's question, which has a shape of its own.
      const validate = this.#validate && run.task.history.filter((h) => h.role === "ROLE_USER").length <= 1 ? this.#validate : undefined;
      // Structured once for the check and the handler's `ctx.input` (which otherwise structures it when read).
      const input = validate ? structuredInput(userMessage) : undefined;
      validate?.(input);
      // The handler sees the history in plain (what is encrypted for this identity), blobs fetched back.
      const opened = encrypted ? durable.envelopes.e2e.openTask(run.task) : run.task;
      run.bytes = taskBytes(opened);
      const task = await durable.blobs.resolveTask(opened, blobs);
      const { limiter } = this.#host;
      const lease = `${this.#host.agentId}.${run.task.id}.${m.info.streamSequence}.${m.info.deliveryCount}`;
      if (limiter) {
        try {
          // Its turn under the capability's limits (the ack timer is kept alive meanwhile).
          await limiter.acquire(lease, run.abort.signal);
        } catch (err) {
          if (deadline === undefined || Date.now() < deadline || !run.canceled) throw err;
          // Its deadline passed while it waited for its turn: it never started, so it ends FAILED, not run late.
          await markEnded(durable, run.snapshot, "TASK_STATE_FAILED", deadlineMissed(deadline), env.trace, (t) => t.status.state !== "TASK_STATE_SUBMITTED").catch((e: unknown) => {
            if (!isAgentBusError(e, "NOT_CANCELABLE")) throw e;
          });
          m.ack();
          return;
        }
      }
      run.start();
      const handle = async () => runHandler(this.#handler, this.#host.base(this.#cap, principal, userMessage, run.abort.signal, task, input), run, this.#host.agentId);
      const result = limiter ? await limiter.holding(lease, handle) : await handle();
      if (run.suspended) {
        await this.#suspend(run);
        m.ack();
        return;
      }
      if (run.abort.signal.aborted) await run.end(run.canceled ? "TASK_STATE_CANCELED" : "TASK_STATE_FAILED", toMessage(run.canceled ? run.cancelReason : "agent stopped", "ROLE_AGENT"));
      else if (!run.ended) await completeWith(run, result);
      if (run.stale) await this.#settle(run.task);
      m.ack();
    } catch (err) {
      // A handler that ends its run at fanOut (its rejection not caught) waits for its children.
      if (run.suspended && !run.ended && !run.stale) {
        await this.#suspend(run).then(() => m.ack(), (e: unknown) => this.#failed(run, m, e));
        return;
      }
      await this.#failed(run, m, err);
    } finally {
      clearInterval(keepAlive);
      clearTimeout(expiry);
      run.settled();
      cancelSub.unsubscribe();
      this.#runs.delete(run);
    }
  }

  /**
   * The run ended at `ctx.fanOut` with children still running: the parent
   * is marked waiting (it stays WORKING), and queued again at once when its
   * children all ended meanwhile; otherwise the flow watcher does that when
   * the last one ends.
   */
  async #suspend(run: TaskRun): Promise<void> {
    const n = run.suspended!.length;
    await run.status(toMessage(`waiting for ${n} child task${n === 1 ? "" : "s"}`, "ROLE_AGENT"));
    await run.annotate({ waiting: "children" });
    run.ended = true;
    const { flows } = this.#host;
    await flows.start();
    await flows.resumeIfDone({ parent: run.task.id, submitter: run.task.metadata.submitter, capability: this.#cap, region: this.#host.durable.subjects.region });
  }

  /** Audits a refused work item once: kind = the lower-case code. */
  #refused(m: JsMsg, err: unknown): void {
    const code = isAgentBusError(err) ? err.code : "BAD_SIGNATURE";
    const from = m.headers?.get(Header.from) || undefined;
    this.#host.rt.audit(code.toLowerCase(), { code, reason: (err as Error).message, from, subject: m.subject, agent: this.#host.agentId });
  }

  /**
   * The task's snapshot. A submitter writes it while queueing the work item,
   * so a fast worker may arrive first: wait for it a little (up to ~2 s).
   */
  async #snapshotOf(id: string, submitter: string): Promise<Snapshot | undefined> {
    for (let i = 0; i < 10; i++) {
      const s = await this.#host.durable.store.get(id, submitter);
      if (s) return s;
      await new Promise((r) => setTimeout(r, 2 ** i));
    }
    return undefined;
  }

  /**
   * A final state is stored in the snapshot first, then published as an
   * event. A writer that died in between left the event out: publish it
   * from the snapshot so event readers see the end too.
   */
  async #ensureFinalEvent({ task, revision }: Snapshot): Promise<void> {
    const { durable } = this.#host;
    const last = await durable.lastEvent(task).catch(() => undefined);
    if (last && stateOf(last.event) === task.status.state) return;
    // Same id as the writer's own publish: if that one lands after all, the stream drops one.
    await durable.publishEvent(task, { statusUpdate: { taskId: task.id, contextId: task.contextId, status: task.status } }, finalEventId(task, revision));
  }

  /**
   * The task ended without this run (canceled, or finished by another
   * delivery): whoever ended it stored the final state first; make sure its
   * event is stored too before the work item goes.
   */
  async #settle(task: Task): Promise<void> {
    const latest = await this.#host.durable.store.get(task.id, task.metadata.submitter);
    if (latest && isTerminal(latest.task.status.state)) await this.#ensureFinalEvent(latest);
  }

  async #failed(run: TaskRun, m: JsMsg, err: unknown): Promise<void> {
    const reason = failureReason(err);
    if (isTerminal(run.task.status.state)) {
      // The final state is stored but its event may not be: make sure, then done.
      await this.#ensureFinalEvent(run.snapshot);
      return m.ack();
    }
    if (run.stale) await this.#settle(run.task);
    if (run.ended || run.stale) return m.ack();
    if (run.canceled) {
      await run.end("TASK_STATE_CANCELED", toMessage(run.cancelReason, "ROLE_AGENT"));
      return m.ack();
    }
    if (this.#stopping) return m.nak(); // stopping: let another replica take it now
    const attempt = m.info.deliveryCount;
    const outcome = outcomeOf(err);
    if (outcome !== "retry" || attempt >= this.#o.maxDeliver) {
      const why = outcome === "retry" ? `gave up after ${attempt} attempts: ${reason}` : reason;
      if (outcome !== "fail") await this.#deadLetter(m, why);
      await run.end("TASK_STATE_FAILED", toMessage(why, "ROLE_AGENT"));
      return m.ack();
    }
    const delay = Math.min(30_000, this.#o.backoffMs * 2 ** (attempt - 1));
    this.#host.log.warn({ task: run.task.id, attempt, delay, reason }, "task attempt failed, retrying");
    await run.emit({ statusUpdate: { taskId: run.task.id, contextId: run.task.contextId, status: statusNow("TASK_STATE_WORKING", toMessage(`attempt ${attempt} failed (${reason}); retrying in ${delay} ms`, "ROLE_AGENT")) } }).catch(() => {});
    m.nak(delay);
  }

  /** Copies the work item, with its original signed headers, to `MESH_<T>_DLQ`. */
  async #deadLetter(m: JsMsg, reason: string): Promise<void> {
    const headers = new MsgHdrsImpl();
    for (const [k, v] of (m.headers as MsgHdrsImpl | undefined) ?? []) headers.headers.set(k, [...v]);
    // The DLQ keeps every copy: the id moves to a header of its own, with the work subject, so the copy verifies as sealed.
    const id = headers.headers.get(Header.id)?.[0];
    headers.headers.delete(Header.id);
    if (id) headers.headers.set(Header.dlqMsgId, [id]);
    headers.headers.set(Header.dlqSubject, [m.subject]);
    headers.headers.set(Header.dlqReason, [reason.replace(/[^\x20-\x7e]/g, "?").slice(0, 1000)]);
    headers.headers.set(Header.dlqDeliveries, [String(m.info.deliveryCount)]);
    await retryJs(() => this.#host.durable.js.publish(this.#host.durable.subjects.dlq(this.#cap), m.data, { headers }));
  }

  /** Stops taking work; running tasks finish within `timeoutMs`, then their signals abort. */
  async stop(timeoutMs = 10_000): Promise<void> {
    this.#stopped = true;
    for (const l of this.#levels) l.batch?.stop();
    for (const d of this.#doorbells) d.unsubscribe();
    this.#tickBatch?.stop();
    this.#wakeAll();
    await Promise.all([this.#loop, this.#tickLoop]);
    let timer: NodeJS.Timeout | undefined;
    const all = Promise.allSettled([...this.#running]);
    const timedOut = await Promise.race([all.then(() => false), new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs)))]);
    clearTimeout(timer);
    if (timedOut) {
      this.#stopping = true;
      for (const run of this.#runs) run.abort.abort(new AgentBusError("CLOSED", "agent stopped"));
      await Promise.race([all, new Promise((r) => setTimeout(r, 1000).unref())]);
    }
  }

  /**
   * Runs of this worker in progress: each from the moment a verified work
   * item of a task not yet ended starts a run until the run settles (its
   * handler running, or the task waiting for its turn under the
   * capability's limits).
   */
  get running(): number {
    return this.#runs.size;
  }

  get host(): WorkerHost {
    return this.#host;
  }
  get capability(): string {
    return this.#cap;
  }
}

/**
 * One delivery of one task: turns context calls into events on the task's
 * subject, each followed by a compare-and-set of the snapshot.
 */
class TaskRun implements ContextSink {
  readonly abort = new AbortController();
  ended = false;
  /** The snapshot moved on without us (canceled meanwhile). */
  stale = false;
  canceled = false;
  /** Why it was canceled: a cancel request, or its deadline passing. */
  cancelReason = "canceled";
  /** The handler's trace: every event of this run carries it. */
  trace?: TraceContext;
  /** For an encrypted task: who its events' content is encrypted for (the stored snapshot folds them as they are). */
  sealFor?: string[];
  /** Bytes of content of the task so far (input, history, artifacts), against `maxTaskBytes`. */
  bytes = 0;
  /** The run ended at `ctx.fanOut`: the ids of the children it waits for. */
  suspended?: string[];
  /** Estimated bytes the snapshot holds inline (content not in blobs), once an event with content came. */
  #inline?: number;
  /** The blob writes of earlier events, so events keep their order. */
  #storing?: Promise<unknown>;
  #snapshot: Snapshot;
  #acks: Promise<number>[] = [];
  #pending: TaskEvent[] = [];
  #flushTimer?: NodeJS.Timeout;
  #startTimer?: NodeJS.Timeout;
  /** The run's first snapshot write and WORKING event (see `#started`). */
  #claim?: Promise<void>;
  /** Between the handler's return and its final state. */
  #finishing = false;
  /** Events of a run that finishes without a claim: published once its final state is stored. */
  #held: TaskEvent[] = [];
  #chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly worker: TaskWorker,
    private readonly msg: JsMsg,
    snapshot: Snapshot,
  ) {
    this.#snapshot = snapshot;
  }

  get task(): Task {
    return this.#snapshot.task;
  }

  /** Who runs the task, as its snapshot says: the agent, and its connection's region when it has one. */
  #ranBy(): { agent: string; region?: string } {
    const { agentId, rt } = this.worker.host;
    return rt.options.region === undefined ? { agent: agentId } : { agent: agentId, region: rt.options.region };
  }

  get snapshot(): Snapshot {
    return this.#snapshot;
  }

  /**
   * The task is taken. Its WORKING event waits `SNAPSHOT_LAG_MS`: a handler
   * that reports anything sooner sends it first (so followers see WORKING
   * before any update); one that returns sooner never sends it, and its
   * task goes from SUBMITTED to its final state in one snapshot write, with
   * its result artifact and final status as its only events (a WORKING
   * event, its publish and its ack less per quick task). A cancel in that moment is decided as for any queued task: the
   * snapshot is marked, and this run's next write finds it ended.
   */
  start(): void {
    this.#snapshot = { ...this.#snapshot, task: { ...this.task, metadata: { ...this.task.metadata, ...this.#ranBy() } } };
    this.#startTimer = setTimeout(() => void this.#started().catch(() => {}), SNAPSHOT_LAG_MS);
  }

  /** The handler returned: its result and final state end the turn, with no WORKING event if none was due yet. */
  finishing(): void {
    this.settled();
    this.#finishing = true;
  }

  /** The run is over: a WORKING event not sent by now is never sent. */
  settled(): void {
    clearTimeout(this.#startTimer);
    this.#startTimer = undefined;
  }

  /**
   * Sends the deferred WORKING event now, if it is still due (else waits for
   * the one on its way). It is the run's claim on the task: the snapshot
   * moves first (WORKING, naming this agent), then the event is published,
   * as for a final state, and no other event of this run is published
   * before it. A task canceled before the claim is found ended here and
   * this run publishes nothing, so none of its events lands after the
   * task's terminal one; once the snapshot names this agent, a cancel asks
   * this run to stop (see `TaskHandle.cancel`).
   */
  #started(): Promise<void> {
    if (!this.#startTimer) return this.#claim ?? Promise.resolve();
    clearTimeout(this.#startTimer);
    this.#startTimer = undefined;
    let event = statusEvent(this.task, "TASK_STATE_WORKING");
    if (this.sealFor) event = this.worker.host.durable.envelopes.e2e.sealEvent(event, this.sealFor, this.task.id);
    this.#pending.push(event);
    return (this.#claim = this.#flush().then(async () => {
      if (!this.stale) await this.worker.host.durable.publishEvent(this.task, event, undefined, this.trace);
    }));
  }

  /**
   * Stores an event on the task's subject. Events are pipelined (acks
   * collected, not awaited one by one) and folded into the snapshot together
   * a moment later (`SNAPSHOT_LAG_MS`), so a quick task moves its snapshot
   * once, SUBMITTED to its final state. A final status is different: the
   * snapshot moves first (with every pending event, once their acks are in),
   * then the event is published, so whoever sees the final event (a waiting
   * submitter) finds the snapshot final too.
   */
  async emit(event: TaskEvent): Promise<void> {
    if (this.stale) throw new AgentBusError("TASK_FINISHED", `task ${this.task.id} ended elsewhere`);
    const state = stateOf(event);
    const final = state !== undefined && isFinal(state);
    // Finishing before the WORKING event was due: it is not sent at all.
    if (final) this.settled();
    // Nothing is published before the run's claim on the task (a claim that
    // failed to write fails the events after it; the final state still tries).
    await this.#started().catch((err: unknown) => {
      if (!final) throw err;
    });
    if (this.stale && !final) throw new AgentBusError("TASK_FINISHED", `task ${this.task.id} ended elsewhere`);
    event = await this.#claimCheck(event, final);
    if (this.sealFor) event = this.worker.host.durable.envelopes.e2e.sealEvent(event, this.sealFor, this.task.id);
    const { durable } = this.worker.host;
    if (!final && !this.#claim && this.#finishing) {
      // A quick task's result: stored with its final state, published after
      // it (refused now if it could not be), so that a cancel that wins the
      // race leaves none of this run's events after its CANCELED one.
      durable.checkEvent(this.task, event);
      this.#held.push(event);
      this.#pending.push(event);
      return;
    }
    this.#pending.push(event);
    if (final) {
      this.#finishing = false;
      const held = this.#held.splice(0);
      await this.#flush();
      if (this.stale) return;
      for (const e of held) await durable.publishEvent(this.task, e, undefined, this.trace);
      await durable.publishEvent(this.task, event, finalEventId(this.task, this.#snapshot.revision), this.trace);
      return;
    }
    const ack = durable.publishEvent(this.task, event, undefined, this.trace);
    ack.catch(() => {}); // surfaced by the next flush
    this.#acks.push(ack);
    this.#flushTimer ??= setTimeout(() => void this.#flush().catch(() => {}), SNAPSHOT_LAG_MS);
  }

  /**
   * Counts the event's content against the task limit (`PAYLOAD_TOO_LARGE`;
   * a final status is never refused, so a task can always end) and moves
   * its large parts to the blob store: those over the inline threshold, or
   * all of them when the snapshot would otherwise outgrow one message.
   */
  async #claimCheck(event: TaskEvent, final: boolean): Promise<TaskEvent> {
    const added = eventBytes(event);
    if (added === 0 && !this.#storing) return event;
    const { blobs, store } = this.worker.host.durable;
    if (!final) blobs.checkTaskBytes(this.bytes + added, `task ${this.task.id}`);
    this.bytes += added;
    this.#inline ??= Buffer.byteLength(JSON.stringify(this.task));
    const force = store.maxBytes !== undefined && this.#inline + added > (store.maxBytes * 3) / 4;
    if (!this.#storing && !blobs.needsBlobs(eventParts(event), force)) {
      this.#inline += added;
      return event;
    }
    const stored = Promise.resolve(this.#storing)
      .catch(() => {})
      .then(() => blobs.externalizeEvent(event, { submitter: this.task.metadata.submitter, task: this.task.id }, force));
    this.#storing = stored;
    try {
      const out = await stored;
      this.#inline += partsBytes(eventParts(out).filter((p) => blobRefOf(p) === undefined));
      return out;
    } finally {
      if (this.#storing === stored) this.#storing = undefined;
    }
  }

  /** Applies the pending events to the snapshot in one compare-and-set, once their acks are in. */
  #flush(): Promise<void> {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    const acks = this.#acks.splice(0);
    const events = this.#pending.splice(0);
    // A write that failed (an oversize snapshot) fails its own flush only: the next one (the FAILED state) still runs.
    this.#chain = this.#chain.catch(() => {}).then(async () => {
      await Promise.all(acks);
      if (events.length === 0) return;
      const { durable } = this.worker.host;
      this.#snapshot = await durable.store.update(this.task.id, (t) => {
        let next = t;
        for (const e of events) {
          const state = "statusUpdate" in e ? e.statusUpdate.status.state : undefined;
          if (state ? !canMove(next.status.state, state) : isTerminal(next.status.state)) {
            this.stale = true;
            return undefined;
          }
          next = applyEvent(next, e);
        }
        return { ...next, metadata: { ...next.metadata, ...this.#ranBy() } };
      }, this.#snapshot);
      if (this.stale) this.abort.abort(new AgentBusError("TASK_FINISHED", "task ended elsewhere"));
    });
    return this.#chain;
  }

  status(message: Message): Promise<void> {
    return this.emit(statusEvent(this.task, "TASK_STATE_WORKING", this.#own(message)));
  }

  artifact(parts: Part[], o: ArtifactOptions & { artifactId: string }): Promise<void> {
    return this.emit(artifactEvent(this.task, parts, o));
  }

  message(message: Message): Promise<void> {
    return this.emit({ message: this.#own(message) });
  }

  async end(state: TaskState, message?: Message): Promise<void> {
    if (this.ended) return;
    await this.emit(statusEvent(this.task, state, message && this.#own(message)));
    this.ended = true;
  }

  working(): void {
    this.msg.working();
  }

  /** Merges `metadata` into the snapshot (after the run's claim and its pending events); a task ended meanwhile is left as it is. */
  async annotate(metadata: Record<string, unknown>): Promise<void> {
    await this.#started();
    await this.#flush();
    const { durable } = this.worker.host;
    this.#chain = this.#chain.catch(() => {}).then(async () => {
      this.#snapshot = await durable.store.update(this.task.id, (t) => {
        if (isTerminal(t.status.state)) {
          this.stale = true;
          return undefined;
        }
        return { ...t, metadata: { ...t.metadata, ...metadata } };
      }, this.#snapshot);
    });
    await this.#chain;
  }

  /** `ctx.fanOut` in a durable task (see {@link AgentContext.fanOut}). */
  async fanOut(children: ChildTask[], submit: AgentContext["submit"]): Promise<Task[]> {
    const { durable, rt } = this.worker.host;
    if (this.task.metadata.encrypted !== undefined) throw new AgentBusError("MISUSE", "fanOut in an end-to-end encrypted task is not supported");
    if (!Array.isArray(children) || children.length === 0) throw new AgentBusError("INVALID_INPUT", "fanOut needs at least one child");
    const list: FlowChild[] = children.map((c, i) => ({ id: checkId(`${this.task.id}-${c.key ?? i}`, "child task id"), capability: c.capability }));
    if (new Set(list.map((c) => c.id)).size !== list.length) throw new AgentBusError("INVALID_INPUT", "fanOut: two children have the same key");
    // Listed first: the parent is resumed only once every listed child has ended.
    await this.annotate({ children: list });
    const link: FlowLink = { parent: this.task.id, submitter: this.task.metadata.submitter, capability: this.worker.capability, region: durable.subjects.region };
    const found = await Promise.all(list.map((c) => childSnapshot(rt, durable, c.id)));
    await Promise.all(children.map((c, i) =>
      found[i] ? undefined : submit(c.capability, c.input, { ...c.options, taskId: list[i]!.id, metadata: { ...c.options?.metadata, flow: link } }),
    ));
    const now = await Promise.all(list.map((c) => childSnapshot(rt, durable, c.id)));
    if (now.every((s) => s !== undefined && isTerminal(s.task.status.state))) {
      if (this.task.metadata.waiting !== undefined) await this.annotate({ waiting: undefined });
      return now.map((s) => s!.task);
    }
    this.suspended = list.map((c) => c.id);
    throw new AgentBusError("MISUSE", `task ${this.task.id} waits for its children: its handler runs again when they have ended (do not catch this)`);
  }

  /** The task's deadline passed while it runs: canceled, with the deadline as the reason. */
  expire(deadline: number): void {
    if (this.ended || this.abort.signal.aborted) return;
    this.canceled = true;
    this.cancelReason = deadlinePassed(deadline);
    this.abort.abort(new AgentBusError("CANCELLED", this.cancelReason));
  }

  /**
   * A cancel request on `<root>.<t>.task.<id>.cancel`: from the submitter,
   * or an identity the ACL grants `task.<cap>` on this agent; anyone else
   * is answered `TASK_NOT_FOUND` (and audited).
   */
  onCancel(msg: Msg, work: Envelope): void {
    const { durable, agentId } = this.worker.host;
    let env: Envelope | undefined;
    try {
      env = durable.envelopes.open(msg);
      // Its submitter, whoever queued this turn, the agent itself, or an identity granted `task.<cap>`.
      if (env.from !== this.task.metadata.submitter && env.from !== work.from && env.from !== agentId) this.worker.host.rt.authorize(env, taskRight(this.worker.capability));
      this.canceled = true;
      this.abort.abort(new AgentBusError("CANCELLED", "task canceled"));
      reply(durable.envelopes, msg, env, {});
    } catch (err) {
      const e = isAgentBusError(err) ? err : new AgentBusError("HANDLER_FAILED", String(err));
      // To an identity without the right the task does not exist (the audit record says why).
      const shown = e.code === "DENIED" || e.code === "UNKNOWN_SENDER" ? new AgentBusError("TASK_NOT_FOUND", `task ${this.task.id} not found`) : e;
      reply(durable.envelopes, msg, env, shown.toJSON(), shown.code);
      this.worker.host.rt.audit(e.code.toLowerCase(), { code: e.code, reason: e.message, subject: msg.subject, agent: agentId });
    }
  }

  #own(message: Message): Message {
    return { ...message, taskId: this.task.id, contextId: this.task.contextId };
  }
}

const deadlinePassed = (deadline: number) => `deadline ${new Date(deadline).toISOString()} passed while the task ran`;

/** The parts an event carries (its status message's, its artifact's, its message's). */
function eventParts(event: TaskEvent): Part[] {
  if ("statusUpdate" in event) return event.statusUpdate.status.message?.parts ?? [];
  if ("artifactUpdate" in event) return event.artifactUpdate.artifact.parts;
  return event.message.parts;
}
