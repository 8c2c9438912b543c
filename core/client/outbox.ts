/**
 * Store and forward at an edge site (`ConnectOptions.hub`): a task for a
 * capability with no provider at the edge is kept in the edge's outbox and
 * forwarded to the hub, in order and once, by its submitter's connection
 * whenever the link to the hub is up.
 *
 * At submit, the task is written to the edge's own tasks bucket (SUBMITTED,
 * `metadata.forward` naming the hub) and its entry to
 * `<root>.<t>.outbox.<submitter>.<task>` in `MESH_<T>_OUTBOX`, both in the
 * edge's JetStream domain, so it survives a restart of every process at
 * the edge. The submitter's connection consumes its own entries through
 * one durable consumer (`outbox_<id>`, one unacknowledged at a time): each
 * is submitted to the hub's plane under the same task id (a second submit
 * of an id never queues it twice), the edge snapshot is marked
 * `metadata.forwarded`, and only then is the entry acknowledged. While the
 * link is down the entry waits, and the ones after it behind it. Events
 * then come from the hub: a handle on a forwarded task reads, follows and
 * cancels it in the hub's plane.
 */
import { jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { Runtime } from "../runtime.js";
import { ensureOutbox, retryJs } from "../infra/jetstream.js";
import { taskKey } from "../store/task-log.js";
import { AgentBusError, isAgentBusError } from "../wire/errors.js";
import { toMessage, type Input } from "../wire/message.js";
import type { Message } from "../wire/protocol.js";
import { checkCapability, checkId } from "../wire/subjects.js";
import { isFinal, newTaskId, statusNow, type Task, type TaskPriority } from "../wire/task.js";
import type { Durable } from "../store/task-log.js";
import { randomUUID } from "node:crypto";

/** What an outbox entry holds: enough to submit the task to the hub as its submitter. */
interface OutboxEntry {
  capability: string;
  message: Message;
  options: { contextId: string; metadata?: Record<string, unknown>; priority?: TaskPriority; runAt?: number; deadline?: number; caller?: string; parent?: string; depth?: number; retryOf?: string };
}

/** The options of a forwarded submit (see {@link forwardTask}). */
export interface ForwardOptions {
  taskId?: string;
  contextId?: string;
  metadata?: Record<string, unknown>;
  priority?: TaskPriority;
  runAt?: Date | number;
  delayMs?: number;
  deadline?: Date | number;
  ttlMs?: number;
  caller?: string;
  parent?: string;
  depth?: number;
  encrypt?: boolean;
  retryOf?: string;
}

/** What `metadata.forward` says of a task stored at the edge for the hub. */
export interface ForwardMark {
  domain: string;
  region?: string;
}

/**
 * Stores a new task for `cap` at the edge, to be forwarded to the hub: its
 * snapshot in the edge's plane and its outbox entry. Returns the stored
 * task. `MISUSE` for `encrypt` (the hub's providers are not in the edge's
 * registry); `PAYLOAD_TOO_LARGE` when the input does not fit one message
 * (the edge's blobs stay at the edge).
 */
export async function forwardTask(rt: Runtime, cap: string, input: Input, o: ForwardOptions, me: string): Promise<Task> {
  const hub = rt.options.hub;
  if (!hub) throw new AgentBusError("MISUSE", "not at an edge site");
  checkCapability(cap);
  if (o.encrypt) throw new AgentBusError("MISUSE", `encrypt is not available for a task forwarded to the hub: ${cap} has no provider at this edge site`);
  const local = await rt.tasks();
  const message = { ...toMessage(input) };
  const taskId = checkId(o.taskId ?? message.taskId ?? newTaskId(me), "task id");
  const contextId = o.contextId ?? message.contextId ?? randomUUID();
  message.taskId = taskId;
  message.contextId = contextId;
  const at = (v: Date | number | undefined, ms: number | undefined) => (v !== undefined ? (v instanceof Date ? v.getTime() : v) : ms !== undefined ? Date.now() + ms : undefined);
  const entry: OutboxEntry = {
    capability: cap,
    message,
    options: { contextId, metadata: o.metadata, priority: o.priority, runAt: at(o.runAt, o.delayMs), deadline: at(o.deadline, o.ttlMs), caller: o.caller, parent: o.parent, depth: o.depth, ...(o.retryOf !== undefined && { retryOf: checkId(o.retryOf, "retryOf") }) },
  };
  const body = Buffer.from(JSON.stringify(entry));
  if (local.maxEventBytes !== undefined && body.length > local.maxEventBytes) {
    throw new AgentBusError("PAYLOAD_TOO_LARGE", `task ${taskId} (${body.length} bytes) is forwarded to the hub in one message: at most ${local.maxEventBytes} bytes`);
  }
  const task: Task = {
    id: taskId,
    contextId,
    status: statusNow("TASK_STATE_SUBMITTED"),
    artifacts: [],
    history: [message],
    metadata: { ...o.metadata, capability: cap, submitter: me, caller: o.caller, parent: o.parent, depth: o.depth ?? 0, createdAt: Date.now(), ...(entry.options.retryOf !== undefined && { retryOf: entry.options.retryOf }), forward: { domain: hub.domain, ...(hub.region !== undefined && { region: hub.region }) } satisfies ForwardMark },
  };
  const existing = await local.store.get(taskId, me);
  if (existing) {
    if (existing.task.metadata.submitter !== me) throw new AgentBusError("TASK_NOT_FOUND", `task ${taskId} not found`);
    return existing.task;
  }
  const created = await local.store.create(task, [me]);
  if (!created) return (await local.store.get(taskId, me))?.task ?? task;
  const subject = rt.subjects.outbox(me, taskId);
  // Sealed for this identity: the forwarder submits only what its own identity stored.
  const headers = local.envelopes.seal(subject, body, { task: taskId, context: contextId }, [me], { id: taskKey(task) });
  await retryJs(() => local.js.publish(subject, body, { headers, msgID: taskKey(task) }));
  return task;
}

/** Submits a forwarded task to the hub's plane as this identity (`submit` of the caller side, given so this module needs no import of it). */
export type SubmitToHub = (hub: Durable, cap: string, message: Message, options: Record<string, unknown>) => Promise<unknown>;

/**
 * Forwards this identity's outbox entries to the hub, one at a time, in
 * order, whenever the hub answers (see the module comment).
 */
export class Forwarder {
  #stopped = false;
  #loop?: Promise<void>;
  #batch?: ConsumerMessages;

  private constructor(private readonly rt: Runtime, private readonly submitToHub: SubmitToHub) {}

  /** Starts forwarding (the outbox and this identity's consumer are made if missing). */
  static async start(rt: Runtime, submitToHub: SubmitToHub): Promise<Forwarder> {
    const f = new Forwarder(rt, submitToHub);
    const jsm = await jetstreamManager(rt.nc);
    const name = await ensureOutbox(jsm, rt.subjects, rt.id, { replicas: rt.options.replicas });
    const consumer = await retryJs(() => jetstream(rt.nc).consumers.get(rt.subjects.stream("OUTBOX"), name));
    f.#loop = (async () => {
      while (!f.#stopped) {
        try {
          f.#batch = await consumer.fetch({ max_messages: 1, expires: 2_000 });
          for await (const m of f.#batch) await f.#forward(m);
        } catch (err) {
          if (f.#stopped) break;
          rt.log.debug({ err: String(err) }, "outbox: reading failed; trying again");
          await new Promise((r) => setTimeout(r, 1_000).unref());
        }
      }
    })();
    return f;
  }

  /** One entry: submitted to the hub and marked forwarded, then acknowledged; while the hub does not answer, it waits. */
  async #forward(m: JsMsg): Promise<void> {
    const { rt } = this;
    const local = await rt.tasks();
    let entry: OutboxEntry;
    try {
      const env = local.envelopes.open(m, { durable: true, storedAt: m.info.timestampNanos / 1_000_000 });
      if (env.from !== rt.id) throw new AgentBusError("DENIED", `an outbox entry of ${rt.id} was stored by ${env.from}`);
      entry = m.json<OutboxEntry>();
    } catch (err) {
      // Not this identity's (or not readable): never forwarded.
      rt.log.warn({ err: String(err), subject: m.subject }, "outbox: entry refused");
      m.term();
      return;
    }
    const taskId = entry.message.taskId!;
    const stored = await local.store.get(taskId, rt.id);
    // Canceled at the edge before it left (or gone): nothing to forward.
    if (!stored || isFinal(stored.task.status.state) || stored.task.metadata.forwarded !== undefined) {
      m.ack();
      return;
    }
    let hub;
    try {
      hub = await rt.hubTasks();
    } catch (err) {
      // The link is down (or the hub not ready): this entry, and those after it, wait.
      rt.log.debug({ err: String(err) }, "outbox: hub not reachable; waiting");
      m.nak(2_000);
      return;
    }
    try {
      const o = entry.options;
      await this.submitToHub(hub, entry.capability, entry.message, {
        taskId, contextId: o.contextId, metadata: { ...o.metadata, ...(rt.options.region !== undefined && { forwardedFrom: rt.options.region }) }, priority: o.priority, caller: o.caller, parent: o.parent, depth: o.depth, retryOf: o.retryOf,
        ...(o.runAt !== undefined && o.runAt > Date.now() && { runAt: o.runAt }),
        ...(o.deadline !== undefined && { deadline: o.deadline }),
      });
    } catch (err) {
      if (isAgentBusError(err, "TASK_FINISHED")) {
        // Forwarded before, and done there already.
      } else if (isAgentBusError(err) && ["INVALID_INPUT", "PAYLOAD_TOO_LARGE", "DENIED", "MISUSE", "TASK_NOT_FOUND"].includes(err.code)) {
        // The hub refuses it for good (a deadline passed while the link was down, …): the task fails visibly at the edge.
        await local.store.update(taskId, (t) => (isFinal(t.status.state) ? undefined : { ...t, status: statusNow("TASK_STATE_FAILED", toMessage(`not forwarded to the hub: ${err.message}`, "ROLE_AGENT")) }), stored).catch(() => undefined);
        m.ack();
        return;
      } else {
        rt.log.debug({ err: String(err) }, "outbox: forwarding failed; trying again");
        m.nak(2_000);
        return;
      }
    }
    await local.store.update(taskId, (t) => ({ ...t, metadata: { ...t.metadata, forwarded: { at: Date.now() } } }), stored);
    m.ack();
    rt.log.debug({ task: taskId, capability: entry.capability }, "outbox: forwarded to the hub");
  }

  /** Stops forwarding; what is left waits for the next start. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#batch?.stop();
    await this.#loop;
  }
}
