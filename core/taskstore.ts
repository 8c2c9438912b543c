import { createHash } from "node:crypto";
import { DeliverPolicy, JetStreamApiCodes, JetStreamApiError, type JetStreamClient } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { AgentBusError } from "./errors.js";
import { retryJs } from "./infra.js";
import type { Task, TaskState } from "./task.js";

/** A snapshot with the KV revision it was read at. */
export interface Snapshot {
  task: Task;
  revision: number;
}

/** A listing that hears nothing for this long has read everything there is. */
const LIST_IDLE_MS = 2000;

/** Snapshots read at once when a listing goes through the owner index. */
const LIST_READS_IN_FLIGHT = 64;

/** Filters and paging of {@link TaskStore.list} (and `bus.tasks`). */
export interface TaskQuery {
  contextId?: string;
  state?: TaskState;
  /**
   * Behind a bridge: list only the tasks this caller submitted through this
   * identity (see `SubmitOptions.caller`).
   */
  caller?: string;
  /** Default 50, at most 1000. */
  pageSize?: number;
  /** Opaque token from the previous page's `nextPageToken`. */
  pageToken?: string;
}

export interface TaskPage {
  tasks: Task[];
  nextPageToken?: string;
  totalSize: number;
}

/** True for the KV error a compare-and-set loses with. */
export function isRevisionConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
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
function page(all: Task[], query: TaskQuery): TaskPage {
  const pageSize = Math.min(Math.max(query.pageSize ?? 50, 1), 1000);
  const offset = query.pageToken ? Number.parseInt(Buffer.from(query.pageToken, "base64url").toString(), 10) : 0;
  if (!Number.isSafeInteger(offset) || offset < 0) throw new AgentBusError("INVALID_INPUT", "invalid page token");
  all.sort((a, b) => (a.status.timestamp < b.status.timestamp ? 1 : a.status.timestamp > b.status.timestamp ? -1 : a.id.localeCompare(b.id)));
  const tasks = all.slice(offset, offset + pageSize);
  const next = offset + pageSize < all.length ? Buffer.from(String(offset + pageSize)).toString("base64url") : undefined;
  return { tasks, nextPageToken: next, totalSize: all.length };
}

const matches = (t: Task, query: TaskQuery) => (!query.contextId || t.contextId === query.contextId) && (!query.state || t.status.state === query.state);

const decode = (v: Uint8Array): Task => JSON.parse(Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString("utf8")) as Task;

/**
 * Task snapshots in `mesh_<t>_tasks`, one key per task id, and the owner
 * index in `mesh_<t>_owners` (see {@link ownerKey}). Writers move a
 * snapshot by compare-and-set on its revision, so concurrent writers (a
 * worker finishing, a caller cancelling) never overwrite each other and a
 * state only moves forward.
 */
export class TaskStore {
  constructor(
    readonly kv: KV,
    readonly js: JetStreamClient,
    readonly owners: KV,
  ) {}

  async get(id: string): Promise<Snapshot | undefined> {
    const e = await retryJs(() => this.kv.get(id));
    if (!e || e.operation !== "PUT") return undefined;
    return { task: decode(e.value), revision: e.revision };
  }

  /** Writes a new snapshot; undefined when the id already exists. */
  async create(task: Task): Promise<Snapshot | undefined> {
    try {
      return { task, revision: await retryJs(() => this.kv.create(task.id, JSON.stringify(task))) };
    } catch (err) {
      if (isRevisionConflict(err)) return undefined;
      throw err;
    }
  }

  /**
   * Applies `change` by compare-and-set, re-reading and retrying when another
   * writer got there first. `change` returns the next task, or undefined to
   * leave it as it is (then the current snapshot is returned).
   */
  async update(id: string, change: (task: Task) => Task | undefined, known?: Snapshot): Promise<Snapshot> {
    let current = known ?? (await this.get(id));
    let written: string | undefined;
    for (let attempt = 0; ; attempt++) {
      if (!current) throw new AgentBusError("TASK_NOT_FOUND", `task ${id} not found`);
      // A write retried after a lost reply comes back as a conflict with
      // itself: the re-read shows exactly what we wrote. That is success (not
      // a change to apply again, nor a task that moved on without us).
      if (written !== undefined && JSON.stringify(current.task) === written) return current;
      const next = change(current.task);
      if (!next) return current;
      const value = (written = JSON.stringify(next));
      try {
        const revision = current.revision;
        return { task: next, revision: await retryJs(() => this.kv.update(id, value, revision)) };
      } catch (err) {
        if (!isRevisionConflict(err) || attempt >= 50) throw err;
        current = await this.get(id);
      }
    }
  }

  /**
   * Files a new task under its submitter (and caller) in the owner index,
   * so {@link listOwned} finds it without reading other snapshots. The
   * entry ages out with the snapshot (same max age).
   */
  async index(task: Task): Promise<void> {
    const { submitter, caller } = task.metadata;
    await retryJs(() => this.owners.put(ownerKey(submitter, typeof caller === "string" ? caller : undefined, task.id), ""));
  }

  /**
   * Lists the tasks `submitter` filed in the owner index (only `caller`'s,
   * when given), newest status first: one key listing of its own prefix,
   * then one read per task, at most 64 at once. A task older than the index
   * has no entry there and is not listed.
   */
  async listOwned(submitter: string, caller: string | undefined, query: TaskQuery = {}): Promise<TaskPage> {
    const prefix = caller === undefined ? submitter : ownerPrefix(submitter, caller);
    const ids: string[] = [];
    for await (const key of await retryJs(() => this.owners.keys(`${prefix}.>`))) ids.push(key.slice(key.lastIndexOf(".") + 1));
    const all: Task[] = [];
    for (let i = 0; i < ids.length; i += LIST_READS_IN_FLIGHT) {
      const read = await Promise.all(ids.slice(i, i + LIST_READS_IN_FLIGHT).map((id) => this.get(id)));
      for (const s of read) {
        // Filed under this submitter, but the snapshot decides (and may have aged out first).
        if (s && s.task.metadata.submitter === submitter && (caller === undefined || s.task.metadata.caller === caller) && matches(s.task, query)) all.push(s.task);
      }
    }
    return page(all, query);
  }

  /**
   * Lists snapshots that `visible` lets through, newest status first. Reads
   * the latest value of every task key in one ordered consumer pass (no
   * round trip per task), then filters and pages in memory: for identities
   * that may see other submitters' tasks (see `bus.tasks`); a submitter's
   * own tasks are listed through the owner index instead ({@link listOwned}).
   */
  async list(query: TaskQuery = {}, visible: (t: Task) => boolean = () => true): Promise<TaskPage> {
    const all: Task[] = [];
    const { streamInfo, bucket } = await this.kv.status();
    // Read up to the stream's end as of now: writes landing meanwhile may
    // keep `pending` above zero, and a quiet consumer ends the read too.
    const end = streamInfo.state.last_seq;
    const consumer = await this.js.consumers.get(streamInfo.config.name, {
      filter_subjects: `$KV.${bucket}.>`,
      deliver_policy: DeliverPolicy.LastPerSubject,
    });
    if (end > 0 && (await consumer.info()).num_pending > 0) {
      const iter = await consumer.consume();
      let idle = setTimeout(() => iter.stop(), LIST_IDLE_MS);
      try {
        for await (const m of iter) {
          clearTimeout(idle);
          idle = setTimeout(() => iter.stop(), LIST_IDLE_MS);
          const op = m.headers?.get("KV-Operation");
          if (op !== "DEL" && op !== "PURGE") {
            const t = decode(m.data);
            if (matches(t, query) && visible(t)) all.push(t);
          }
          if (m.info.pending === 0 || m.seq >= end) break;
        }
      } finally {
        clearTimeout(idle);
        iter.stop();
      }
    }
    return page(all, query);
  }
}
