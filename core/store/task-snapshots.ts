import { createHash } from "node:crypto";
import { DeliverPolicy, type JetStreamClient, type JetStreamManager, type StoredMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import type { MsgHdrs } from "@nats-io/nats-core";
import type { Envelopes } from "../security/envelope.js";
import { AgentBusError, isAgentBusError, typedPayloadError } from "../wire/errors.js";
import { compareAndSet, isRevisionConflict, retryJs } from "../infra/jetstream.js";
import { taskIdBinds, type Task, type TaskState } from "../wire/task.js";

/** A snapshot with the KV revision it was read at. */
export interface Snapshot {
  task: Task;
  revision: number;
}

/**
 * Whether `writer` (the identity whose signature a snapshot carries) may
 * have written this snapshot of `task`: one of the task's parties (its
 * submitter, an agent serving its capability, an identity granted the task
 * right). Anything else is a forgery, whatever else it says.
 */
export type SnapshotWriters = (task: Task, writer: string) => boolean | Promise<boolean>;

/** How {@link TaskStore} seals and checks snapshots. */
export interface SnapshotTrust {
  /** Seals what this identity writes (signed, and MACed for the task's parties) and opens what it reads. */
  envelopes: Envelopes;
  writers: SnapshotWriters;
  /** Told once per refused read: the snapshot's id, its claimed writer, why. */
  onForged?: (taskId: string, writer: string | undefined, reason: string) => void;
}

/** A listing whose consumer delivers nothing for this long stops (a lost consumer: it never waits for writes). */
const LIST_IDLE_MS = 10_000;

/** Snapshots read at once when a listing goes through the owner index. */
const LIST_READS_IN_FLIGHT = 64;

/**
 * Filters and paging of {@link TaskStore.list} (and `bus.tasks`). Every
 * given filter must hold. Filters apply before paging: `totalSize` counts
 * the tasks that pass them all, a page holds up to `pageSize` of those
 * (newest status first), and a page token is an offset into that filtered
 * list, so the next page is asked with the same filters.
 */
export interface TaskQuery {
  contextId?: string;
  /** Only tasks in this state, or, given a list, in any of its states. */
  state?: TaskState | readonly TaskState[];
  /** Only tasks of this capability (`metadata.capability`). */
  capability?: string;
  /**
   * Only tasks that this agent id served (`metadata.agent`: the agent
   * whose worker last took it; a task no worker took yet has none), or,
   * given a list, any of these ids.
   */
  agent?: string | readonly string[];
  /**
   * Only the tasks submitted while working on this task (`metadata.parent`:
   * its direct children, as `ctx.submit` and `ctx.fanOut` record it), or,
   * given a list, on any of these tasks.
   */
  parent?: string | readonly string[];
  /**
   * A filter of the caller's own, applied with the others (so before
   * paging): `bus.tasks` gives it each task as listed (what is encrypted
   * for this identity opened, blob references as stored).
   */
  where?: (task: Task) => boolean;
  /**
   * Behind a bridge: list only the tasks this caller submitted through this
   * identity (see `SubmitOptions.caller`).
   */
  caller?: string;
  /** Default 50, at most 1000. */
  pageSize?: number;
  /** Opaque token from the previous page's `nextPageToken`. */
  pageToken?: string;
  /** Only tasks whose status changed after this time (ISO 8601). */
  statusTimestampAfter?: string;
}

export interface TaskPage {
  tasks: Task[];
  nextPageToken?: string;
  totalSize: number;
}


/**
 * The key of a task in the owner index (`mesh_<t>_owners`):
 * `<submitter>.<caller>.<task>`, where `<caller>` is `_` for a task
 * submitted without one, else the first 128 bits of the caller name's
 * SHA-256 in hex (a caller name may hold any character; a key token may
 * not). One submitter's entries share its id as prefix, so a NATS
 * permission can confine a connection to `$KV.mesh_<t>_owners.<own id>.>`.
 */
export function ownerKey(submitter: string, caller: string | undefined, taskId: string): string {
  return `${ownerPrefix(submitter, caller)}.${taskId}`;
}

/** The key prefix under which {@link ownerKey} files one submitter's tasks (one caller's, when given). */
function ownerPrefix(submitter: string, caller: string | undefined): string {
  return `${submitter}.${caller === undefined ? "_" : createHash("sha256").update(caller).digest("hex").slice(0, 32)}`;
}

/** Newest status first, then by id; one page of it, with the token of the next. */
/** One page of `all` as `query` asks (newest status first); `INVALID_INPUT` for a bad page token. */
export function page(all: Task[], query: TaskQuery): TaskPage {
  const pageSize = Math.min(Math.max(query.pageSize ?? 50, 1), 1000);
  const offset = query.pageToken ? Number.parseInt(Buffer.from(query.pageToken, "base64url").toString(), 10) : 0;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new AgentBusError("INVALID_INPUT", "invalid page token");
  all.sort((a, b) => (a.status.timestamp < b.status.timestamp ? 1 : a.status.timestamp > b.status.timestamp ? -1 : a.id.localeCompare(b.id)));
  const tasks = all.slice(offset, offset + pageSize);
  const next = offset + pageSize < all.length ? Buffer.from(String(offset + pageSize)).toString("base64url") : undefined;
  return { tasks, nextPageToken: next, totalSize: all.length };
}

/** Whether `value` is `wanted`, or one of the list `wanted`; true when `wanted` is not given. */
const oneOf = <T>(wanted: T | readonly T[] | undefined, value: unknown): boolean =>
  wanted === undefined || (Array.isArray(wanted) ? (wanted as readonly unknown[]).includes(value) : wanted === value);

/** Whether `t` passes the query's filters on stored fields (`where` is applied by `bus.tasks`, on the task as listed). */
const matches = (t: Task, query: TaskQuery) =>
  (!query.contextId || t.contextId === query.contextId) &&
  oneOf(query.state, t.status.state) &&
  (!query.capability || t.metadata.capability === query.capability) &&
  oneOf(query.agent, t.metadata.agent) &&
  oneOf(query.parent, t.metadata.parent) &&
  (!query.statusTimestampAfter || Date.parse(t.status.timestamp) > Date.parse(query.statusTimestampAfter));

const decode = (v: Uint8Array): Task => JSON.parse(Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("utf8")) as Task;

/** A snapshot's stored message as both a direct read and a consumer deliver it. */
interface StoredSnapshot {
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  seq: number;
}

const deleted = (h?: MsgHdrs): boolean => {
  const op = h?.get("KV-Operation");
  return op === "DEL" || op === "PURGE";
};

/** What reading one key gave: a verified snapshot, nothing, or a refused one (at its revision). */
type Read = { snapshot?: Snapshot; forged?: number };

/**
 * Task snapshots in `mesh_<t>_tasks`, one key per task id, and the owner
 * index in `mesh_<t>_owners` (see {@link ownerKey}). Writers move a
 * snapshot by compare-and-set on its revision, so concurrent writers (a
 * worker finishing, a caller cancelling) never overwrite each other and a
 * state only moves forward.
 *
 * Every snapshot is written with an envelope in its headers (signed, and
 * MACed for the task's submitter and agent), and every read checks it: a
 * snapshot that does not verify, names another task, or was written by an
 * identity that is not one of the task's parties ({@link SnapshotWriters})
 * is refused `BAD_SIGNATURE`, never returned. Inside a tenant any
 * connection may write the bucket (nats-server cannot tell whose task a
 * key is); this is what keeps such a write from being taken for the task.
 */
export class TaskStore {
  readonly #stream: string;
  readonly #prefix: string;

  constructor(
    readonly kv: KV,
    readonly js: JetStreamClient,
    readonly owners: KV,
    /** The bucket's name (`mesh_<t>_tasks`). */
    bucket: string,
    readonly jsm: JetStreamManager,
    /** Whether the bucket's stream answers direct reads (`allow_direct`). */
    readonly direct: boolean,
    readonly trust: SnapshotTrust,
    /** Largest stored snapshot in bytes: the server's `max_payload` less room for headers (absent: unchecked). */
    readonly maxBytes?: number,
    /**
     * The bucket is in another JetStream domain (an edge site's hub):
     * writes go through its API prefix (`$JS.<domain>.API.$KV.…`, which the
     * leaf link carries), sealed for the subject they are stored under.
     */
    domain?: string,
  ) {
    this.#stream = `KV_${bucket}`;
    this.#prefix = `$KV.${bucket}.`;
    this.#writePrefix = domain === undefined ? "" : `$JS.${domain}.API.`;
  }

  readonly #writePrefix: string;

  /**
   * The task's snapshot; undefined when there is none (or this connection
   * may not read it), `BAD_SIGNATURE` when the stored one is refused.
   * Snapshots are keyed `<submitter>.<task>`: with `submitter` (a reader
   * asking for its own task, or one that knows who submitted it) one exact
   * read; without, or when that finds nothing and the id does not name
   * `submitter`, a read by id whatever the submitter (which only
   * identities that may read every task are allowed).
   */
  async get(id: string, submitter?: string): Promise<Snapshot | undefined> {
    const r = await this.#read(id, submitter);
    if (r.snapshot || r.forged === undefined) return r.snapshot;
    throw new AgentBusError("BAD_SIGNATURE", `the stored snapshot of task ${id} was not written by one of its parties: refused`);
  }

  async #read(id: string, submitter?: string): Promise<Read> {
    if (submitter !== undefined) {
      const own = await this.#readSubject(this.subjectOf(submitter, id), id);
      if (own.snapshot || own.forged !== undefined || taskIdBinds(id, submitter) === true) return own;
    }
    const any = await this.#readSubject(`${this.#prefix}*.${id}`, id);
    if (any.forged === undefined) return any;
    // The latest write under this id was refused: another identity may have
    // filed a forgery under its own key. Read each key of the id on its own.
    const info = await retryJs(() => this.jsm.streams.info(this.#stream, { subjects_filter: `${this.#prefix}*.${id}` })).catch(() => undefined);
    for (const subject of Object.keys(info?.state.subjects ?? {})) {
      const r = await this.#readSubject(subject, id);
      if (r.snapshot) return r;
    }
    return any;
  }

  /** The subject of a task's snapshot: `$KV.<bucket>.<submitter>.<task>`. */
  subjectOf(submitter: string, id: string): string {
    return `${this.#prefix}${submitter}.${id}`;
  }

  async #readSubject(subject: string, id: string): Promise<Read> {
    const query = { last_by_subj: subject };
    let sm: StoredMsg | null;
    try {
      sm = await retryJs(() => (this.direct ? this.jsm.direct.getMessage(this.#stream, query) : this.jsm.streams.getMessage(this.#stream, query)));
    } catch (err) {
      // A read this connection's permissions do not allow: not its task to see.
      if (/permission/i.test(String((err as Error)?.message ?? err))) return {};
      throw err;
    }
    if (!sm || deleted(sm.header)) return {};
    return this.#verify({ subject: sm.subject, data: sm.data, headers: sm.header, seq: sm.seq }, id);
  }

  /** Checks one stored snapshot (see the class comment). */
  async #verify(m: StoredSnapshot, id = m.subject.slice(m.subject.lastIndexOf(".") + 1)): Promise<Read> {
    let writer: string | undefined;
    try {
      const env = this.trust.envelopes.open(m, { durable: true });
      writer = env.from;
      const task = decode(m.data);
      if (env.task !== id || task.id !== id) throw new AgentBusError("BAD_SIGNATURE", "it names another task");
      if (m.subject !== this.subjectOf(String(task.metadata.submitter), id)) throw new AgentBusError("BAD_SIGNATURE", "it is filed under another submitter");
      if (!(await this.trust.writers(task, env.from))) throw new AgentBusError("BAD_SIGNATURE", `${env.from} is not one of the task's parties`);
      return { snapshot: { task, revision: m.seq } };
    } catch (err) {
      if (!isAgentBusError(err) && !(err instanceof SyntaxError)) throw err;
      this.trust.onForged?.(id, writer ?? m.headers?.get("Mesh-From") ?? undefined, (err as Error).message);
      return { forged: m.seq };
    }
  }

  /** Stores `task` as the next revision after `expected` (0: a new key); the new revision. */
  /**
   * The stored form of `task`: `PAYLOAD_TOO_LARGE` when it would not fit in
   * one message to this server (its `max_payload`, less room for headers).
   */
  encode(task: Task): Buffer {
    const body = Buffer.from(JSON.stringify(task));
    if (this.maxBytes !== undefined && body.length > this.maxBytes) {
      throw new AgentBusError("PAYLOAD_TOO_LARGE", `the snapshot of task ${task.id} (${body.length} bytes) exceeds what one message to this server may hold (${this.maxBytes} bytes)`);
    }
    return body;
  }

  async #write(task: Task, expected: number, macFor: readonly string[] = [], body = this.encode(task)): Promise<number> {
    const subject = this.subjectOf(String(task.metadata.submitter), task.id);
    const me = this.trust.envelopes.identity.id;
    const { submitter, agent } = task.metadata;
    const parties = new Set([submitter, agent, ...macFor].filter((p): p is string => typeof p === "string" && p !== me));
    // Signed for any reader; MACed for the parties, who check the cheaper MAC.
    const headers = this.trust.envelopes.seal(subject, body, { task: task.id }, [...parties].slice(0, 8), { sign: true });
    const ack = await retryJs(() => this.js.publish(`${this.#writePrefix}${subject}`, body, { headers, expect: { lastSubjectSequence: expected } })).catch((err: unknown) => {
      throw typedPayloadError(err, `the snapshot of task ${task.id} (${body.length} bytes)`);
    });
    return ack.seq;
  }

  /** Writes a new snapshot (MACed for `macFor` as well; `body`: its {@link encode}d form); undefined when the id already exists. */
  async create(task: Task, macFor?: readonly string[], body?: Buffer): Promise<Snapshot | undefined> {
    try {
      return { task, revision: await this.#write(task, 0, macFor, body) };
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw err;
    }
  }

  /**
   * Applies `change` by compare-and-set, re-reading and retrying when another
   * writer got there first. `change` returns the next task, or undefined to
   * leave it as it is (then the current snapshot is returned). A refused
   * snapshot met on the way (a forged write) is replaced: `change` applies
   * to the last verified one.
   */
  async update(id: string, change: (task: Task) => Task | undefined, known?: Snapshot): Promise<Snapshot> {
    let verified = known ?? (await this.get(id));
    if (!verified) throw new AgentBusError("TASK_NOT_FOUND", `task ${id} not found`);
    const subject = this.subjectOf(String(verified.task.metadata.submitter), id);
    let written: string | undefined;
    const read = async (): Promise<Snapshot> => {
      const r = await this.#readSubject(subject, id);
      if (r.snapshot) return (verified = r.snapshot);
      // A forgery: write over it, from the last snapshot we verified.
      if (r.forged !== undefined) return { task: verified!.task, revision: r.forged };
      throw new AgentBusError("TASK_NOT_FOUND", `task ${id} not found`);
    };
    return compareAndSet(read, async (current) => {
      // A write retried after a lost reply comes back as a conflict with
      // itself: the re-read shows exactly what we wrote. That is success (not
      // a change to apply again, nor a task that moved on without us).
      if (written !== undefined && JSON.stringify(current.task) === written) return current;
      const next = change(current.task);
      if (!next) return current;
      written = JSON.stringify(next);
      return { task: next, revision: await this.#write(next, current.revision) };
    }, { known: verified, what: `task ${id}` });
  }

  /**
   * Files a new task submitted for a caller (behind a bridge) under its
   * submitter and caller in the owner index, so {@link listOwned} finds one
   * caller's tasks without reading the submitter's others. The entry ages
   * out with the snapshot (same max age). A task without a caller needs no
   * entry: its snapshot's key already starts with its submitter.
   */
  async index(task: Task): Promise<void> {
    const { submitter, caller } = task.metadata;
    if (typeof caller !== "string") return;
    await retryJs(() => this.owners.put(ownerKey(submitter, caller, task.id), ""));
  }

  /**
   * Federated: records in this (the submitter's own) region's owner index
   * that `submitter`'s task `taskId` is kept in `region`
   * (`<submitter>.region.<task>`), so the submitter finds its tasks in
   * other regions without asking every region. Ages out with snapshots.
   */
  async place(submitter: string, taskId: string, region: string): Promise<void> {
    await retryJs(() => this.owners.put(`${submitter}.region.${taskId}`, region));
  }

  /** Where {@link place} recorded `submitter`'s task `taskId`, if it did. */
  async placed(submitter: string, taskId: string): Promise<string | undefined> {
    const e = await retryJs(() => this.owners.get(`${submitter}.region.${taskId}`));
    return e && e.operation === "PUT" && e.length > 0 ? e.string() : undefined;
  }

  /**
   * Lists the tasks `submitter` submitted (only `caller`'s, when given),
   * newest status first. Without a caller: one ordered pass over the
   * snapshots under the submitter's own key prefix. With one: the owner
   * index's keys for that caller, then one read per task, at most 64 at once.
   */
  async listOwned(submitter: string, caller: string | undefined, query: TaskQuery = {}): Promise<TaskPage> {
    return page(await this.owned(submitter, caller, query), query);
  }

  /** What {@link listOwned} pages: every task it finds, unordered. */
  async owned(submitter: string, caller: string | undefined, query: TaskQuery = {}): Promise<Task[]> {
    if (caller === undefined) return this.matching(query, (t) => t.metadata.submitter === submitter, `${submitter}.>`);
    const ids: string[] = [];
    for await (const key of await retryJs(() => this.owners.keys(`${ownerPrefix(submitter, caller)}.>`))) ids.push(key.slice(key.lastIndexOf(".") + 1));
    const all: Task[] = [];
    for (let i = 0; i < ids.length; i += LIST_READS_IN_FLIGHT) {
      const read = await Promise.all(ids.slice(i, i + LIST_READS_IN_FLIGHT).map(async (id) => (await this.#read(id, submitter)).snapshot));
      for (const s of read) {
        // Filed under this submitter and caller, but the snapshot decides (and may have aged out first).
        if (s && s.task.metadata.submitter === submitter && s.task.metadata.caller === caller && matches(s.task, query)) all.push(s.task);
      }
    }
    return all;
  }

  /**
   * Lists snapshots that `visible` lets through, newest status first. Reads
   * the latest value of every task key in one ordered consumer pass (no
   * round trip per task), then filters and pages in memory: for identities
   * that may see other submitters' tasks (see `bus.tasks`), or, with
   * `keys` (`<submitter>.>`), for one submitter's own ({@link listOwned}).
   */
  async list(query: TaskQuery = {}, visible: (t: Task) => boolean = () => true, keys = ">"): Promise<TaskPage> {
    return page(await this.matching(query, visible, keys), query);
  }

  /** What {@link list} pages: every task it lets through, unordered. */
  async matching(query: TaskQuery = {}, visible: (t: Task) => boolean = () => true, keys = ">"): Promise<Task[]> {
    const all: Task[] = [];
    const { streamInfo, bucket } = await this.kv.status();
    const consumer = await this.js.consumers.get(streamInfo.config.name, {
      filter_subjects: `$KV.${bucket}.${keys}`,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    // The latest value of each key as of the consumer's creation: that many
    // messages, delivered first (writes landing meanwhile come after them,
    // and keep `pending` above zero under steady writes).
    const latest = (await consumer.info()).num_pending;
    // The stream's last sequence once the consumer exists. A key written between the consumer's
    // creation and this read loses its old value from the consumer's list (history 1), and the
    // consumer's pending count need not include the new one: the pass reads up to here at least.
    const endSeq = latest > 0 ? (await retryJs(() => this.jsm.streams.info(streamInfo.config.name))).state.last_seq : 0;
    // Per key, the newest value read: a key written again while the pass
    // runs may come twice, or (its value as of the start replaced before it
    // was delivered: the bucket keeps one per key) only after the others.
    const byKey = new Map<string, Task | undefined>();
    if (latest > 0) {
      const iter = await consumer.consume();
      let idle = setTimeout(() => iter.stop(), LIST_IDLE_MS);
      let read = 0;
      let lastSeq = 0;
      try {
        for await (const m of iter) {
          clearTimeout(idle);
          idle = setTimeout(() => iter.stop(), LIST_IDLE_MS);
          // A message delivered again (nats-server 2.9 may, after the ordered consumer resets) says nothing new: its `pending` is stale.
          if (m.seq <= lastSeq) continue;
          lastSeq = m.seq;
          const t = deleted(m.headers) ? undefined : (await this.#verify(m)).snapshot?.task;
          byKey.set(m.subject, t && matches(t, query) && visible(t) ? t : undefined);
          read++;
          // Done once every message up to the stream's end as of the start is
          // read and nothing is pending (writes landing meanwhile keep `pending`
          // above zero; a bound keeps the pass finite under steady writes).
          if ((m.seq >= endSeq && m.info.pending === 0) || read >= 2 * latest + 100) break;
        }
      } finally {
        clearTimeout(idle);
        iter.stop();
      }
    }
    for (const t of byKey.values()) if (t) all.push(t);
    return all;
  }
}
