import { jetstream, type JsMsg } from "@nats-io/jetstream";
import { Header, endsFollow, isAgentBusError, retryJs, type Bus, type TaskEvent, type TaskState } from "../../core/internal.js";
import { readStream, type Reading } from "./reading.js";

/**
 * One task event as the monitor shows it: the A2A `StreamResponse` the
 * worker published, with where it sits in `MESH_<T>_EVENTS` and who sent it.
 */
export interface MonitorEvent {
  /** Stream sequence: pass `sequence + 1` as `from` to `/v1/events` to resume after it. */
  sequence: number;
  taskId: string;
  /** The task's capability (from its snapshot), when known. */
  capability?: string;
  /** When the stream stored the event (ISO 8601). */
  time: string;
  /** The publishing agent: checked when `verified`, otherwise as its `Mesh-From` header claims. */
  from: string;
  /** True when an identity this monitor holds verified the event's MAC or signature. */
  verified: boolean;
  /** `{statusUpdate}`, `{artifactUpdate}` or `{message}`. */
  event: TaskEvent;
}

/** Filters of the live feed; each given filter must match. */
export interface EventFilter {
  /** Only tasks of these capabilities. */
  capabilities?: string[];
  /** Only status updates to these states (artifact and message events never match). */
  states?: TaskState[];
}

/** A stream of events that the reader can stop (a client that went away). */
export interface Feed {
  events: AsyncIterable<MonitorEvent>;
  stop(): void;
}

const LOG_LIMIT = 10_000;

/**
 * Reads task events straight from the tenant's `MESH_<T>_EVENTS` stream.
 *
 * Workers MAC each event for the task's submitter only (see
 * docs/ARCHITECTURE.md, durable tasks), so no third identity can verify
 * another submitter's events. The monitor therefore reads them as operator
 * data: each event is checked with every identity the monitor holds (its
 * own connection and the API keys' ones) and marked `verified` when one of
 * them could check it; the others are shown with `verified: false` and the
 * sender their `Mesh-From` header names. Nothing the monitor reads this way
 * is acted upon.
 */
export class EventReader {
  /** Capability per task id, per tenant: one snapshot read per task, bounded. */
  readonly #capabilities = new Map<string, string>();
  readonly #ready = new WeakMap<Bus, Promise<unknown>>();

  constructor(private readonly verifiers: readonly Bus[]) {}

  /** Everything stored for one task so far (at most 10 000 events), oldest first. */
  async log(bus: Bus, taskId: string, capability?: string): Promise<MonitorEvent[]> {
    const names = await bus.taskSubjects(taskId);
    const reading = await this.#consume(bus, names.taskEventLogOfAny(taskId), undefined, true, names);
    const out: MonitorEvent[] = [];
    if (!reading) return out;
    try {
      for await (const m of reading.messages) {
        const e = this.#decode(bus, m, capability);
        if (e) out.push(e);
        if (m.info.pending === 0 || out.length >= LOG_LIMIT) break;
      }
    } finally {
      reading.stop();
    }
    return out;
  }

  /**
   * One task's events from stream sequence `from` (default: its first), then
   * live; ends at a terminal state, or at an interrupted one once caught up.
   */
  async follow(bus: Bus, taskId: string, capability: string, from?: number): Promise<Feed> {
    const names = await bus.taskSubjects(taskId);
    const reading = (await this.#consume(bus, names.taskEventLogOfAny(taskId), from, false, names))!;
    const decoded = this.#decoded(bus, reading, capability);
    return {
      stop: reading.stop,
      events: (async function* () {
        for await (const { e, pending } of decoded) {
          yield e;
          if (endsFollow(e.event, pending)) return;
        }
      })(),
    };
  }

  /**
   * The tenant's task events (or one task's, with `task`) live from now, or
   * from stream sequence `from`; filtered. The consumer exists when this
   * resolves, so nothing published afterwards is missed.
   */
  async feed(bus: Bus, options: EventFilter & { task?: string; from?: number }): Promise<Feed> {
    const subject = options.task ? bus.subjects.taskEventLogOfAny(options.task) : bus.subjects.allTaskEventLogs();
    // "From now" is the stream's next sequence (see readStream).
    const from = options.from ?? (await this.#nextSequence(bus));
    const reading = (await this.#consume(bus, subject, from))!;
    const { capabilities, states } = options;
    const decoded = this.#decoded(bus, reading);
    const capabilityOf = (taskId: string) => this.#capabilityOf(bus, taskId);
    return {
      stop: reading.stop,
      events: (async function* () {
        for await (const { e } of decoded) {
          if (states && !("statusUpdate" in e.event && states.includes(e.event.statusUpdate.status.state))) continue;
          e.capability = await capabilityOf(e.taskId);
          if (capabilities && !(e.capability && capabilities.includes(e.capability))) continue;
          yield e;
        }
      })(),
    };
  }

  /** Makes sure the task streams exist (they are created on a connection's first durable use). */
  #streams(bus: Bus): Promise<unknown> {
    let ready = this.#ready.get(bus);
    if (!ready) {
      ready = bus.ensureTasks();
      ready.catch(() => this.#ready.delete(bus));
      this.#ready.set(bus, ready);
    }
    return ready;
  }

  async #nextSequence(bus: Bus): Promise<number> {
    await this.#streams(bus);
    const jsm = await jetstream(bus.nc).jetstreamManager();
    const info = await retryJs(() => jsm.streams.info(bus.subjects.stream("EVENTS")));
    return info.state.last_seq + 1;
  }

  /** An ordered consumer on the events stream (see {@link readStream}; a region's with `names`), once the task streams exist. */
  async #consume(bus: Bus, subject: string, from?: number, onlyStored = false, names = bus.subjects): Promise<Reading | undefined> {
    await this.#streams(bus);
    return readStream(bus, "EVENTS", subject, from, onlyStored, names);
  }

  /** The verified events of `reading`, with the count still pending after each; stops the reading when done. */
  async *#decoded(bus: Bus, reading: Reading, capability?: string): AsyncGenerator<{ e: MonitorEvent; pending: number }> {
    try {
      for await (const m of reading.messages) {
        const e = this.#decode(bus, m, capability);
        if (e) yield { e, pending: m.info.pending };
      }
    } finally {
      reading.stop();
    }
  }

  #decode(bus: Bus, m: JsMsg, capability?: string): MonitorEvent | undefined {
    let event: TaskEvent;
    try {
      event = m.json<TaskEvent>();
    } catch {
      bus.log.warn({ subject: m.subject, seq: m.seq }, "monitor: skipping a task event that is not JSON");
      return undefined;
    }
    let from = m.headers?.get(Header.from) ?? "";
    let verified = false;
    for (const v of [bus, ...this.verifiers]) {
      try {
        from = v.envelopes.open(m, { durable: true }).from;
        verified = true;
        break;
      } catch {
        // not for this identity: try the next one
      }
    }
    // The subject is `<root>.<t>.events.<submitter>.<task>`, and the MAC covers it.
    const taskId = m.subject.split(".").at(-1)!;
    return { sequence: m.seq, taskId, capability, time: m.time.toISOString(), from, verified, event };
  }

  async #capabilityOf(bus: Bus, taskId: string): Promise<string | undefined> {
    const key = `${bus.subjects.prefix} ${taskId}`;
    if (this.#capabilities.has(key)) return this.#capabilities.get(key);
    let capability: string | undefined;
    try {
      capability = (await bus.task(taskId)).metadata.capability;
    } catch (err) {
      if (!isAgentBusError(err, "TASK_NOT_FOUND")) throw err;
    }
    if (capability === undefined) return undefined; // not cached: it may be a moment early
    if (this.#capabilities.size >= 10_000) this.#capabilities.delete(this.#capabilities.keys().next().value!);
    this.#capabilities.set(key, capability);
    return capability;
  }
}
