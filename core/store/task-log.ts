import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamClient } from "@nats-io/jetstream";
import { Bucket, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/nats-core";
import { AgentBusError, isAgentBusError, typedPayloadError } from "../wire/errors.js";
import { Header, type Envelopes } from "../security/envelope.js";
import { Objm } from "@nats-io/obj";
import { Blobs, DEFAULT_INLINE_BYTES, DEFAULT_MAX_TASK_BYTES } from "./blobs.js";
import { ensureBlobStore, ensureOwnersBucket, ensureTaskInfra, retryJs, type TaskInfraOptions } from "../infra/jetstream.js";
import { utf8 } from "../wire/message.js";
import type { Subjects } from "../wire/subjects.js";
import { applyEvent, endsFollow, isFinal, isTerminal, priorityOf, stateOf, statusEvent, type Task, type TaskEvent, type TaskState } from "../wire/task.js";
import { toMessage } from "../wire/message.js";
import { TaskStore, type Snapshot, type SnapshotTrust } from "./task-snapshots.js";
import type { TraceContext } from "../wire/trace.js";

/**
 * The id of the event that records a final state written at snapshot
 * revision `revision`: every process that publishes it (the worker that
 * wrote the state, or one repairing a missing event) uses the same id, so
 * the stream keeps one copy.
 */
export const finalEventId = (task: Task, revision: number): string => `${taskKey(task)}-r${revision}`;

/**
 * A task's identity in message ids (`Nats-Msg-Id` of its work items and
 * final events): `<submitter>.<task>`, since an id the submitter chose is
 * unique for that submitter only.
 */
export const taskKey = (task: Pick<Task, "id" | "metadata">): string => `${task.metadata.submitter}.${task.id}`;

/** Room left for headers (envelope, trace, JetStream's) below the server's `max_payload`. */
const HEADER_ROOM = 8 * 1024;

/** Settings of the durable side: the task infrastructure's, and the limits of task content. */
export interface DurableOptions extends TaskInfraOptions {
  /** The JetStream domain the plane is in (an edge site's hub, reached through its leaf link); default the connection's own. */
  domain?: string;
  /** Parts with more bytes of content go to the blob store (default 256 KiB, at most half a message). */
  inlineBytes?: number;
  /** Most bytes of content per task (default 128 MiB). */
  maxTaskBytes?: number;
}

/** One stored task event and where it sits in `MESH_<T>_EVENTS`. */
export interface StoredEvent {
  /** Stream sequence: pass `sequence + 1` as `fromSequence` to resume after it. */
  sequence: number;
  event: TaskEvent;
  /** Identity of the agent that published it (as its `Mesh-From` header claims, when not `verified`). */
  from: string;
  /**
   * True when this identity checked the event's MAC or signature. Events are
   * MACed for the task's submitter only: the agent serving the task and
   * identities granted `task.<cap>` read them as the tenant's events stream
   * stores them (false here), as they read the snapshot.
   */
  verified: boolean;
}

/** Options of {@link Durable.events}. */
export interface EventsOptions {
  /** A stream sequence from an earlier event: follow from there. */
  fromSequence?: number;
  /** Whether the reader may see the task (else `TASK_NOT_FOUND`). */
  may?: (task: Task) => boolean | Promise<boolean>;
  /** The task as this process just wrote it (its submit). */
  known?: Task;
  /** Follow an interrupted task on until it ends. */
  untilTerminal?: boolean;
  /** Ends the follow when aborted. */
  signal?: AbortSignal;
}

/**
 * The durable side of a bus connection, set up on first use: the work,
 * inbox, events and dead-letter streams, the tasks and owners buckets, and the event
 * log operations shared by submitters and workers.
 */
export class Durable {
  private constructor(
    readonly js: JetStreamClient,
    readonly store: TaskStore,
    readonly subjects: Subjects,
    readonly envelopes: Envelopes,
    /** Large content of tasks, as claim checks in `mesh_<t>_blobs`. */
    readonly blobs: Blobs,
    /** Largest event body in bytes: the server's `max_payload` less room for headers (absent: unchecked). */
    readonly maxEventBytes?: number,
    /** Whether the work stream takes delayed work items (message schedules, nats-server 2.12+). */
    readonly delayable = false,
  ) {}

  /** `trust`: who may have written a task's snapshot (see {@link TaskStore}); its envelopes are `envelopes`. */
  static async open(nc: NatsConnection, subjects: Subjects, envelopes: Envelopes, options: DurableOptions, trust: Omit<SnapshotTrust, "envelopes">): Promise<Durable> {
    const domain = options.domain === undefined ? {} : { domain: options.domain };
    const js = jetstream(nc, domain);
    const kvm = new Kvm(js);
    const jsm = await jetstreamManager(nc, domain);
    const [{ tasks: kv, delayable }, owners, objects] = await Promise.all([
      ensureTaskInfra(jsm, kvm, subjects, options),
      ensureOwnersBucket(kvm, subjects, options),
      ensureBlobStore(new Objm(js), subjects, options),
    ]);
    const direct = kv instanceof Bucket && kv.direct;
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    const maxBytes = maxPayload - HEADER_ROOM;
    const store = new TaskStore(kv, js, owners, subjects.bucket("tasks"), jsm, direct, { ...trust, envelopes }, maxBytes, options.domain);
    const blobs = new Blobs(objects, subjects.bucket("blobs"), {
      // A part left inline must fit an event with room to spare.
      inlineBytes: Math.min(options.inlineBytes ?? DEFAULT_INLINE_BYTES, Math.floor(maxBytes / 2)),
      maxTaskBytes: options.maxTaskBytes ?? DEFAULT_MAX_TASK_BYTES,
      chunkBytes: maxPayload,
      readOnly: options.domain !== undefined,
    });
    return new Durable(js, store, subjects, envelopes, blobs, maxBytes, delayable);
  }

  /** `PAYLOAD_TOO_LARGE` when `event` of `task` could not be stored as one message (as {@link publishEvent} would find). */
  checkEvent(task: Task, event: TaskEvent): void {
    const bytes = Buffer.byteLength(JSON.stringify(event));
    if (this.maxEventBytes !== undefined && bytes > this.maxEventBytes) {
      throw new AgentBusError("PAYLOAD_TOO_LARGE", `an event of task ${task.id} (${bytes} bytes) exceeds the server's maximum message size (max_payload)`);
    }
  }

  /**
   * Stores one event of `task` (JetStream-acked), MACed for its submitter,
   * and returns its stream sequence. `msgId` makes a republished copy a
   * duplicate the stream drops (see {@link finalEventId}); `trace` is the
   * handler's (`traceparent`). The snapshot is moved by the caller
   * afterwards, so a reader that sees an event can rely on it being kept.
   */
  async publishEvent(task: Task, event: TaskEvent, msgId?: string, trace?: TraceContext): Promise<number> {
    const subject = this.subjects.taskEventLog(task.metadata.submitter, task.id);
    const body = Buffer.from(JSON.stringify(event));
    const headers = this.envelopes.seal(subject, body, { task: task.id, context: task.contextId, trace }, [task.metadata.submitter], { id: msgId });
    const ack = await retryJs(() => this.js.publish(subject, body, { headers })).catch((err: unknown) => {
      throw typedPayloadError(err, `an event of task ${task.id} (${body.length} bytes)`);
    });
    return ack.seq;
  }

  /**
   * Queues `task` on its capability's work subject again, at its priority:
   * its first message as the work item, sealed by this connection (signed,
   * and MACed for `macFor`), `Nats-Msg-Id` = `msgId` so that a second
   * queueing of the same turn is dropped. What an agent does for a
   * schedule's tick and for a parent whose children have ended; the worker
   * that takes it runs it for the task's submitter.
   */
  async requeue(task: Task, msgId: string, macFor: readonly string[]): Promise<void> {
    const subject = this.subjects.work(String(task.metadata.capability), priorityOf(task));
    const body = Buffer.from(JSON.stringify(task.history[0]));
    const depth = typeof task.metadata.depth === "number" ? task.metadata.depth : 0;
    const headers = this.envelopes.seal(subject, body, { task: task.id, context: task.contextId, depth }, macFor, { id: msgId, sign: true });
    await retryJs(() => this.js.publish(subject, body, { headers, msgID: msgId }));
  }

  /** Parses and verifies a stored event (MAC for its submitter, or signature). */
  decodeEvent(msg: { subject: string; data: Uint8Array; headers?: import("@nats-io/nats-core").MsgHdrs }): { event: TaskEvent; from: string } {
    const env = this.envelopes.open(msg, { durable: true });
    return { event: JSON.parse(utf8(msg.data)) as TaskEvent, from: env.from };
  }

  /**
   * The task's events from the start (or from `fromSequence`), then live,
   * ending at a terminal state, or at an interrupted state once caught up
   * (a resumed task goes on past its earlier interruptions). With `may`, a
   * task whose snapshot is missing or that `may` refuses is `TASK_NOT_FOUND`.
   * The submitter verifies every event; any other reader verifies those it
   * can and takes the others as stored (`verified: false`), refusing only a
   * MAC or signature that fails. Of an encrypted task, what is encrypted
   * for this identity comes opened; the rest stays encrypted parts. Parts
   * stored as blobs come back as their content. `known`: the task as this
   * process just wrote it (its submit), used instead of a snapshot read
   * when following from the start (from a sequence, the current state
   * tells whether anything is left). `untilTerminal`: an interrupted task
   * is followed on through its next turns. `signal`: aborting it ends the
   * follow at once (its consumer stopped), even while no event comes.
   */
  async *events(taskId: string, o: EventsOptions = {}): AsyncGenerator<StoredEvent> {
    const { fromSequence, may, known, untilTerminal = false, signal } = o;
    if (signal?.aborted) return;
    const snapshot = known && fromSequence === undefined ? { task: known } : await this.store.get(taskId, this.envelopes.identity.id);
    if (may && (!snapshot || !(await may(snapshot.task)))) throw new AgentBusError("TASK_NOT_FOUND", `task ${taskId} not found`);
    const submitter = snapshot?.task.metadata.submitter;
    const lenient = submitter !== undefined && submitter !== this.envelopes.identity.id;
    const e2e = snapshot?.task.metadata.encrypted ? this.envelopes.e2e : undefined;
    if (snapshot && (untilTerminal ? isTerminal : isFinal)(snapshot.task.status.state) && fromSequence !== undefined) {
      // Nothing left to follow once the log holds the state the (verified)
      // snapshot ends in and the cursor is past it. A final state is stored
      // in the snapshot first and published right after: until its event is
      // in the log, follow it.
      const last = await this.#lastMessage(snapshot.task);
      const stored = last ? stateOf(JSON.parse(utf8(last.data)) as TaskEvent) : undefined;
      if (last && stored === snapshot.task.status.state && fromSequence > last.seq) return;
    }
    const filter = snapshot ? this.subjects.taskEventLog(snapshot.task.metadata.submitter, taskId) : this.subjects.taskEventLogOfAny(taskId);
    // The next sequence to read: the follow restarts from there when its consumer is lost.
    let next = fromSequence;
    for (;;) {
      const start = next;
      const consumer = await retryJs(() =>
        this.js.consumers.get(this.subjects.stream("EVENTS"), {
          filter_subjects: filter,
          ...(start ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start } : { deliver_policy: DeliverPolicy.All }),
        }),
      );
      const iter = await consumer.consume();
      const abort = () => iter.stop();
      signal?.addEventListener("abort", abort, { once: true });
      // In a cluster a consumer just created may not be reachable yet from
      // this connection's server: its first pull finds no responders, and
      // the client would only retry after missing heartbeats (~45 s). Start
      // again from the next sequence at once instead.
      let lost = false;
      void (async () => {
        for await (const s of iter.status()) {
          if (s.type === "no_responders") {
            lost = true;
            iter.stop();
            return;
          }
        }
      })().catch(() => {});
      try {
        for await (const m of iter) {
          // A message delivered again (nats-server 2.9 may, after the ordered consumer resets) was yielded already.
          if (next !== undefined && m.seq < next) continue;
          next = m.seq + 1;
          const { event, from, verified } = lenient ? this.#readEvent(m) : { ...this.decodeEvent(m), verified: true };
          // Blob references come back as their content (for an encrypted task: those sealed for this identity).
          yield { sequence: m.seq, event: await this.blobs.resolveEvent(e2e ? e2e.openEvent(event, taskId) : event), from, verified };
          if (endsFollow(event, m.info.pending, untilTerminal)) return;
        }
      } finally {
        signal?.removeEventListener("abort", abort);
        iter.stop();
        // Gone from the server now, not after the ordered consumer's inactivity threshold (5 minutes).
        void consumer.delete().catch(() => {});
      }
      if (!lost || signal?.aborted) return;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** A stored event for a reader other than the submitter: verified when it can be, else as stored. */
  #readEvent(m: { subject: string; data: Uint8Array; headers?: import("@nats-io/nats-core").MsgHdrs }): { event: TaskEvent; from: string; verified: boolean } {
    try {
      return { ...this.decodeEvent(m), verified: true };
    } catch (err) {
      // MACed for others only: what the stream holds. No envelope at all, or a check that fails, is refused.
      const from = m.headers?.get(Header.from);
      if (!isAgentBusError(err, "UNSIGNED") || !from || !m.headers?.get(Header.mac)) throw err;
      return { event: JSON.parse(utf8(m.data)) as TaskEvent, from, verified: false };
    }
  }

  /** The stream message of the task's latest event (one direct read of its own subject, no consumer); null when it has none. */
  async #lastMessage(task: Task) {
    const jsm = await this.js.jetstreamManager();
    const query = { last_by_subj: this.subjects.taskEventLog(task.metadata.submitter, task.id) };
    return retryJs(() => jsm.direct.getMessage(this.subjects.stream("EVENTS"), query)).catch(() => null);
  }

  /** The stream sequence of the task's latest event, without reading it. */
  async lastSequence(task: Task): Promise<number | undefined> {
    return (await this.#lastMessage(task))?.seq ?? undefined;
  }

  /** The task's latest stored event, verified. */
  async lastEvent(task: Task): Promise<StoredEvent | undefined> {
    const m = await this.#lastMessage(task);
    if (!m) return undefined;
    const { event, from } = this.decodeEvent({ subject: m.subject, data: m.data, headers: m.header });
    return { sequence: m.seq, event, from, verified: true };
  }
}

/**
 * Ends a task from outside its run (a cancel of a task no worker holds, a
 * deadline missed in the queue): moves it to `state` by compare-and-set,
 * then records the event (final states: snapshot first). Returns the task
 * as ended; the task as it is when it already ended in `state`; undefined,
 * with nothing written, when the current snapshot is one `unless` accepts
 * (a task a worker took meanwhile). `NOT_CANCELABLE` when it already ended
 * in another state.
 */
export async function markEnded(durable: Durable, known: Snapshot, state: TaskState, reason: string, trace?: TraceContext, unless?: (task: Task) => boolean): Promise<Task | undefined> {
  const event = statusEvent(known.task, state, toMessage(reason, "ROLE_AGENT"));
  let refused: Task | undefined;
  let left = false;
  const next = await durable.store.update(known.task.id, (t) => {
    refused = undefined;
    left = false;
    if (isTerminal(t.status.state)) {
      refused = t;
      return undefined;
    }
    if (unless?.(t)) {
      left = true;
      return undefined;
    }
    return applyEvent(t, event);
  }, known);
  if (refused) {
    if (refused.status.state === state) return refused;
    throw new AgentBusError("NOT_CANCELABLE", `task ${known.task.id} is already ${refused.status.state}`);
  }
  if (left) return undefined;
  await durable.publishEvent(next.task, event, finalEventId(next.task, next.revision), trace);
  return next.task;
}

/** A task's deadline (`metadata.deadline`, ms since the epoch), when it has one. */
export function deadlineOf(task: Task): number | undefined {
  const d = task.metadata.deadline;
  return typeof d === "number" && Number.isFinite(d) ? d : undefined;
}

/** The reason a task that was not started by its deadline ends FAILED with. */
export const deadlineMissed = (deadline: number): string => `deadline ${new Date(deadline).toISOString()} passed before the task started`;
