import { jetstream, type JsMsg } from "@nats-io/jetstream";
import type { Msg, Subscription } from "@nats-io/nats-core";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { isErrorCode, isTerminal, retryJs, TASK_PRIORITIES, workSubjectOf, type Bus, type Schedule, type TaskState, type Workload } from "../../core/internal.js";
import { EventReader, readStream, type Feed, type MonitorEvent, type Reading } from "../events/index.js";
import { BoundedLabel, Lru } from "./labels.js";

/** Label value of a task whose capability could not be read (snapshot gone). */
export const UNKNOWN_CAPABILITY = "unknown";

/** Buckets of the task duration histogram, seconds: tasks run from milliseconds to an hour. */
export const TASK_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600];

/** What one tenant's collectors need. */
export interface TenantMetricsOptions {
  bus: Bus;
  registry: Registry;
  /** Distinct capability label values before the rest become `other` (default 500). */
  maxCapabilities?: number;
  /** Tasks remembered (capability, submit time, already counted), least recently used forgotten first (default 10 000). */
  maxTasks?: number;
}

/** What is remembered per task id. */
interface TaskEntry {
  capability?: string;
  /** Submitter's `Mesh-Ts` of the work item, ms since the epoch. */
  submittedAt?: number;
  finished?: boolean;
}

/** A consuming ordered consumer and how to end it. */

const stateLabel = (s: TaskState): string => s.replace("TASK_STATE_", "").toLowerCase();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The bus-side metrics of one tenant, on the connection `bus`:
 *
 * - task submissions, from a plain subscription on `<root>.<t>.work.>`
 *   (no consumer: the WORK stream is a work queue, and core subscribers see
 *   every publish) and one on `<root>.<t>.delayed.>` (a delayed task's work
 *   item, counted when it is submitted); each work item is verified (they
 *   are always signed) and counted once per task id;
 * - finished tasks and their duration, from the tenant's task events
 *   (`<root>.<t>.events.>`, read from "now" with the monitor's
 *   {@link EventReader}); the capability comes from the task's snapshot;
 * - refusals, from `MESH_<T>_AUDIT` (an ordered consumer from "now");
 * - the work queues and the agents online, read on each scrape.
 */
export class TenantMetrics {
  readonly #bus: Bus;
  readonly #tenant: string;
  readonly #caps: BoundedLabel;
  readonly #tasks: Lru<string, TaskEntry>;
  readonly #reader = new EventReader([]);
  readonly #submitted: Counter<"tenant" | "capability">;
  readonly #finished: Counter<"tenant" | "capability" | "state">;
  readonly #duration: Histogram<"tenant" | "capability" | "state">;
  readonly #denials: Counter<"tenant" | "code">;
  #stopped = false;
  #workSub?: Subscription;
  #delayedSub?: Subscription;
  #feed?: Feed;
  #audit?: Reading;
  #loops: Promise<void>[] = [];
  #work?: Promise<Workload>;
  #scheduleList?: Promise<Schedule[]>;

  private constructor(o: TenantMetricsOptions) {
    this.#bus = o.bus;
    this.#tenant = o.bus.subjects.tenant;
    this.#caps = new BoundedLabel(o.maxCapabilities ?? 500);
    this.#tasks = new Lru(o.maxTasks ?? 10_000);
    const registers = [o.registry];
    this.#submitted = new Counter({
      name: "agentbus_tasks_submitted_total",
      help: "Durable tasks submitted (new task ids on <root>.<t>.work.<cap>; resumed turns not counted).",
      labelNames: ["tenant", "capability"],
      registers,
    });
    this.#finished = new Counter({
      name: "agentbus_tasks_finished_total",
      help: "Durable tasks that reached a terminal state (completed, failed, canceled, rejected), from the task events.",
      labelNames: ["tenant", "capability", "state"],
      registers,
    });
    this.#duration = new Histogram({
      name: "agentbus_task_duration_seconds",
      help: "From submission (work item's Mesh-Ts) to the terminal status timestamp, for tasks submitted while this gateway ran.",
      labelNames: ["tenant", "capability", "state"],
      buckets: TASK_BUCKETS,
      registers,
    });
    this.#denials = new Counter({
      name: "agentbus_denials_total",
      help: "Requests refused before a handler ran, from the audit stream, by code: DENIED and UNKNOWN_SENDER are ACL denials; DEPTH_EXCEEDED, BAD_SIGNATURE, REVOKED, EXPIRED, REPLAYED, UNSIGNED the others.",
      labelNames: ["tenant", "code"],
      registers,
    });
    const self = this;
    new Gauge({
      name: "agentbus_work_pending",
      help: "Work items waiting for a worker, per capability and priority (the consumer's pending count of each level; stored items when no worker took that level yet).",
      labelNames: ["tenant", "capability", "priority"],
      registers,
      async collect() {
        this.reset();
        for (const c of (await self.#workload()).capabilities) for (const p of TASK_PRIORITIES) this.inc({ tenant: self.#tenant, capability: self.#caps.of(c.capability), priority: p }, c.pending[p]);
      },
    });
    new Gauge({
      name: "agentbus_tasks_delayed",
      help: "Delayed tasks whose work item waits for its time (message schedules on <root>.<t>.delayed.>, nats-server 2.12+).",
      labelNames: ["tenant"],
      registers,
      async collect() {
        this.reset();
        this.set({ tenant: self.#tenant }, (await self.#workload()).delayed);
      },
    });
    new Gauge({
      name: "agentbus_schedules",
      help: "Recurring schedules, active or paused (nats-server 2.14+).",
      labelNames: ["tenant", "state"],
      registers,
      async collect() {
        this.reset();
        const list = await self.#schedules();
        for (const state of ["active", "paused"]) this.set({ tenant: self.#tenant, state }, list.filter((x) => x.paused === (state === "paused")).length);
      },
    });
    new Gauge({
      name: "agentbus_schedule_next_run_timestamp_seconds",
      help: "When each active recurring schedule runs next, seconds since the epoch.",
      labelNames: ["tenant", "capability", "schedule"],
      registers,
      async collect() {
        this.reset();
        for (const x of await self.#schedules()) if (x.nextRunAt !== undefined) this.set({ tenant: self.#tenant, capability: self.#caps.of(x.capability), schedule: x.id }, x.nextRunAt / 1000);
      },
    });
    new Gauge({
      name: "agentbus_work_in_progress",
      help: "Work items taken by a worker and not yet acknowledged, per capability.",
      labelNames: ["tenant", "capability"],
      registers,
      async collect() {
        this.reset();
        for (const c of (await self.#workload()).capabilities) this.inc({ tenant: self.#tenant, capability: self.#caps.of(c.capability) }, c.inProgress);
      },
    });
    new Gauge({
      name: "agentbus_agents_online",
      help: "Agents (identities) with at least one instance heartbeating.",
      labelNames: ["tenant"],
      registers,
      collect() {
        this.set({ tenant: self.#tenant }, self.#bus.discover({ online: true }).length);
      },
    });
    new Gauge({
      name: "agentbus_agent_instances_online",
      help: "Agent instances (replicas) heartbeating.",
      labelNames: ["tenant"],
      registers,
      collect() {
        this.set({ tenant: self.#tenant }, self.#bus.discover({ online: true }).reduce((n, a) => n + a.instances, 0));
      },
    });
    new Gauge({
      name: "agentbus_capability_providers_online",
      help: "Online agents offering each capability (0 for a capability with queued work and no provider).",
      labelNames: ["tenant", "capability"],
      registers,
      async collect() {
        this.reset();
        const counts = new Map<string, number>();
        for (const a of self.#bus.discover({ online: true })) {
          for (const cap of a.capabilities) {
            const label = self.#caps.of(cap);
            counts.set(label, (counts.get(label) ?? 0) + 1);
          }
        }
        for (const c of (await self.#workload()).capabilities) if (!counts.has(self.#caps.of(c.capability))) counts.set(self.#caps.of(c.capability), 0);
        for (const [cap, n] of counts) this.set({ tenant: self.#tenant, capability: cap }, n);
      },
    });
  }

  /**
   * Registers the metrics in `registry` and starts reading: when this
   * resolves, every submission, task event and audit record from now on is
   * counted.
   */
  static async start(o: TenantMetricsOptions): Promise<TenantMetrics> {
    const m = new TenantMetrics(o);
    try {
      await Promise.all([m.#startWork(), m.#startEvents(), m.#startAudit()]);
    } catch (err) {
      await m.stop();
      throw err;
    }
    return m;
  }

  /** Stops the subscription and the consumers (idempotent). */
  async stop(): Promise<void> {
    this.#stopped = true;
    try {
      this.#workSub?.unsubscribe();
      this.#delayedSub?.unsubscribe();
    } catch {
      // connection already closed
    }
    this.#feed?.stop();
    this.#audit?.stop();
    await Promise.allSettled(this.#loops);
  }

  #capability(cap: string | undefined): string {
    return cap === undefined ? UNKNOWN_CAPABILITY : this.#caps.of(cap);
  }

  // ---- submissions ------------------------------------------------------

  async #startWork(): Promise<void> {
    const { nc, subjects } = this.#bus;
    const prefix = `${subjects.storePrefix}.work.`;
    this.#workSub = nc.subscribe(`${prefix}>`, {
      callback: (err, m) => {
        if (err) {
          if (!this.#stopped) this.#bus.log.warn({ err: String(err) }, "metrics: work subscription failed; submissions are not counted");
          return;
        }
        const work = workSubjectOf(subjects, m.subject);
        if (work) this.#onWork(m, work.capability);
      },
    });
    // A delayed task's work item waits on its own subject, sealed for the work subject it is published to when due.
    this.#delayedSub = nc.subscribe(subjects.allDelayedWork(), {
      callback: (err, m) => {
        const target = m?.headers?.get("Nats-Schedule-Target");
        const work = !err && target ? workSubjectOf(subjects, target) : undefined;
        if (work) this.#onWork(m, work.capability, target);
      },
    });
    await nc.flush(); // the server has the subscriptions: nothing published from now on is missed
  }

  #onWork(m: Msg, cap: string, subject?: string): void {
    let task: string | undefined;
    let ts: number;
    let id: string;
    let from: string;
    try {
      ({ task, ts, id, from } = this.#bus.envelopes.open(m, { durable: true, subject }));
    } catch {
      return; // not a valid work item: the worker refuses it too
    }
    // A new task's item has Nats-Msg-Id = `<submitter>.<task>`; a resumed turn `<submitter>.<task>.<turn>`.
    if (!task || id !== `${from}.${task}`) return;
    const entry = this.#tasks.get(task);
    if (entry?.submittedAt !== undefined) return; // a retried submit: JetStream kept one copy
    this.#tasks.set(task, { ...entry, capability: cap, submittedAt: ts });
    this.#submitted.inc({ tenant: this.#tenant, capability: this.#capability(cap) });
  }

  // ---- task events ------------------------------------------------------

  async #startEvents(): Promise<void> {
    const open = async (from?: number): Promise<Feed> => (this.#feed = await this.#reader.feed(this.#bus, { from }));
    // A feed that fails (a snapshot read timing out) is reopened after the last event counted.
    const first = await open();
    this.#loops.push(this.#resume(first, open, (f) => f.events, (e) => e.sequence, (e) => this.#onEvent(e), "task events"));
  }

  /**
   * Handles every item of `source` until stopped; a source that fails is
   * reopened from the sequence after the last item handled.
   */
  async #resume<S extends { stop(): void }, T>(
    first: S,
    open: (from?: number) => Promise<S>,
    items: (source: S) => AsyncIterable<T>,
    sequenceOf: (item: T) => number,
    handle: (item: T) => void,
    what: string,
    from?: number,
  ): Promise<void> {
    let source: S | undefined = first;
    while (!this.#stopped) {
      try {
        source ??= await open(from);
        if (this.#stopped) break;
        for await (const item of items(source)) {
          from = sequenceOf(item) + 1;
          handle(item);
        }
      } catch (err) {
        if (this.#stopped) break;
        this.#bus.log.warn({ err: String(err) }, `metrics: reading ${what} failed; retrying`);
        await sleep(1000);
      } finally {
        source?.stop();
        source = undefined;
      }
    }
  }

  #onEvent(e: MonitorEvent): void {
    if (!("statusUpdate" in e.event)) return;
    const { state, timestamp } = e.event.statusUpdate.status;
    if (!isTerminal(state)) return;
    const entry = this.#tasks.get(e.taskId) ?? {};
    if (entry.finished) return;
    this.#tasks.set(e.taskId, { ...entry, finished: true });
    const labels = { tenant: this.#tenant, capability: this.#capability(e.capability ?? entry.capability), state: stateLabel(state) };
    this.#finished.inc(labels);
    const end = Date.parse(timestamp);
    if (entry.submittedAt !== undefined && Number.isFinite(end)) this.#duration.observe(labels, Math.max(0, end - entry.submittedAt) / 1000);
  }

  // ---- audit ------------------------------------------------------------

  async #startAudit(): Promise<void> {
    const { nc, subjects } = this.#bus;
    const js = jetstream(nc);
    const stream = subjects.stream("AUDIT");
    const info = await retryJs(async () => (await js.jetstreamManager()).streams.info(stream));
    const open = async (from?: number): Promise<Reading> => (this.#audit = (await readStream(this.#bus, "AUDIT", `${subjects.prefix}.audit.>`, from))!);
    const from = info.state.last_seq + 1;
    const first = await open(from);
    this.#loops.push(this.#resume(first, open, (r) => r.messages, (m) => m.seq, (m) => this.#onAudit(m), "the audit stream", from));
  }

  #onAudit(m: JsMsg): void {
    try {
      this.#bus.envelopes.open(m, { durable: true }); // audit records are signed by who wrote them
    } catch {
      return;
    }
    let record: { code?: unknown };
    try {
      record = m.json<{ code?: unknown }>();
    } catch {
      return;
    }
    // Refusals carry their code; revocations and other admin records do not.
    if (record.code === undefined) return;
    this.#denials.inc({ tenant: this.#tenant, code: isErrorCode(record.code) ? record.code : "other" });
  }

  // ---- work queues (on scrape) -----------------------------------------

  /** Every schedule of the tenant, read once per scrape (none before nats-server 2.14, or when the read fails). */
  #schedules(): Promise<Schedule[]> {
    if (!this.#bus.server.cron) return Promise.resolve([]);
    this.#scheduleList ??= this.#bus.schedules
      .list({ creator: "*" })
      .catch((err: unknown) => {
        this.#bus.log.warn({ err: String(err) }, "metrics: reading the schedules failed");
        return [];
      })
      .finally(() => (this.#scheduleList = undefined));
    return this.#scheduleList;
  }

  /**
   * The work stream's state (see `bus.workload()`), read once per scrape:
   * the gauges that need it collect at the same time and share the read in
   * flight. Empty when it fails (the gauges show nothing rather than the
   * scrape failing).
   */
  #workload(): Promise<Workload> {
    this.#work ??= this.#bus
      .workload()
      .catch((err: unknown) => {
        this.#bus.log.warn({ err: String(err) }, "metrics: reading the work queues failed");
        return { capabilities: [], delayed: 0 };
      })
      .finally(() => (this.#work = undefined));
    return this.#work;
  }
}
