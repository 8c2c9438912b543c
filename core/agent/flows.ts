/**
 * Durable fan-out and fan-in (`ctx.fanOut`): the side that resumes a parent
 * task once its children have ended.
 *
 * A parent's handler submits its children as tasks of the agent's own
 * identity and ends its run with the parent WORKING and `metadata.waiting`
 * set. Every event of a task this identity submitted is stored under
 * `<root>.<t>.events.<agent id>.<task>`; one durable consumer of those
 * (`flow_<agent id>`, shared by the agent's replicas) sees each child's
 * final event, and the first replica to find every child of the parent
 * ended queues the parent again: a work item of the parent's capability,
 * its id derived from the children, so that two replicas queue it once.
 * The resumed run clears `metadata.waiting` when its `fanOut` finds every
 * child ended.
 */
import { createHash } from "node:crypto";
import { AckPolicy, DeliverPolicy, type Consumer, type ConsumerMessages, type JsMsg } from "@nats-io/jetstream";
import type { Runtime } from "../runtime.js";
import type { Durable } from "../store/task-log.js";
import type { Snapshot } from "../store/task-snapshots.js";
import type { Logger } from "../wire/log.js";
import { ensureConsumer, retryJs } from "../infra/jetstream.js";
import { isTerminal, type Task, type TaskEvent } from "../wire/task.js";

/** What a child task records of its parent (`metadata.flow`). */
export interface FlowLink {
  parent: string;
  /** The parent's submitter (its snapshot's key). */
  submitter: string;
  /** The parent's capability (where it is queued again). */
  capability: string;
  /** Federated: the region whose plane holds the parent (where it is queued again). */
  region?: string;
}

/** A parent's list of children (`metadata.children`). */
export interface FlowChild {
  id: string;
  capability: string;
}

/**
 * The snapshot of child task `id` of this identity: in this identity's
 * plane, or on a federated bus in whichever region holds it (children are
 * queued where their capability is served).
 */
export async function childSnapshot(rt: Runtime, durable: Durable, id: string): Promise<Snapshot | undefined> {
  return rt.options.regions === undefined ? durable.store.get(id, rt.id) : (await rt.locate(id)).snapshot;
}

/**
 * Resumes this agent's parent tasks when their children end. On a
 * federated bus it watches every region's events stream (children run
 * where their capability is served): this region's from the start, each
 * other one's as soon as its consumer can be made (a region that is down
 * is tried again every few seconds).
 */
export class FlowWatcher {
  readonly #batches = new Set<ConsumerMessages>();
  readonly #loops: Array<Promise<void>> = [];
  #starting?: Promise<void>;
  #stopped = false;

  constructor(
    private readonly rt: Runtime,
    private readonly durable: Durable,
    private readonly log: Logger,
  ) {}

  /** The consumer's name: one per agent identity (in each region's events stream). */
  get name(): string {
    return `flow_${this.rt.id}`;
  }

  /** Starts watching when this identity has watched before (its consumer exists): children that ended while no replica ran are seen now. */
  async resumeWatching(): Promise<void> {
    const exists = await retryJs(async () => (await this.durable.js.jetstreamManager()).consumers.info(this.durable.subjects.stream("EVENTS"), this.name)).then(() => true, () => false);
    if (exists) await this.start();
  }

  /** Starts watching (once). */
  start(): Promise<void> {
    this.#starting ??= (async () => {
      this.#loops.push(this.#run(this.durable, await this.#consumer(this.durable)));
      for (const region of this.rt.options.regions ?? []) {
        if (region !== this.durable.subjects.region) this.#loops.push(this.#remote(region));
      }
    })();
    this.#starting.catch(() => (this.#starting = undefined));
    return this.#starting;
  }

  /** This identity's flow consumer on `durable`'s events stream, made if missing. */
  async #consumer(durable: Durable): Promise<Consumer> {
    const stream = durable.subjects.stream("EVENTS");
    await ensureConsumer(await durable.js.jetstreamManager(), stream, {
      durable_name: this.name,
      filter_subject: `${durable.subjects.storePrefix}.events.${this.rt.id}.*`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.New,
      ack_wait: 30_000_000_000,
    });
    return retryJs(() => durable.js.consumers.get(stream, this.name));
  }

  /** Watches another region's events once its plane and consumer can be had. */
  async #remote(region: string): Promise<void> {
    while (!this.#stopped) {
      try {
        const durable = await this.rt.tasks(region);
        return await this.#run(durable, await this.#consumer(durable));
      } catch (err) {
        if (this.#stopped) return;
        this.log.debug({ region, err: String(err) }, "child tasks in another region not watched yet; trying again");
        await new Promise((r) => setTimeout(r, 5_000).unref());
      }
    }
  }

  async #run(durable: Durable, consumer: Consumer): Promise<void> {
    while (!this.#stopped) {
      let batch: ConsumerMessages | undefined;
      try {
        batch = await consumer.fetch({ max_messages: 64, expires: 5000 });
        this.#batches.add(batch);
        for await (const m of batch) await this.#seen(durable, m);
      } catch (err) {
        if (this.#stopped) break;
        this.log.warn({ err: String(err) }, "watching child tasks failed; retrying");
        await new Promise((r) => setTimeout(r, 500).unref());
      } finally {
        if (batch) this.#batches.delete(batch);
      }
    }
  }

  /** One stored event of a task this identity submitted: a child's final one may resume its parent. */
  async #seen(durable: Durable, m: JsMsg): Promise<void> {
    try {
      const event = m.json<TaskEvent>();
      const state = "statusUpdate" in event ? event.statusUpdate.status.state : undefined;
      if (state && isTerminal(state)) {
        const child = await durable.store.get(m.subject.slice(m.subject.lastIndexOf(".") + 1), this.rt.id);
        const link = child?.task.metadata.flow as FlowLink | undefined;
        if (link && typeof link.parent === "string") await this.resumeIfDone(link);
      }
      m.ack();
    } catch (err) {
      this.log.warn({ err: String(err), subject: m.subject }, "a child task's end could not be handled; it comes again");
      m.nak(1000);
    }
  }

  /** Queues the parent again when it waits for its children and every one has ended. */
  async resumeIfDone(link: FlowLink): Promise<void> {
    const plane = await this.rt.tasks(link.region);
    const parent = await plane.store.get(link.parent, link.submitter);
    if (!parent || !parent.task.metadata.waiting || isTerminal(parent.task.status.state)) return;
    const children = (parent.task.metadata.children as FlowChild[] | undefined) ?? [];
    // One at a time, stopping at the first child still running: children tend to end in order, so this reads few.
    for (const c of children) {
      const s = await childSnapshot(this.rt, plane, c.id);
      if (!s || !isTerminal(s.task.status.state)) return;
    }
    const task: Task = parent.task;
    // One id per set of children: two replicas queue it once, and a later fan-out of the same parent is queued again.
    const id = `${task.metadata.submitter}.${task.id}.children-${createHash("sha256").update(children.map((c) => c.id).join("\n")).digest("hex").slice(0, 16)}`;
    await plane.requeue(task, id, this.rt.providers(link.capability));
    this.log.debug({ task: task.id, children: children.length }, "children ended: parent queued again");
  }

  /** Stops watching. */
  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#starting?.catch(() => {});
    for (const b of this.#batches) b.stop();
    await Promise.all(this.#loops);
  }
}
