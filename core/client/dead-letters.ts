/**
 * Dead letters, from an operator's side: `bus.deadLetters`. A worker
 * copies a work item that failed for good to `<root>.<t>.dlq.<cap>`
 * (stream `MESH_<T>_DLQ`, or `MESH_<T>_DLQ_<REGION>` for a region's plane),
 * with its original signed headers plus `Mesh-Dlq-Reason` and
 * `Mesh-Dlq-Deliveries`, and ends the task FAILED; an agent's inbox copies
 * a direct message whose handler kept failing to `<root>.<t>.dlq.inbox`.
 * Here they are listed, submitted again as new tasks, or removed.
 */
import { createHash, randomUUID } from "node:crypto";
import { DeliverPolicy, type JetStreamClient } from "@nats-io/jetstream";
import { MsgHdrsImpl, type MsgHdrs } from "@nats-io/nats-core";
import type { Runtime } from "../runtime.js";
import { TaskHandle, mayAccessOrAncestor, submitTask, type Submitter } from "./task-handle.js";
import { INBOX_CAPABILITY } from "./inbox.js";
import { isEncryptedPart } from "../security/e2e.js";
import { Header, type Envelope } from "../security/envelope.js";
import { deniedByServer, retryJs } from "../infra/jetstream.js";
import { AgentBusError, isAgentBusError } from "../wire/errors.js";
import { parseMessage } from "../wire/message.js";
import type { Message } from "../wire/protocol.js";
import { checkCapability } from "../wire/subjects.js";
import { priorityOf, TASK_PRIORITIES, type Task, type TaskPriority } from "../wire/task.js";
import type { Durable } from "../store/task-log.js";

/** One dead-lettered work item (or direct message), as {@link DeadLetters.list} shows it. */
export interface DeadLetter {
  /** Its sequence in the plane's dead-letter stream: what {@link DeadLetters.requeue} and {@link DeadLetters.discard} take. */
  sequence: number;
  /** The capability it was queued for, from its subject (`inbox` for a direct message). */
  capability: string;
  /** The task it belonged to (`Mesh-Task`); absent for a direct message sent outside a task. */
  taskId?: string;
  /** Why it was dead-lettered (`Mesh-Dlq-Reason`): the handler's failure, `CODE: message` for an `AgentBusError`. */
  reason: string;
  /** Deliveries before it was dead-lettered (`Mesh-Dlq-Deliveries`); 0 when the copy does not record them (a direct message's). */
  deliveries: number;
  /** When the dead-letter stream stored it. */
  time: Date;
  /**
   * The message the work item carried, as the worker read it: opened from
   * the copy when its envelope verifies and its body is readable by this
   * identity (an end-to-end encrypted body only by the providers it was
   * encrypted for); otherwise the same message from the task's snapshot,
   * when this identity (with `caller`: that caller) may see the task and
   * the snapshot holds it readable; otherwise absent. Parts kept in the
   * blob store stay references here (`requeue` reads them back).
   */
  input?: Message;
  /** Who queued it: the verified sender of the work item, else the submitter of its task's snapshot (when read); absent when neither is known. */
  submitter?: string;
  /**
   * Whether the copy's envelope verified as a work item of `capability`
   * (signed by its sender, who is not revoked). A copy that does not is
   * shown by what its task's snapshot holds, or not at all: anyone allowed
   * to publish to the dead-letter subjects could have written it.
   */
  verified: boolean;
}

/** Options of {@link DeadLetters.requeue} and {@link DeadLetters.discard}. */
export interface DeadLetterOptions {
  /**
   * Behind a bridge: the caller the request comes from (see
   * `SubmitOptions.caller`). Only dead letters of tasks this identity
   * submitted for that caller exist for it; the new task of a requeue is
   * submitted for it.
   */
  caller?: string;
  /**
   * On a federated bus: the region whose dead letters these are (each
   * region's task plane keeps its own, `MESH_<T>_DLQ_<REGION>`, with its
   * own sequences). Default: this connection's region. `INVALID_INPUT`
   * for a region that is not one of the bus's.
   */
  region?: string;
}

/** Options of {@link DeadLetters.list}. */
export interface DeadLetterQuery extends DeadLetterOptions {
  /** Only those of this capability (`inbox`: dead-lettered direct messages). */
  capability?: string;
  /** At most this many, newest first (1..1000, default 100). */
  limit?: number;
}

/** A message read back from a stream, with where and when it was stored. */
export interface StreamRecord {
  /** Its stream sequence. */
  sequence: number;
  subject: string;
  headers?: MsgHdrs;
  data: Uint8Array;
  /** When the stream stored it, ms since the epoch. */
  storedAt: number;
}

/** How many dead letters {@link DeadLetters.list} returns at most. */
const MAX_LIMIT = 1000;
/** Snapshot reads in flight at once while listing. */
const READS_AT_ONCE = 64;
/** How long a window's read waits for a message it counted before it ends, ms. */
const IDLE_MS = 2_000;

/**
 * The newest messages of `stream` on `filter` (a subject filter), newest
 * first, each passed through `keep` (which may look further, and drops a
 * message by returning undefined) until `limit` are kept or the stream's
 * start is reached. Reads backwards in windows of sequences, each larger
 * than the last (an ordered consumer per window, deleted after it), so a
 * long stream costs about as much as the part of it the answer comes from.
 */
export async function readNewest<T>(js: JetStreamClient, stream: string, filter: string, limit: number, keep: (r: StreamRecord) => T | undefined | Promise<T | undefined>): Promise<T[]> {
  const jsm = await js.jetstreamManager();
  const { state } = await retryJs(() => jsm.streams.info(stream));
  const out: T[] = [];
  if (state.messages === 0 || limit <= 0) return out;
  let end = state.last_seq;
  let size = Math.max(limit, 64);
  while (end >= state.first_seq && out.length < limit) {
    const start = Math.max(state.first_seq, end - size + 1);
    const window = (await readRange(js, stream, filter, start, end)).reverse();
    for (const kept of await mapAtMost(window, READS_AT_ONCE, keep)) {
      if (kept !== undefined && out.length < limit) out.push(kept);
    }
    end = start - 1;
    size *= 4;
  }
  return out;
}

/** The messages of `stream` on `filter` from sequence `start` to `end`, oldest first (an ordered consumer, deleted after). */
async function readRange(js: JetStreamClient, stream: string, filter: string, start: number, end: number): Promise<StreamRecord[]> {
  const consumer = await retryJs(() => js.consumers.get(stream, { filter_subjects: filter, deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start }));
  const out: StreamRecord[] = [];
  try {
    if ((await consumer.info(true)).num_pending === 0) return out;
    const messages = await consumer.consume();
    // Messages counted as pending but removed before they came (a discard meanwhile): the read ends when none comes for a while.
    let idle: NodeJS.Timeout | undefined;
    const waitNext = () => {
      clearTimeout(idle);
      idle = setTimeout(() => messages.stop(), IDLE_MS);
    };
    try {
      waitNext();
      for await (const m of messages) {
        if (m.seq > end) break;
        out.push({ sequence: m.seq, subject: m.subject, headers: m.headers, data: m.data, storedAt: Math.floor(m.info.timestampNanos / 1_000_000) });
        if (m.seq >= end || m.info.pending === 0) break;
        waitNext();
      }
    } finally {
      clearTimeout(idle);
      messages.stop();
    }
    return out;
  } finally {
    void consumer.delete().catch(() => {});
  }
}

/** `fn` over `items` with at most `n` calls in flight; results in `items`' order. */
async function mapAtMost<T, R>(items: readonly T[], n: number, fn: (item: T) => R | Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}

/** A server refusal of a JetStream request under the role permissions, as `DENIED`; anything else as it is. */
const refusal = (err: unknown, stream: string): unknown => deniedByServer(err, `this connection may not read or change the dead letters of ${stream}: bridges and admins may`);

/** `h` with `Nats-Msg-Id` set to `id` (the dead-lettered copy of a work item keeps it as `Mesh-Dlq-Msg-Id`, so the stream keeps every copy). */
function withId(h: MsgHdrs, id: string): MsgHdrs {
  const copy = new MsgHdrsImpl();
  for (const [k, v] of h as MsgHdrsImpl) copy.headers.set(k, [...v]);
  copy.headers.set(Header.id, [id]);
  return copy;
}

const TOKEN_ID = /^[A-Za-z0-9_-]+$/;

/** A dead letter as read, with what {@link DeadLetters.requeue} needs beyond what it shows. */
interface Decoded {
  entry: DeadLetter;
  /** Why `entry.input` is absent. */
  problem?: AgentBusError;
  /** The work item's priority, when its envelope or task says. */
  priority?: TaskPriority;
  /** It was end-to-end encrypted: a requeue encrypts the new task too. */
  encrypted: boolean;
  /** The task's snapshot, when read and this identity (and caller) may see it. */
  task?: Task;
}

/**
 * The dead letters of this bus's tenant: list them, submit one again as a
 * new task, remove one. The server decides who may read and remove them:
 * under the role permissions, bridges and admins (others get `DENIED`).
 * Behind a bridge, a request with a `caller` sees only the dead letters of
 * tasks this identity submitted for that caller; without one, an identity
 * sees every dead letter its connection may read.
 *
 * On a federated bus each region's task plane keeps its own dead letters
 * (`MESH_<T>_DLQ_<REGION>`, where that region's workers put them): every
 * call works on this connection's region unless given `region`, and a
 * sequence is one of that region's stream. Dead letters of other regions
 * are not listed with this region's; a region that cannot be reached
 * fails the call that names it, as any read of its plane does.
 */
export class DeadLetters {
  readonly #rt: Runtime;

  /** @internal Built by the bus. */
  constructor(rt: Runtime) {
    this.#rt = rt;
  }

  /**
   * The newest dead letters (`limit`, default 100, at most 1000), newest
   * first; with `capability`, that capability's only. `INVALID_INPUT` for
   * a bad capability or limit, `DENIED` when the server does not let this
   * connection read them.
   */
  async list(query: DeadLetterQuery = {}): Promise<DeadLetter[]> {
    const limit = query.limit ?? 100;
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIMIT) throw new AgentBusError("INVALID_INPUT", `limit must be an integer from 1 to ${MAX_LIMIT}`);
    const plane = await this.#rt.tasks(query.region);
    const subjects = plane.subjects;
    const filter = query.capability === undefined ? `${subjects.storePrefix}.dlq.>` : subjects.dlq(checkCapability(query.capability));
    const stream = subjects.stream("DLQ");
    try {
      return await readNewest(plane.js, stream, filter, limit, async (r) => (await this.#decode(plane, r, query.caller))?.entry);
    } catch (err) {
      throw refusal(err, stream);
    }
  }

  /**
   * Submits dead letter `sequence` again as a new task of this identity
   * (with `caller`, for that caller): the same capability, input message
   * (a new message id; large parts read back from the blob store and
   * stored again for the new task), context and priority, end-to-end
   * encrypted again when it was, with `metadata.retryOf` = the dead task's
   * id; then removes the dead letter. The new task's id is derived from
   * the dead letter (`dl-<hex>`), so a requeue that is repeated, or races
   * with another, submits it once. On a federated bus it is routed as any
   * new task (not necessarily to the region of the dead letter).
   *
   * `DEAD_LETTER_NOT_FOUND` when there is no such dead letter (or it is not
   * the caller's); `INVALID_INPUT` for a bad sequence and for a direct
   * message (it belongs to no task); when the input cannot be read, why:
   * `NOT_RECIPIENT` (encrypted for others), `BAD_SIGNATURE`, `UNSIGNED`
   * or `REVOKED` (a copy that does not verify, and no readable snapshot);
   * `DENIED` when the server does not let this connection read it.
   */
  async requeue(sequence: number, options: DeadLetterOptions = {}): Promise<TaskHandle> {
    const plane = await this.#rt.tasks(options.region);
    const stream = plane.subjects.stream("DLQ");
    const raw = await this.#get(plane, sequence);
    const decoded = raw && (await this.#decode(plane, raw, options.caller));
    if (!decoded) throw notFound(sequence, stream);
    const { entry } = decoded;
    if (entry.capability === INBOX_CAPABILITY || entry.taskId === undefined) {
      throw new AgentBusError("INVALID_INPUT", `dead letter ${sequence} is a direct message, not a task's work item: it cannot be submitted again as a task`);
    }
    if (!entry.input) throw decoded.problem ?? new AgentBusError("BAD_SIGNATURE", `the input of dead letter ${sequence} cannot be read`);
    const { messageId: _old, taskId: _task, ...rest } = await plane.blobs.resolveMessage(entry.input);
    const message: Message = { ...rest, messageId: randomUUID() };
    const taskId = `dl-${createHash("sha256").update(`${stream}\n${raw.sequence}\n${raw.storedAt}`).digest("hex").slice(0, 40)}`;
    let handle: TaskHandle;
    try {
      handle = await submitTask(this.#rt, entry.capability, message, {
        taskId,
        caller: options.caller,
        retryOf: entry.taskId,
        ...(decoded.priority !== undefined && decoded.priority !== "normal" && { priority: decoded.priority }),
        ...(decoded.encrypted && { encrypt: true }),
      });
    } catch (err) {
      // Submitted by an earlier requeue of this dead letter (which ended before removing it), and finished since.
      if (!isAgentBusError(err, "TASK_FINISHED")) throw err;
      handle = new TaskHandle(taskId, { rt: this.#rt, durable: (await this.#rt.locate(taskId)).durable }, { caller: options.caller });
    }
    await this.#delete(plane, sequence);
    return handle;
  }

  /**
   * Removes dead letter `sequence`; false when there is none (or, with
   * `caller`, it is not that caller's). `INVALID_INPUT` for a bad
   * sequence, `DENIED` when the server does not let this connection
   * remove it.
   */
  async discard(sequence: number, options: DeadLetterOptions = {}): Promise<boolean> {
    const plane = await this.#rt.tasks(options.region);
    checkSequence(sequence);
    if (options.caller !== undefined) {
      const raw = await this.#get(plane, sequence);
      if (!raw || !(await this.#decode(plane, raw, options.caller))) return false;
    }
    return this.#delete(plane, sequence);
  }

  /** Dead letter `sequence` as stored; undefined when there is none. */
  async #get(plane: Durable, sequence: number): Promise<StreamRecord | undefined> {
    checkSequence(sequence);
    const stream = plane.subjects.stream("DLQ");
    try {
      const jsm = await plane.js.jetstreamManager();
      const m = await retryJs(() => jsm.streams.getMessage(stream, { seq: sequence }));
      return m ? { sequence: m.seq, subject: m.subject, headers: m.header, data: m.data, storedAt: m.time.getTime() } : undefined;
    } catch (err) {
      throw refusal(err, stream);
    }
  }

  /** Removes dead letter `sequence` (erased); false when there was none. */
  async #delete(plane: Durable, sequence: number): Promise<boolean> {
    const stream = plane.subjects.stream("DLQ");
    try {
      const jsm = await plane.js.jetstreamManager();
      return await retryJs(() => jsm.streams.deleteMessage(stream, sequence));
    } catch (err) {
      if (/no message found|not found/i.test(String((err as Error)?.message ?? err)) && !/stream not found/i.test(String((err as Error)?.message ?? err))) return false;
      throw refusal(err, stream);
    }
  }

  /**
   * Reads one stored dead letter: its headers, its envelope checked as the
   * work item it was (or the direct message), its input opened, else taken
   * from its task's snapshot. Undefined when it is not on a dead-letter
   * subject, or, with `caller`, when it is not that caller's.
   */
  async #decode(plane: Durable, r: StreamRecord, caller: string | undefined): Promise<Decoded | undefined> {
    const prefix = `${plane.subjects.storePrefix}.dlq.`;
    if (!r.subject.startsWith(prefix)) return undefined;
    const capability = r.subject.slice(prefix.length);
    const h = r.headers;
    const header = (k: string) => h?.get(k) || undefined;
    const claimedTask = header(Header.task);
    const taskId = claimedTask !== undefined && TOKEN_ID.test(claimedTask) ? claimedTask : undefined;
    const deliveries = Number(header(Header.dlqDeliveries) ?? 0);
    const entry: DeadLetter = {
      sequence: r.sequence,
      capability,
      ...(taskId !== undefined && { taskId }),
      reason: header(Header.dlqReason) ?? (capability === INBOX_CAPABILITY ? "the agent's inbox handler failed (no reason recorded)" : "no reason recorded"),
      deliveries: Number.isSafeInteger(deliveries) && deliveries >= 0 ? deliveries : 0,
      time: new Date(r.storedAt),
      verified: false,
    };
    const out: Decoded = { entry, encrypted: false };
    const opened = this.#open(plane, r, capability);
    if ("env" in opened) {
      entry.verified = true;
      entry.submitter = opened.env.from;
      out.priority = opened.priority;
      out.encrypted = opened.env.enc !== undefined;
      try {
        entry.input = parseMessage(plane.envelopes.decrypt(opened.env, r.data));
      } catch (err) {
        out.problem = isAgentBusError(err) ? err : new AgentBusError("INVALID_INPUT", String(err));
      }
    } else {
      out.problem = opened.problem;
    }
    // The task's snapshot: for a caller, whether the dead letter is one of its tasks; otherwise read only for an input the copy does not give.
    if (capability !== INBOX_CAPABILITY && taskId !== undefined && (caller !== undefined || !entry.input)) {
      out.task = await this.#visibleTask(plane, taskId, capability, caller);
      if (out.task) {
        out.encrypted ||= out.task.metadata.encrypted !== undefined;
        out.priority ??= priorityOf(out.task);
        entry.submitter ??= out.task.metadata.submitter;
        if (!entry.input) entry.input = inputOf(out.task, r.data);
      }
    }
    if (caller !== undefined && !out.task) return undefined;
    return out;
  }

  /**
   * Verifies a dead-lettered copy as the message it was: a direct message
   * to this identity as stored; a work item as sealed for the work subject
   * its copy names (`Mesh-Dlq-Subject`, one of the capability's priority
   * levels) under the id it keeps (`Mesh-Dlq-Msg-Id`; none for an item
   * that had none, such as a delayed one, whose id is in `Mesh-Id`). A copy
   * that does not verify (one written without those headers, or queued by
   * an agent for its submitter: a schedule's tick, a parent resumed after
   * its children) has its task's snapshot stand in.
   */
  #open(plane: Durable, r: StreamRecord, capability: string): { env: Envelope; priority: TaskPriority } | { problem: AgentBusError } {
    const { envelopes, subjects } = plane;
    const h = r.headers;
    if (!h || !h.get(Header.from)) return { problem: new AgentBusError("UNSIGNED", `dead letter ${r.sequence} lacks Mesh-From`) };
    let sealed: { subject: string; headers: MsgHdrs; priority: TaskPriority } | undefined;
    if (capability === INBOX_CAPABILITY) {
      sealed = { subject: subjects.inbox(this.#rt.id), headers: h, priority: "normal" };
    } else {
      const level = TASK_PRIORITIES.find((priority) => subjects.work(capability, priority) === h.get(Header.dlqSubject));
      const id = h.get(Header.dlqMsgId);
      if (level) sealed = { subject: subjects.work(capability, level), headers: id ? withId(h, id) : h, priority: level };
    }
    if (!sealed) return { problem: new AgentBusError("BAD_SIGNATURE", `dead letter ${r.sequence} names no work subject of ${capability}`) };
    try {
      return { env: envelopes.open({ subject: r.subject, data: r.data, headers: sealed.headers }, { subject: sealed.subject, durable: true }), priority: sealed.priority };
    } catch (err) {
      const e = isAgentBusError(err) ? err : new AgentBusError("BAD_SIGNATURE", String(err));
      if (e.code !== "BAD_SIGNATURE") return { problem: e };
      return { problem: new AgentBusError("BAD_SIGNATURE", `dead letter ${r.sequence} does not verify as ${capability === INBOX_CAPABILITY ? "a direct message to this identity" : `a work item of ${capability}`}`, { cause: err }) };
    }
  }

  /** Task `id`'s snapshot when it is a task of `capability` that this identity (with `caller`: that caller) may see. */
  async #visibleTask(plane: Durable, id: string, capability: string, caller: string | undefined): Promise<Task | undefined> {
    const snapshot = await plane.store.get(id, this.#rt.id).catch(() => undefined);
    if (!snapshot || snapshot.task.metadata.capability !== capability) return undefined;
    const s: Submitter = { rt: this.#rt, durable: plane };
    if (!(await mayAccessOrAncestor(s, snapshot.task, caller))) return undefined;
    return snapshot.task.metadata.encrypted ? plane.envelopes.e2e.openTask(snapshot.task) : snapshot.task;
  }
}

/**
 * The dead work item's message as the task's snapshot holds it: the one
 * with the copy's message id (read from its body, when that is plain
 * JSON), else the task's first message; undefined when it is from the
 * agent, or still encrypted for others.
 */
function inputOf(task: Task, body: Uint8Array): Message | undefined {
  let messageId: unknown;
  try {
    messageId = (JSON.parse(Buffer.from(body).toString("utf8")) as { messageId?: unknown }).messageId;
  } catch {
    // encrypted, or not JSON: the first message stands in
  }
  const m = (typeof messageId === "string" && task.history.find((h) => h.messageId === messageId)) || task.history[0];
  if (!m || m.role !== "ROLE_USER" || m.parts.some(isEncryptedPart)) return undefined;
  return m;
}

function checkSequence(sequence: number): void {
  if (!Number.isSafeInteger(sequence) || sequence < 1) throw new AgentBusError("INVALID_INPUT", `a dead letter's sequence is a positive integer, not ${JSON.stringify(sequence)}`);
}

const notFound = (sequence: number, stream: string) => new AgentBusError("DEAD_LETTER_NOT_FOUND", `no dead letter ${sequence} in ${stream}`);
