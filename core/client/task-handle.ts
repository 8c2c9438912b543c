import { randomUUID } from "node:crypto";
import { checkDepth } from "../options.js";
import { partsBytes, taskBytes } from "../store/blobs.js";
import { deadlineMissed, deadlineOf, markEnded, taskKey, type Durable, type StoredEvent } from "../store/task-log.js";
import { AgentBusError, isAgentBusError, typedPayloadError } from "../wire/errors.js";
import { E2E_SCHEME, taskBinding } from "../security/e2e.js";
import type { EnvelopeMeta } from "../security/envelope.js";
import { retryJs, withinMs } from "../infra/jetstream.js";
import { toMessage, utf8, type Input } from "../wire/message.js";
import { checkCapability, checkId } from "../wire/subjects.js";
import { TASK_PRIORITIES, TASK_STATES, isFinal, isTerminal, newTaskId, priorityOf, statusNow, stateOf, taskIdBinds, type Task, type TaskEvent, type TaskPriority, type TaskState } from "../wire/task.js";
import { page, type Snapshot, type TaskPage, type TaskQuery } from "../store/task-snapshots.js";
import { exchange } from "./call.js";
import { TaskWatch } from "./task-watch.js";
import { forwardTask } from "./outbox.js";
import type { Runtime } from "../runtime.js";
import { SpanAttr, SpanKind, activeTracer, busSpan, endSpan, traceOf, traced, type TraceContext } from "../wire/trace.js";

/** Options of `bus.submit`. */
export interface SubmitOptions {
  /**
   * Task id (default: the message's `taskId`, else 128 random bits in hex).
   * Resubmitting an id never enqueues it twice; an id that belongs to a task
   * this identity (and caller) did not submit is `TASK_NOT_FOUND`.
   */
  taskId?: string;
  /** A2A context id (default: the message's, the task's, else a new UUID). */
  contextId?: string;
  /** Stored with the task. */
  metadata?: Record<string, unknown>;
  /** Calling task and depth, for agent-to-agent submissions. */
  parent?: string;
  depth?: number;
  trace?: TraceContext;
  /**
   * Behind a bridge: who the submitting identity acts for (the API key's
   * name, `oidc:<sub>` for a bearer token). Recorded as `metadata.caller`
   * (the serving agent sees it as `ctx.caller`); the task is then read,
   * followed, listed and cancelled through this identity only with the same
   * caller.
   */
  caller?: string;
  /**
   * Encrypt the task end to end: the work item for every registered
   * provider of the capability (online or not; never a revoked one), the
   * snapshot's history for them and this identity, and the task's events
   * and artifacts (by the worker) for this identity and the providers.
   * `NO_RESPONDERS` when no provider is registered. A task submitted
   * encrypted stays encrypted on later turns.
   */
  encrypt?: boolean;
  /**
   * Run the task at this time (a `Date`, or ms since the epoch), not
   * before: it is SUBMITTED at once (readable, listed, cancelable) and its
   * work item waits in the work stream (a message schedule) until then,
   * surviving restarts of every process and of nats-server; the time shows
   * as `metadata.runAt` (ms). A time already past runs it now. For a new
   * task only; at most the task retention (`eventsMaxAgeMs`, 7 days by
   * default) ahead. Needs nats-server 2.12 (`SERVER_TOO_OLD` before).
   */
  runAt?: Date | number;
  /** Run the task this many ms from now (as {@link runAt}; not both). */
  delayMs?: number;
  /**
   * The latest time the task may start (a `Date`, or ms since the epoch),
   * shown as `metadata.deadline` (ms). Not started by then, it ends FAILED
   * with the deadline as the reason, and is never run late: the first
   * worker to receive it ends it so, or the submitter's `result()` waiting
   * for it at that time. Still running then, it is canceled (its handler's
   * signal aborts, and it ends CANCELED with the deadline as the reason).
   * For a new task only; after `runAt` when both are given.
   */
  deadline?: Date | number;
  /** The deadline as ms from now (as {@link deadline}; not both). */
  ttlMs?: number;
  /**
   * How urgent the task is (default `"normal"`), shown as
   * `metadata.priority` for high and low: its work item goes to
   * `<root>.<t>.work.<cap>.HIGH` or `.LOW`, and a worker takes the highest
   * level waiting first (see {@link TaskPriority}). For a new task; a later
   * turn keeps the task's.
   */
  priority?: TaskPriority;
  /**
   * On a federated bus (`ConnectOptions.regions`): pin the task to this
   * region (data residency). Its work item, snapshot and events are kept
   * there only and only a provider running there serves it; with none
   * there, it waits for one. Shown as `metadata.region` with
   * `metadata.pinned`. Without it a new task is queued in the submitter's
   * region when a provider runs there, else in the nearest region (first
   * in `regions`) with one, else in the submitter's, where it waits; the
   * region it was queued and ran in is `metadata.region`. `INVALID_INPUT`
   * for a region not among the bus's regions.
   */
  region?: string;
  /**
   * The id of an earlier task this one submits again (the same work after
   * that one failed or was canceled), recorded as `metadata.retryOf` for
   * whoever reads the task; it gives no access to that task. For a new
   * task only (a later turn keeps the task's).
   */
  retryOf?: string;
}

/** Options of `bus.task` and `bus.taskHandle`. */
export interface TaskAccessOptions {
  /** Behind a bridge: the caller the request comes from (see {@link SubmitOptions.caller}). */
  caller?: string;
}

/** What submitting and task handles use: the bus's runtime, and its task streams, open. */
export interface Submitter {
  readonly rt: Runtime;
  readonly durable: Durable;
}

/**
 * Whether `s`'s identity may read, follow and cancel `task`: its submitter
 * (behind a bridge, with `caller`: only when the same caller submitted it),
 * the agent serving it, or an identity granted `task.<cap>`. A request with
 * a caller is only ever the caller's own: grants are for identities. (A
 * handle also lets through whoever may see the task's parent: see
 * {@link mayAccessOrAncestor}.)
 */
export function mayAccess(s: Pick<Submitter, "rt">, task: Task, caller?: string): boolean {
  const m = task.metadata;
  if (caller !== undefined) return m.submitter === s.rt.id && m.caller === caller;
  return m.submitter === s.rt.id || m.agent === s.rt.id || s.rt.granted(m.capability, m.agent);
}

/**
 * {@link mayAccess}, or, for a task an agent submitted while working on
 * another (`metadata.parent`), access to that task: whoever may see a task
 * may see the tasks submitted for it, up to `maxDepth` levels up (one
 * snapshot read per level, only when the task itself is refused).
 */
export async function mayAccessOrAncestor(s: Submitter, task: Task, caller?: string): Promise<boolean> {
  let current: Task | undefined = task;
  for (let level = 0; current && level <= s.rt.options.maxDepth; level++) {
    if (mayAccess(s, current, caller)) return true;
    const parent: unknown = current.metadata.parent;
    current = typeof parent === "string" && parent !== current.id ? (await s.durable.store.get(parent, s.rt.id))?.task : undefined;
  }
  return false;
}

/** Whether `s`'s identity (and `caller`) submitted `task`: only the owner continues it. */
const owns = (s: Pick<Submitter, "rt">, task: Task, caller?: string): boolean =>
  task.metadata.submitter === s.rt.id && (caller === undefined || task.metadata.caller === caller);

const notFound = (id: string) => new AgentBusError("TASK_NOT_FOUND", `task ${id} not found`);


/**
 * The tasks `s`'s identity may see, newest first. A caller, or an identity
 * that neither serves an agent nor holds a task right, lists its own tasks
 * through the owner index (its prefix only, not the tenant's snapshots);
 * the others read every snapshot and keep those {@link mayAccess} allows.
 */
export async function listTasks(s: Submitter, query: TaskQuery = {}): Promise<TaskPage> {
  for (const state of query.state === undefined ? [] : Array.isArray(query.state) ? query.state : [query.state]) {
    if (!TASK_STATES.includes(state as TaskState)) throw new AgentBusError("INVALID_INPUT", `unknown task state ${String(state)}; one of ${TASK_STATES.join(", ")}`);
  }
  if (query.statusTimestampAfter !== undefined && !(ISO_TIME.test(query.statusTimestampAfter) && !Number.isNaN(Date.parse(query.statusTimestampAfter)))) {
    throw new AgentBusError("INVALID_INPUT", `statusTimestampAfter ${JSON.stringify(query.statusTimestampAfter)} is not an ISO 8601 time`);
  }
  const owned = query.caller !== undefined || !s.rt.observes();
  const find = (durable: Durable) => (owned ? durable.store.owned(s.rt.id, query.caller, query) : durable.store.matching(query, (t) => mayAccess(s, t)));
  // Federated: every region's tasks, a region that does not answer in time left out.
  const others = (s.rt.options.regions ?? []).filter((r) => r !== s.rt.subjects.region);
  const found = await Promise.all([find(s.durable), ...others.map((r) => withinMs(s.rt.tasks(r).then(find), REGION_WAIT_MS).catch(() => []))]);
  // The caller's own filter sees the tasks as listed, so every candidate is opened first.
  const { where } = query;
  if (where) return page(found.flat().map((t) => openTask(s, t)).filter((t) => where(t)), query);
  const p = page(found.flat(), query);
  return { ...p, tasks: p.tasks.map((t) => openTask(s, t)) };
}

/** An ISO 8601 date or date-time (RFC 3339 profile): `2026-12-05`, `2026-12-05T10:00:00Z`, with fractions or an offset. */
const ISO_TIME = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?$/;

/** How long a federated read waits for another region's plane before going on without it. */
const REGION_WAIT_MS = 3_000;


/** `task` with what is encrypted for `s`'s identity opened (as is when not encrypted). */
const openTask = (s: Pick<Submitter, "durable">, task: Task): Task => (task.metadata.encrypted ? s.durable.envelopes.e2e.openTask(task) : task);

/** {@link openTask}, then every blob reference it holds swapped for its content. */
const readTask = (s: Pick<Submitter, "durable">, task: Task): Promise<Task> => s.durable.blobs.resolveTask(openTask(s, task));

/**
 * A submitted task: follow its events, wait for its result, cancel it.
 * Holds no state of its own beyond the id; any process can build one for
 * any task id (`bus.taskHandle(id)`).
 */
export class TaskHandle {
  #watch?: TaskWatch;
  /**
   * The task as this `submit` left it (created, or resumed with the message
   * when it continues a waiting task), so callers can show it without a
   * read. The events that follow it, with no gap and no repeat: a new
   * task's `events()`; a resumed turn's `events({ fromSequence })` from its
   * `lastSequence()` + 1 read before the submit.
   */
  readonly submitted?: Task;
  /** Behind a bridge: the caller this handle acts for (see {@link SubmitOptions.caller}). */
  readonly caller?: string;

  constructor(
    readonly id: string,
    readonly submitter: Submitter,
    options: { watch?: TaskWatch; submitted?: Task; caller?: string } = {},
  ) {
    this.#watch = options.watch;
    this.submitted = options.submitted;
    this.caller = options.caller;
  }

  /**
   * The snapshot, if this identity (and caller) may see it: to anyone else
   * the task does not exist (`TASK_NOT_FOUND`, as for an unknown id).
   * `direct`: only through the task itself, not its parent (for cancel).
   */
  async #read(direct = false): Promise<Snapshot> {
    const s = await this.submitter.durable.store.get(this.id, this.submitter.rt.id);
    if (!s || !(direct ? mayAccess(this.submitter, s.task, this.caller) : await this.#may(s.task))) throw notFound(this.id);
    return s;
  }

  #may(task: Task): boolean | Promise<boolean> {
    // The common case needs no read: the task itself decides.
    return mayAccess(this.submitter, task, this.caller) || mayAccessOrAncestor(this.submitter, task, this.caller);
  }

  /**
   * The current snapshot (`TASK_NOT_FOUND` when unknown or not this
   * identity's to see). Of an encrypted task, what is encrypted for this
   * identity comes opened; the rest stays encrypted parts.
   */
  async get(): Promise<Task> {
    const { task } = await this.#read();
    // At an edge site, a task forwarded to the hub is read there (as stored at the edge while the hub does not answer).
    const hub = this.#isForward(task) ? await this.#atHub(task).catch(() => undefined) : undefined;
    if (hub) return hub.get().catch(() => readTask(this.submitter, task));
    return readTask(this.submitter, task);
  }

  /**
   * The snapshot as listings show it (`TASK_NOT_FOUND` as for {@link get}):
   * what is encrypted for this identity opened, blob references left as
   * stored (not fetched), and at an edge site the edge's copy. One read:
   * for views that show a task's state and metadata, not its content.
   */
  async stored(): Promise<Task> {
    return openTask(this.submitter, (await this.#read()).task);
  }

  /**
   * At an edge site (`ConnectOptions.hub`): for a task stored at the edge
   * for the hub (`metadata.forward`), the handle on its copy in the hub's
   * plane once it was forwarded (`metadata.forwarded`); undefined for any
   * other task, or one not forwarded yet. Rejected while the hub does not
   * answer.
   */
  async #atHub(task: Task): Promise<TaskHandle | undefined> {
    const { rt } = this.submitter;
    if (!rt.options.hub || task.metadata.forward === undefined || task.metadata.forwarded === undefined) return undefined;
    return new TaskHandle(this.id, { rt, durable: await rt.hubTasks() }, { caller: this.caller });
  }

  /** At an edge site, for a task stored there for the hub: waits until it is forwarded (its hub handle) or ends at the edge (undefined). */
  async #forwarded(options: { timeout?: number; signal?: AbortSignal }): Promise<TaskHandle | undefined> {
    const deadline = Date.now() + (options.timeout ?? 300_000);
    for (;;) {
      if (options.signal?.aborted) throw new AgentBusError("CANCELLED", "wait aborted", { cause: options.signal.reason });
      const { task } = await this.#read();
      if (isFinal(task.status.state)) return undefined;
      const hub = await this.#atHub(task).catch(() => undefined);
      if (hub) return hub;
      if (Date.now() >= deadline) throw new AgentBusError("TIMEOUT", `task ${this.id} was not forwarded to the hub in time`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** At an edge site: whether `task` (this handle's, as submitted) is one stored there for the hub. */
  #isForward(task?: Task): boolean {
    return this.submitter.rt.options.hub !== undefined && task?.metadata.forward !== undefined;
  }

  /**
   * Every event of the task from the start (or from `fromSequence`, a stream
   * sequence from an earlier event), then live; ends at a terminal state, or
   * at an interrupted one once caught up (with `untilTerminal`, follows an
   * interrupted task on through its next turns until it ends). Aborting
   * `signal` ends it at once, even while no event comes (a relay whose
   * client went away). `TASK_NOT_FOUND` (at the first read) for a task this
   * identity may not see.
   */
  events(options: { fromSequence?: number; untilTerminal?: boolean; signal?: AbortSignal } = {}): AsyncGenerator<StoredEvent> {
    if (this.submitter.rt.options.hub) return this.#edgeEvents(options);
    // A handle from `submit` knows the task already: no snapshot read.
    return this.submitter.durable.events(this.id, { ...options, may: (t) => this.#may(t), known: this.submitted });
  }

  /** {@link events} at an edge site: a task stored there for the hub has its events in the hub, once forwarded. */
  async *#edgeEvents(options: { fromSequence?: number; untilTerminal?: boolean; signal?: AbortSignal }): AsyncGenerator<StoredEvent> {
    const task = this.submitted ?? (await this.#read()).task;
    if (!this.#isForward(task)) return yield* this.submitter.durable.events(this.id, { ...options, may: (t) => this.#may(t), known: this.submitted });
    const hub = await this.#forwarded({});
    if (hub) yield* hub.events(options);
  }

  /**
   * The stream sequence of the task's latest stored event (undefined before
   * the first): `events({ fromSequence: last + 1 })` follows only what comes
   * next, e.g. the turn a follow-up message starts.
   */
  async lastSequence(): Promise<number | undefined> {
    const { task } = await this.#read();
    if (this.#isForward(task)) return (await this.#atHub(task))?.lastSequence();
    return this.submitter.durable.lastSequence(task);
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
    if (this.#isForward(this.submitted ?? (this.submitter.rt.options.hub ? (await this.#read()).task : undefined))) {
      // Stored at the edge for the hub: its result comes from the hub once it is forwarded.
      const started = Date.now();
      const hub = await this.#forwarded(options);
      if (!hub) return readTask(this.submitter, (await this.#read()).task);
      return hub.result({ ...options, ...(options.timeout !== undefined && { timeout: Math.max(1, options.timeout - (Date.now() - started)) }) });
    }
    // Waiting for a task with a deadline that no worker took by then: the submitter ends it FAILED.
    const deadline = this.submitted ? deadlineOf(this.submitted) : undefined;
    const timer = deadline === undefined ? undefined : setTimeout(() => void this.#expire(deadline).catch(() => {}), Math.max(0, deadline - Date.now()) + 20);
    try {
      return readTask(this.submitter, await this.#result(options));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Ends the task FAILED when it is still queued past its deadline (its own submitter's handle only). */
  async #expire(deadline: number): Promise<void> {
    const s = await this.submitter.durable.store.get(this.id, this.submitter.rt.id);
    if (!s || !owns(this.submitter, s.task, this.caller) || s.task.status.state !== "TASK_STATE_SUBMITTED") return;
    await markEnded(this.submitter.durable, s, "TASK_STATE_FAILED", deadlineMissed(deadline), undefined, (t) => t.status.state !== "TASK_STATE_SUBMITTED").catch(() => undefined);
  }

  async #result(options: { timeout?: number; signal?: AbortSignal }): Promise<Task> {
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
    const { rt: { nc }, durable } = this.submitter;
    const deadline = Date.now() + (options.timeout ?? 300_000);
    let wake = () => {};
    let eventSeen = false;
    // Following: the first read names the submitter, under whose id the events go.
    const first = follow ? await this.#read() : undefined;
    if (first && isFinal(first.task.status.state)) return first.task;
    const sub = first
      ? nc.subscribe(durable.subjects.taskEventLog(first.task.metadata.submitter, this.id), {
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
          const snapshot = await this.#read();
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
    const { rt, durable } = this.submitter;
    if (rt.options.hub) {
      // At an edge site: a task stored there for the hub is canceled there until it leaves, in the hub after.
      const stored = await this.#read(true);
      if (this.#isForward(stored.task)) {
        const hub = await this.#atHub(stored.task);
        if (hub) return hub.cancel({ timeout, trace });
        if (isTerminal(stored.task.status.state)) throw new AgentBusError("NOT_CANCELABLE", `task ${this.id} is already ${stored.task.status.state}`);
        const ended = await markEnded(durable, stored, "TASK_STATE_CANCELED", "task canceled before it was forwarded to the hub", trace, (t) => t.metadata.forwarded !== undefined);
        if (ended) return ended;
        return this.#cancel(timeout, trace); // forwarded meanwhile: cancel it in the hub
      }
    }
    const subject = durable.subjects.taskCancel(this.id);
    const body = Buffer.from("{}");
    const sealFor = (agent: string) => durable.envelopes.seal(subject, body, { task: this.id, trace }, [agent]);
    // No worker answered the request: the task is marked here even if one names itself.
    let unanswered = false;
    for (;;) {
      // Seeing a task through its parent is not a right to cancel it (its worker would refuse): cancel the parent.
      const snapshot = await this.#read(true);
      const { task } = snapshot;
      if (isTerminal(task.status.state)) throw new AgentBusError("NOT_CANCELABLE", `task ${this.id} is already ${task.status.state}`);
      if (held(task) && !unanswered) {
        // A worker holds it: only that worker writes the task's events, so it
        // is the one to end it (a CANCELED event of ours could land before
        // events it is still publishing).
        const agent = task.metadata.agent!;
        // Its refusal (an error reply) is thrown; no answer in time, or nobody there, is no answer.
        const answered = await exchange(rt, subject, body, { task: this.id, trace }, [agent], { timeout: timeout ?? 5000, target: agent }).then(
          () => true,
          (err: unknown) => {
            if (isAgentBusError(err, "TIMEOUT") || isAgentBusError(err, "NO_RESPONDERS") || isAgentBusError(err, "UNAVAILABLE")) return false;
            throw err;
          },
        );
        if (answered) {
          const ended = await this.result({ timeout: timeout ?? 30_000 });
          if (ended.status.state === "TASK_STATE_CANCELED") return ended;
          // It finished first: the cancel came too late.
          if (isTerminal(ended.status.state)) throw new AgentBusError("NOT_CANCELABLE", `task ${this.id} is already ${ended.status.state}`);
          continue; // it stopped to wait for input: mark it
        }
        // No worker is running it (crashed, or between deliveries): mark it
        // here; the redelivered work item will be skipped.
        unanswered = true;
      }
      const canceled = await markEnded(durable, snapshot, "TASK_STATE_CANCELED", "canceled", trace, unanswered ? undefined : held);
      if (!canceled) continue; // a worker took it meanwhile (its first write names it): ask it
      // A worker may have taken the task between our read and the write,
      // before its first snapshot write: that write finds the task ended and
      // it publishes nothing, but a handler that waits long may not write
      // soon. Tell it now (no answer needed): MACed for the agent the
      // snapshot names, else signed for whichever worker holds it.
      const agent = canceled.metadata.agent;
      rt.nc.publish(subject, body, { headers: agent ? sealFor(agent) : durable.envelopes.seal(subject, body, { task: this.id, trace }) });
      return canceled;
    }
  }
}

/** A worker is running the task: WORKING, and its snapshot names the worker's agent. */
const held = (task: Task): boolean => task.status.state === "TASK_STATE_WORKING" && task.metadata.agent !== undefined;

/**
 * The runtime with its task streams open (created on first use): what
 * submitting and task handles use. On a federated bus, this region's, or
 * with `region` that region's.
 */
export async function submitterOf(rt: Runtime, region?: string): Promise<Submitter> {
  return { rt, durable: await rt.tasks(region) };
}

/**
 * Where a submit goes (see {@link SubmitOptions.region}): the plane of the
 * task it continues, wherever that is; else of the pinned region; else of
 * the submitter's region when a provider of `cap` runs there, else of the
 * first region in `regions` with one, else of the submitter's. The
 * tenant's only plane when the bus is not federated.
 */
async function submitterFor(rt: Runtime, cap: string, input: Input, options: SubmitOptions): Promise<Submitter> {
  const regions = rt.options.regions;
  const pin = options.region;
  if (regions === undefined) {
    if (pin !== undefined) throw new AgentBusError("INVALID_INPUT", "region pins a task on a federated bus only (ConnectOptions.regions)");
    return submitterOf(rt);
  }
  const taskId = options.taskId ?? toMessage(input).taskId;
  if (taskId !== undefined) {
    // Only where this identity keeps its tasks: a region that is down is not waited for (an id is unique per submitter and region it submits from).
    const { durable, snapshot } = await rt.locate(checkId(taskId, "task id"), { probe: false });
    if (snapshot) return { rt, durable };
  }
  if (pin !== undefined) {
    if (!regions.includes(pin)) throw new AgentBusError("INVALID_INPUT", `region ${JSON.stringify(pin)} is not one of this bus's regions (${regions.join(", ")})`);
    return submitterOf(rt, pin);
  }
  const home = rt.subjects.region!;
  const region = [home, ...regions.filter((r) => r !== home)].find((r) => rt.serves(cap, r)) ?? home;
  return submitterOf(rt, region);
}

/**
 * `bus.submit` (and `ctx.submit`): {@link submit} as the runtime's
 * identity, inside a PRODUCER span when an OpenTelemetry SDK is registered
 * (the work item carries its context).
 */
export async function submitTask(rt: Runtime, cap: string, input: Input, options: SubmitOptions = {}): Promise<TaskHandle> {
  if (rt.options.hub) {
    const edge = await edgeSubmit(rt, cap, input, options);
    if (edge) return edge;
  }
  const tracer = activeTracer();
  const span = tracer && busSpan(tracer, "submit", cap, rt.subjects.work(cap), rt.subjects.tenant, options.trace, undefined, options.taskId);
  const withTrace = { ...options, trace: traceOf(span, options.trace) };
  const to = () => submitterFor(rt, cap, input, options);
  if (!span) return submit(await to(), cap, input, withTrace, rt.id);
  try {
    const handle = await submit(await to(), cap, input, withTrace, rt.id);
    span.setAttribute(SpanAttr.task, handle.id);
    endSpan(span);
    return handle;
  } catch (err) {
    endSpan(span, err);
    throw err;
  }
}

/**
 * A submit at an edge site (`ConnectOptions.hub`) for a capability with no
 * live provider at the edge: stored there and forwarded to the hub (see
 * `core/client/outbox.ts`); a later turn of a task forwarded already goes
 * to the hub at once. Undefined when the edge serves it (or the id is of a
 * task kept at the edge): submitted here as anywhere.
 */
async function edgeSubmit(rt: Runtime, cap: string, input: Input, options: SubmitOptions): Promise<TaskHandle | undefined> {
  const local = await submitterOf(rt);
  const taskId = options.taskId ?? toMessage(input).taskId;
  const existing = taskId === undefined ? undefined : await local.durable.store.get(checkId(taskId, "task id"), rt.id);
  if (existing && existing.task.metadata.forward === undefined) return undefined;
  if (existing?.task.metadata.forwarded !== undefined) return submit({ rt, durable: await rt.hubTasks() }, cap, input, options, rt.id);
  if (!existing && rt.serves(cap)) return undefined;
  const task = await forwardTask(rt, cap, input, { ...options, taskId: taskId ?? options.taskId }, rt.id);
  return new TaskHandle(task.id, local, { submitted: task, caller: options.caller });
}

/**
 * Submits a task: writes the SUBMITTED snapshot, then publishes the work item
 * on `<root>.<t>.work.<cap>` with `Nats-Msg-Id` = task id. A message for a
 * task waiting in INPUT_REQUIRED resumes it on the same capability.
 */
export async function submit(s: Submitter, cap: string, input: Input, options: SubmitOptions = {}, me: string): Promise<TaskHandle> {
  checkCapability(cap);
  const depth = options.depth ?? 0;
  checkDepth(depth, s.rt.options.maxDepth, "task");
  const message = { ...toMessage(input) };
  const taskId = checkId(options.taskId ?? message.taskId ?? newTaskId(me), "task id");
  const { caller } = options;
  const handle = new TaskHandle(taskId, s, { caller });
  // A new task is the common case: try to create it first (one round trip),
  // and read what exists only when the id is taken.
  const fresh = !options.taskId && !message.taskId;
  const runAt = delayedUntil(s, options);
  const deadline = deadlineFrom(options, runAt);
  if (options.priority !== undefined && !TASK_PRIORITIES.includes(options.priority)) {
    throw new AgentBusError("INVALID_INPUT", `priority must be one of ${TASK_PRIORITIES.join(", ")}, not ${JSON.stringify(options.priority)}`);
  }
  const priority = options.priority === "normal" ? undefined : options.priority;
  // An id of the generated form is someone's: only the submitter it names may use it.
  if (!fresh && taskIdBinds(taskId, me) === false) throw notFound(taskId);
  const existing = fresh ? undefined : await s.durable.store.get(taskId, me);
  // Someone else's task is not there for this submitter: it cannot be continued, nor learnt of.
  if (existing && !owns(s, existing.task, caller)) throw notFound(taskId);
  // A retried delayed submit keeps the time it was first given; a delay does not apply to a later turn.
  if (existing && runAt !== undefined && existing.task.metadata.runAt === undefined) {
    throw new AgentBusError("INVALID_INPUT", `task ${taskId} exists: runAt and delayMs apply to a new task`);
  }
  if (existing && deadline !== undefined && existing.task.metadata.deadline === undefined) {
    throw new AgentBusError("INVALID_INPUT", `task ${taskId} exists: deadline and ttlMs apply to a new task`);
  }
  if (existing && options.priority !== undefined && options.priority !== priorityOf(existing.task)) {
    throw new AgentBusError("INVALID_INPUT", `task ${taskId} exists with priority ${priorityOf(existing.task)}: a priority applies to a new task`);
  }
  const contextId = options.contextId ?? message.contextId ?? existing?.task.contextId ?? randomUUID();
  message.taskId = taskId;
  message.contextId = contextId;
  // Encrypted (asked now, or the task was): the work item for the providers, the stored message for them and us.
  const encryptFor = options.encrypt || existing?.task.metadata.encrypted !== undefined ? s.rt.encryptionRecipients(cap) : undefined;
  // Over the task limit: refused before anything is written. Large parts go
  // to the blob store first; the work item and the snapshot carry references.
  const { blobs } = s.durable;
  blobs.checkTaskBytes((existing ? taskBytes(openTask(s, existing.task)) : 0) + partsBytes(message.parts), `task ${taskId}`);
  const carried = await blobs.externalizeMessage(message, { submitter: me, task: taskId });
  const stored = encryptFor ? s.durable.envelopes.e2e.sealMessage(carried, [me, ...encryptFor], taskBinding(taskId)) : carried;
  if (!existing) {
    const task: Task = {
      id: taskId,
      contextId,
      status: statusNow("TASK_STATE_SUBMITTED"),
      artifacts: [],
      history: [stored],
      metadata: {
        ...options.metadata, capability: cap, submitter: me, caller, parent: options.parent, depth, ...(encryptFor && { encrypted: E2E_SCHEME }), runAt, deadline, priority,
        createdAt: Date.now(), ...(options.retryOf !== undefined && { retryOf: checkId(options.retryOf, "retryOf") }),
        // Federated: the region it is queued in, and whether it may run nowhere else.
        ...(s.durable.subjects.region !== undefined && { region: s.durable.subjects.region, ...(options.region !== undefined && { pinned: true }) }),
      },
    };
    // Encoded once, and refused (PAYLOAD_TOO_LARGE) before anything is
    // written when it would not fit one message: a task is accepted whole
    // or not at all (the work item holds less than its snapshot).
    const body = s.durable.store.encode(task);
    if (!fresh) {
      // Recorded before it exists: a retry of this id from here finds it, whatever happens next.
      await placeElsewhere(s, task);
      const created = await s.durable.store.create(task, s.rt.providers(cap), body);
      if (!created) return submit(s, cap, input, { ...options, taskId }, me); // raced with another submit of the same id
      await Promise.all([s.durable.store.index(task), publishWork(s, cap, carried, task, taskKey(task), options, encryptFor)]);
      return handle;
    }
    // A new id cannot collide: no read first, and the snapshot, its owner
    // index entry and the work item are written at once (a worker that
    // arrives before the snapshot waits for it).
    // The watch folds events onto the task as submitted, with its input as given (nothing to open or fetch back).
    const submitted = stored !== message ? { ...task, history: [message] } : task;
    const watch = new TaskWatch(s.rt.nc, s.durable, submitted);
    try {
      await Promise.all([s.durable.store.create(task, s.rt.providers(cap), body), s.durable.store.index(task), placeElsewhere(s, task), publishWork(s, cap, carried, task, taskKey(task), options, encryptFor)]);
    } catch (err) {
      watch.stop();
      throw err;
    }
    return new TaskHandle(taskId, s, { watch, submitted, caller });
  }
  const state = existing.task.status.state;
  if (existing.task.metadata.capability !== cap) {
    throw new AgentBusError("INVALID_INPUT", `task ${taskId} belongs to capability ${existing.task.metadata.capability}`);
  }
  if (state === "TASK_STATE_SUBMITTED") {
    // A retried submit: same Nats-Msg-Id, so JetStream keeps one copy.
    await publishWork(s, cap, encryptFor ? carried : (existing.task.history[0] ?? carried), existing.task, taskKey(existing.task), options, encryptFor);
    return handle;
  }
  if (state === "TASK_STATE_INPUT_REQUIRED" || state === "TASK_STATE_AUTH_REQUIRED") {
    const turn = existing.task.history.length;
    const resumed = await s.durable.store.update(taskId, (t) =>
      t.status.state === state ? { ...t, status: statusNow("TASK_STATE_WORKING"), history: [...t.history, stored] } : undefined,
    existing);
    if (resumed.task.status.state !== "TASK_STATE_WORKING") return handle;
    await publishWork(s, cap, carried, resumed.task, `${taskKey(resumed.task)}.${turn}`, options, encryptFor);
    // The task as resumed, with this turn's message as given (nothing to open or fetch back) and earlier turns' content read.
    const opened = openTask(s, resumed.task);
    const submitted = await s.durable.blobs.resolveTask({ ...opened, history: [...opened.history.slice(0, -1), message] });
    return new TaskHandle(taskId, s, { submitted, caller });
  }
  if (isTerminal(state)) throw new AgentBusError("TASK_FINISHED", `task ${taskId} is already ${state}`);
  return handle; // running: the submit was a retry
}

/** A new task kept in another region than the submitter's: recorded in the submitter's region (see {@link Runtime.locate}). */
async function placeElsewhere(s: Submitter, task: Task): Promise<void> {
  const region = s.durable.subjects.region;
  if (region === undefined || region === s.rt.subjects.region) return;
  await (await s.rt.tasks()).store.place(task.metadata.submitter, task.id, region);
}

async function publishWork(s: Submitter, cap: string, message: unknown, task: Task, msgId: string, o: SubmitOptions, encryptFor?: string[]): Promise<void> {
  const target = s.durable.subjects.work(cap, priorityOf(task));
  // A delayed task's work item waits on its own subject until the server's schedule publishes it to the target.
  const runAt = typeof task.metadata.runAt === "number" && msgId === taskKey(task) ? task.metadata.runAt : undefined;
  const subject = runAt === undefined ? target : s.durable.subjects.delayedWork(task.metadata.submitter, task.id);
  let body: Uint8Array = Buffer.from(JSON.stringify(message));
  // The trace is the submit's own hop already (bus.submit made it a child of the caller's).
  const meta: EnvelopeMeta = { task: task.id, context: task.contextId, parent: o.parent, depth: o.depth ?? 0, trace: o.trace, runAt };
  // Signed for whichever replica takes it (even one not running yet), and
  // MACed for the ones we know so they skip the signature check; with
  // encryptFor, the body is encrypted for those providers. Sealed for the
  // subject it is taken from.
  let headers;
  if (encryptFor) ({ headers, body } = s.durable.envelopes.sealEncrypted(target, body, encryptFor, meta, s.rt.providers(cap), { id: msgId, sign: true }));
  else headers = s.durable.envelopes.seal(target, body, meta, s.rt.providers(cap), { id: msgId, sign: true });
  if (runAt !== undefined) {
    headers.set(SCHEDULE, `@at ${new Date(runAt).toISOString()}`);
    headers.set(SCHEDULE_TARGET, target);
  }
  await retryJs(() => s.durable.js.publish(subject, body, { headers, msgID: msgId })).catch((err: unknown) => {
    throw typedPayloadError(err, `the work item of task ${task.id} (${body.length} bytes)`);
  });
}

/**
 * The deadline a submit asks for (`deadline`, or now + `ttlMs`), ms since
 * the epoch; undefined for none. Checked before anything is written: one
 * already past, or not after `runAt`, could never let the task start.
 */
function deadlineFrom(o: SubmitOptions, runAt: number | undefined): number | undefined {
  const now = Date.now();
  const at = timeOption(o.deadline, o.ttlMs, now, "deadline", "ttlMs", 1);
  if (at === undefined) return undefined;
  if (at <= now) throw new AgentBusError("INVALID_INPUT", `deadline ${new Date(at).toISOString()} has passed already`);
  if (runAt !== undefined && at <= runAt) throw new AgentBusError("INVALID_INPUT", "the deadline is not after runAt: the task could never start");
  return at;
}

/** JetStream's message schedule headers (nats-server 2.12+). */
const SCHEDULE = "Nats-Schedule";
const SCHEDULE_TARGET = "Nats-Schedule-Target";

/**
 * The time a submit asks its task to run at (`runAt`, or now + `delayMs`),
 * ms since the epoch; undefined to run it now (neither given, or a time
 * already past). Checked before anything is written.
 */
function delayedUntil(s: Submitter, o: SubmitOptions): number | undefined {
  const now = Date.now();
  const at = timeOption(o.runAt, o.delayMs, now, "runAt", "delayMs", 0);
  if (at === undefined || at <= now) return undefined;
  const limit = s.rt.options.eventsMaxAgeMs;
  if (at - now > limit) throw new AgentBusError("INVALID_INPUT", `runAt is at most ${limit} ms ahead (the task retention, eventsMaxAgeMs): its snapshot would be gone before it runs`);
  if (!s.rt.server.schedules) throw new AgentBusError("SERVER_TOO_OLD", `delayed tasks need nats-server 2.12 or later (message schedules); this server is ${s.rt.server.version}`);
  if (!s.durable.delayable) {
    throw new AgentBusError("CONFIG_MISMATCH", `the work stream ${s.durable.subjects.stream("WORK")} does not take delayed work items: it was made before them and this identity may not change it (a tenant admin's connect updates it)`);
  }
  return at;
}

/**
 * A submit's time, given either as a moment (`Date` or ms since the epoch)
 * or as ms from `now` (not both), in whole ms since the epoch; undefined
 * when neither is given. `INVALID_INPUT` for anything else, or for an
 * offset below `minMs`.
 */
function timeOption(at: Date | number | undefined, fromNow: number | undefined, now: number, atName: string, fromNowName: string, minMs: number): number | undefined {
  if (at === undefined && fromNow === undefined) return undefined;
  if (at !== undefined && fromNow !== undefined) throw new AgentBusError("INVALID_INPUT", `give ${atName} or ${fromNowName}, not both`);
  const ms = fromNow !== undefined ? now + fromNow : at instanceof Date ? at.getTime() : at;
  if (typeof ms !== "number" || !Number.isFinite(ms) || (fromNow !== undefined && !(fromNow >= minMs))) {
    throw new AgentBusError("INVALID_INPUT", `${atName} must be a Date or ms since the epoch, ${fromNowName} a number of ms ${minMs > 0 ? "> 0" : "≥ 0"}`);
  }
  return Math.round(ms);
}
