import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Durable } from "../store/task-log.js";
import { Header } from "../security/envelope.js";
import { applyEvent, isFinal, stateOf, type Task } from "../wire/task.js";

/**
 * Follows one task from before its work item is published: a plain
 * subscription on its event subject that verifies each event, drops
 * duplicates (a retried publish reaches subscribers twice) and folds them
 * onto the task as created, the same fold the worker stores. `final`
 * resolves at the first terminal or interrupted state, with no read of the
 * snapshot. Stops itself then, or after `maxMs`.
 */
export class TaskWatch {
  readonly final: Promise<Task>;
  #sub: Subscription;
  #timer: NodeJS.Timeout;

  constructor(nc: NatsConnection, durable: Durable, base: Task, maxMs = 600_000) {
    let resolve!: (t: Task) => void;
    this.final = new Promise((r) => (resolve = r));
    let task = base;
    const seen = new Set<string>();
    this.#sub = nc.subscribe(durable.subjects.taskEventLog(base.metadata.submitter, base.id), {
      callback: (_err, m) => {
        try {
          const id = m.headers?.get(Header.id);
          if (!id || seen.has(id)) return;
          const { event, from } = durable.decodeEvent(m);
          seen.add(id);
          task = applyEvent(task, event);
          task = { ...task, metadata: { ...task.metadata, agent: from } };
          const state = stateOf(event);
          if (state && isFinal(state)) {
            resolve(task);
            this.stop();
          }
        } catch {
          // unverifiable events are ignored; result() polls the snapshot as well
        }
      },
    });
    this.#timer = setTimeout(() => this.stop(), maxMs);
    this.#timer.unref();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#sub.unsubscribe();
  }
}
