import { randomUUID } from "node:crypto";
import type { NatsConnection } from "@nats-io/nats-core";
import { finalEventId, type Durable, type StoredEvent } from "./durable.js";
import { AgentBusError } from "./errors.js";
import type { EnvelopeMeta } from "./envelope.js";
import { retryJs } from "./infra.js";
import { toMessage, utf8, type Input } from "./message.js";
import { checkCapability, checkId } from "./subjects.js";
import { applyEvent, isFinal, isTerminal, statusNow, stateOf, type Task, type TaskEvent } from "./task.js";
import type { Snapshot } from "./taskstore.js";
import { TaskWatch } from "./taskwatch.js";
import { SpanAttr, SpanKind, traced, type TraceContext } from "./trace.js";

/** Options of `bus.submit`. */
export interface SubmitOptions {
  /** Task id (default: the message's `taskId`, else a new UUID). Resubmitting an id never enqueues it twice. */
  taskId?: string;
  /** A2A context id (default: the message's, the task's, else a new UUID). */
  contextId?: string;
  /** Stored with the task. */
  metadata?: Record<string, unknown>;
  /** Calling task and depth, for agent-to-agent submissions. */
  parent?: string;
  depth?: number;
  trace?: TraceContext;
}

/** What submitting needs from the bus. */
export interface Submitter {
  nc: NatsConnection;
  durable: Durable;
  /** Online agents offering a capability (their work items are MACed for them as well as signed). */
  providers(cap: string): string[];
  maxDepth: number;
}

/**
 * A submitted task: follow its events, wait for its result, cancel it.
 * Holds no state of its own beyond the id; any process can build one for
 * any task id (`bus.taskHandle(id)`).
 */
export class TaskHandle {
  #watch?: TaskWatch;
  /** The task as this process created it (handles from `submit` of a new task), so callers can show it without a read. */
  readonly submitted?: Task;

  constructor(
    readonly id: string,
    readonly submitter: Submitter,
    watch?: TaskWatch,
    submitted?: Task,
  ) {
    this.#watch = watch;
    this.submitted = submitted;
  }

  /** The current snapshot. */
  async get(): Promise<Task> {
    const s = await this.submitter.durable.store.get(this.id);
    if (!s) throw new AgentBusError("TASK_NOT_FOUND", `task ${this.id} not found`);
    return s.task;
  }

  /**
   * Every event of the task from the start (or from `fromSequence`, a stream
   * sequence from an earlier event), then live; ends at a terminal state, or
   * at an interrupted one once caught up.
   */
  events(options: { fromSequence?: number } = {}): AsyncGenerator<StoredEvent> {
    return this.submitter.durable.events(this.id, options.fromSequence);
  }

  /**
   * The stream sequence of the task's latest stored event (undefined before
   * the first): `events({ fromSequence: last + 1 })` follows only what comes
   * next, e.g. the turn a follow-up message starts.
   */
  lastSequence(): Promise<number | undefined> {
    return this.submitter.durable.lastSequence(this.id);
  }

  /**
   * Resolves with the task once it is terminal or interrupted. A handle
   * from `submit` in this process already follows the task's events; any
   * other reads the snapshot, and re-reads it whenever a final event passes
   * on the task's event subject (a plain subscription, no consumer) or, as a
   * safety net for an event that passed before we listened, with backoff up
   * to every 500 ms.
   */
  async result(options: { timeout?: number; signal?: AbortSignal } = {}): Promise<Task> {
    const watch = this.#watch;
    if (watch) {
      // Submitted here: the watch has seen every event since before the work
      // was queued. Its first final state is used once; later calls (after a
      // resume) read the snapshot. The slow path runs beside it in case the
      // subscription lost events (a reconnect).
      this.#watch = undefined;
      // The safety net starts only if the watch has not answered in 200 ms:
      // on the normal path nothing is created or torn down besides a timer.
      let ac: AbortController | undefined;
      let timer: NodeJS.Timeout | undefined;
      const slow = new Promise<Task>((resolve, reject) => {
        options.signal?.addEventListener("abort", () => reject(new AgentBusError("CANCELLED", "wait aborted", { cause: options.signal?.reason })), { once: true });
        timer = setTimeout(() => {
          ac = new AbortController();
          options.signal?.addEventListener("abort", () => ac?.abort(options.signal?.reason), { once: true });
          this.#poll({ ...options, signal: ac.signal }, 200).then(resolve, reject);
        }, 200);
      });
      slow.catch(() => {}); // it loses the race on the normal path
      try {
        return await Promise.race([watch.final, slow]);
      } finally {
        clearTimeout(timer);
        ac?.abort();
        watch.stop();
      }
    }
    return this.#poll(options, 5);
  }

  /**
   * Reads the snapshot until it is final. With `follow`, reads at once and
   * again whenever a final event passes (a plain subscription); without, it
   * only backs off between reads (the safety net beside a watch).
   */
  async #poll(options: { timeout?: number; signal?: AbortSignal }, firstPauseMs: number, follow = true): Promise<Task> {
    const { nc, durable } = this.submitter;
    const deadline = Date.now() + (options.timeout ?? 300_000);
    let wake = () => {};
    let eventSeen = false;
    const sub = follow
      ? nc.subscribe(durable.subjects.taskEvents(this.id), {
          callback: (_err, m) => {
            try {
              // Only a final event matters here: check its state, then verify it.
              const state = stateOf(JSON.parse(utf8(m.data)) as TaskEvent);
              if (state && isFinal(state) && durable.decodeEvent(m)) {
                eventSeen = true;
                wake();
              }
            } catch {
              // an event we cannot verify does not wake us; the backoff still runs
            }
          },
        })
      : undefined;
    const onAbort = () => wake();
    options.signal?.addEventListener("abort", onAbort);
    try {
      for (let round = 0; ; round++) {
        if (options.signal?.aborted) throw new AgentBusError("CANCELLED", "wait aborted", { cause: options.signal.reason });
        if (follow || round > 0) {
          const snapshot = await durable.store.get(this.id);
          if (!snapshot) throw new AgentBusError("TASK_NOT_FOUND", `task ${this.id} not found`);
          if (isFinal(snapshot.task.status.state)) return snapshot.task;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new AgentBusError("TIMEOUT", `task ${this.id} did not finish in time`);
        // A final status is stored before its event is published, so after
        // the event one read suffices; without one, back off (an event may
        // have passed before we subscribed).
        const pause = Math.min(left, eventSeen ? 0 : Math.min(500, firstPauseMs * 2 ** round));
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pause);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
      }
    } finally {
      options.signal?.removeEventListener("abort", onAbort);
      sub?.unsubscribe();
    }
  }

  /**
   * Cancels the task. A queued or waiting task is marked CANCELED at once (a
   * worker that later receives it skips it, and one that took it meanwhile
   * gets a notice); a running one is asked to stop on
   * `<root>.<t>.task.<id>.cancel` and ends CANCELED when its handler
   * notices. A finished task is refused with `NOT_CANCELABLE`. `trace`
   * continues the caller's trace on the request and the CANCELED event.
   */
  async cancel(options: { timeout?: number; trace?: TraceContext } = {}): Promise<Task> {
    // A CLIENT span when an SDK is registered; the request and the CANCELED event carry its trace.
    const op = traced("cancel task", SpanKind.CLIENT, options.trace, { [SpanAttr.task]: this.id });
    return op.run(() => this.#cancel(options.timeout, op.trace));
  }

  async #cancel(timeout: number | undefined, trace: TraceContext): Promise<Task> {
    const { nc, durable } = this.submitter;
    const snapshot = await durable.store.get(this.id);
    if (!snapshot) throw new AgentBusError("TASK_NOT_FOUND", `task ${this.id} not found`);
    const { task } = snapshot;
    if (isTerminal(task.status.state)) throw new AgentBusError("NOT_CANCELABLE", `task ${this.id} is already ${task.status.state}`);
    const subject = durable.subjects.taskCancel(this.id);
    const body = Buffer.from("{}");
    const sealFor = (agent: string) => durable.envelopes.seal(subject, body, { task: this.id, trace }, [agent]);
    if (task.status.state === "TASK_STATE_WORKING" && task.metadata.agent) {
      const reply = await nc.request(subject, body, { headers: sealFor(task.metadata.agent), timeout: timeout ?? 5000 }).catch(() => undefined);
      if (reply) {
        const env = durable.envelopes.open(reply, { replay: false });
        if (env.errorCode) throw new AgentBusError(env.errorCode, (JSON.parse(utf8(reply.data)) as { message: string }).message);
        return this.result({ timeout: timeout ?? 30_000 });
      }
      // No worker is running it (crashed, or between deliveries): mark it
      // here; the redelivered work item will be skipped.
    }
    const canceled = await markCanceled(durable, snapshot, "canceled", trace);
    // A worker may have taken the task between our read and the write: it
    // learns of the cancel at its next snapshot write, which a handler that
    // waits long may not make soon. Tell it now (no answer needed).
    const agent = canceled.metadata.agent;
    if (agent) nc.publish(subject, body, { headers: sealFor(agent) });
    return canceled;
  }
}

/** Moves a task to CANCELED by compare-and-set, then records the event (final states: snapshot first). */
export async function markCanceled(durable: Durable, known: Snapshot, reason = "canceled", trace?: TraceContext): Promise<Task> {
  const status = statusNow("TASK_STATE_CANCELED", toMessage(reason, "ROLE_AGENT"));
  const event = { statusUpdate: { taskId: known.task.id, contextId: known.task.contextId, status } };
  let refused: Task | undefined;
  const next = await durable.store.update(known.task.id, (t) => {
    if (isTerminal(t.status.state)) {
      refused = t;
      return undefined;
    }
    return applyEvent(t, event);
  }, known);
  if (refused) {
    if (refused.status.state === "TASK_STATE_CANCELED") return refused;
    throw new AgentBusError("NOT_CANCELABLE", `task ${known.task.id} is already ${refused.status.state}`);
  }
  await durable.publishEvent(next.task, event, finalEventId(next.task.id, next.revision), trace);
  return next.task;
}

/**
 * Submits a task: writes the SUBMITTED snapshot, then publishes the work item
 * on `<root>.<t>.work.<cap>` with `Nats-Msg-Id` = task id. A message for a
 * task waiting in INPUT_REQUIRED resumes it on the same capability.
 */
export async function submit(s: Submitter, cap: string, input: Input, options: SubmitOptions = {}, me: string): Promise<TaskHandle> {
  checkCapability(cap);
  const depth = options.depth ?? 0;
  if (depth > s.maxDepth) throw new AgentBusError("DEPTH_EXCEEDED", `task depth ${depth} exceeds ${s.maxDepth}`);
  const message = { ...toMessage(input) };
  const taskId = checkId(options.taskId ?? message.taskId ?? randomUUID(), "task id");
  const handle = new TaskHandle(taskId, s);
  // A new task is the common case: try to create it first (one round trip),
  // and read what exists only when the id is taken.
  const fresh = !options.taskId && !message.taskId;
  const existing = fresh ? undefined : await s.durable.store.get(taskId);
  const contextId = options.contextId ?? message.contextId ?? existing?.task.contextId ?? randomUUID();
  message.taskId = taskId;
  message.contextId = contextId;
  if (!existing) {
    const task: Task = {
      id: taskId,
      contextId,
      status: statusNow("TASK_STATE_SUBMITTED"),
      artifacts: [],
      history: [message],
      metadata: { ...options.metadata, capability: cap, submitter: me, parent: options.parent, depth },
    };
    if (!fresh) {
      const created = await s.durable.store.create(task);
      if (!created) return submit(s, cap, input, { ...options, taskId }, me); // raced with another submit of the same id
      await publishWork(s, cap, message, task, taskId, options);
      return handle;
    }
    // A new id cannot collide: no read first, and the snapshot and the work
    // item are written at once (a worker that arrives before the snapshot
    // waits for it).
    const watch = new TaskWatch(s.nc, s.durable, task);
    try {
      await Promise.all([s.durable.store.create(task), publishWork(s, cap, message, task, taskId, options)]);
    } catch (err) {
      watch.stop();
      throw err;
    }
    return new TaskHandle(taskId, s, watch, task);
  }
  const state = existing.task.status.state;
  if (existing.task.metadata.capability !== cap) {
    throw new AgentBusError("INVALID_INPUT", `task ${taskId} belongs to capability ${existing.task.metadata.capability}`);
  }
  if (state === "TASK_STATE_SUBMITTED") {
    // A retried submit: same Nats-Msg-Id, so JetStream keeps one copy.
    await publishWork(s, cap, existing.task.history[0] ?? message, existing.task, taskId, options);
    return handle;
  }
  if (state === "TASK_STATE_INPUT_REQUIRED" || state === "TASK_STATE_AUTH_REQUIRED") {
    const turn = existing.task.history.length;
    const resumed = await s.durable.store.update(taskId, (t) =>
      t.status.state === state ? { ...t, status: statusNow("TASK_STATE_WORKING"), history: [...t.history, message] } : undefined,
    existing);
    if (resumed.task.status.state !== "TASK_STATE_WORKING") return handle;
    await publishWork(s, cap, message, resumed.task, `${taskId}.${turn}`, options);
    return handle;
  }
  if (isTerminal(state)) throw new AgentBusError("TASK_FINISHED", `task ${taskId} is already ${state}`);
  return handle; // running: the submit was a retry
}

async function publishWork(s: Submitter, cap: string, message: unknown, task: Task, msgId: string, o: SubmitOptions): Promise<void> {
  const subject = s.durable.subjects.work(cap);
  const body = Buffer.from(JSON.stringify(message));
  // The trace is the submit's own hop already (bus.submit made it a child of the caller's).
  const meta: EnvelopeMeta = { task: task.id, context: task.contextId, parent: o.parent, depth: o.depth ?? 0, trace: o.trace };
  // Signed for whichever replica takes it (even one not running yet), and
  // MACed for the ones we know so they skip the signature check.
  const headers = s.durable.envelopes.seal(subject, body, meta, s.providers(cap), { id: msgId, sign: true });
  await retryJs(() => s.durable.js.publish(subject, body, { headers, msgID: msgId }));
}
