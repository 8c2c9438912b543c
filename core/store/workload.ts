/**
 * The tenant's queued work, read from the work stream: per capability and
 * priority, how many work items wait and how many a worker holds, and how
 * many delayed tasks wait for their time. For operators (`agentbus work`,
 * the monitor, `/metrics`) and autoscalers.
 */
import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import { deniedByServer } from "../infra/jetstream.js";
import type { Subjects } from "../wire/subjects.js";
import { TASK_PRIORITIES, type TaskPriority } from "../wire/task.js";

/** One capability's work queue. */
export interface CapabilityWork {
  capability: string;
  /** Work items no worker has taken yet, by priority. */
  pending: Record<TaskPriority, number>;
  /** Work items a worker took and has not acknowledged yet (running, or waiting for a retry). */
  inProgress: number;
  /**
   * Only when asked for ({@link WorkloadOptions.workers}): the pull
   * requests open on the capability's work consumers now (the consumers'
   * `num_waiting`, the largest over its priority levels, since a worker
   * may keep one open on each level). A worker keeps one pull request open
   * (for all its free slots at once) while it has a free slot, and none
   * while every slot is busy: this counts the workers that could take
   * work now, not those busy up to their concurrency (their work shows in
   * `inProgress`).
   */
  workers?: number;
}

/** Options of {@link readWorkload}. */
export interface WorkloadOptions {
  /**
   * Also count each capability's {@link CapabilityWork.workers}, and list
   * the capabilities whose work consumers exist (a worker took that
   * capability's work once) with nothing stored, with zeros.
   */
  workers?: boolean;
}

/** What {@link readWorkload} returns. */
export interface Workload {
  /** Capabilities with work stored, by name. */
  capabilities: CapabilityWork[];
  /** Delayed tasks waiting for their time (nats-server 2.12+ message schedules). */
  delayed: number;
}

/** The durable consumer of one capability's work of one priority: `cap_<cap>` (dots as `_`), `cap_<cap>_HIGH`, `cap_<cap>_LOW`. */
export function workConsumer(cap: string, priority: TaskPriority = "normal"): string {
  const name = `cap_${cap.replaceAll(".", "_")}`;
  return priority === "normal" ? name : `${name}_${priority.toUpperCase()}`;
}

/** The capability and priority of a work subject (`<root>.<t>.work.<cap>`, `….HIGH`, `….LOW`); undefined for another subject. */
export function workSubjectOf(s: Subjects, subject: string): { capability: string; priority: TaskPriority } | undefined {
  const prefix = `${s.storePrefix}.work.`;
  if (!subject.startsWith(prefix)) return undefined;
  const rest = subject.slice(prefix.length);
  const m = /^(.*)\.(HIGH|LOW)$/.exec(rest);
  return m ? { capability: m[1]!, priority: m[2]!.toLowerCase() as TaskPriority } : { capability: rest, priority: "normal" };
}

/**
 * Reads the work stream: its stored items per subject, and for each
 * capability and priority with items, its consumer's pending and
 * acknowledgement-pending counts (`cap_<cap>`, `cap_<cap>_HIGH`,
 * `cap_<cap>_LOW`); without a consumer (no worker took that level yet)
 * everything stored waits. No stream yet: nothing queued. With
 * `options.workers`, the stream's consumers are listed once (one paged
 * request) instead of read one by one, and their open pull requests
 * counted.
 */
export async function readWorkload(jsm: JetStreamManager, s: Subjects, options: WorkloadOptions = {}): Promise<Workload> {
  const stream = s.stream("WORK");
  let stored: Record<string, number>;
  let delayed: Record<string, number>;
  try {
    [stored, delayed] = await Promise.all([
      jsm.streams.info(stream, { subjects_filter: `${s.storePrefix}.work.>` }).then((i) => i.state.subjects ?? {}),
      jsm.streams.info(stream, { subjects_filter: s.allDelayedWork() }).then((i) => i.state.subjects ?? {}),
    ]);
  } catch (err) {
    if (/not found/i.test(String(err))) return { capabilities: [], delayed: 0 };
    throw err;
  }
  const byCap = new Map<string, CapabilityWork>();
  const entryOf = (capability: string): CapabilityWork => {
    let entry = byCap.get(capability);
    if (!entry) {
      entry = { capability, pending: Object.fromEntries(TASK_PRIORITIES.map((p) => [p, 0])) as Record<TaskPriority, number>, inProgress: 0, ...(options.workers && { workers: 0 }) };
      byCap.set(capability, entry);
    }
    return entry;
  };
  // Asked for workers: every consumer of the stream at once (those without stored work count too).
  const listed = options.workers ? await listConsumers(jsm, stream).catch((err: unknown) => {
    throw deniedByServer(err, `this connection may not list the consumers of ${stream}: bridges and admins may`);
  }) : undefined;
  if (listed) {
    for (const info of listed.values()) {
      const w = workSubjectOf(s, info.config.filter_subject ?? "");
      if (!w || info.name !== workConsumer(w.capability, w.priority)) continue;
      const entry = entryOf(w.capability);
      entry.workers = Math.max(entry.workers!, info.num_waiting);
    }
  }
  await Promise.all(Object.entries(stored).map(async ([subject, n]) => {
    const w = workSubjectOf(s, subject);
    if (!w) return;
    const entry = entryOf(w.capability);
    const name = workConsumer(w.capability, w.priority);
    const info = listed ? listed.get(name) : await jsm.consumers.info(stream, name).catch(() => undefined);
    entry.pending[w.priority] += info ? info.num_pending : n;
    entry.inProgress += info ? info.num_ack_pending : 0;
  }));
  return { capabilities: [...byCap.values()].sort((a, b) => a.capability.localeCompare(b.capability)), delayed: Object.keys(delayed).length };
}

/** Every consumer of `stream` by name (one paged listing). */
async function listConsumers(jsm: JetStreamManager, stream: string): Promise<Map<string, ConsumerInfo>> {
  const out = new Map<string, ConsumerInfo>();
  for await (const info of jsm.consumers.list(stream)) out.set(info.name, info);
  return out;
}
