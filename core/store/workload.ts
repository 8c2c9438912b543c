/**
 * The tenant's queued work, read from the work stream: per capability and
 * priority, how many work items wait and how many a worker holds, and how
 * many delayed tasks wait for their time. For operators (`agentbus work`,
 * the monitor, `/metrics`) and autoscalers.
 */
import type { JetStreamManager } from "@nats-io/jetstream";
import type { Subjects } from "../wire/subjects.js";
import { TASK_PRIORITIES, type TaskPriority } from "../wire/task.js";

/** One capability's work queue. */
export interface CapabilityWork {
  capability: string;
  /** Work items no worker has taken yet, by priority. */
  pending: Record<TaskPriority, number>;
  /** Work items a worker took and has not acknowledged yet (running, or waiting for a retry). */
  inProgress: number;
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
 * everything stored waits. No stream yet: nothing queued.
 */
export async function readWorkload(jsm: JetStreamManager, s: Subjects): Promise<Workload> {
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
  await Promise.all(Object.entries(stored).map(async ([subject, n]) => {
    const w = workSubjectOf(s, subject);
    if (!w) return;
    const entry = byCap.get(w.capability) ?? { capability: w.capability, pending: Object.fromEntries(TASK_PRIORITIES.map((p) => [p, 0])) as Record<TaskPriority, number>, inProgress: 0 };
    byCap.set(w.capability, entry);
    const info = await jsm.consumers.info(stream, workConsumer(w.capability, w.priority)).catch(() => undefined);
    entry.pending[w.priority] += info ? info.num_pending : n;
    entry.inProgress += info ? info.num_ack_pending : 0;
  }));
  return { capabilities: [...byCap.values()].sort((a, b) => a.capability.localeCompare(b.capability)), delayed: Object.keys(delayed).length };
}
